package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/stateward/stateward/journal"
)

// The document of the linearizability test: a small board, a register
// written with if_version, and a counter, all in one versioned document.
const (
	linDoc   = "lin.json"
	linTasks = 3
)

// linState is the model's state of the document: its version and content.
// It is comparable, as porcupine's default equality needs.
type linState struct {
	Version uint64
	Owners  [linTasks]string // "" while the task is open
	Reg     string           // written by cas
	N       int              // counted by inc
}

// linInput is one operation an agent invokes.
type linInput struct {
	Op        string // claim, release, cas, inc or read
	Agent     string
	Task      int    // claim, release
	IfVersion uint64 // cas
	Value     string // cas
}

// linOutput is what the operation returned: a result for the writes, the
// document with its version for a read.
type linOutput struct {
	Status  string // applied or conflict; "" for a read
	Version uint64 // the result's version
	Read    linState
}

// linModel is the sequential specification of the document: what docs/format.md
// (Result, Versions and external edits) says each operation does, and the version its result must carry.
var linModel = porcupine.Model{
	Init: func() any { return linState{Version: 1} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(linState), input.(linInput), output.(linOutput)
		var ok bool // whether the write applies in state s
		switch in.Op {
		case "read":
			return out.Read == s, s
		case "claim":
			ok = s.Owners[in.Task] == ""
		case "release":
			ok = s.Owners[in.Task] == in.Agent
		case "cas":
			ok = in.IfVersion == s.Version
		case "inc":
			ok = true
		default:
			return false, s
		}
		if !ok { // a conflict, at the version the document has
			return out.Status == journal.StatusConflict && out.Version == s.Version, s
		}
		if out.Status != journal.StatusApplied || out.Version != s.Version+1 {
			return false, s
		}
		s.Version++
		switch in.Op {
		case "claim":
			s.Owners[in.Task] = in.Agent
		case "release":
			s.Owners[in.Task] = ""
		case "cas":
			s.Reg = in.Value
		case "inc":
			s.N++
		}
		return true, s
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		switch in.Op {
		case "read":
			return fmt.Sprintf("%s read -> v%d %v %q n=%d", in.Agent, out.Read.Version, out.Read.Owners, out.Read.Reg, out.Read.N)
		case "claim", "release":
			return fmt.Sprintf("%s %s t%d -> %s v%d", in.Agent, in.Op, in.Task, out.Status, out.Version)
		case "cas":
			return fmt.Sprintf("%s cas(if v%d, %q) -> %s v%d", in.Agent, in.IfVersion, in.Value, out.Status, out.Version)
		default:
			return fmt.Sprintf("%s %s -> %s v%d", in.Agent, in.Op, out.Status, out.Version)
		}
	},
	DescribeState: func(state any) string {
		s := state.(linState)
		return fmt.Sprintf("v%d owners=%v reg=%q n=%d", s.Version, s.Owners, s.Reg, s.N)
	},
}

// linPatch returns the intent of a write operation.
func linPatch(in linInput) journal.Intent {
	task := fmt.Sprintf("/tasks/t%d", in.Task)
	var ops []any
	switch in.Op {
	case "claim":
		ops = []any{
			map[string]any{"op": "test", "path": task + "/status", "value": "open"},
			map[string]any{"op": "replace", "path": task + "/status", "value": "claimed"},
			map[string]any{"op": "replace", "path": task + "/owner", "value": in.Agent},
		}
	case "release":
		ops = []any{
			map[string]any{"op": "test", "path": task + "/owner", "value": in.Agent},
			map[string]any{"op": "replace", "path": task + "/status", "value": "open"},
			map[string]any{"op": "replace", "path": task + "/owner", "value": nil},
		}
	case "cas":
		ops = []any{map[string]any{"op": "replace", "path": "/reg", "value": in.Value}}
	case "inc":
		ops = []any{map[string]any{"op": "inc", "path": "/n", "value": 1}}
	}
	p, err := json.Marshal(ops)
	if err != nil {
		panic(err)
	}
	intent := journal.Intent{File: linDoc, Patch: p}
	if in.Op == "cas" {
		v := in.IfVersion
		intent.IfVersion = &v
	}
	return intent
}

// linParse turns a document read into the model's state. A board whose
// status and owner disagree is no state the model can be in.
func linParse(doc journal.Document) (linState, error) {
	var d struct {
		Tasks map[string]struct {
			Status string  `json:"status"`
			Owner  *string `json:"owner"`
		} `json:"tasks"`
		Reg string `json:"reg"`
		N   int    `json:"n"`
	}
	if err := json.Unmarshal(doc.Data, &d); err != nil {
		return linState{}, fmt.Errorf("parse %s: %w", doc.Data, err)
	}
	s := linState{Version: doc.Version, Reg: d.Reg, N: d.N}
	if len(d.Tasks) != linTasks {
		return s, fmt.Errorf("%d tasks in %s", len(d.Tasks), doc.Data)
	}
	for i := range linTasks {
		t, ok := d.Tasks[fmt.Sprintf("t%d", i)]
		switch {
		case !ok:
			return s, fmt.Errorf("task t%d missing in %s", i, doc.Data)
		case t.Status == "open" && t.Owner == nil:
		case t.Status == "claimed" && t.Owner != nil && *t.Owner != "":
			s.Owners[i] = *t.Owner
		default:
			return s, fmt.Errorf("task t%d has status %q and owner %v in %s", i, t.Status, t.Owner, doc.Data)
		}
	}
	return s, nil
}

// linHistory collects the operations of the agents. Times are nanoseconds
// since the run began, on the monotonic clock of this one process.
type linHistory struct {
	start time.Time
	mu    sync.Mutex // guards ops
	ops   []porcupine.Operation
}

func (h *linHistory) now() int64 { return time.Since(h.start).Nanoseconds() }

func (h *linHistory) add(client int, in linInput, out linOutput, call, ret int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
}

// linCheck checks a history against the model. If it is not linearizable
// (or the check times out), it writes porcupine's visualisation to
// $TEST_OUTPUT, or else to the test's artifact directory (kept with
// `go test -artifacts`), and returns the result and that path.
func linCheck(t *testing.T, history []porcupine.Operation, name string) (porcupine.CheckResult, string) {
	t.Helper()
	res, info := porcupine.CheckOperationsVerbose(linModel, history, 30*time.Second)
	if res == porcupine.Ok {
		return res, ""
	}
	dir := os.Getenv("TEST_OUTPUT")
	if dir == "" {
		dir = t.ArtifactDir()
	}
	path := filepath.Join(dir, name+".html")
	if err := porcupine.VisualizePath(linModel, info, path); err != nil {
		t.Errorf("write visualisation: %v", err)
	}
	return res, path
}

// TestLinearizability runs agents that claim and release tasks (with test
// preconditions), write a register with if_version, count with inc and read
// the document with journal.ReadDocument, all on one versioned document,
// while the watcher is SIGKILLed and restarted under them. It records when
// each operation began and when its result (or read) came back, and checks
// with porcupine that some order of the operations, each taking effect
// within its interval, explains every result, version and read: the
// document behaves as one linearizable register of (version, content).
//
// An intent's interval begins when Append is called, not when it returns:
// the watcher may apply a line as soon as it is written, before the agent's
// own fsync returns (it fsyncs the segment itself before committing), so the
// effect can precede Append's return. It ends when its result is read.
// (Taking Append's return as the start, porcupine rejects about one run in
// four: a read sees a write up to ~20ms before the writer's Append returns.)
func TestLinearizability(t *testing.T) {
	const (
		agents = 5
		ops    = 60 // per agent
		kills  = 3
	)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("STATEWARD_LIN_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("STATEWARD_LIN_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (STATEWARD_LIN_SEED=%d repeats the operations and kill times; the interleaving differs)", seed, seed)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()

	w, err := startSoakWatcher(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.waitReady(testTimeout); err != nil {
		t.Fatal(err)
	}
	board := map[string]any{}
	for i := range linTasks {
		board[fmt.Sprintf("t%d", i)] = map[string]any{"status": "open", "owner": nil}
	}
	p, _ := json.Marshal([]any{map[string]any{"op": "add", "path": "", "value": map[string]any{"tasks": board, "reg": "", "n": 0}}})
	zero := uint64(0)
	sw, err := journal.OpenWriter(dir, "setup")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := sw.Append(journal.Intent{File: linDoc, IfVersion: &zero, Patch: p})
	sw.Close()
	if err != nil {
		t.Fatal(err)
	}
	if r, err := journal.WaitResult(ctx, dir, "setup", rec.Seq); err != nil || r.Status != journal.StatusApplied || r.Version != 1 {
		t.Fatalf("create %s: %+v, %v", linDoc, r, err)
	}

	h := &linHistory{start: time.Now()}
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel, on every way out
	defer cancel()
	for c := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := linAgent(ctx, dir, c, ops, rand.New(rand.NewPCG(seed, uint64(c))), h); err != nil && ctx.Err() == nil {
				t.Errorf("agent %d: %v", c, err)
				cancel()
			}
		}()
	}
	// Kill the watcher at random moments while the agents work.
	agentsDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(agentsDone)
	}()
	rng := rand.New(rand.NewPCG(seed, 1<<32))
	killed := 0
	for killed < kills {
		timer := time.NewTimer(time.Duration(50+rng.IntN(250)) * time.Millisecond) // workload, not synchronisation
		select {
		case <-agentsDone:
		case <-timer.C:
		}
		timer.Stop()
		if err := w.kill(); err != nil {
			t.Fatal(err)
		}
		killed++
		if w, err = startSoakWatcher(t, dir); err != nil {
			t.Fatal(err)
		}
		if err := w.waitReady(testTimeout); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-agentsDone:
	case <-ctx.Done():
		<-agentsDone
	}
	if t.Failed() {
		t.FailNow()
	}
	// A final read, after everything returned: the state every order must
	// reach.
	call := h.now()
	doc, err := journal.ReadDocument(ctx, dir, linDoc)
	if err != nil {
		t.Fatal(err)
	}
	final, err := linParse(doc)
	if err != nil {
		t.Fatal(err)
	}
	h.add(agents, linInput{Op: "read", Agent: "final"}, linOutput{Read: final}, call, h.now())
	if err := w.term(); err != nil {
		t.Error(err)
	}
	r := runMain(t, "", "replay", "--dir", dir, "--verify")
	if r.code != exitOK {
		t.Errorf("replay --verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	history := h.ops
	res, path := linCheck(t, history, "linearizability")
	if res != porcupine.Ok {
		t.Fatalf("history of %d operations: %s; visualisation in %s (run with -artifacts, or set TEST_OUTPUT, to keep it)", len(history), res, path)
	}
	applied := 0
	for _, op := range history {
		if op.Output.(linOutput).Status == journal.StatusApplied {
			applied++
		}
	}
	t.Logf("%d operations (%d applied writes), %d watcher kills: linearizable; final %s", len(history), applied, killed, linModel.DescribeState(final))

	// The check can fail: the same history with a last read that misses the
	// final write is rejected.
	stale := final
	stale.Version--
	bad := append(history[:len(history):len(history)], porcupine.Operation{
		ClientId: agents, Input: linInput{Op: "read", Agent: "stale"}, Output: linOutput{Read: stale},
		Call: h.now(), Return: h.now() + 1,
	})
	if res, _ := porcupine.CheckOperationsVerbose(linModel, bad, 30*time.Second); res != porcupine.Illegal {
		t.Errorf("history with a stale read after the end: %s, want Illegal", res)
	}
}

// linAgent runs one agent: ops random operations, each recorded in h.
func linAgent(ctx context.Context, dir string, client, ops int, rng *rand.Rand, h *linHistory) error {
	name := fmt.Sprintf("lin-%d", client)
	w, err := journal.OpenWriter(dir, name)
	if err != nil {
		return err
	}
	defer w.Close()
	res, err := journal.OpenResults(dir, name)
	if err != nil {
		return err
	}
	defer res.Close()
	lastVersion := uint64(1) // the version this agent last saw
	for i := range ops {
		in := linInput{Agent: name, Task: rng.IntN(linTasks)}
		switch x := rng.IntN(100); {
		case x < 30:
			in.Op = "claim"
		case x < 50:
			in.Op = "release"
		case x < 70:
			in.Op = "cas"
			in.IfVersion, in.Value = lastVersion, fmt.Sprintf("%s-%d", name, i)
		case x < 80:
			in.Op = "inc"
		default:
			in.Op = "read"
		}
		call := h.now()
		if in.Op == "read" {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			doc, err := journal.ReadDocument(rctx, dir, linDoc)
			cancel()
			if err != nil {
				return err
			}
			ret := h.now()
			s, err := linParse(doc)
			if err != nil {
				return err
			}
			h.add(client, in, linOutput{Read: s}, call, ret)
			lastVersion = s.Version
			continue
		}
		rec, err := w.Append(linPatch(in))
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		r, err := res.Wait(wctx, rec.Seq)
		cancel()
		if err != nil {
			return err
		}
		ret := h.now()
		if r.Status != journal.StatusApplied && r.Status != journal.StatusConflict {
			return fmt.Errorf("%s seq %d: %s: %s", in.Op, rec.Seq, r.Status, r.Error)
		}
		h.add(client, in, linOutput{Status: r.Status, Version: r.Version}, call, ret)
		lastVersion = r.Version
	}
	return nil
}

// TestLinearizability_Model checks the checker: histories that break the
// rules of a versioned document are rejected, and the visualisation of a
// rejected history is written.
func TestLinearizability_Model(t *testing.T) {
	open := linState{Version: 1}
	claimed := open
	claimed.Version, claimed.Owners[0] = 2, "a"
	op := func(client int, in linInput, out linOutput, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret}
	}
	claimA := op(0, linInput{Op: "claim", Agent: "a"}, linOutput{Status: journal.StatusApplied, Version: 2}, 0, 10)
	for _, tc := range []struct {
		name    string
		history []porcupine.Operation
		want    porcupine.CheckResult
	}{
		{"ConcurrentClaimsOneWins", []porcupine.Operation{
			claimA,
			op(1, linInput{Op: "claim", Agent: "b"}, linOutput{Status: journal.StatusConflict, Version: 2}, 5, 15),
			op(2, linInput{Op: "read", Agent: "c"}, linOutput{Read: claimed}, 20, 30),
		}, porcupine.Ok},
		{"DoubleClaim", []porcupine.Operation{
			claimA,
			op(1, linInput{Op: "claim", Agent: "b"}, linOutput{Status: journal.StatusApplied, Version: 3}, 20, 30),
		}, porcupine.Illegal},
		{"StaleRead", []porcupine.Operation{
			claimA,
			op(1, linInput{Op: "read", Agent: "b"}, linOutput{Read: open}, 20, 30),
		}, porcupine.Illegal},
		{"ReadOfUnfinishedWriteThenOlder", []porcupine.Operation{
			op(0, linInput{Op: "claim", Agent: "a"}, linOutput{Status: journal.StatusApplied, Version: 2}, 0, 100),
			op(1, linInput{Op: "read", Agent: "b"}, linOutput{Read: claimed}, 10, 20),
			op(1, linInput{Op: "read", Agent: "b"}, linOutput{Read: open}, 30, 40),
		}, porcupine.Illegal},
		{"CasAtWrongVersionApplied", []porcupine.Operation{
			claimA,
			op(1, linInput{Op: "cas", Agent: "b", IfVersion: 1, Value: "x"}, linOutput{Status: journal.StatusApplied, Version: 3}, 20, 30),
		}, porcupine.Illegal},
		{"ConflictWithWrongVersion", []porcupine.Operation{
			claimA,
			op(1, linInput{Op: "cas", Agent: "b", IfVersion: 1, Value: "x"}, linOutput{Status: journal.StatusConflict, Version: 1}, 20, 30),
		}, porcupine.Illegal},
		{"LostIncrement", []porcupine.Operation{
			op(0, linInput{Op: "inc", Agent: "a"}, linOutput{Status: journal.StatusApplied, Version: 2}, 0, 10),
			op(1, linInput{Op: "inc", Agent: "b"}, linOutput{Status: journal.StatusApplied, Version: 3}, 0, 10),
			op(2, linInput{Op: "read", Agent: "c"}, linOutput{Read: linState{Version: 3, N: 1}}, 20, 30),
		}, porcupine.Illegal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, path := linCheck(t, tc.history, tc.name)
			if res != tc.want {
				t.Fatalf("check: %s, want %s", res, tc.want)
			}
			if res == porcupine.Illegal {
				if fi, err := os.Stat(path); err != nil || fi.Size() == 0 || !strings.HasSuffix(path, ".html") {
					t.Errorf("visualisation %s: %v", path, err)
				}
			}
		})
	}
}
