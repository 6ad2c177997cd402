package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/stateward/stateward/journal"
)

// cellSpec names one measurement: a contender in a mode, on a document
// size, with N agents.
type cellSpec struct {
	Run       int     `json:"run"`
	Mode      string  `json:"mode"` // closed, fixed, open
	Contender string  `json:"contender"`
	Size      string  `json:"size"`
	Tasks     int     `json:"tasks"`
	Agents    int     `json:"agents"`
	Duration  float64 `json:"duration_s"`       // closed, open
	K         int     `json:"k,omitempty"`      // fixed
	Window    int     `json:"window,omitempty"` // open
	Profile   bool    `json:"profile,omitempty"`
}

// profileKind names the profile files of a profiled cell.
func (s cellSpec) profileKind() string {
	return fmt.Sprintf("%s-%s-N%d", s.Mode, s.Size, s.Agents)
}

func (s cellSpec) String() string {
	return fmt.Sprintf("run %d %-6s %-5s N=%-2d %-9s", s.Run, s.Mode, s.Size, s.Agents, s.Contender)
}

// cellResult is what a cell measured.
type cellResult struct {
	cellSpec
	DocBytes   int64          `json:"doc_bytes"`
	Ops        int            `json:"ops"`
	Elapsed    float64        `json:"elapsed_s"` // closed, open: the duration; fixed: until the last agent finished
	OpsPerSec  float64        `json:"ops_per_s"`
	P50        float64        `json:"p50_ms"`
	P99        float64        `json:"p99_ms"`
	Max        float64        `json:"max_ms"`
	Mean       float64        `json:"mean_ms"`
	AgentMin   int            `json:"agent_min_ops"`
	AgentMax   int            `json:"agent_max_ops"`
	FinishMin  float64        `json:"finish_min_s,omitempty"` // fixed: first agent done
	FinishMax  float64        `json:"finish_max_s,omitempty"` // fixed: last agent done
	Finished   int            `json:"finished,omitempty"`     // fixed: agents that did all K ops
	Conflicts  int            `json:"conflicts"`
	Late       int            `json:"late"`
	WatcherCPU float64        `json:"watcher_cpu_s,omitempty"`
	WatcherRSS int64          `json:"watcher_rss_bytes,omitempty"`
	AgentsCPU  float64        `json:"agents_cpu_s"`
	Stats      map[string]int `json:"stats,omitempty"`
	Commits    uint64         `json:"commits,omitempty"` // stateward: intents the watcher processed during the cell
	Batches    uint64         `json:"batches,omitempty"` // stateward: batches it committed for them
	Load       float64        `json:"load"`              // 1-minute load average at the end of the cell (other work on the machine shows here)
	Check      string         `json:"check"`             // "ok", or what the final state got wrong
	Error      string         `json:"error,omitempty"`
	Skipped    string         `json:"skipped,omitempty"`
	Quantiles  []float64      `json:"quantiles_ms,omitempty"` // latency at cdfQs
}

// cdfQs are the quantiles kept for the latency plots.
var cdfQs = func() []float64 {
	var qs []float64
	for i := 0; i <= 100; i++ {
		qs = append(qs, float64(i)/100)
	}
	return append(qs, 0.995, 0.999)
}()

// CPUPerOp is the CPU time of all the contender's processes (agents, and
// the watcher during the run) per op, in ms.
func (r cellResult) CPUPerOp() float64 {
	if r.Ops == 0 {
		return math.NaN()
	}
	return (r.AgentsCPU + r.WatcherCPU) / float64(r.Ops) * 1000
}

// PerBatch is the mean number of intents per watcher batch.
func (r cellResult) PerBatch() float64 {
	if r.Batches == 0 {
		return math.NaN()
	}
	return float64(r.Commits) / float64(r.Batches)
}

// FairRatio is the fastest agent's ops over the slowest's (Inf when one
// did nothing).
func (r cellResult) FairRatio() float64 {
	if r.AgentMin == 0 {
		if r.AgentMax == 0 {
			return math.NaN()
		}
		return math.Inf(1)
	}
	return float64(r.AgentMax) / float64(r.AgentMin)
}

// runner runs cells.
type runner struct {
	opt     options
	self    string   // this executable, re-run as agents
	swBin   []string // the stateward binary
	base    string   // where cell directories go
	boards  map[int][]byte
	sqlites map[int]string // template database per task count
	out     string         // results folder (profiles go there)
}

// tracePath is where the profiling watcher of kind writes its execution
// trace.
func (r *runner) tracePath(kind string) string {
	p, _ := filepath.Abs(filepath.Join(r.out, "watcher-"+kind+".trace"))
	return p
}

// memPath is where the profiling watcher of kind writes its heap profile.
func (r *runner) memPath(kind string) string {
	p, _ := filepath.Abs(filepath.Join(r.out, "watcher-"+kind+".heap.pprof"))
	return p
}

// profilePath is where the profiling watcher of kind writes its profile.
func (r *runner) profilePath(kind string) string {
	p, _ := filepath.Abs(filepath.Join(r.out, "watcher-"+kind+".pprof"))
	return p
}

// board returns the document bytes for tasks tasks.
func (r *runner) board(tasks int) []byte {
	if b, ok := r.boards[tasks]; ok {
		return b
	}
	b := boardJSON(tasks)
	r.boards[tasks] = b
	return b
}

// sqliteTemplate returns a database with the board, built once per size.
func (r *runner) sqliteTemplate(tasks int) (string, error) {
	if p, ok := r.sqlites[tasks]; ok {
		return p, nil
	}
	p := filepath.Join(r.base, fmt.Sprintf("template-%d.db", tasks))
	os.Remove(p)
	if err := makeSQLite(p, tasks, 64); err != nil {
		return "", fmt.Errorf("build SQLite board: %w", err)
	}
	r.sqlites[tasks] = p
	return p, nil
}

// agentProc is a running agent process.
type agentProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	stderr *strings.Builder
}

// runCell measures one cell in a fresh directory.
func (r *runner) runCell(s cellSpec) (res cellResult) {
	res = cellResult{cellSpec: s}
	dir, err := os.MkdirTemp(r.base, "cell-")
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer func() {
		if res.Error == "" && !r.opt.Keep {
			os.RemoveAll(dir)
		} else if res.Error != "" {
			res.Error += " (kept " + dir + ")"
		}
	}()
	if err := r.cell(s, dir, &res); err != nil {
		res.Error = err.Error()
	}
	return res
}

func (r *runner) cell(s cellSpec, dir string, res *cellResult) error {
	// The board.
	if s.Contender == "sqlite" {
		tmpl, err := r.sqliteTemplate(s.Tasks)
		if err != nil {
			return err
		}
		if err := copyFile(tmpl, filepath.Join(dir, sqliteName)); err != nil {
			return err
		}
		fi, _ := os.Stat(tmpl)
		res.DocBytes = fi.Size()
	} else {
		b := r.board(s.Tasks)
		if err := os.WriteFile(filepath.Join(dir, docName), b, 0o644); err != nil {
			return err
		}
		res.DocBytes = int64(len(b))
	}

	// The watcher, which adopts the board as its first version.
	var w *watcherProc
	if s.Contender == "stateward" {
		bin := r.swBin
		var extra []string
		if s.Profile {
			bin = []string{r.self}
			extra = []string{"--cpuprofile", r.profilePath(s.profileKind()), "--trace", r.tracePath(s.profileKind()), "--memprofile", r.memPath(s.profileKind())}
		}
		var err error
		if w, err = startWatcher(bin, dir, extra...); err != nil {
			return err
		}
		defer func() {
			if w != nil {
				w.cmd.Process.Kill()
				<-w.exited
			}
		}()
		if err := w.waitReady(dir); err != nil {
			return err
		}
		if err := adopt(dir); err != nil {
			return fmt.Errorf("adopt the board: %w: %s", err, w.tail())
		}
	}

	// The agents: started, set up, then released together.
	timeout := r.opt.fixedTimeout()
	agents := make([]*agentProc, s.Agents)
	defer func() {
		for _, a := range agents {
			if a != nil && a.cmd.ProcessState == nil {
				a.cmd.Process.Kill()
				a.cmd.Wait()
			}
		}
	}()
	for i := range agents {
		c := agentConfig{
			Contender: s.Contender, Dir: dir, Index: i, Agents: s.Agents, Tasks: s.Tasks,
			Mode: s.Mode, Duration: time.Duration(s.Duration * float64(time.Second)), K: s.K, Timeout: timeout, Window: s.Window,
			LockBase: r.opt.LockBase, LockMax: r.opt.LockMax, LockStale: r.opt.LockStale, Busy: r.opt.Busy,
		}
		a, err := r.startAgent(c)
		if err != nil {
			return err
		}
		agents[i] = a
	}
	for _, a := range agents {
		line, err := a.out.ReadString('\n')
		if line != "ready\n" {
			a.cmd.Wait()
			return fmt.Errorf("agent not ready: %q %v: %s", line, err, a.stderr)
		}
	}
	var cpu0 time.Duration
	var commit0, batch0 uint64
	if w != nil {
		cpu0, _ = procCPU(w.pid())
		commit0, batch0 = watcherCounters(dir)
	}
	for _, a := range agents {
		if _, err := io.WriteString(a.stdin, "go\n"); err != nil {
			return fmt.Errorf("start agent: %w", err)
		}
	}

	// Their summaries.
	sums := make([]agentSummary, len(agents))
	var errs []error
	for i, a := range agents {
		derr := json.NewDecoder(a.out).Decode(&sums[i])
		werr := a.cmd.Wait()
		if werr != nil || derr != nil {
			errs = append(errs, fmt.Errorf("%s: %v %v: %s", agentName(i), werr, derr, strings.TrimSpace(a.stderr.String())))
		}
		res.AgentsCPU += rusageCPU(a.cmd.ProcessState).Seconds()
	}
	if w != nil {
		cpu1, _ := procCPU(w.pid())
		res.WatcherCPU = (cpu1 - cpu0).Seconds()
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	// Drain the watcher (intents still in flight at the end are durable and
	// will be applied), then check the final state.
	if w != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for _, sum := range sums {
			if sum.LastSeq > 0 {
				if _, err := journal.WaitResult(ctx, dir, sum.Name, sum.LastSeq); err != nil {
					return fmt.Errorf("drain %s: %w", sum.Name, err)
				}
			}
		}
		res.WatcherRSS, _ = procHWM(w.pid())
		c1, b1 := watcherCounters(dir)
		res.Commits, res.Batches = c1-commit0, b1-batch0
		err := w.stop()
		w = nil
		if err != nil {
			return err
		}
	}
	res.Load = loadAvg()
	summarize(res, sums, s, timeout)
	res.Check = r.check(s, dir, sums)
	return nil
}

// adopt sends the first intent, a no-op test, so that the watcher adopts
// the board written before it started, and waits for its result.
func adopt(dir string) error {
	wr, err := journal.OpenWriter(dir, "setup")
	if err != nil {
		return err
	}
	defer wr.Close()
	rec, err := wr.Append(journal.Intent{File: docName, Patch: []byte(`[{"op":"test","path":"/counters","value":{}}]`)})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := journal.WaitResult(ctx, dir, "setup", rec.Seq)
	if err != nil {
		return err
	}
	if res.Status != journal.StatusApplied {
		return fmt.Errorf("%s: %s", res.Status, res.Error)
	}
	return nil
}

func (r *runner) startAgent(c agentConfig) (*agentProc, error) {
	cmd := exec.Command(r.self, c.args()...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	return &agentProc{cmd: cmd, stdin: stdin, out: bufio.NewReaderSize(out, 1<<16), stderr: &stderr}, nil
}

// summarize fills res from the agents' summaries.
func summarize(res *cellResult, sums []agentSummary, s cellSpec, timeout time.Duration) {
	var lat []int64
	res.AgentMin = math.MaxInt
	var finMin, finMax int64 = math.MaxInt64, 0
	for _, sum := range sums {
		res.Ops += sum.Ops
		res.Late += sum.Late
		res.Conflicts += sum.Conflicts
		res.AgentMin = min(res.AgentMin, sum.Ops)
		res.AgentMax = max(res.AgentMax, sum.Ops)
		lat = append(lat, sum.Lat...)
		fin := sum.FinishNS
		if s.Mode == "fixed" {
			if sum.Done {
				res.Finished++
			} else {
				fin = int64(timeout)
			}
		}
		finMin, finMax = min(finMin, fin), max(finMax, fin)
		for k, v := range sum.Stats {
			if res.Stats == nil {
				res.Stats = map[string]int{}
			}
			res.Stats[k] += v
		}
	}
	if len(sums) == 0 {
		res.AgentMin = 0
	}
	if s.Mode == "fixed" {
		res.Elapsed = time.Duration(finMax).Seconds()
		res.FinishMin, res.FinishMax = time.Duration(finMin).Seconds(), time.Duration(finMax).Seconds()
	} else {
		res.Elapsed = s.Duration
	}
	if res.Elapsed > 0 {
		res.OpsPerSec = float64(res.Ops) / res.Elapsed
	}
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(lat)))) - 1
		i = max(0, min(i, len(lat)-1))
		return float64(lat[i]) / 1e6
	}
	res.P50, res.P99, res.Max = q(0.5), q(0.99), float64(lat[len(lat)-1])/1e6
	var total float64
	for _, l := range lat {
		total += float64(l)
	}
	res.Mean = total / float64(len(lat)) / 1e6
	for _, p := range cdfQs {
		if p == 0 {
			res.Quantiles = append(res.Quantiles, float64(lat[0])/1e6)
		} else {
			res.Quantiles = append(res.Quantiles, q(p))
		}
	}
}

// check compares the final counters with what the agents were told: a lost
// update shows here.
func (r *runner) check(s cellSpec, dir string, sums []agentSummary) string {
	counters, err := readCounters(s.Contender, dir)
	if err != nil {
		return "cannot read final state: " + err.Error()
	}
	var bad []string
	for _, sum := range sums {
		got := counters[sum.Name]
		want := sum.IncsDone + sum.IncsMaybe
		if got != want {
			bad = append(bad, fmt.Sprintf("%s counter %d, want %d", sum.Name, got, want))
		}
	}
	conflicts := 0
	for _, sum := range sums {
		conflicts += sum.Conflicts
	}
	if conflicts > 0 {
		bad = append(bad, fmt.Sprintf("%d unexpected conflicts", conflicts))
	}
	if len(bad) == 0 {
		return "ok"
	}
	if len(bad) > 3 {
		bad = append(bad[:3], fmt.Sprintf("and %d more", len(bad)-3))
	}
	return strings.Join(bad, "; ")
}

// readCounters reads the counters of the final state.
func readCounters(contender, dir string) (map[string]int, error) {
	out := map[string]int{}
	if contender == "sqlite" {
		db, err := sql.Open("sqlite", sqliteDSN(filepath.Join(dir, sqliteName), 5000))
		if err != nil {
			return nil, err
		}
		defer db.Close()
		rows, err := db.Query(`SELECT agent, n FROM counters`)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			var a string
			var n int
			if err := rows.Scan(&a, &n); err != nil {
				return nil, err
			}
			out[a] = n
		}
		return out, rows.Err()
	}
	data, err := os.ReadFile(filepath.Join(dir, docName))
	if err != nil {
		return nil, err
	}
	var doc struct {
		Counters map[string]int `json:"counters"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	return doc.Counters, nil
}
