package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/stateward/stateward/journal"
)

// command returns an *exec.Cmd that runs this program with args. Tests
// replace it to re-run the test binary.
func (m *Main) command(args ...string) (*exec.Cmd, error) {
	if m.Self != nil {
		return m.Self(args...), nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	return exec.Command(exe, args...), nil
}

// agentSummary is what a demo agent prints when it is done.
type agentSummary struct {
	Agent     string   `json:"agent"`
	Claimed   []string `json:"claimed"`
	Conflicts int      `json:"conflicts"`
	Intents   int      `json:"intents"`
	Results   []uint64 `json:"results"` // seqs of the results it got, in order
}

func (m *Main) demo(ctx context.Context, args []string) int {
	fs := m.flagSet("demo", "demo [--agents N] [--tasks N] [--dir DIR]")
	agents := fs.Int("agents", 8, "agent processes racing for the tasks")
	tasks := fs.Int("tasks", 100, "tasks on the board")
	dir := fs.String("dir", "", "state directory to use (default: a new temporary one)")
	pos, err := parse(fs, args)
	if err != nil {
		return usageExit(err)
	}
	if len(pos) > 0 {
		return m.usageErr("demo", "unexpected argument %q", pos[0])
	}
	if *agents < 1 || *tasks < 1 {
		return m.usageErr("demo", "--agents and --tasks must be >= 1")
	}
	d := *dir
	if d == "" {
		if d, err = os.MkdirTemp("", "stateward-demo-"); err != nil {
			return m.fail("demo", err)
		}
	} else if err := os.MkdirAll(d, 0o755); err != nil {
		return m.fail("demo", err)
	} else if _, err := os.Stat(filepath.Join(d, ".stateward")); err == nil {
		return m.usageErr("demo", "%s has been used before: give a new --dir (the demo sets up its own board)", d)
	}
	fmt.Fprintf(m.Stdout, "stateward demo: %d agents race for %d tasks in %s\n", *agents, *tasks, d)

	stopWatcher, err := m.startWatcher(d)
	if err != nil {
		return m.fail("demo", err)
	}
	if err := setupBoard(ctx, d, *tasks); err != nil {
		stopWatcher()
		return m.fail("demo", err)
	}

	start := time.Now()
	sums, err := m.runAgents(ctx, d, *agents, func() { m.progress(ctx, d, *tasks, start) })
	elapsed := time.Since(start)
	if werr := stopWatcher(); err == nil && werr != nil {
		err = fmt.Errorf("watcher: %w (log in %s)", werr, filepath.Join(d, "watch.log"))
	}
	if err != nil {
		return m.fail("demo", err)
	}
	fmt.Fprintln(m.Stdout)
	return m.demoReport(d, sums, *tasks, elapsed)
}

// startWatcher runs `stateward watch` on d, logging to d/watch.log, and
// waits until it has recovered. It returns the function that stops it.
func (m *Main) startWatcher(d string) (stop func() error, err error) {
	logf, err := os.Create(filepath.Join(d, "watch.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd, err := m.command("watch", "--dir", d, "--log-level", "info")
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start watcher: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		return <-exited
	}
	logName := filepath.Join(d, "watch.log")
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		if _, err := os.Stat(filepath.Join(d, journal.VersionsPath)); err == nil {
			return stop, nil
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("watcher exited (%v); see %s", err, logName)
		case <-deadline.C:
			cmd.Process.Kill()
			<-exited
			return nil, fmt.Errorf("watcher not ready after 30s; see %s", logName)
		case <-poll.C:
		}
	}
}

// setupBoard creates tasks.json and metrics.json through a journal, as any
// agent would.
func setupBoard(ctx context.Context, d string, n int) error {
	board := map[string]any{}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("task-%04d", i)
		board[id] = map[string]any{"title": fmt.Sprintf("Task %d", i), "status": "open", "assignee": nil}
	}
	w, err := journal.OpenWriter(d, "setup")
	if err != nil {
		return err
	}
	defer w.Close()
	res, err := journal.OpenResults(d, "setup")
	if err != nil {
		return err
	}
	defer res.Close()
	zero := uint64(0)
	for _, doc := range []struct {
		name  string
		value any
	}{
		{"tasks.json", map[string]any{"tasks": board}},
		{"metrics.json", map[string]any{"claims": map[string]any{}, "conflicts": map[string]any{}}},
	} {
		p, err := json.Marshal([]any{map[string]any{"op": "add", "path": "", "value": doc.value}})
		if err != nil {
			return err
		}
		rec, err := w.Append(journal.Intent{File: doc.name, Patch: p, IfVersion: &zero})
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		r, err := res.Wait(wctx, rec.Seq)
		cancel()
		if err != nil {
			return err
		}
		if r.Status != journal.StatusApplied {
			return fmt.Errorf("create %s: %s: %s (is %s a fresh directory?)", doc.name, r.Status, r.Error, d)
		}
	}
	return nil
}

// runAgents starts n demo agents and collects their summaries, calling tick
// while they run.
func (m *Main) runAgents(ctx context.Context, d string, n int, tick func()) ([]agentSummary, error) {
	type done struct {
		sum agentSummary
		err error
	}
	results := make(chan done, n)
	// On an early return (a failed start, or ctx done), stop the agents
	// already started rather than leave them behind.
	var started []*exec.Cmd
	finished := false
	defer func() {
		if !finished {
			for _, cmd := range started {
				cmd.Process.Kill()
			}
		}
	}()
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("agent-%d", i)
		cmd, err := m.command("demo-agent", "--dir", d, "--agent", name)
		if err != nil {
			return nil, err
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		started = append(started, cmd)
		go func() {
			var sum agentSummary
			derr := json.NewDecoder(bufio.NewReader(out)).Decode(&sum)
			werr := cmd.Wait()
			if werr != nil {
				derr = fmt.Errorf("%s: %w: %s", name, werr, strings.TrimSpace(stderr.String()))
			}
			results <- done{sum, derr}
		}()
	}
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	var sums []agentSummary
	var errs []error
	for len(sums)+len(errs) < n {
		select {
		case r := <-results:
			if r.err != nil {
				errs = append(errs, r.err)
			} else {
				sums = append(sums, r.sum)
			}
		case <-ticker.C:
			tick()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	finished = true
	tick()
	return sums, errors.Join(errs...)
}

// progress prints one line of live progress.
func (m *Main) progress(ctx context.Context, d string, total int, start time.Time) {
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	doc, err := journal.ReadDocument(rctx, d, "tasks.json")
	if err != nil {
		return
	}
	board, err := parseBoard(doc.Data)
	if err != nil {
		return
	}
	claimed := 0
	for _, t := range board {
		if t.Status != "open" {
			claimed++
		}
	}
	v, _ := journal.ReadVersions(d)
	secs := time.Since(start).Seconds()
	fmt.Fprintf(m.Stdout, "\r  claimed %3d/%d   commits %6d   %6.0f intents/s   %5.1fs", claimed, total, v.Commit, float64(v.Commit)/max(secs, 0.001), secs)
}

type task struct {
	Status   string  `json:"status"`
	Assignee *string `json:"assignee"`
}

func parseBoard(data []byte) (map[string]task, error) {
	var doc struct {
		Tasks map[string]task `json:"tasks"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	return doc.Tasks, nil
}

// demoReport checks the board against what the agents say and prints the
// table.
func (m *Main) demoReport(d string, sums []agentSummary, total int, elapsed time.Duration) int {
	slices.SortFunc(sums, func(a, b agentSummary) int { return strings.Compare(a.Agent, b.Agent) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tdoc, err := journal.ReadDocument(ctx, d, "tasks.json")
	if err != nil {
		return m.fail("demo", err)
	}
	mdoc, err := journal.ReadDocument(ctx, d, "metrics.json")
	if err != nil {
		return m.fail("demo", err)
	}
	board, err := parseBoard(tdoc.Data)
	if err != nil {
		return m.fail("demo", err)
	}
	var metrics struct {
		Claims map[string]int `json:"claims"`
	}
	if err := json.Unmarshal(mdoc.Data, &metrics); err != nil {
		return m.fail("demo", err)
	}
	double, lost, intents := 0, 0, 0
	owner := map[string]string{}
	tw := tabwriter.NewWriter(m.Stdout, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "AGENT\tCLAIMS\tCONFLICTS\tINTENTS\tCOUNTER\t")
	for _, s := range sums {
		for _, id := range s.Claimed {
			if prev, ok := owner[id]; ok {
				double++
				fmt.Fprintf(m.Stderr, "double claim: %s by %s and %s\n", id, prev, s.Agent)
			}
			owner[id] = s.Agent
			if t := board[id]; t.Assignee == nil || *t.Assignee != s.Agent {
				lost++
			}
		}
		intents += s.Intents
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t\n", s.Agent, len(s.Claimed), s.Conflicts, s.Intents, metrics.Claims[s.Agent])
	}
	tw.Flush()
	countersOK := true
	for _, s := range sums {
		countersOK = countersOK && metrics.Claims[s.Agent] == len(s.Claimed)
	}
	claimedOnBoard := 0
	for _, t := range board {
		if t.Assignee != nil {
			claimedOnBoard++
		}
	}
	fmt.Fprintf(m.Stdout, "\n%d intents in %s: %.0f intents/s\n", intents, elapsed.Round(time.Millisecond), float64(intents)/elapsed.Seconds())
	fmt.Fprintf(m.Stdout, "tasks claimed: %d of %d (board says %d)\n", len(owner), total, claimedOnBoard)
	fmt.Fprintf(m.Stdout, "double claims: %d\n", double)
	fmt.Fprintf(m.Stdout, "claims the board lost: %d\n", lost)
	fmt.Fprintf(m.Stdout, "counters equal to claims: %v\n", countersOK)
	fmt.Fprintf(m.Stdout, "\nLook at what it left (build the binary first: go build -o stateward ./cmd/stateward):\n  ./stateward status --dir %[1]s\n  ./stateward read --dir %[1]s tasks.json\n  ./stateward replay --dir %[1]s --verify\n  ls %[1]s/journal %[1]s/results\n", d)
	if double > 0 || lost > 0 || !countersOK || len(owner) != total || claimedOnBoard != total {
		fmt.Fprintln(m.Stderr, "stateward demo: the board does not add up (see above)")
		return exitError
	}
	return exitOK
}

func (m *Main) demoAgent(ctx context.Context, args []string) int {
	fs := m.flagSet("demo-agent", "demo-agent --dir DIR --agent NAME")
	dir := fs.String("dir", "", "state directory")
	agent := fs.String("agent", "", "agent name")
	maxClaims := fs.Int("max-claims", 0, "stop after this many claims (0: until the board is empty)")
	pos, err := parse(fs, args)
	if err != nil {
		return usageExit(err)
	}
	d, err := m.stateDir(*dir)
	if err != nil {
		return m.usageErr("demo-agent", "%v", err)
	}
	switch {
	case len(pos) > 0:
		return m.usageErr("demo-agent", "unexpected argument %q", pos[0])
	case *agent == "":
		return m.usageErr("demo-agent", "--agent is required")
	}
	sum, err := runDemoAgent(ctx, d, *agent, *maxClaims)
	if err != nil {
		return m.fail("demo-agent", err)
	}
	json.NewEncoder(m.Stdout).Encode(sum)
	return exitOK
}

// runDemoAgent claims open tasks until none is left: it reads the board,
// picks an open task at random, submits "test open, replace status and
// assignee" and waits; each claim it wins is counted with an inc.
func runDemoAgent(ctx context.Context, d, agent string, maxClaims int) (agentSummary, error) {
	sum := agentSummary{Agent: agent, Claimed: []string{}, Results: []uint64{}}
	w, err := journal.OpenWriter(d, agent)
	if err != nil {
		return sum, err
	}
	defer w.Close()
	res, err := journal.OpenResults(d, agent)
	if err != nil {
		return sum, err
	}
	defer res.Close()
	submit := func(file string, ops []any) (journal.Result, error) {
		p, err := json.Marshal(ops)
		if err != nil {
			return journal.Result{}, err
		}
		rec, err := w.Append(journal.Intent{File: file, Patch: p})
		if err != nil {
			return journal.Result{}, err
		}
		sum.Intents++
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		r, err := res.Wait(wctx, rec.Seq)
		if err == nil {
			sum.Results = append(sum.Results, r.Seq)
		}
		return r, err
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())))
	for maxClaims == 0 || len(sum.Claimed) < maxClaims {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		doc, err := journal.ReadDocument(rctx, d, "tasks.json")
		cancel()
		if err != nil {
			return sum, err
		}
		board, err := parseBoard(doc.Data)
		if err != nil {
			return sum, fmt.Errorf("parse tasks.json: %w", err)
		}
		var open []string
		for id, t := range board {
			if t.Status == "open" {
				open = append(open, id)
			}
		}
		if len(open) == 0 {
			return sum, nil
		}
		slices.Sort(open)
		id := open[rng.IntN(len(open))]
		r, err := submit("tasks.json", []any{
			map[string]any{"op": "test", "path": "/tasks/" + id + "/status", "value": "open"},
			map[string]any{"op": "replace", "path": "/tasks/" + id + "/status", "value": "claimed"},
			map[string]any{"op": "replace", "path": "/tasks/" + id + "/assignee", "value": agent},
		})
		if err != nil {
			return sum, err
		}
		switch r.Status {
		case journal.StatusConflict:
			sum.Conflicts++
			continue
		case journal.StatusApplied:
		default:
			return sum, fmt.Errorf("claim %s: %s: %s", id, r.Status, r.Error)
		}
		sum.Claimed = append(sum.Claimed, id)
		r, err = submit("metrics.json", []any{map[string]any{"op": "inc", "path": "/claims/" + agent, "value": 1}})
		if err != nil {
			return sum, err
		}
		if r.Status != journal.StatusApplied {
			return sum, fmt.Errorf("count claim: %s: %s", r.Status, r.Error)
		}
	}
	return sum, nil
}
