package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// reportMain is the "report" subcommand: it rewrites the Markdown report and
// the plots from a results.json, without measuring anything.
func reportMain(args []string) int {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	in := fs.String("in", "", "results.json of a sweep")
	out := fs.String("docs", "", "folder for benchmarks.md and the PNGs (default: the folder of -in)")
	notes := fs.String("notes", "ANALYSIS.md", "hand-written analysis to append, if the file exists")
	profs := fs.String("profiles", "", "take the profiles from this results.json instead (a later -profile run)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *in == "" {
		fmt.Fprintln(os.Stderr, "swbench report: -in is required")
		return 2
	}
	data, err := os.ReadFile(*in)
	if err != nil {
		fmt.Fprintf(os.Stderr, "swbench report: %v\n", err)
		return 1
	}
	var res results
	if err := json.Unmarshal(data, &res); err != nil {
		fmt.Fprintf(os.Stderr, "swbench report: %s: %v\n", *in, err)
		return 1
	}
	res.NotesPath = *notes
	if *profs != "" {
		data, err := os.ReadFile(*profs)
		var other results
		if err == nil {
			err = json.Unmarshal(data, &other)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "swbench report: -profiles: %v\n", err)
			return 1
		}
		res.Profiles = other.Profiles
	}
	dir := *out
	if dir == "" {
		dir = filepath.Dir(*in)
	}
	if err := writeReport(&res, dir); err != nil {
		fmt.Fprintf(os.Stderr, "swbench report: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "report: %s\n", filepath.Join(dir, "benchmarks.md"))
	return 0
}

// Names of the plots, written next to benchmarks.md.
const (
	plotThroughput      = "bench-throughput.png"
	plotThroughputFixed = "bench-throughput-fixed.png"
	plotLatency         = "bench-latency.png"
	plotLatencyCDF      = "bench-latency-cdf.png"
)

// contenderLabels are the names the report uses.
var contenderLabels = map[string]string{
	"stateward": "stateward",
	"lockfile":  ".lock file + backoff",
	"flock":     "flock",
	"sqlite":    "SQLite WAL",
}

func label(c string) string {
	if l, ok := contenderLabels[c]; ok {
		return l
	}
	return c
}

// writeReport writes benchmarks.md and the plots into dir.
func writeReport(res *results, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writePlots(res, dir); err != nil {
		return fmt.Errorf("plots: %w", err)
	}
	var b strings.Builder
	reportMarkdown(&b, res)
	return os.WriteFile(filepath.Join(dir, "benchmarks.md"), []byte(b.String()), 0o644)
}

// cell returns the result of a cell, if it ran.
func (res *results) cell(run int, mode, contender, size string, n int) (cellResult, bool) {
	for _, c := range res.Cells {
		if c.Run == run && c.Mode == mode && c.Contender == contender && c.Size == size && c.Agents == n && c.Skipped == "" && c.Error == "" {
			return c, true
		}
	}
	return cellResult{}, false
}

// runs returns the run numbers present.
func (res *results) runs() []int {
	var rs []int
	for _, c := range res.Cells {
		if !slices.Contains(rs, c.Run) {
			rs = append(rs, c.Run)
		}
	}
	for _, c := range res.Catchups {
		if !slices.Contains(rs, c.Run) && !c.Profile {
			rs = append(rs, c.Run)
		}
	}
	slices.Sort(rs)
	return rs
}

// sizesIn returns the size labels of cells of mode, in sweep order.
func (res *results) sizesIn(mode string) []string {
	var out []string
	for _, d := range knownSizes {
		for _, c := range res.Cells {
			if c.Mode == mode && c.Size == d.Label && !slices.Contains(out, d.Label) {
				out = append(out, d.Label)
			}
		}
	}
	for _, c := range res.Cells {
		if c.Mode == mode && !slices.Contains(out, c.Size) {
			out = append(out, c.Size)
		}
	}
	return out
}

func (res *results) agentsIn(mode, size string) []int {
	var out []int
	for _, c := range res.Cells {
		if c.Mode == mode && c.Size == size && !slices.Contains(out, c.Agents) {
			out = append(out, c.Agents)
		}
	}
	slices.Sort(out)
	return out
}

func (res *results) contendersIn() []string {
	var out []string
	for _, c := range []string{"stateward", "lockfile", "flock", "sqlite"} {
		for _, cell := range res.Cells {
			if cell.Contender == c && !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// num formats a number with a precision that suits its size.
func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case math.IsInf(v, 1):
		return "∞"
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return commas(int64(math.Round(v)))
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func commas(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// perRun formats one value per run, "a / b".
func perRun(vals []string) string {
	if len(vals) == 0 {
		return "–"
	}
	return strings.Join(vals, " / ")
}

// target is one target of issue 4 and what each run measured.
type target struct {
	Name    string
	Want    string
	Got     []string // per run
	Met     []bool   // per run
	Missing []string // per run, for the missed ones: by how much
}

// ratioTarget checks got >= want (a larger-is-better value).
func (t *target) atLeast(got, want float64, show string) {
	t.Got = append(t.Got, show)
	ok := got >= want
	t.Met = append(t.Met, ok)
	if !ok {
		if got <= 0 || math.IsNaN(got) {
			t.Missing = append(t.Missing, "nothing measured")
		} else {
			t.Missing = append(t.Missing, fmt.Sprintf("%s× short", num(want/got)))
		}
	} else {
		t.Missing = append(t.Missing, "")
	}
}

// atMost checks got <= want (a smaller-is-better value).
func (t *target) atMost(got, want float64, show string) {
	t.Got = append(t.Got, show)
	ok := got <= want && !math.IsNaN(got)
	t.Met = append(t.Met, ok)
	if !ok {
		if math.IsInf(got, 1) || math.IsNaN(got) {
			t.Missing = append(t.Missing, "some agent did nothing")
		} else {
			t.Missing = append(t.Missing, fmt.Sprintf("%s× over", num(got/want)))
		}
	} else {
		t.Missing = append(t.Missing, "")
	}
}

func (t *target) missing() {
	t.Got = append(t.Got, "not measured")
	t.Met = append(t.Met, false)
	t.Missing = append(t.Missing, "not measured")
}

func (t target) verdict() string {
	n := 0
	for _, m := range t.Met {
		if m {
			n++
		}
	}
	switch {
	case len(t.Met) == 0:
		return "not measured"
	case n == len(t.Met):
		return "**met**"
	case n == 0:
		var by []string
		for _, m := range t.Missing {
			if m != "" {
				by = append(by, m)
			}
		}
		return "**missed**: " + strings.Join(by, " / ")
	default:
		return fmt.Sprintf("met in %d of %d runs", n, len(t.Met))
	}
}

// targets evaluates the targets of issue 4 on res.
func (res *results) targets() []target {
	runs := res.runs()
	var ts []target
	ratio := func(name, size string, other string, mode string, want float64) target {
		t := target{Name: name, Want: fmt.Sprintf("≥ %s×", num(want))}
		for _, run := range runs {
			sw, ok1 := res.cell(run, "fixed", "stateward", size, 16)
			o, ok2 := res.cell(run, mode, other, size, 16)
			if !ok1 || !ok2 {
				t.missing()
				continue
			}
			r := sw.OpsPerSec / o.OpsPerSec
			if o.OpsPerSec == 0 {
				r = math.Inf(1)
			}
			t.atLeast(r, want, fmt.Sprintf("%s× (%s vs %s ops/s)", num(r), num(sw.OpsPerSec), num(o.OpsPerSec)))
		}
		return t
	}
	ts = append(ts,
		ratio("Fixed work, N=16, 150KB: stateward vs .lock file (fixed work)", "150KB", "lockfile", "fixed", 25),
		ratio("Fixed work, N=16, 150KB: stateward vs SQLite (fixed work)", "150KB", "sqlite", "fixed", 3),
		ratio("Fixed work, N=16, 150KB: stateward vs SQLite's starving timed run (closed loop)", "150KB", "sqlite", "closed", 1),
	)
	fair := target{Name: "N=16, 150KB: every stateward agent within 2× of the others (closed loop: most/fewest ops per agent; fixed work: last/first to finish)", Want: "≤ 2×"}
	for _, run := range runs {
		c, ok := res.cell(run, "closed", "stateward", "150KB", 16)
		if !ok {
			fair.missing()
			continue
		}
		show := fmt.Sprintf("%s× (%d..%d ops)", num(c.FairRatio()), c.AgentMin, c.AgentMax)
		worst := c.FairRatio()
		if f, ok := res.cell(run, "fixed", "stateward", "150KB", 16); ok && f.FinishMin > 0 {
			fr := f.FinishMax / f.FinishMin
			show += fmt.Sprintf("; fixed %s× (%.1f..%.1f s)", num(fr), f.FinishMin, f.FinishMax)
			if f.Finished < f.Agents {
				fr = math.Inf(1)
			}
			worst = max(worst, fr)
		}
		fair.atMost(worst, 2, show)
	}
	p99 := target{Name: "N=16, 150KB: stateward p99 latency (closed loop; fixed work)", Want: "≤ 10 ms"}
	for _, run := range runs {
		c, ok := res.cell(run, "closed", "stateward", "150KB", 16)
		if !ok {
			p99.missing()
			continue
		}
		worst, show := c.P99, fmt.Sprintf("%s ms", num(c.P99))
		if f, ok := res.cell(run, "fixed", "stateward", "150KB", 16); ok {
			worst = max(worst, f.P99)
			show += fmt.Sprintf("; %s ms", num(f.P99))
		}
		p99.atMost(worst, 10, show)
	}
	ts = append(ts, fair, p99,
		ratio("Fixed work, N=16, 1.5MB: stateward vs .lock file (fixed work)", "1.5MB", "lockfile", "fixed", 50),
		ratio("Fixed work, N=16, 1.5MB: stateward vs SQLite (fixed work)", "1.5MB", "sqlite", "fixed", 1.5),
	)
	p50 := target{Name: "N=1, 150KB: stateward p50 latency (closed loop)", Want: "≤ 1.5 ms"}
	for _, run := range runs {
		c, ok := res.cell(run, "closed", "stateward", "150KB", 1)
		if !ok {
			p50.missing()
			continue
		}
		p50.atMost(c.P50, 1.5, fmt.Sprintf("%s ms", num(c.P50)))
	}
	cu := target{Name: "Catch-up on the 150KB document: inc intents applied durably per second", Want: "≥ 200,000/s"}
	for _, run := range runs {
		found := false
		for _, c := range res.Catchups {
			if c.Run == run && c.Size == "150KB" && !c.Profile && c.Error == "" {
				cu.atLeast(c.PerSec, 200_000, fmt.Sprintf("%s/s (%s intents in %.1f s)", num(c.PerSec), commas(int64(c.Intents)), c.Elapsed))
				found = true
				break
			}
		}
		if !found {
			cu.missing()
		}
	}
	rss := target{Name: "Watcher peak RSS (VmHWM) vs 4× the document + 30 MiB, worst cell", Want: "≤ 1.00 of the limit"}
	for _, run := range runs {
		worst, show := -1.0, ""
		check := func(what string, rssB, docB int64) {
			if rssB == 0 {
				return
			}
			limit := 4*float64(docB) + 30*(1<<20)
			if r := float64(rssB) / limit; r > worst {
				worst = r
				show = fmt.Sprintf("%s of the limit: %s for %s (limit %s)", num(r), mib(rssB), what, mib(int64(limit)))
			}
		}
		for _, c := range res.Cells {
			if c.Run == run && c.Contender == "stateward" && c.Error == "" && c.Skipped == "" {
				check(fmt.Sprintf("%s %s N=%d", c.Mode, c.Size, c.Agents), c.WatcherRSS, c.DocBytes)
			}
		}
		for _, c := range res.Catchups {
			if c.Run == run && !c.Profile && c.Error == "" {
				check(fmt.Sprintf("catch-up %s", c.Size), c.WatcherRSS, c.DocBytes)
			}
		}
		if worst < 0 {
			rss.missing()
			continue
		}
		rss.atMost(worst, 1, show)
	}
	ts = append(ts, p50, cu, rss)
	return ts
}

func reportMarkdown(b *strings.Builder, res *results) {
	runs := res.runs()
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("# Benchmarks\n\n")
	w("stateward against what agents would use instead: a `.lock` file with\n")
	w("backoff, `flock`, and SQLite. Every number below comes from one command\n")
	w("(see [Commands](#commands)), run on %s, stateward commit `%s`; the file\n", res.Started.Format("2006-01-02"), res.Machine.Commit)
	w("is generated by `bench/cmd/swbench` (the Analysis section is written by\n")
	w("hand). All contenders run in the same sweep, cell after cell, so that the\n")
	w("ratios hold on a noisy machine. %d run(s) of the sweep: where a table cell\n", len(runs))
	w("shows `a / b`, `a` is run 1 and `b` run 2.\n\n")

	w("## Targets (issue 4)\n\n")
	w("| target | wanted | measured (per run) | verdict |\n|---|---|---|---|\n")
	for _, t := range res.targets() {
		w("| %s | %s | %s | %s |\n", t.Name, t.Want, perRun(t.Got), t.verdict())
	}
	w("\n")

	w("## Machine\n\n")
	m := res.Machine
	w("- %d CPUs: %s; memory %s; Linux %s; %s\n", m.CPUs, m.CPUModel, m.MemTotal, m.Kernel, m.Go)
	var loads []float64
	for _, c := range res.Cells {
		if c.Load > 0 {
			loads = append(loads, c.Load)
		}
	}
	if len(loads) > 0 {
		slices.Sort(loads)
		var sum float64
		for _, l := range loads {
			sum += l
		}
		w("- 1-minute load average at the end of each cell: %.1f to %.1f, mean %.1f (the bench itself\n", loads[0], loads[len(loads)-1], sum/float64(len(loads)))
		w("  runs N+1 busy processes; more than that is other work on the machine, which slows\n  every contender in that cell)\n")
	}
	w("- State directories on (`df -T`):\n\n```\n%s\n```\n\n", m.DF)
	if len(res.Floors) > 0 {
		w("Physical floor on that filesystem (median of repeated tries, per run): one\n")
		w("durable replace of the whole document (write a temp file, fsync, rename,\n")
		w("fsync the folder) and one fsync'd append of an intent line.\n\n")
		w("| document | bytes | durable replace, ms | fsync'd append, ms |\n|---|---|---|---|\n")
		for _, size := range knownSizes {
			var rep, app []string
			bytes := 0
			for _, run := range runs {
				for _, f := range res.Floors {
					if f.Run == run && f.Size == size.Label {
						rep = append(rep, num(f.ReplaceMS))
						app = append(app, num(f.AppendMS))
						bytes = f.DocBytes
					}
				}
			}
			if len(rep) > 0 {
				w("| %s | %s | %s | %s |\n", size.Label, commas(int64(bytes)), perRun(rep), perRun(app))
			}
		}
		w("\n")
	}

	w("## Commands\n\n")
	w("From `bench/` (a separate Go module, so that the daemon's dependencies stay\nlean):\n\n")
	w("```\n%s\n```\n\n", res.Command)
	w("took %.0f minutes of wall time. The quick smoke run (well under a minute) is\n", res.WallClock/60)
	w("`go run ./cmd/swbench -quick`; `go run ./cmd/swbench report -in\nresults/<stamp>/results.json -docs ../docs` redraws this page from saved\nresults. See [bench/README.md](../bench/README.md) for every flag.\n\n")
	o := res.Options
	w("Settings: %s per closed- and open-loop cell; open-loop window %d; fixed\n", o.Duration, o.Window)
	if o.K > 0 {
		w("work K = %d ops per agent; ", o.K)
	} else {
		w("work K = each contender's closed-loop ops in the same cell divided by N (so\na fair run lasts about as long), at least 4; ")
	}
	w("starved agents are given up on after %s.\n", o.fixedTimeout())
	w("Lock file: backoff from %s doubling to at most %s, equal jitter; a lock older than %s\n", o.LockBase, o.LockMax, o.LockStale)
	w("or whose holder is dead is removed. SQLite busy_timeout %s.\n\n", o.Busy)

	w("## Method\n\n")
	w(methodText)
	w("\n")

	skipped := map[string]bool{}
	for _, c := range res.Cells {
		if c.Skipped != "" {
			skipped[fmt.Sprintf("%s %s N=%d (%s)", label(c.Contender), c.Size, c.Agents, c.Mode)] = true
		}
	}
	if len(skipped) > 0 {
		var ks []string
		for k := range skipped {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		w("Skipped cells (`-skip`): %s. At 15 MB every lock-file op re-parses and\n", strings.Join(ks, ", "))
		w("re-writes 15 MB, a few ops per second in all; with 64 agents a fixed-work\nrun would take minutes per cell to show the same thing as N=16.\n\n")
	}
	var errs []string
	for _, c := range res.Cells {
		if c.Error != "" {
			errs = append(errs, fmt.Sprintf("- run %d %s %s %s N=%d: %s", c.Run, c.Mode, label(c.Contender), c.Size, c.Agents, c.Error))
		}
	}
	for _, c := range res.Catchups {
		if c.Error != "" {
			errs = append(errs, fmt.Sprintf("- run %d catch-up %s: %s", c.Run, c.Size, c.Error))
		}
	}
	if len(errs) > 0 {
		w("Cells that failed:\n\n%s\n\n", strings.Join(errs, "\n"))
	}

	w("## Plots\n\n")
	w("![Throughput vs agents, closed loop](%s)\n\n", plotThroughput)
	w("![Throughput vs agents, fixed work](%s)\n\n", plotThroughputFixed)
	w("![Latency at N=16, 150KB](%s)\n\n", plotLatency)
	w("![Latency CDF at N=16, 150KB](%s)\n\n", plotLatencyCDF)

	modeTitles := []struct{ mode, title, text string }{
		{"closed", "Closed loop", "Each agent sends one op and waits until it is durable, for the whole run. Per-agent ops: fewest–most ops an agent completed (a 0 is an agent that was starved for the whole run)."},
		{"fixed", "Fixed work", "Every agent must finish K ops; ops/s is all ops over the time until the last agent finished (or gave up). Finish: first and last agent done, in seconds; done: agents that finished their K before the time-out."},
		{"open", "Open loop (pipelined)", fmt.Sprintf("stateward agents keep %d intents in flight (AppendBatch: one write and one fsync for those appended together); the lock-file and flock agents apply %d ops per lock hold (one read-modify-write), SQLite agents %d UPDATEs per transaction. Latency of an op: from its append (or the start of its batch) until its result (or commit).", o.Window, o.Window, o.Window)},
	}
	for _, mt := range modeTitles {
		sizes := res.sizesIn(mt.mode)
		if len(sizes) == 0 {
			continue
		}
		w("## %s\n\n%s\n\n", mt.title, mt.text)
		for _, size := range sizes {
			w("### %s, %s\n\n", mt.title, sizeTitle(res, size))
			modeTable(b, res, mt.mode, size, runs)
			w("\n")
		}
	}

	if len(res.Catchups) > 0 {
		w("## Catch-up\n\n")
		w("The watcher is stopped, %s `inc` intents are appended to %d journals,\n", commas(int64(o.CatchupIntents)), o.CatchupAgents)
		w("then `stateward watch` starts; the time runs from its start until every\nresult is written (recovery included).\n\n")
		w("| document | intents | intents/s | seconds | watcher CPU s | watcher peak RSS | batches | check |\n|---|---|---|---|---|---|---|---|\n")
		for _, size := range knownSizes {
			var ps, el, cpu, rss, bt, chk []string
			n := 0
			for _, run := range runs {
				for _, c := range res.Catchups {
					if c.Run == run && c.Size == size.Label && !c.Profile {
						if c.Error != "" {
							ps = append(ps, "error")
							continue
						}
						n = c.Intents
						ps = append(ps, num(c.PerSec))
						el = append(el, num(c.Elapsed))
						cpu = append(cpu, num(c.WatcherCPU))
						rss = append(rss, mib(c.WatcherRSS))
						bt = append(bt, commas(int64(c.Batches)))
						chk = append(chk, c.Check)
					}
				}
			}
			if len(ps) > 0 {
				w("| %s | %s | %s | %s | %s | %s | %s | %s |\n", sizeTitle(res, size.Label), commas(int64(n)), perRun(ps), perRun(el), perRun(cpu), perRun(rss), perRun(bt), checks(chk))
			}
		}
		w("\n")
	}

	if notes, err := os.ReadFile(res.NotesPath); err == nil && res.NotesPath != "" {
		w("## Analysis\n\n%s\n\n", strings.TrimSpace(string(notes)))
	}

	if len(res.Profiles) > 0 {
		w("## Profiles of the watcher\n\n")
		w("Taken with `-profile`: the bench's own copy of the watch loop\n")
		w("(`swbench watch`: the same replay.Applier and watcher.Watcher as\n`stateward watch`, plus `--cpuprofile`, `--trace` and `--memprofile`).\n")
		w("The CPU profile shows where the watcher computes; the syscall profile\n")
		w("(from the execution trace, `go tool trace -pprof=syscall`) shows where it\n")
		w("waits in system calls (fsync, rename, write) in wall time, which is what\nbounds a watcher that is mostly idle on CPU.\n\n")
		for _, p := range res.Profiles {
			w("### %s\n\n%s\n\nCPU, by flat time:\n\n```\n%s\n```\n\nCPU, cumulative:\n\n```\n%s\n```\n\n", p.Name, p.Result, p.Flat, p.Cum)
			if p.Syscall != "" {
				w("Time blocked in system calls, cumulative (wall time):\n\n```\n%s\n```\n\n", p.Syscall)
			}
			if p.Heap != "" {
				w("Heap in use when the watcher stopped (after a GC), by allocation site:\n\n```\n%s\n```\n\n", p.Heap)
			}
		}
	}

}

func sizeTitle(res *results, size string) string {
	if n, ok := res.DocBytes[size]; ok {
		for _, d := range knownSizes {
			if d.Label == size {
				return fmt.Sprintf("%s document (%s tasks, %s bytes)", size, commas(int64(d.Tasks)), commas(int64(n)))
			}
		}
		return fmt.Sprintf("%s (%s bytes)", size, commas(int64(n)))
	}
	return size
}

func checks(cs []string) string {
	for _, c := range cs {
		if c != "ok" {
			return strings.Join(cs, " / ")
		}
	}
	if len(cs) == 0 {
		return "–"
	}
	return "ok"
}

// modeTable writes the table of one mode and size.
func modeTable(b *strings.Builder, res *results, mode, size string, runs []int) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	switch mode {
	case "fixed":
		w("| N | contender | K | ops/s | p50 ms | p99 ms | max ms | finish first–last, s | done | CPU ms/op | watcher CPU s | watcher RSS | intents/batch | check |\n")
		w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	default:
		w("| N | contender | ops/s | p50 ms | p99 ms | max ms | per-agent ops | CPU ms/op | watcher CPU s | watcher RSS | intents/batch | check |\n")
		w("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	}
	for _, n := range res.agentsIn(mode, size) {
		for _, c := range res.contendersIn() {
			var ks, ops, p50, p99, mx, agents, fin, done, cpuOp, cpu, rss, pb, chk []string
			skip := ""
			for _, run := range runs {
				var cell *cellResult
				for i := range res.Cells {
					x := &res.Cells[i]
					if x.Run == run && x.Mode == mode && x.Contender == c && x.Size == size && x.Agents == n {
						cell = x
					}
				}
				switch {
				case cell == nil:
					continue
				case cell.Skipped != "":
					skip = "skipped"
					continue
				case cell.Error != "":
					ops = append(ops, "error")
					continue
				}
				ks = append(ks, fmt.Sprint(cell.K))
				ops = append(ops, num(cell.OpsPerSec))
				p50 = append(p50, num(cell.P50))
				p99 = append(p99, num(cell.P99))
				mx = append(mx, num(cell.Max))
				agents = append(agents, fmt.Sprintf("%d–%d", cell.AgentMin, cell.AgentMax))
				fin = append(fin, fmt.Sprintf("%.1f–%.1f", cell.FinishMin, cell.FinishMax))
				done = append(done, fmt.Sprintf("%d/%d", cell.Finished, cell.Agents))
				cpuOp = append(cpuOp, num(cell.CPUPerOp()))
				if c == "stateward" {
					cpu = append(cpu, num(cell.WatcherCPU))
					rss = append(rss, mib(cell.WatcherRSS))
					pb = append(pb, num(cell.PerBatch()))
				}
				chk = append(chk, cell.Check)
			}
			if len(ops) == 0 && skip == "" {
				continue
			}
			if len(ops) == 0 {
				if mode == "fixed" {
					w("| %d | %s | | skipped | | | | | | | | | | |\n", n, label(c))
				} else {
					w("| %d | %s | skipped | | | | | | | | | |\n", n, label(c))
				}
				continue
			}
			name := label(c)
			if c == "stateward" {
				name = "**stateward**"
			}
			if mode == "fixed" {
				w("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", n, name, perRun(ks), perRun(ops), perRun(p50), perRun(p99), perRun(mx), perRun(fin), perRun(done), perRun(cpuOp), perRun(cpu), perRun(rss), perRun(pb), checks(chk))
			} else {
				w("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", n, name, perRun(ops), perRun(p50), perRun(p99), perRun(mx), perRun(agents), perRun(cpuOp), perRun(cpu), perRun(rss), perRun(pb), checks(chk))
			}
		}
	}
}

const methodText = `Four contenders, each as separate OS processes (the bench re-runs itself as
each agent), started together on a fresh copy of the same board:

- **stateward**: the real ` + "`stateward watch`" + ` binary, built from the main module
  with ` + "`go build`" + ` at the start of the sweep, default settings; N agent
  processes use the public ` + "`journal`" + ` client (` + "`Writer.Append`" + `, which fsyncs,
  then ` + "`Results.Wait`" + `). The board is written before the watcher starts and
  adopted by it. An op counts when its result says ` + "`applied`" + `, which stateward
  writes only once the document is durable.
- **.lock file + backoff**, the approach stateward replaces: create
  ` + "`tasks.json.lock`" + ` with O_CREAT|O_EXCL (holding the pid); on EEXIST, check
  whether the lock is stale (older than the stale age, or its pid is dead) and
  remove it if so, else back off exponentially with jitter and try again;
  then read the whole file, parse it into generic maps (as a Python or
  JavaScript agent would), apply the op, encode it (sorted keys, two-space
  indentation, like stateward), write a temp file, fsync, rename over the
  document, fsync the folder, and remove the lock.
- **flock**: the same read-modify-write under ` + "`flock(LOCK_EX)`" + ` on a sidecar
  file (the document itself is replaced by rename, so it cannot hold the lock).
- **SQLite WAL** (modernc.org/sqlite, pure Go): ` + "`journal_mode=WAL`" + `,
  ` + "`synchronous=FULL`" + `, ` + "`busy_timeout`" + `; rows instead of a document: a
  ` + "`tasks`" + ` table and a ` + "`counters`" + ` table; claim is ` + "`UPDATE tasks SET\n  status='claimed', assignee=? WHERE id=? AND status='open'`" + `, inc is ` + "`UPDATE\n  counters SET n=n+1 WHERE agent=?`" + `, each in its own transaction (autocommit).
  An UPDATE that runs out of busy_timeout is retried.

The workload: tasks.json holds N counters and T tasks of about 150 bytes each
(T = 100, 1,000, 10,000, 100,000 for 15 KB, 150 KB, 1.5 MB, 15 MB). Each
agent cycles through four ops: claim one of its tasks (stateward: the patch
` + "`[test status open, replace status, replace assignee]`" + `), increment its counter
(` + "`inc`" + `), release the task (` + "`[test assignee is me, replace status, replace\nassignee]`" + `), increment again. Half the ops are claims or releases, half
increments. Agent i owns tasks i, i+N, ... so that the board never runs out
and no op is a no-op conflict: every op writes, for every contender. After
each cell the bench checks the final state: every agent's counter must equal
the increments it was told were applied (plus, for stateward, the ones still
in its journal when the run ended, which are durable and applied later), and
no op may conflict. A lost update shows as a failed check.

Metrics: ops/s counts ops completed within the run; latency is per op, from
the start of the op until the agent knows it is durable; per-agent min/max
shows starvation; watcher CPU is utime+stime from ` + "`/proc/<pid>/stat`" + ` over the
run, watcher peak RSS is VmHWM from ` + "`/proc/<pid>/status`" + ` (whole life of the
watcher, board adoption included).
`
