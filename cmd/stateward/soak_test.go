package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stateward/stateward/journal"
	"github.com/stateward/stateward/replay"
)

// Knobs of TestSoak, read from the test's environment. The defaults are the
// CI smoke run; a long run sets, for example, STATEWARD_SOAK_KILLS=500.
const (
	soakKillsEnv      = "STATEWARD_SOAK_KILLS"       // watcher kills (default 20)
	soakCheckEveryEnv = "STATEWARD_SOAK_CHECK_EVERY" // recover, verify and check every N kills (default 2)
	soakSeedVar       = "STATEWARD_SOAK_SEED"        // seed of the workload and the kill times (default: the clock)
)

// soakEnvInt reads a positive integer from the environment.
func soakEnvInt(tb testing.TB, name string, def int) int {
	tb.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want an integer >= 1", name, s)
	}
	return n
}

// soakProc is one agent child process, killed and started again by the
// chaos goroutine.
type soakProc struct {
	name, kind string
	lives      int        // times started
	cmd        *exec.Cmd  // the current life
	out        *logBuffer // its output
	done       chan struct{}
	err        error // from cmd.Wait; read after done
}

// soakRun is the state of one soak: owned by the test goroutine, except
// procs, which the chaos goroutine owns while it runs.
type soakRun struct {
	t         *testing.T
	dir, side string
	seed      uint64
	tasks     int
	procs     []*soakProc

	// Figures.
	kills, earlyKills, checks int
	agentKills, tornKills     int // agents killed; of them, raw agents caught mid-line
	tornInjected              int // torn tails left in Go agents' journals after a kill
}

// TestSoak runs a real watcher process and agent processes (two with the
// journal client, two writing intent lines themselves as a client in another
// language would) under a workload of claims, releases and inc counters, and
// SIGKILLs the watcher at random moments (sometimes before it is even
// ready) and the agents too (the raw ones often in the middle of a line; the
// Go ones are then sometimes left with a torn tail for journal.Writer to
// cut), restarting each. After every kill it checks that the documents parse
// (G1) and that the results files only grew (no result an agent may have
// read changed: G4); every STATEWARD_SOAK_CHECK_EVERY kills it runs
// recovery itself, then Verify, then every invariant below on the recovered
// state; at the end it stops everything cleanly and checks again, with
// `replay --verify`:
//
//   - each complete journal line has exactly one result, in journal order,
//     with its seq: originals in increasing seq, and retries (a repeated seq
//     or id) answered with a copy of the original;
//   - the commit numbers of the originals are 1..N, each once, and replaying
//     their decisions in commit order on a model of the board and counters
//     gives every status and version they report (no task has two owners:
//     a claim of a held task must conflict);
//   - the documents equal the model: each counter equals the durable inc
//     records of its agent (each applied once), every applied claim is on
//     the board;
//   - every line an agent was told was durable is in its journal, and has a
//     result at the end; every result an agent read is still there, byte for
//     byte (G4).
//
// A reader goroutine meanwhile reads the documents with
// journal.ReadDocument: each must parse, versions never go back, and a
// version always comes with the same bytes.
func TestSoak(t *testing.T) {
	start := time.Now()
	kills := soakEnvInt(t, soakKillsEnv, 20)
	checkEvery := soakEnvInt(t, soakCheckEveryEnv, 2)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(soakSeedVar); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s=%q: %v", soakSeedVar, s, err)
		}
	}
	t.Logf("seed %d (%s=%d to repeat the workload and kill times; the interleaving differs)", seed, soakSeedVar, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	r := &soakRun{t: t, dir: t.TempDir(), side: t.TempDir(), seed: seed, tasks: 48}

	w, err := startSoakWatcher(t, r.dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.waitReady(testTimeout); err != nil {
		t.Fatal(err)
	}
	r.setup()
	for i := range 2 {
		r.procs = append(r.procs, &soakProc{name: fmt.Sprintf("go-%d", i+1), kind: "go"}, &soakProc{name: fmt.Sprintf("raw-%d", i+1), kind: "raw"})
	}
	for _, p := range r.procs {
		if err := r.startAgent(p); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, p := range r.procs {
			if p.cmd != nil {
				p.cmd.Process.Kill()
				<-p.done
			}
		}
	})

	stopChaos := make(chan struct{})
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		r.chaos(stopChaos, rand.New(rand.NewPCG(seed, 1)))
	}()
	stopReader := make(chan struct{})
	readerDone := make(chan int, 1)
	go func() { readerDone <- r.reader(stopReader) }()
	stopAll := func() {
		if stopChaos != nil {
			close(stopChaos)
			<-chaosDone
			close(stopReader)
			stopChaos = nil
		}
	}
	defer stopAll()

	// Kill the watcher again and again under load.
	prev := soakSnapshot(t, r.dir)
	for k := 1; k <= kills; k++ {
		if rng.IntN(5) == 0 {
			// Kill it while it starts, maybe in the middle of recovery.
			time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond) // workload: the kill time
			r.earlyKills++
		} else {
			if err := w.waitReady(testTimeout); err != nil {
				t.Fatal(err)
			}
			c0 := soakCommit(t, r.dir)
			waitFor(t, testTimeout, "a commit after the restart", func() bool { return soakCommit(t, r.dir) > c0 })
			time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond) // workload: the kill time
		}
		if err := w.kill(); err != nil {
			t.Fatalf("kill %d: %v", k, err)
		}
		r.kills++
		soakDocsParse(t, r.dir)
		snap := soakSnapshot(t, r.dir)
		soakPrefix(t, prev, snap, fmt.Sprintf("after kill %d", k))
		prev = snap
		if k%checkEvery == 0 {
			a := replay.NewApplier(r.dir, nil)
			if err := a.Open(); err != nil {
				t.Fatalf("recovery after kill %d: %v", k, err)
			}
			a.Close()
			soakVerify(t, r.dir, fmt.Sprintf("after kill %d", k))
			snap := soakSnapshot(t, r.dir)
			soakPrefix(t, prev, snap, fmt.Sprintf("recovery after kill %d", k))
			prev = snap
			r.check(false)
			r.checks++
			if t.Failed() {
				t.FailNow()
			}
		}
		if w, err = startSoakWatcher(t, r.dir); err != nil {
			t.Fatal(err)
		}
		if k%50 == 0 {
			t.Logf("%d kills, commit %d, %s", k, soakCommit(t, r.dir), time.Since(start).Round(time.Second))
		}
	}

	// Stop the agents cleanly, let the watcher finish, stop it cleanly.
	stopAll()
	reads := <-readerDone
	if t.Failed() {
		t.FailNow()
	}
	if err := w.waitReady(testTimeout); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.side, soakStopName), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range r.procs {
		timer := time.NewTimer(testTimeout)
		select {
		case <-p.done:
		case <-timer.C:
			t.Fatalf("%s still running %s after the stop file\n%s", p.name, testTimeout, p.out)
		}
		timer.Stop()
		if p.err != nil {
			t.Fatalf("%s: %v\n%s", p.name, p.err, p.out)
		}
	}
	waitFor(t, testTimeout, "every journal line processed", func() bool {
		for _, p := range r.procs {
			lines, _ := soakJournal(t, r.dir, p.name)
			if len(soakResults(t, r.dir, p.name)) < len(lines) {
				return false
			}
		}
		return true
	})
	if err := w.term(); err != nil {
		t.Fatal(err)
	}
	soakPrefix(t, prev, soakSnapshot(t, r.dir), "at the end")
	if res := runMain(t, "", "replay", "--dir", r.dir, "--verify"); res.code != exitOK {
		t.Fatalf("replay --verify: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	f := r.check(true)
	t.Logf("%d watcher kills (%d before ready), %d recoveries checked; %d agent kills (%d raw agents caught mid-line); torn tails cut on restart: %d by raw agents, %d by journal.Writer (the test left %d in Go agents' journals)",
		r.kills, r.earlyKills, r.checks, r.agentKills, r.tornKills, f.rawCut, f.writerCut, r.tornInjected)
	t.Logf("%d intents (%d originals, %d retries; %d incs, %d claims and %d releases applied, %d conflicts), %d commits, %d acknowledged appends, %d results read by agents, %d document reads",
		f.lines, f.originals, f.retries, f.incs, f.claims, f.releases, f.conflicts, f.commit, f.acked, f.seen, reads)
	t.Logf("%d kills, %d intents, %d lost, %d duplicated, in %s", r.kills, f.lines, f.lost, f.duplicated, time.Since(start).Round(time.Millisecond))
}

// soakCommit returns the last commit whose documents are on disk.
func soakCommit(tb testing.TB, dir string) uint64 {
	tb.Helper()
	v, err := journal.ReadVersions(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return v.Commit
}

// setup creates the board (tasks open, no assignee) and the counters.
func (r *soakRun) setup() {
	t := r.t
	board := map[string]any{}
	for i := 1; i <= r.tasks; i++ {
		board[soakTask(i)] = map[string]any{"status": "open", "assignee": nil}
	}
	w, err := journal.OpenWriter(r.dir, "setup")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	res, err := journal.OpenResults(r.dir, "setup")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	zero := uint64(0)
	for _, doc := range []struct {
		name  string
		value any
	}{{"tasks.json", map[string]any{"tasks": board}}, {"metrics.json", map[string]any{"inc": map[string]any{}}}} {
		p, _ := json.Marshal([]any{map[string]any{"op": "add", "path": "", "value": doc.value}})
		in, err := w.Append(journal.Intent{File: doc.name, IfVersion: &zero, Patch: p})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		got, err := res.Wait(ctx, in.Seq)
		cancel()
		if err != nil || got.Status != journal.StatusApplied {
			t.Fatalf("create %s: %+v, %v", doc.name, got, err)
		}
	}
}

// startAgent starts the next life of an agent.
func (r *soakRun) startAgent(p *soakProc) error {
	p.cmd = selfCmd(r.t, "soak-agent", p.name)
	p.cmd.Env = append(p.cmd.Env,
		soakAgentEnv+"="+p.kind,
		soakDirEnv+"="+r.dir,
		soakNameEnv+"="+p.name,
		soakSideEnv+"="+r.side,
		soakSeedEnv+"="+strconv.FormatUint(r.seed, 10),
		soakTasksEnv+"="+strconv.Itoa(r.tasks),
		soakLifeEnv+"="+strconv.Itoa(p.lives),
	)
	p.out = newLogBuffer("soak agent")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.done = make(chan struct{})
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.lives++
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return nil
}

// chaos kills a random agent every 100-400ms and starts it again, until
// stop is closed. Half of the raw agents' kills first wait (up to 300ms)
// for the agent to be in the middle of a line. A Go agent's journal is
// left, one kill in three, with a torn tail as a write cut short would
// leave.
func (r *soakRun) chaos(stop <-chan struct{}, rng *rand.Rand) {
	t := r.t
	for {
		timer := time.NewTimer(time.Duration(100+rng.IntN(300)) * time.Millisecond) // workload
		select {
		case <-stop:
			timer.Stop()
			return
		case <-timer.C:
		}
		p := r.procs[rng.IntN(len(r.procs))]
		folder := filepath.Join(r.dir, "journal", p.name)
		if p.kind == "raw" && rng.IntN(2) == 0 && soakWaitMidLine(filepath.Join(folder, journal.SegmentName(1)), 300*time.Millisecond) {
			r.tornKills++
		}
		select {
		case <-p.done:
			t.Errorf("%s exited on its own: %v\n%s", p.name, p.err, p.out)
			return
		default:
		}
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Errorf("%s exited on its own (%v) before it was killed\n%s", p.name, p.err, p.out)
			return
		}
		r.agentKills++
		if p.kind == "go" && rng.IntN(3) == 0 {
			if segs, _ := journal.ListSegments(folder); len(segs) > 0 {
				junk := fmt.Appendf(nil, `{"seq":999999999,"file":"metrics.json","id":"never","patch":[{"op":"inc","path":"/inc/%s","value":1}]}`, p.name)
				f, err := os.OpenFile(filepath.Join(folder, journal.SegmentName(segs[len(segs)-1])), os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Errorf("leave a torn tail: %v", err)
					return
				}
				f.Write(junk[:1+rng.IntN(len(junk)-1)])
				f.Close()
				r.tornInjected++
			}
		}
		if err := r.startAgent(p); err != nil {
			t.Error(err)
			return
		}
	}
}

// soakWaitMidLine waits, at most within, until the journal segment p ends
// in the middle of a line, and reports whether it does.
func soakWaitMidLine(p string, within time.Duration) bool {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Microsecond)
	defer tick.Stop()
	last := make([]byte, 1)
	for {
		if f, err := os.Open(p); err == nil {
			fi, err := f.Stat()
			if err == nil && fi.Size() > 0 {
				if _, err := f.ReadAt(last, fi.Size()-1); err == nil && last[0] != '\n' {
					f.Close()
					return true
				}
			}
			f.Close()
		}
		select {
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
}

// reader reads both documents with journal.ReadDocument until stop is
// closed, checking that each parses, that its version never goes back and
// that a version always comes with the same bytes. It returns the number of
// reads.
func (r *soakRun) reader(stop <-chan struct{}) int {
	t := r.t
	type seen struct {
		version uint64
		data    string
	}
	last := map[string]seen{}
	byVersion := map[string]string{}
	reads := 0
	tick := time.NewTicker(5 * time.Millisecond) // workload: a reader every 5ms, leaving the CPUs to the others
	defer tick.Stop()
	for {
		for _, name := range []string{"tasks.json", "metrics.json"} {
			select {
			case <-stop:
				return reads
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			doc, err := journal.ReadDocument(ctx, r.dir, name)
			cancel()
			if errors.Is(err, journal.ErrUnversioned) || errors.Is(err, context.DeadlineExceeded) {
				continue // the watcher was killed between a rename and versions.json; recovery will tell
			}
			if err != nil {
				t.Errorf("ReadDocument %s: %v", name, err)
				return reads
			}
			reads++
			if !json.Valid(doc.Data) {
				t.Errorf("%s version %d: not valid JSON: %.200s", name, doc.Version, doc.Data)
			}
			if l := last[name]; doc.Version < l.version {
				t.Errorf("%s: read version %d after version %d", name, doc.Version, l.version)
			}
			key := fmt.Sprintf("%s@%d", name, doc.Version)
			if d, ok := byVersion[key]; ok && d != string(doc.Data) {
				t.Errorf("%s version %d read with two contents:\n%s\n%s", name, doc.Version, d, doc.Data)
			}
			byVersion[key] = string(doc.Data)
			last[name] = seen{doc.Version, string(doc.Data)}
		}
	}
}

// soakDocsParse checks that every document in dir is valid JSON (G1), as
// the watcher left it, before any recovery.
func soakDocsParse(tb testing.TB, dir string) {
	tb.Helper()
	for _, name := range []string{"tasks.json", "metrics.json"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			tb.Fatalf("G1: %s: %v", name, err)
		}
		if !json.Valid(data) {
			tb.Fatalf("G1: %s is not valid JSON after a kill:\n%.300s", name, data)
		}
	}
}

// soakSnapshot returns the bytes of every results file.
func soakSnapshot(tb testing.TB, dir string) map[string][]byte {
	tb.Helper()
	snap := map[string][]byte{}
	root := filepath.Join(dir, "results")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		snap[strings.TrimPrefix(p, root)] = data
		return err
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		tb.Fatal(err)
	}
	return snap
}

// soakPrefix checks that every results file of before is a prefix of the
// same file in after: results only grow, and bytes an agent may have read
// never change (G4). This holds even for a partial last line: recovery
// completes it with the bytes it was going to have.
func soakPrefix(tb testing.TB, before, after map[string][]byte, when string) {
	tb.Helper()
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			tb.Errorf("G4 %s: results file %s disappeared", when, p)
		case !bytes.HasPrefix(a, b):
			n := 0
			for n < len(a) && n < len(b) && a[n] == b[n] {
				n++
			}
			tb.Errorf("G4 %s: results file %s changed at byte %d (had %d bytes, has %d):\nbefore: %q\nafter:  %q",
				when, p, n, len(b), len(a), b[max(0, n-100):min(len(b), n+100)], a[max(0, n-100):min(len(a), n+100)])
		}
	}
}

// soakVerify runs Verify, which replays the whole commit log and compares.
func soakVerify(tb testing.TB, dir, when string) {
	tb.Helper()
	rep, err := replay.Verify(dir, "")
	if err != nil {
		tb.Fatalf("verify %s: %v", when, err)
	}
	if len(rep.Problems) > 0 {
		tb.Fatalf("verify %s:\n%s", when, strings.Join(rep.Problems, "\n"))
	}
}

// soakJournal returns the complete lines of an agent's journal, in order,
// and the bytes of an unfinished last line.
func soakJournal(tb testing.TB, dir, agent string) ([][]byte, int) {
	tb.Helper()
	folder := filepath.Join(dir, "journal", agent)
	segs, err := journal.ListSegments(folder)
	if err != nil {
		tb.Fatal(err)
	}
	var lines [][]byte
	tail := 0
	for _, s := range segs {
		data, err := os.ReadFile(filepath.Join(folder, journal.SegmentName(s)))
		if err != nil {
			tb.Fatal(err)
		}
		tail = 0
		for line := range bytes.Lines(data) {
			if line[len(line)-1] != '\n' {
				tail = len(line)
				break
			}
			lines = append(lines, line)
		}
	}
	return lines, tail
}

// soakResults returns an agent's complete result lines, in order.
func soakResults(tb testing.TB, dir, agent string) [][]byte {
	tb.Helper()
	folder := filepath.Join(dir, "results", agent)
	segs, err := journal.ListSegments(folder)
	if err != nil {
		tb.Fatal(err)
	}
	var lines [][]byte
	for _, s := range segs {
		p := filepath.Join(folder, journal.SegmentName(s))
		data, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		for line := range bytes.Lines(data) {
			if line[len(line)-1] != '\n' {
				break
			}
			lines = append(lines, line)
		}
	}
	return lines
}

// soakFigures is what a check counted.
type soakFigures struct {
	lines, originals, retries         int // processed journal lines (all agents but setup)
	incs, claims, releases, conflicts int
	commit                            uint64
	acked, seen                       int
	rawCut, writerCut                 int // torn tails cut on start by raw agents, by journal.Writer
	lost, duplicated                  int
}

// soakOp is what an original intent does, read from its patch.
type soakOp struct {
	kind  string // create, inc, claim or release
	task  string
	agent string // whose counter, or who claims or releases
}

func soakParseOp(in journal.Intent) (soakOp, error) {
	var ops []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(in.Patch, &ops); err != nil || len(ops) == 0 {
		return soakOp{}, fmt.Errorf("patch %s: %v", in.Patch, err)
	}
	switch op := ops[0]; {
	case op.Op == "add" && op.Path == "":
		return soakOp{kind: "create"}, nil
	case op.Op == "inc" && strings.HasPrefix(op.Path, "/inc/"):
		return soakOp{kind: "inc", agent: strings.TrimPrefix(op.Path, "/inc/")}, nil
	case op.Op == "test" && len(ops) == 3:
		var v string
		json.Unmarshal(op.Value, &v)
		task, field, _ := strings.Cut(strings.TrimPrefix(op.Path, "/tasks/"), "/")
		switch field {
		case "status":
			var who string
			json.Unmarshal(ops[2].Value, &who)
			return soakOp{kind: "claim", task: task, agent: who}, nil
		case "assignee":
			return soakOp{kind: "release", task: task, agent: v}, nil
		}
	}
	return soakOp{}, fmt.Errorf("unknown operation %s", in.Patch)
}

// check checks the invariants of TestSoak on a directory whose watcher is
// stopped and recovered; the agents may still be appending. At the end
// (final), every line must have been processed.
func (r *soakRun) check(final bool) soakFigures {
	t := r.t
	t.Helper()
	var f soakFigures
	ents, err := os.ReadDir(filepath.Join(r.dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	type original struct {
		agent  string
		result journal.Result
		op     soakOp
	}
	var originals []original
	incLines := map[string]int{} // original inc records processed, by counter
	for _, e := range ents {
		agent := e.Name()
		// Side log first, then results, then journal: whatever the agent
		// logged as durable is in the journal read after it.
		events := r.sideLog(agent)
		resLines := soakResults(t, r.dir, agent)
		lines, tail := soakJournal(t, r.dir, agent)
		if final && tail != 0 {
			t.Errorf("%s: journal ends in %d bytes of an unfinished line after a clean stop", agent, tail)
		}
		if len(resLines) > len(lines) {
			t.Errorf("%s: %d results for %d journal lines", agent, len(resLines), len(lines))
			f.duplicated += len(resLines) - len(lines)
		}
		if final && len(resLines) < len(lines) {
			t.Errorf("%s: %d journal lines have no result", agent, len(lines)-len(resLines))
			f.lost += len(lines) - len(resLines)
		}
		// Classify each line from the journal alone: a seq not above the
		// last one, or an id used before, is a retry of the line that first
		// had it.
		var maxSeq uint64
		firstSeq, firstID := map[uint64]int{}, map[string]int{}
		results := make([]journal.Result, len(resLines))
		for i, line := range lines {
			in, seq, err := journal.ParseIntent(line)
			if err != nil {
				t.Fatalf("%s line %d: %v: %q (a torn tail not cut?)", agent, i+1, err, line)
			}
			retryOf := -1
			if seq <= maxSeq {
				retryOf = firstSeq[seq]
			} else {
				maxSeq, firstSeq[seq] = seq, i
				if k, ok := firstID[in.ID]; ok && in.ID != "" {
					retryOf = k
				} else if in.ID != "" {
					firstID[in.ID] = i
				}
			}
			if i >= len(resLines) {
				continue
			}
			res, err := journal.ParseResult(resLines[i])
			if err != nil {
				t.Fatalf("%s result %d: %v", agent, i+1, err)
			}
			results[i] = res
			where := fmt.Sprintf("%s line %d (seq %d)", agent, i+1, seq)
			if res.Seq != seq || res.File != in.File || res.ID != in.ID || res.Status == journal.StatusRejected {
				t.Errorf("%s: result %s", where, resLines[i])
			}
			if agent != "setup" {
				f.lines++
			}
			if retryOf >= 0 {
				o := results[retryOf]
				if !res.Retry || res.Status != o.Status || res.Version != o.Version || res.Commit != o.Commit || res.Error != o.Error {
					t.Errorf("%s: a retry of line %d, answered %s, want a copy of %+v", where, retryOf+1, resLines[i], o)
					f.duplicated++
				}
				f.retries++
				continue
			}
			if res.Retry {
				t.Errorf("%s: the first line with this seq and id, answered as a retry: %s", where, resLines[i])
			}
			op, err := soakParseOp(in)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if op.kind == "inc" {
				incLines[op.agent]++
			}
			originals = append(originals, original{agent, res, op})
		}
		// What the agent was told, and what it read.
		for _, ev := range events {
			i, ok := -1, false
			switch {
			case ev.N > 0:
				i, ok = ev.N-1, ev.N <= len(lines)
			default:
				i, ok = firstSeq[ev.Seq]
			}
			switch ev.Ev {
			case "start":
				if ev.Torn > 0 && strings.HasPrefix(agent, "raw-") {
					f.rawCut++
				} else if ev.Torn > 0 {
					f.writerCut++
				}
			case "acked":
				f.acked++
				if !ok {
					t.Errorf("%s: seq %d was acknowledged as durable but is not in the journal", agent, ev.Seq)
					f.lost++
				} else if final && i >= len(resLines) {
					t.Errorf("%s: seq %d was acknowledged but has no result", agent, ev.Seq)
					f.lost++
				}
			case "seen":
				f.seen++
				if !ok || i >= len(resLines) || !bytes.Equal(bytes.TrimSuffix(resLines[i], []byte("\n")), ev.Result) {
					got := "none"
					if ok && i < len(resLines) {
						got = string(resLines[i])
					}
					t.Errorf("G4: %s read the result %s for seq %d; the results file now has %s", agent, ev.Result, ev.Seq, got)
				}
			}
		}
	}

	// Commit order is the serialisation order: replay the originals'
	// decisions on a model of the board and the counters.
	slices.SortFunc(originals, func(a, b original) int { return cmp.Compare(a.result.Commit, b.result.Commit) })
	for i, o := range originals {
		switch want := uint64(i + 1); {
		case o.result.Commit < want:
			t.Fatalf("commit %d answers two intents (%s seq %d and %s seq %d)", o.result.Commit, originals[i-1].agent, originals[i-1].result.Seq, o.agent, o.result.Seq)
		case o.result.Commit > want:
			t.Fatalf("commit %d answers no intent in any results file (a result lost?); the next is %d (%s seq %d)", want, o.result.Commit, o.agent, o.result.Seq)
		}
	}
	f.commit = uint64(len(originals))
	if v, err := journal.ReadVersions(r.dir); err != nil || v.Commit != f.commit {
		t.Errorf("versions.json commit %d (%v), want %d, the last commit of the results", v.Commit, err, f.commit)
	}
	owner := map[string]string{}
	counts := map[string]int{}
	version := map[string]uint64{}
	for _, o := range originals {
		res, file := o.result, o.result.File
		applies := true
		switch o.op.kind {
		case "claim":
			applies = owner[o.op.task] == ""
		case "release":
			applies = owner[o.op.task] == o.op.agent
		}
		want := journal.StatusConflict
		if applies {
			want = journal.StatusApplied
			version[file]++
		}
		if res.Status != want || res.Version != version[file] {
			t.Errorf("commit %d (%s seq %d, %s %s by %s): %s at version %d; in commit order it must be %s at version %d (task held by %q)",
				res.Commit, o.agent, res.Seq, o.op.kind, o.op.task, o.op.agent, res.Status, res.Version, want, version[file], owner[o.op.task])
			if res.Status == journal.StatusApplied && !applies {
				f.duplicated++
			}
		}
		if o.agent == "setup" {
			continue
		}
		f.originals++
		switch {
		case !applies:
			f.conflicts++
		case o.op.kind == "inc":
			counts[o.op.agent]++
			f.incs++
		case o.op.kind == "claim":
			owner[o.op.task] = o.op.agent
			f.claims++
		case o.op.kind == "release":
			delete(owner, o.op.task)
			f.releases++
		}
	}

	// The documents are the model.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	tdoc, err := journal.ReadDocument(ctx, r.dir, "tasks.json")
	if err != nil {
		t.Fatal(err)
	}
	if tdoc.Version != version["tasks.json"] {
		t.Errorf("tasks.json is at version %d, the results say %d", tdoc.Version, version["tasks.json"])
	}
	var board struct {
		Tasks map[string]struct {
			Status   string  `json:"status"`
			Assignee *string `json:"assignee"`
		} `json:"tasks"`
	}
	if err := json.Unmarshal(tdoc.Data, &board); err != nil {
		t.Fatal(err)
	}
	if len(board.Tasks) != r.tasks {
		t.Errorf("board has %d tasks, want %d", len(board.Tasks), r.tasks)
	}
	for id, task := range board.Tasks {
		who := owner[id]
		if (who == "") != (task.Status == "open") || (who == "") != (task.Assignee == nil) || (who != "" && *task.Assignee != who) {
			t.Errorf("%s on the board: status %q assignee %v; the applied claims and releases say held by %q", id, task.Status, task.Assignee, who)
		}
	}
	mdoc, err := journal.ReadDocument(ctx, r.dir, "metrics.json")
	if err != nil {
		t.Fatal(err)
	}
	if mdoc.Version != version["metrics.json"] {
		t.Errorf("metrics.json is at version %d, the results say %d", mdoc.Version, version["metrics.json"])
	}
	var metrics struct {
		Inc map[string]int `json:"inc"`
	}
	if err := json.Unmarshal(mdoc.Data, &metrics); err != nil {
		t.Fatal(err)
	}
	for agent, n := range metrics.Inc {
		if want := incLines[agent]; n != want {
			t.Errorf("counter /inc/%s is %d; the journal has %d inc records of it processed (each must apply once)", agent, n, want)
			if n > want {
				f.duplicated += n - want
			} else {
				f.lost += want - n
			}
		}
	}
	for agent, want := range incLines {
		if _, ok := metrics.Inc[agent]; !ok {
			t.Errorf("counter /inc/%s missing; the journal has %d inc records of it processed", agent, want)
			f.lost += want
		}
		if counts[agent] != want {
			t.Errorf("/inc/%s: %d incs applied in commit order, %d processed", agent, counts[agent], want)
		}
	}
	return f
}

// sideLog returns the complete events of an agent's side log.
func (r *soakRun) sideLog(agent string) []soakEvent {
	data, err := os.ReadFile(filepath.Join(r.side, agent+".jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	var out []soakEvent
	for line := range bytes.Lines(data) {
		if line[len(line)-1] != '\n' {
			break // cut short by a kill
		}
		var ev soakEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			r.t.Fatalf("side log of %s: %v: %q", agent, err, line)
		}
		out = append(out, ev)
	}
	return out
}
