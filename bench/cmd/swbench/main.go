// Command swbench measures stateward against what agents would use
// instead: a ".lock" file with exponential backoff, flock, and SQLite. It
// runs all contenders side by side in one run, writes the results (JSON), a
// Markdown report and PNG plots. See ../../README.md.
//
//	go run ./cmd/swbench -quick                 # smoke: a small subset, < 1 minute
//	go run ./cmd/swbench -runs 2 -docs ../docs  # the full sweep, twice, and the report
//	go run ./cmd/swbench report -in results/<stamp>/results.json -docs ../docs
//	go run ./cmd/swbench idle -quick                 # idle agents (idle.go)
//
// The same binary is re-run as each agent process ("agent" subcommand) and,
// for profiles only, as a watcher with --cpuprofile ("watch" subcommand).
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // driver "sqlite"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "agent":
			os.Exit(agentMain(os.Args[2:]))
		case "watch":
			os.Exit(watchMain(os.Args[2:]))
		case "report":
			os.Exit(reportMain(os.Args[2:]))
		case "idle":
			os.Exit(idleMain(os.Args[2:]))
		}
	}
	os.Exit(benchMain(os.Args[1:]))
}

// options are the flags of a sweep.
type options struct {
	Quick          bool          `json:"quick"`
	Runs           int           `json:"runs"`
	Duration       time.Duration `json:"duration"`
	Sizes          []string      `json:"sizes"`
	Agents         []int         `json:"agents"`
	Modes          []string      `json:"modes"`
	Contenders     []string      `json:"contenders"`
	OpenSizes      []string      `json:"open_sizes"`
	Window         int           `json:"window"`
	K              int           `json:"k"`
	FixedTimeout   time.Duration `json:"fixed_timeout"`
	CatchupSizes   []string      `json:"catchup_sizes"`
	CatchupIntents int           `json:"catchup_intents"`
	CatchupAgents  int           `json:"catchup_agents"`
	Skip           []string      `json:"skip"`
	Profile        bool          `json:"profile"`
	ProfileCells   []string      `json:"profile_cells"`
	LockBase       time.Duration `json:"lock_base"`
	LockMax        time.Duration `json:"lock_max"`
	LockStale      time.Duration `json:"lock_stale"`
	Busy           time.Duration `json:"busy"`
	Keep           bool          `json:"-"`
}

func (o options) fixedTimeout() time.Duration {
	if o.FixedTimeout > 0 {
		return o.FixedTimeout
	}
	return 4*o.Duration + 10*time.Second
}

// skipped reports whether a cell matches a -skip pattern
// contender/size/agents, where any part may be "*".
func (o options) skipped(s cellSpec) bool {
	for _, p := range o.Skip {
		f := strings.Split(p, "/")
		if len(f) != 3 {
			continue
		}
		m := func(pat, v string) bool { return pat == "*" || strings.EqualFold(pat, v) }
		if m(f[0], s.Contender) && m(f[1], s.Size) && m(f[2], strconv.Itoa(s.Agents)) {
			return true
		}
	}
	return false
}

// results is everything a sweep measured; results.json holds it and the
// report is made from it alone.
type results struct {
	Started   time.Time       `json:"started"`
	Finished  time.Time       `json:"finished"`
	Command   string          `json:"command"`
	Machine   machine         `json:"machine"`
	Options   options         `json:"options"`
	Cells     []cellResult    `json:"cells"`
	Catchups  []catchupResult `json:"catchups"`
	Profiles  []profile       `json:"profiles,omitempty"`
	Floors    []floorResult   `json:"floors,omitempty"`
	NotesPath string          `json:"-"`         // hand-written analysis appended to the report
	DocBytes  map[string]int  `json:"doc_bytes"` // JSON document size per size label
	WallClock float64         `json:"wall_s"`
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func benchMain(args []string) int {
	fs := flag.NewFlagSet("swbench", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "smoke run: 150KB, N=1,16, 1s cells, 5s fixed-work time-out, 20,000-intent catch-up (well under a minute)")
	runs := fs.Int("runs", 1, "repeat the whole sweep this many times (the report shows each run)")
	dur := fs.Duration("duration", 5*time.Second, "length of each closed- and open-loop cell")
	sizes := fs.String("sizes", "15KB,150KB,1.5MB,15MB", "document sizes: 15KB (100 tasks), 150KB (1,000), 1.5MB (10,000), 15MB (100,000)")
	agentsF := fs.String("agents", "1,4,16,64", "agent process counts")
	modes := fs.String("modes", "closed,fixed,open,catchup", "modes to run")
	contenders := fs.String("contenders", "stateward,lockfile,flock,sqlite", "contenders to run")
	openSizes := fs.String("open-sizes", "150KB,1.5MB", "sizes of the open-loop cells")
	window := fs.Int("window", 16, "open loop: intents in flight per stateward agent; ops per lock hold or transaction for the others")
	k := fs.Int("k", 0, "fixed work: ops per agent (0: per contender, the share of its closed-loop ops in the same cell, so that a fair run lasts about -duration)")
	fixedTimeout := fs.Duration("fixed-timeout", 0, "fixed work: stop waiting for starved agents after this long (0: 4x duration + 10s)")
	catchSizes := fs.String("catchup-sizes", "150KB,1.5MB", "sizes of the catch-up runs")
	catchN := fs.Int("catchup-intents", 1_000_000, "catch-up backlog: inc intents in the journals")
	catchA := fs.Int("catchup-agents", 16, "catch-up backlog: agents (journals) it is spread over")
	skip := fs.String("skip", "lockfile/15MB/64,flock/15MB/64", "cells to skip, as contender/size/agents with * wildcards")
	prof := fs.Bool("profile", false, "also profile the watcher (the -profile-cells, and a catch-up) with the bench's own copy of the watch loop")
	profCells := fs.String("profile-cells", "150KB/16,1.5MB/64", "closed-loop cells to profile with -profile, as SIZE/N")
	out := fs.String("out", "", "results folder (default results/<time>)")
	notes := fs.String("notes", "ANALYSIS.md", "hand-written analysis to append to the report, if the file exists")
	docs := fs.String("docs", "", "also write benchmarks.md and the PNGs into this folder (the repository's docs/)")
	swBin := fs.String("stateward-bin", "", "a stateward binary to use instead of building one")
	src := fs.String("src", "", "the stateward module to build (default: found above the working directory)")
	tmp := fs.String("tmp", "", "where the state directories go (default $TMPDIR); it must be a local disk")
	keep := fs.Bool("keep", false, "keep every cell's directory")
	lockBase := fs.Duration("lock-base", time.Millisecond, "lock file: first backoff step")
	lockMax := fs.Duration("lock-max", time.Second, "lock file: longest backoff step")
	lockStale := fs.Duration("lock-stale", 10*time.Second, "lock file: a lock older than this is stale and removed")
	busy := fs.Duration("busy", 5*time.Second, "SQLite busy_timeout")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	opt := options{
		Quick: *quick, Runs: *runs, Duration: *dur, Sizes: splitList(*sizes), Modes: splitList(*modes),
		Contenders: splitList(*contenders), OpenSizes: splitList(*openSizes), Window: *window, K: *k,
		FixedTimeout: *fixedTimeout, CatchupSizes: splitList(*catchSizes), CatchupIntents: *catchN,
		CatchupAgents: *catchA, Skip: splitList(*skip), Profile: *prof, ProfileCells: splitList(*profCells),
		LockBase: *lockBase, LockMax: *lockMax, LockStale: *lockStale, Busy: *busy, Keep: *keep,
	}
	for _, a := range splitList(*agentsF) {
		n, err := strconv.Atoi(a)
		if err != nil || n < 1 || n > 64 {
			fmt.Fprintf(os.Stderr, "swbench: -agents: %q is not a count from 1 to 64\n", a)
			return 2
		}
		opt.Agents = append(opt.Agents, n)
	}
	if opt.Quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("duration", func() { opt.Duration = time.Second })
		def("sizes", func() { opt.Sizes = []string{"150KB"} })
		def("agents", func() { opt.Agents = []int{1, 16} })
		def("open-sizes", func() { opt.OpenSizes = []string{"150KB"} })
		def("catchup-sizes", func() { opt.CatchupSizes = []string{"150KB"} })
		def("catchup-intents", func() { opt.CatchupIntents = 20_000 })
		def("fixed-timeout", func() { opt.FixedTimeout = 5 * time.Second })
	}
	if err := sweep(opt, *out, *docs, *swBin, *src, *tmp, *notes, args); err != nil {
		fmt.Fprintf(os.Stderr, "swbench: %v\n", err)
		return 1
	}
	return 0
}

// findModule returns the stateward module's folder: src, or the first
// folder at or above the working directory whose go.mod declares it.
func findModule(src string) (string, error) {
	if src != "" {
		return filepath.Abs(src)
	}
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil {
			sc := bufio.NewScanner(strings.NewReader(string(data)))
			for sc.Scan() {
				if strings.TrimSpace(sc.Text()) == "module github.com/stateward/stateward" {
					return d, nil
				}
			}
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("no stateward module at or above the working directory: give -src or -stateward-bin")
		}
		d = parent
	}
}

func sweep(opt options, out, docs, swBin, src, tmp, notes string, args []string) error {
	var sizes, openSizes, catchSizes []docSize
	for _, l := range []struct {
		in  []string
		out *[]docSize
	}{{opt.Sizes, &sizes}, {opt.OpenSizes, &openSizes}, {opt.CatchupSizes, &catchSizes}} {
		for _, s := range l.in {
			d, err := parseSize(s)
			if err != nil {
				return err
			}
			*l.out = append(*l.out, d)
		}
	}
	for _, c := range opt.Contenders {
		if !slices.Contains([]string{"stateward", "lockfile", "flock", "sqlite"}, c) {
			return fmt.Errorf("unknown contender %q", c)
		}
	}
	for _, m := range opt.Modes {
		if !slices.Contains([]string{"closed", "fixed", "open", "catchup"}, m) {
			return fmt.Errorf("unknown mode %q", m)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if out == "" {
		out = filepath.Join("results", time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if tmp == "" {
		tmp = os.TempDir()
	}
	base, err := os.MkdirTemp(tmp, "swbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)

	res := &results{Started: time.Now(), Options: opt, DocBytes: map[string]int{}, NotesPath: notes}
	res.Command = "go run ./cmd/swbench " + strings.Join(args, " ")
	var mod string
	if swBin == "" {
		if mod, err = findModule(src); err != nil {
			return err
		}
		swBin = filepath.Join(base, "stateward")
		fmt.Fprintf(os.Stderr, "building stateward from %s\n", mod)
		cmd := exec.Command("go", "build", "-o", swBin, "./cmd/stateward")
		cmd.Dir = mod
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build stateward: %w", err)
		}
	} else if swBin, err = filepath.Abs(swBin); err != nil {
		return err
	}
	res.Machine = describeMachine(base, mod)
	r := &runner{opt: opt, self: self, swBin: []string{swBin}, base: base, boards: map[int][]byte{}, sqlites: map[int]string{}, out: out}
	for _, s := range sizes {
		res.DocBytes[s.Label] = len(r.board(s.Tasks))
	}
	for _, s := range catchSizes {
		res.DocBytes[s.Label] = len(r.board(s.Tasks))
	}
	save := func() error {
		res.Finished = time.Now()
		res.WallClock = res.Finished.Sub(res.Started).Seconds()
		data, err := json.MarshalIndent(res, "", " ")
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(out, "results.json"), data, 0o644)
	}
	fmt.Fprintf(os.Stderr, "%s\nresults in %s\n", res.Machine.summary(), out)

	has := func(m string) bool { return slices.Contains(opt.Modes, m) }
	for run := 1; run <= opt.Runs; run++ {
		for _, size := range sizes {
			n := 30
			if size.Tasks > 10000 {
				n = 10
			}
			f, err := measureFloor(base, size.Label, r.board(size.Tasks), n)
			if err != nil {
				return fmt.Errorf("measure the floor: %w", err)
			}
			f.Run = run
			fmt.Fprintf(os.Stderr, "run %d floor  %-5s durable replace %.2fms, fsync'd append %.2fms\n", run, size.Label, f.ReplaceMS, f.AppendMS)
			res.Floors = append(res.Floors, f)
		}
		for _, size := range sizes {
			for _, n := range opt.Agents {
				closed := map[string]cellResult{}
				for _, mode := range []string{"closed", "fixed", "open"} {
					if !has(mode) || (mode == "open" && !slices.Contains(openSizes, size)) {
						continue
					}
					for _, c := range opt.Contenders {
						s := cellSpec{Run: run, Mode: mode, Contender: c, Size: size.Label, Tasks: size.Tasks, Agents: n, Duration: opt.Duration.Seconds()}
						switch mode {
						case "fixed":
							s.Duration = 0
							s.K = opt.K
							if s.K == 0 {
								s.K = autoK(closed[c], n, opt)
							}
						case "open":
							s.Window = opt.Window
						}
						var cr cellResult
						if opt.skipped(s) {
							cr = cellResult{cellSpec: s, Skipped: "skipped (-skip)"}
						} else {
							t0 := time.Now()
							cr = r.runCell(s)
							fmt.Fprintf(os.Stderr, "%s %s (%.1fs)\n", s, cr.line(), time.Since(t0).Seconds())
						}
						if mode == "closed" {
							closed[c] = cr
						}
						res.Cells = append(res.Cells, cr)
						if err := save(); err != nil {
							return err
						}
					}
				}
			}
		}
		if has("catchup") && slices.Contains(opt.Contenders, "stateward") {
			for _, size := range catchSizes {
				t0 := time.Now()
				cu := r.runCatchup(run, size, opt.CatchupAgents, opt.CatchupIntents, false)
				fmt.Fprintf(os.Stderr, "run %d catchup %-5s %d intents: %s (%.1fs)\n", run, size.Label, cu.Intents, cu.line(), time.Since(t0).Seconds())
				res.Catchups = append(res.Catchups, cu)
				if err := save(); err != nil {
					return err
				}
			}
		}
	}
	if opt.Profile {
		res.Profiles = r.profiles(opt)
		if err := save(); err != nil {
			return err
		}
	}
	if err := save(); err != nil {
		return err
	}
	if err := writeReport(res, out); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "report: %s\n", filepath.Join(out, "benchmarks.md"))
	if docs != "" {
		if err := writeReport(res, docs); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "report: %s\n", filepath.Join(docs, "benchmarks.md"))
	}
	return nil
}

// autoK is the fixed-work share: the contender's closed-loop ops in the
// same cell divided among the agents, so that a fair run lasts about as long
// as the closed-loop one; at least 4 (one claim, inc, release, inc cycle)
// when that fits, and at least 1.
func autoK(closed cellResult, n int, opt options) int {
	k := int(math.Round(float64(closed.Ops) / float64(n)))
	if k >= 2 {
		k = max(k, 4)
	}
	return max(k, 1)
}

func (r cellResult) line() string {
	if r.Error != "" {
		return "ERROR " + r.Error
	}
	s := fmt.Sprintf("%8.0f ops/s  p50 %7.2fms p99 %8.2fms max %8.1fms  agents %d..%d", r.OpsPerSec, r.P50, r.P99, r.Max, r.AgentMin, r.AgentMax)
	if r.Mode == "fixed" {
		s += fmt.Sprintf(" k=%d done %d/%d in %.1f..%.1fs", r.K, r.Finished, r.Agents, r.FinishMin, r.FinishMax)
	}
	if r.WatcherRSS > 0 {
		s += fmt.Sprintf("  watcher %.1fs CPU %s, %.1f intents/batch", r.WatcherCPU, mib(r.WatcherRSS), r.PerBatch())
	}
	if r.Check != "ok" {
		s += "  CHECK: " + r.Check
	}
	return s
}

func (c catchupResult) line() string {
	if c.Error != "" {
		return "ERROR " + c.Error
	}
	s := fmt.Sprintf("%.0f intents/s in %.1fs, watcher %.1fs CPU, %s, %d batches", c.PerSec, c.Elapsed, c.WatcherCPU, mib(c.WatcherRSS), c.Batches)
	if c.Check != "ok" {
		s += "  CHECK: " + c.Check
	}
	return s
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
