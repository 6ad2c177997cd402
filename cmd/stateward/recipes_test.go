package main

// The recipes of docs/recipes.md, each run concurrently by several agent
// processes against a real watcher, and the contention test and benchmark
// of journal.Updater.
//
// An agent is the test binary run again as a child (as
// cmd/go/internal/lockedfile's tests do): recipeAgentEnv carries its
// agentSpec, and -test.run selects TestRecipeAgent, which plays the agent
// with the journal package, as a Go agent would, and prints its report. The
// watcher is a `stateward watch` child (startWatcher).

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stateward/stateward/journal"
)

// recipeAgentEnv, when set, holds the JSON agentSpec of the recipe agent
// that TestRecipeAgent plays.
const recipeAgentEnv = "STATEWARD_TEST_RECIPE_AGENT"

// recipeTimeout bounds each recipe test, agents included.
const recipeTimeout = 3 * time.Minute

// agentSpec tells a recipe agent what to do.
type agentSpec struct {
	Recipe string   `json:"recipe"`
	Dir    string   `json:"dir"`
	Agent  string   `json:"agent"`
	N      int      `json:"n"`               // how many times (recipe-specific)
	Cap    int      `json:"cap,omitempty"`   // capped-log length
	Tasks  []string `json:"tasks,omitempty"` // task ids to work on
	Parent string   `json:"parent,omitempty"`
	Closer bool     `json:"closer,omitempty"` // spawn: also close the parent

	MaxAttempts int `json:"max_attempts,omitempty"` // Updater knob, if > 0
}

// agentReport is what a recipe agent did: one opReport per operation, in
// order.
type agentReport struct {
	Agent   string        `json:"agent"`
	Ops     []opReport    `json:"ops"`
	Elapsed time.Duration `json:"elapsed"` // from the start to the last op
}

// opReport is one operation of an agent and how it ended.
type opReport struct {
	Op       string `json:"op"`       // recipe step: create, claim, count, ...
	Key      string `json:"key"`      // what it was about: a task id, a log entry
	Status   string `json:"status"`   // applied, conflict, rejected, or nochange
	Retry    bool   `json:"retry"`    // the result answers a retry
	Version  uint64 `json:"version"`  // from the result
	Commit   uint64 `json:"commit"`   // from the result
	Attempts int    `json:"attempts"` // intents submitted for it
}

// statusNoChange is the status an agent reports when an update found
// nothing to do (journal.ErrNoChange) and submitted nothing.
const statusNoChange = "nochange"

// TestRecipeAgent is not a test: it is the body of a recipe agent process.
func TestRecipeAgent(t *testing.T) {
	raw := os.Getenv(recipeAgentEnv)
	if raw == "" {
		t.Skip("the recipe tests run this as a child process")
	}
	var spec agentSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatalf("%s: %v", recipeAgentEnv, err)
	}
	recipe, ok := agentRecipes[spec.Recipe]
	if !ok {
		t.Fatalf("unknown recipe %q", spec.Recipe)
	}
	ctx, cancel := context.WithTimeout(t.Context(), recipeTimeout)
	defer cancel()
	a, err := openRecipeAgent(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	// Tell the test we are ready, and start when it says so: all agents
	// then start together, whatever their start-up times.
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("wait for the start: %v", err)
	}
	start := time.Now()
	if err := recipe(ctx, a); err != nil {
		t.Fatalf("%s %s: %v", spec.Recipe, spec.Agent, err)
	}
	a.report.Elapsed = time.Since(start)
	if err := json.NewEncoder(os.Stdout).Encode(a.report); err != nil {
		t.Fatal(err)
	}
}

// recipeAgent is an agent process's client: its journal, its results, an
// Updater over both, and what it has done so far.
type recipeAgent struct {
	spec   agentSpec
	w      *journal.Writer
	r      *journal.Results
	u      *journal.Updater
	rng    *rand.Rand
	report agentReport
}

func openRecipeAgent(spec agentSpec) (*recipeAgent, error) {
	w, err := journal.OpenWriter(spec.Dir, spec.Agent)
	if err != nil {
		return nil, err
	}
	r, err := journal.OpenResults(spec.Dir, spec.Agent)
	if err != nil {
		w.Close()
		return nil, err
	}
	u := journal.NewUpdater(w, r)
	if spec.MaxAttempts > 0 {
		u.MaxAttempts = spec.MaxAttempts
	}
	return &recipeAgent{
		spec:   spec,
		w:      w,
		r:      r,
		u:      u,
		rng:    rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(time.Now().UnixNano()))),
		report: agentReport{Agent: spec.Agent},
	}, nil
}

func (a *recipeAgent) close() {
	a.r.Close()
	a.w.Close()
}

// submit appends an intent of ops (or, for a map, a merge patch) and waits
// for its result. A rejected intent is an error: no recipe makes one.
func (a *recipeAgent) submit(ctx context.Context, op, key, file string, patch any, id string) (journal.Result, error) {
	p, err := json.Marshal(patch)
	if err != nil {
		return journal.Result{}, err
	}
	in := journal.Intent{File: file, ID: id}
	if _, isMerge := patch.(map[string]any); isMerge {
		in.Merge = p
	} else {
		in.Patch = p
	}
	rec, err := a.w.Append(in)
	if err != nil {
		return journal.Result{}, err
	}
	res, err := a.r.Wait(ctx, rec.Seq)
	if err != nil {
		return journal.Result{}, err
	}
	a.note(op, key, res, 1)
	if res.Status == journal.StatusRejected {
		return res, fmt.Errorf("%s %s: rejected: %s", op, key, res.Error)
	}
	return res, nil
}

// update runs fn through the Updater and notes how it ended.
func (a *recipeAgent) update(ctx context.Context, op, key, file string, fn journal.UpdateFunc) (journal.Result, error) {
	res, attempts, err := a.u.Update(ctx, file, fn)
	switch {
	case errors.Is(err, journal.ErrNoChange):
		a.report.Ops = append(a.report.Ops, opReport{Op: op, Key: key, Status: statusNoChange, Attempts: attempts})
		return res, nil
	case err != nil:
		return res, fmt.Errorf("%s %s: %w", op, key, err)
	}
	a.note(op, key, res, attempts)
	return res, nil
}

func (a *recipeAgent) note(op, key string, res journal.Result, attempts int) {
	a.report.Ops = append(a.report.Ops, opReport{
		Op: op, Key: key, Status: res.Status, Retry: res.Retry,
		Version: res.Version, Commit: res.Commit, Attempts: attempts,
	})
}

// The patches of docs/recipes.md. A task is
//
//	{"title": T, "status": S, "owner": A or null, "parent": P or null, "subtasks": [ids]}
//
// under /tasks/<id> of tasks.json. Task ids are made of [A-Za-z0-9._-], so
// they need no JSON Pointer escaping.

// pop returns one patch operation.
func pop(op, path string, value any) map[string]any {
	return map[string]any{"op": op, "path": path, "value": value}
}

func taskPath(id string, field ...string) string {
	return "/tasks/" + strings.Join(append([]string{id}, field...), "/")
}

func newTask(title string, parent any) map[string]any {
	return map[string]any{"title": title, "status": "open", "owner": nil, "parent": parent, "subtasks": []string{}}
}

// createTaskPatch adds a task under an id its creator made unique.
func createTaskPatch(id, title string) []any {
	return []any{pop("add", taskPath(id), newTask(title, nil))}
}

// claimPatch takes an open task nobody owns, all or nothing.
func claimPatch(id, agent string) []any {
	return []any{
		pop("test", taskPath(id, "owner"), nil),
		pop("test", taskPath(id, "status"), "open"),
		pop("replace", taskPath(id, "owner"), agent),
		pop("replace", taskPath(id, "status"), "claimed"),
	}
}

// transitions are the allowed status changes after a claim (the claim is
// open -> claimed): each target status and the one it must come from.
var transitions = map[string]string{"in_progress": "claimed", "done": "in_progress"}

// transitionPatch moves a task the agent owns from the status the
// transition table requires to status to.
func transitionPatch(id, agent, to string) []any {
	return []any{
		pop("test", taskPath(id, "owner"), agent),
		pop("test", taskPath(id, "status"), transitions[to]),
		pop("replace", taskPath(id, "status"), to),
	}
}

// spawnPatch adds a subtask linked both ways to a parent in progress.
func spawnPatch(parent, child, title string) []any {
	return []any{
		pop("test", taskPath(parent, "status"), "in_progress"),
		pop("add", taskPath(child), newTask(title, parent)),
		pop("add", taskPath(parent, "subtasks", "-"), child),
	}
}

// countPatch counts one claim of agent in metrics.json.
func countPatch(agent string) []any {
	return []any{pop("inc", "/claims/"+agent, 1)}
}

// capPatch appends entry to the array /entries of a document and removes
// the oldest entries beyond limit, given the data read.
func capPatch(data json.RawMessage, entry string, limit int) ([]any, error) {
	var log struct {
		Entries []json.RawMessage `json:"entries"`
	}
	if err := json.Unmarshal(data, &log); err != nil {
		return nil, err
	}
	ops := []any{pop("add", "/entries/-", entry)}
	for range len(log.Entries) + 1 - limit {
		ops = append(ops, map[string]any{"op": "remove", "path": "/entries/0"})
	}
	return ops, nil
}

// releasePatch gives back every task agent holds that is not done, given
// the board read; it returns nil if there is none.
func releasePatch(data json.RawMessage, agent string) ([]any, error) {
	board, err := decodeBoard(data)
	if err != nil {
		return nil, err
	}
	var ops []any
	for _, id := range slices.Sorted(maps.Keys(board)) {
		t := board[id]
		if t.Owner == nil || *t.Owner != agent || t.Status == "done" {
			continue
		}
		ops = append(ops,
			pop("test", taskPath(id, "owner"), agent),
			pop("test", taskPath(id, "status"), t.Status),
			pop("replace", taskPath(id, "owner"), nil),
			pop("replace", taskPath(id, "status"), "open"))
	}
	return ops, nil
}

// boardTask is a task as the recipes read it.
type boardTask struct {
	Title    string   `json:"title"`
	Status   string   `json:"status"`
	Owner    *string  `json:"owner"`
	Parent   *string  `json:"parent"`
	Subtasks []string `json:"subtasks"`
}

func decodeBoard(data []byte) (map[string]boardTask, error) {
	var doc struct {
		Tasks map[string]boardTask `json:"tasks"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse tasks.json: %w", err)
	}
	return doc.Tasks, nil
}

// agentRecipes are what an agent process can be asked to do.
var agentRecipes = map[string]func(ctx context.Context, a *recipeAgent) error{
	// counter: N read-modify-write increments of /n in counter.json
	// through the Updater (not inc: the helper's own contention test).
	"counter": func(ctx context.Context, a *recipeAgent) error {
		for i := range a.spec.N {
			_, err := a.update(ctx, "increment", strconv.Itoa(i), "counter.json", func(doc journal.Document) (journal.Intent, error) {
				var c struct {
					N *int `json:"n"`
				}
				if err := json.Unmarshal(doc.Data, &c); err != nil || c.N == nil {
					return journal.Intent{}, fmt.Errorf("counter.json has no /n: %s", doc.Data)
				}
				p, err := json.Marshal([]any{pop("replace", "/n", *c.N+1)})
				return journal.Intent{Patch: p}, err
			})
			if err != nil {
				return err
			}
		}
		return nil
	},

	// create: N new tasks, each with the id <agent>-<seq>, seq being the
	// seq its intent gets. Then the first one again, with the same
	// idempotency key, as an agent restarted after a crash would.
	"create": func(ctx context.Context, a *recipeAgent) error {
		var first []any
		var firstID string
		for i := range a.spec.N {
			id := fmt.Sprintf("%s-%d", a.spec.Agent, a.w.LastSeq()+1)
			patch := createTaskPatch(id, fmt.Sprintf("task %d of %s", i, a.spec.Agent))
			if _, err := a.submit(ctx, "create", id, "tasks.json", patch, "create-"+id); err != nil {
				return err
			}
			if i == 0 {
				first, firstID = patch, id
			}
		}
		_, err := a.submit(ctx, "recreate", firstID, "tasks.json", first, "create-"+firstID)
		return err
	},

	// claim: try to claim every task, in a random order; count each claim
	// won in metrics.json.
	"claim": func(ctx context.Context, a *recipeAgent) error {
		tasks := slices.Clone(a.spec.Tasks)
		a.rng.Shuffle(len(tasks), func(i, j int) { tasks[i], tasks[j] = tasks[j], tasks[i] })
		for _, id := range tasks {
			res, err := a.submit(ctx, "claim", id, "tasks.json", claimPatch(id, a.spec.Agent), "")
			if err != nil {
				return err
			}
			if res.Status != journal.StatusApplied {
				continue
			}
			if _, err := a.submit(ctx, "count", id, "metrics.json", countPatch(a.spec.Agent), "count-claim-"+id); err != nil {
				return err
			}
		}
		return nil
	},

	// transitions: for every task, in a random order: claim it; if won,
	// try to finish it at once (claimed -> done, not allowed), then take
	// it through in_progress to done. If lost, try to start it anyway (not
	// the owner).
	"transitions": func(ctx context.Context, a *recipeAgent) error {
		tasks := slices.Clone(a.spec.Tasks)
		a.rng.Shuffle(len(tasks), func(i, j int) { tasks[i], tasks[j] = tasks[j], tasks[i] })
		me := a.spec.Agent
		for _, id := range tasks {
			res, err := a.submit(ctx, "claim", id, "tasks.json", claimPatch(id, me), "")
			if err != nil {
				return err
			}
			if res.Status != journal.StatusApplied {
				if _, err := a.submit(ctx, "start-not-owner", id, "tasks.json", transitionPatch(id, me, "in_progress"), ""); err != nil {
					return err
				}
				continue
			}
			for _, step := range []struct{ op, to string }{
				{"skip-to-done", "done"}, {"start", "in_progress"}, {"finish", "done"},
			} {
				if _, err := a.submit(ctx, step.op, id, "tasks.json", transitionPatch(id, me, step.to), ""); err != nil {
					return err
				}
			}
		}
		return nil
	},

	// spawn: the closer spawns N subtasks of the parent, then marks the
	// parent done; the others spawn subtasks until one is refused because
	// the parent is done. Each subtask is <agent>-<seq>.
	"spawn": func(ctx context.Context, a *recipeAgent) error {
		for i := 0; !a.spec.Closer || i < a.spec.N; i++ {
			if i == 1000 {
				return fmt.Errorf("1000 subtasks spawned and the parent is still not done")
			}
			child := fmt.Sprintf("%s-%d", a.spec.Agent, a.w.LastSeq()+1)
			patch := spawnPatch(a.spec.Parent, child, fmt.Sprintf("part %d by %s", i, a.spec.Agent))
			res, err := a.submit(ctx, "spawn", child, "tasks.json", patch, "")
			if err != nil {
				return err
			}
			if res.Status == journal.StatusConflict {
				return nil
			}
		}
		_, err := a.submit(ctx, "close-parent", a.spec.Parent, "tasks.json", transitionPatch(a.spec.Parent, a.spec.Agent, "done"), "")
		return err
	},

	// memory: N merge patches of state.json, each setting a key of the
	// agent's own and the shared key last_writer; then key 0 is deleted.
	"memory": func(ctx context.Context, a *recipeAgent) error {
		for i := range a.spec.N {
			key := fmt.Sprintf("%s-%d", a.spec.Agent, i)
			patch := map[string]any{"notes": map[string]any{key: i}, "last_writer": key}
			if _, err := a.submit(ctx, "set", key, "state.json", patch, ""); err != nil {
				return err
			}
		}
		key := a.spec.Agent + "-0"
		_, err := a.submit(ctx, "delete", key, "state.json", map[string]any{"notes": map[string]any{key: nil}}, "")
		return err
	},

	// cappedlog: N entries appended to log.json, capped at Cap entries,
	// through the Updater.
	"cappedlog": func(ctx context.Context, a *recipeAgent) error {
		for i := range a.spec.N {
			entry := fmt.Sprintf("%s-%d", a.spec.Agent, i)
			_, err := a.update(ctx, "append", entry, "log.json", func(doc journal.Document) (journal.Intent, error) {
				ops, err := capPatch(doc.Data, entry, a.spec.Cap)
				if err != nil {
					return journal.Intent{}, err
				}
				p, err := json.Marshal(ops)
				return journal.Intent{Patch: p}, err
			})
			if err != nil {
				return err
			}
		}
		return nil
	},

	// release: N rounds of claiming up to two open tasks (from a fresh
	// read of the board) and then releasing everything held, through the
	// Updater without if_version.
	"release": func(ctx context.Context, a *recipeAgent) error {
		a.u.SkipIfVersion = true
		me := a.spec.Agent
		for range a.spec.N {
			doc, err := journal.ReadDocument(ctx, a.spec.Dir, "tasks.json")
			if err != nil {
				return err
			}
			board, err := decodeBoard(doc.Data)
			if err != nil {
				return err
			}
			var open []string
			for _, id := range slices.Sorted(maps.Keys(board)) {
				if board[id].Owner == nil {
					open = append(open, id)
				}
			}
			a.rng.Shuffle(len(open), func(i, j int) { open[i], open[j] = open[j], open[i] })
			claimed := 0
			for _, id := range open {
				if claimed == 2 {
					break
				}
				res, err := a.submit(ctx, "claim", id, "tasks.json", claimPatch(id, me), "")
				if err != nil {
					return err
				}
				if res.Status == journal.StatusApplied {
					claimed++
				}
			}
			_, err = a.update(ctx, "release", strconv.Itoa(claimed), "tasks.json", func(doc journal.Document) (journal.Intent, error) {
				ops, err := releasePatch(doc.Data, me)
				if err != nil {
					return journal.Intent{}, err
				}
				if len(ops) == 0 {
					return journal.Intent{}, fmt.Errorf("%w: %s holds no task", journal.ErrNoChange, me)
				}
				p, err := json.Marshal(ops)
				return journal.Intent{Patch: p}, err
			})
			if err != nil {
				return err
			}
		}
		return nil
	},
}

// recipeProc is a recipe agent child process.
type recipeProc struct {
	spec   agentSpec
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr strings.Builder // written by os/exec until Wait returns
}

// agentCmd returns the command that runs the test binary as the recipe
// agent spec. Like selfCommand, it leaves out the test's STATEWARD_
// variables.
func agentCmd(ctx context.Context, spec agentSpec) (*exec.Cmd, error) {
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRecipeAgent$", "-test.timeout="+recipeTimeout.String())
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STATEWARD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(quickExit(cmd.Env), recipeAgentEnv+"="+string(raw))
	return cmd, nil
}

// quickExit returns env with the race detector's pause at exit shortened
// from its default of a second: a child built with -race that exits
// otherwise takes a second longer, which adds up over many children.
func quickExit(env []string) []string {
	out := make([]string, 0, len(env)+1)
	gorace := "atexit_sleep_ms=10"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GORACE="); ok {
			gorace = v + " " + gorace
			continue
		}
		out = append(out, kv)
	}
	return append(out, "GORACE="+gorace)
}

// runAgents runs one agent process per spec, all at once: it starts them,
// waits until each is ready, lets them go together, and returns their
// reports in the order of specs. An agent that fails fails the test.
func runAgents(tb testing.TB, specs []agentSpec) []agentReport {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), recipeTimeout)
	defer cancel()
	procs := make([]*recipeProc, len(specs))
	for i, spec := range specs {
		cmd, err := agentCmd(ctx, spec)
		if err != nil {
			tb.Fatal(err)
		}
		p := &recipeProc{spec: spec, cmd: cmd}
		cmd.Stderr = &p.stderr
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			tb.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			tb.Fatal(err)
		}
		p.stdout = bufio.NewReader(out)
		if err := cmd.Start(); err != nil {
			tb.Fatalf("start agent %s: %v", spec.Agent, err)
		}
		procs[i] = p
	}
	// Each agent's output: "ready", then its report, then what the
	// testing package prints. Read it all, then wait for the process.
	type outcome struct {
		i      int
		report agentReport
		err    error
	}
	ready := make(chan int, len(procs))
	done := make(chan outcome, len(procs))
	pending := len(procs) // outcomes not received yet
	defer func() {        // after a failure: leave no agent behind
		cancel()
		for ; pending > 0; pending-- {
			<-done
		}
	}()
	for i, p := range procs {
		go func() {
			line, err := p.stdout.ReadString('\n')
			if err != nil || line != "ready\n" {
				rest, _ := io.ReadAll(p.stdout)
				p.cmd.Wait()
				done <- outcome{i: i, err: fmt.Errorf("not ready: %q%s (%v)", line, rest, p.cmd.ProcessState)}
				return
			}
			ready <- i
			var rep agentReport
			derr := json.NewDecoder(p.stdout).Decode(&rep)
			rest, _ := io.ReadAll(p.stdout)
			werr := p.cmd.Wait()
			if werr != nil || derr != nil {
				done <- outcome{i: i, err: fmt.Errorf("%v, report: %v; output: %s", werr, derr, rest)}
				return
			}
			done <- outcome{i: i, report: rep}
		}()
	}
	reports := make([]agentReport, len(procs))
	var failed []string
	fail := func(o outcome) {
		failed = append(failed, fmt.Sprintf("agent %s: %v\nstderr:\n%s", procs[o.i].spec.Agent, o.err, &procs[o.i].stderr))
	}
	for n := 0; n < len(procs) && len(failed) == 0; n++ {
		select {
		case <-ready:
		case o := <-done:
			pending--
			fail(o)
		case <-ctx.Done():
			tb.Fatalf("agents not ready after %s", recipeTimeout)
		}
	}
	if len(failed) > 0 {
		tb.Fatalf("an agent failed to start:\n%s", failed[0])
	}
	for _, p := range procs {
		p.stdin.Close() // go
	}
	for pending > 0 {
		select {
		case o := <-done:
			pending--
			if o.err != nil {
				fail(o)
			}
			reports[o.i] = o.report
		case <-ctx.Done():
			tb.Fatalf("agents still running after %s", recipeTimeout)
		}
	}
	if len(failed) > 0 {
		tb.Fatalf("%d of %d agents failed:\n%s", len(failed), len(procs), strings.Join(failed, "\n"))
	}
	return reports
}

// agentSpecs returns n specs of recipe in dir for agent-1 ... agent-n,
// each modified by set if it is not nil.
func agentSpecs(dir, recipe string, n int, set func(i int, s *agentSpec)) []agentSpec {
	specs := make([]agentSpec, n)
	for i := range specs {
		specs[i] = agentSpec{Recipe: recipe, Dir: dir, Agent: fmt.Sprintf("agent-%d", i+1)}
		if set != nil {
			set(i, &specs[i])
		}
	}
	return specs
}

// setupDoc creates document file with value, as agent "setup".
func setupDoc(tb testing.TB, dir, file string, value any) {
	tb.Helper()
	p, err := json.Marshal([]any{pop("add", "", value)})
	if err != nil {
		tb.Fatal(err)
	}
	mustRun(tb, exitOK, "", "submit", "--dir", dir, "--agent", "setup", "--file", file, "--if-version", "0", "--wait", "--timeout", "30s", string(p))
}

// readData reads a document's data and version.
func readData(tb testing.TB, dir, file string, v any) uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 10*time.Second)
	defer cancel()
	doc, err := journal.ReadDocument(ctx, dir, file)
	if err != nil {
		tb.Fatal(err)
	}
	if err := json.Unmarshal(doc.Data, v); err != nil {
		tb.Fatalf("%s: %v", file, err)
	}
	return doc.Version
}

// verifyReplay stops the watcher and checks that the journals replay to
// the documents on disk.
func verifyReplay(tb testing.TB, w *watchProc, dir string) {
	tb.Helper()
	w.stop(tb)
	if r := runMain(tb, "", "replay", "--dir", dir, "--verify"); r.code != exitOK {
		tb.Errorf("replay --verify: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// opsOf returns every report of op, with the agent that made it.
func opsOf(reports []agentReport, op string) map[string][]opReport {
	out := map[string][]opReport{}
	for _, rep := range reports {
		for _, o := range rep.Ops {
			if o.Op == op {
				out[rep.Agent] = append(out[rep.Agent], o)
			}
		}
	}
	return out
}

// taskIDs returns n task ids t01, t02, ...
func taskIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("t%02d", i+1)
	}
	return ids
}

// setupBoardOf creates tasks.json with open tasks ids.
func setupBoardOf(tb testing.TB, dir string, ids []string) {
	tb.Helper()
	tasks := map[string]any{}
	for _, id := range ids {
		tasks[id] = newTask("task "+id, nil)
	}
	setupDoc(tb, dir, "tasks.json", map[string]any{"tasks": tasks})
}

func TestRecipes(t *testing.T) {
	const agents = 8

	t.Run("CreateTask", func(t *testing.T) {
		const perAgent = 10
		dir := t.TempDir()
		w := startWatcher(t, dir)
		setupDoc(t, dir, "tasks.json", map[string]any{"tasks": map[string]any{}})
		reports := runAgents(t, agentSpecs(dir, "create", agents, func(i int, s *agentSpec) { s.N = perAgent }))

		var board struct{ Tasks map[string]boardTask }
		version := readData(t, dir, "tasks.json", &board)
		created := 0
		for agent, ops := range opsOf(reports, "create") {
			for _, o := range ops {
				if o.Status != journal.StatusApplied || o.Retry {
					t.Errorf("%s: create %s: %s (retry %v), want applied: ids are unique, nothing to conflict on", agent, o.Key, o.Status, o.Retry)
				}
				if task, ok := board.Tasks[o.Key]; !ok || task.Status != "open" || task.Owner != nil {
					t.Errorf("%s: task %s on the board: %+v, %v; want it open and unowned", agent, o.Key, task, ok)
				}
				created++
			}
		}
		if got, want := created, agents*perAgent; got != want {
			t.Errorf("%d tasks created, want %d", got, want)
		}
		if got, want := len(board.Tasks), agents*perAgent; got != want {
			t.Errorf("board has %d tasks, want %d", got, want)
		}
		for agent, ops := range opsOf(reports, "recreate") {
			if o := ops[0]; !o.Retry || o.Status != journal.StatusApplied {
				t.Errorf("%s: create %s again with its key: %+v, want a copy of the applied result (retry)", agent, o.Key, o)
			}
		}
		if got, want := version, uint64(1+agents*perAgent); got != want {
			t.Errorf("tasks.json at version %d, want %d: a repeated create must not apply again", got, want)
		}
		verifyReplay(t, w, dir)
	})

	// ClaimTask also records each claim in metrics.json (inc).
	t.Run("ClaimTask", func(t *testing.T) {
		tasks := taskIDs(20)
		dir := t.TempDir()
		w := startWatcher(t, dir)
		setupBoardOf(t, dir, tasks)
		setupDoc(t, dir, "metrics.json", map[string]any{"claims": map[string]any{}})
		reports := runAgents(t, agentSpecs(dir, "claim", agents, func(i int, s *agentSpec) { s.Tasks = tasks }))

		var board struct{ Tasks map[string]boardTask }
		readData(t, dir, "tasks.json", &board)
		var metrics struct{ Claims map[string]int }
		readData(t, dir, "metrics.json", &metrics)
		winner := map[string]string{}
		conflicts := 0
		for agent, ops := range opsOf(reports, "claim") {
			won := 0
			for _, o := range ops {
				switch o.Status {
				case journal.StatusApplied:
					if prev, ok := winner[o.Key]; ok {
						t.Errorf("%s claimed by both %s and %s", o.Key, prev, agent)
					}
					winner[o.Key] = agent
					won++
				case journal.StatusConflict:
					conflicts++
				}
			}
			if got, want := metrics.Claims[agent], won; got != want {
				t.Errorf("metrics /claims/%s=%d, want %d claims won", agent, got, want)
			}
		}
		for _, id := range tasks {
			task := board.Tasks[id]
			if task.Owner == nil || *task.Owner != winner[id] || task.Status != "claimed" {
				t.Errorf("%s: owner %v status %s, want claimed by %q", id, task.Owner, task.Status, winner[id])
			}
		}
		if got, want := conflicts, (agents-1)*len(tasks); got != want {
			t.Errorf("%d claims conflicted, want %d (every agent tried every task; one won each)", got, want)
		}
		for agent, ops := range opsOf(reports, "count") {
			for _, o := range ops {
				if o.Status != journal.StatusApplied {
					t.Errorf("%s: count of %s: %s, want applied (inc never conflicts)", agent, o.Key, o.Status)
				}
			}
		}
		verifyReplay(t, w, dir)
	})

	t.Run("StatusTransitions", func(t *testing.T) {
		tasks := taskIDs(12)
		dir := t.TempDir()
		w := startWatcher(t, dir)
		setupBoardOf(t, dir, tasks)
		reports := runAgents(t, agentSpecs(dir, "transitions", agents, func(i int, s *agentSpec) { s.Tasks = tasks }))

		var board struct{ Tasks map[string]boardTask }
		readData(t, dir, "tasks.json", &board)
		owner := map[string]string{}
		for agent, ops := range opsOf(reports, "claim") {
			for _, o := range ops {
				if o.Status == journal.StatusApplied {
					owner[o.Key] = agent
				}
			}
		}
		want := map[string]string{ // op -> the status it must get
			"skip-to-done":    journal.StatusConflict,
			"start-not-owner": journal.StatusConflict,
			"start":           journal.StatusApplied,
			"finish":          journal.StatusApplied,
		}
		for op, status := range want {
			n := 0
			for agent, ops := range opsOf(reports, op) {
				for _, o := range ops {
					n++
					if o.Status != status {
						t.Errorf("%s: %s %s: %s, want %s", agent, op, o.Key, o.Status, status)
					}
					if status == journal.StatusApplied && owner[o.Key] != agent {
						t.Errorf("%s: %s %s applied, but %s owns it", agent, op, o.Key, owner[o.Key])
					}
				}
			}
			wantN := len(tasks)
			if op == "start-not-owner" {
				wantN = (agents - 1) * len(tasks)
			}
			if n != wantN {
				t.Errorf("%d %s operations, want %d", n, op, wantN)
			}
		}
		for _, id := range tasks {
			task := board.Tasks[id]
			if task.Status != "done" || task.Owner == nil || *task.Owner != owner[id] {
				t.Errorf("%s: status %s owner %v, want done by %s", id, task.Status, task.Owner, owner[id])
			}
		}
		verifyReplay(t, w, dir)
	})

	t.Run("SpawnSubtask", func(t *testing.T) {
		const closerSpawns = 6
		dir := t.TempDir()
		w := startWatcher(t, dir)
		parent := newTask("the parent", nil)
		parent["status"], parent["owner"] = "in_progress", "agent-1"
		setupDoc(t, dir, "tasks.json", map[string]any{"tasks": map[string]any{"p": parent}})
		reports := runAgents(t, agentSpecs(dir, "spawn", agents, func(i int, s *agentSpec) {
			s.N, s.Parent, s.Closer = closerSpawns, "p", i == 0
		}))

		var board struct{ Tasks map[string]boardTask }
		readData(t, dir, "tasks.json", &board)
		p := board.Tasks["p"]
		if p.Status != "done" {
			t.Errorf("parent status %s, want done", p.Status)
		}
		var closedAt uint64
		for _, ops := range opsOf(reports, "close-parent") {
			if ops[0].Status != journal.StatusApplied {
				t.Fatalf("closing the parent: %s, want applied", ops[0].Status)
			}
			closedAt = ops[0].Commit
		}
		applied, conflicts := 0, 0
		for agent, ops := range opsOf(reports, "spawn") {
			for i, o := range ops {
				child, onBoard := board.Tasks[o.Key]
				switch o.Status {
				case journal.StatusApplied:
					applied++
					if o.Commit > closedAt {
						t.Errorf("%s: spawn %s applied at commit %d, after the parent was done at %d", agent, o.Key, o.Commit, closedAt)
					}
					if !onBoard || child.Parent == nil || *child.Parent != "p" {
						t.Errorf("%s: subtask %s: %+v on board %v, want it linked to p", agent, o.Key, child, onBoard)
					}
					if n := slices.Index(p.Subtasks, o.Key); n < 0 {
						t.Errorf("%s: subtask %s missing from the parent's subtasks", agent, o.Key)
					}
				case journal.StatusConflict:
					conflicts++
					if o.Commit < closedAt {
						t.Errorf("%s: spawn %s conflicted at commit %d, before the parent was done at %d", agent, o.Key, o.Commit, closedAt)
					}
					if onBoard {
						t.Errorf("%s: spawn %s conflicted, but the subtask is on the board", agent, o.Key)
					}
					if i != len(ops)-1 || agent == "agent-1" {
						t.Errorf("%s: spawn %s conflicted; only the last spawn of an agent other than the closer may", agent, o.Key)
					}
				}
			}
		}
		if got, want := len(p.Subtasks), applied; got != want {
			t.Errorf("parent lists %d subtasks, want %d (one per applied spawn)", got, want)
		}
		if got, want := len(board.Tasks), 1+applied; got != want {
			t.Errorf("board has %d tasks, want %d: no orphan subtask", got, want)
		}
		if got, want := conflicts, agents-1; got != want {
			t.Errorf("%d spawns refused, want %d: one for each agent but the closer", got, want)
		}
		t.Logf("%d subtasks spawned before the parent was done, %d refused after", applied, conflicts)
		verifyReplay(t, w, dir)
	})

	t.Run("SharedMemory", func(t *testing.T) {
		const perAgent = 10
		dir := t.TempDir()
		w := startWatcher(t, dir)
		reports := runAgents(t, agentSpecs(dir, "memory", agents, func(i int, s *agentSpec) { s.N = perAgent }))

		var state struct {
			Notes      map[string]int `json:"notes"`
			LastWriter string         `json:"last_writer"`
		}
		version := readData(t, dir, "state.json", &state)
		var last opReport
		for agent, ops := range opsOf(reports, "set") {
			for _, o := range ops {
				if o.Status != journal.StatusApplied {
					t.Errorf("%s: set %s: %s, want applied (a merge patch has no precondition)", agent, o.Key, o.Status)
				}
				if o.Commit > last.Commit {
					last = o
				}
			}
			for i := 1; i < perAgent; i++ {
				key := fmt.Sprintf("%s-%d", agent, i)
				if v, ok := state.Notes[key]; !ok || v != i {
					t.Errorf("notes/%s=%d (present %v), want %d: an update was lost", key, v, ok, i)
				}
			}
			if _, ok := state.Notes[agent+"-0"]; ok {
				t.Errorf("notes/%s-0 still there, want it deleted by its null", agent)
			}
		}
		if got, want := state.LastWriter, last.Key; got != want {
			t.Errorf("last_writer=%q, want %q, the set with the highest commit (%d)", got, want, last.Commit)
		}
		if got, want := len(state.Notes), agents*(perAgent-1); got != want {
			t.Errorf("%d notes, want %d", got, want)
		}
		if got, want := version, uint64(agents*(perAgent+1)); got != want {
			t.Errorf("state.json at version %d, want %d", got, want)
		}
		verifyReplay(t, w, dir)
	})

	t.Run("CappedLog", func(t *testing.T) {
		const perAgent, limit = 8, 20
		dir := t.TempDir()
		w := startWatcher(t, dir)
		setupDoc(t, dir, "log.json", map[string]any{"entries": []string{}})
		reports := runAgents(t, agentSpecs(dir, "cappedlog", agents, func(i int, s *agentSpec) { s.N, s.Cap = perAgent, limit }))

		var log struct{ Entries []string }
		version := readData(t, dir, "log.json", &log)
		var all []opReport
		attempts := 0
		for agent, ops := range opsOf(reports, "append") {
			if got, want := len(ops), perAgent; got != want {
				t.Errorf("%s appended %d entries, want %d", agent, got, want)
			}
			for _, o := range ops {
				if o.Status != journal.StatusApplied {
					t.Errorf("%s: append %s: %s, want applied", agent, o.Key, o.Status)
				}
				attempts += o.Attempts
			}
			all = append(all, ops...)
		}
		// The log holds the last entries in commit order, none twice.
		slices.SortFunc(all, func(a, b opReport) int { return cmp.Compare(a.Commit, b.Commit) })
		var want []string
		for _, o := range all[len(all)-limit:] {
			want = append(want, o.Key)
		}
		if !slices.Equal(log.Entries, want) {
			t.Errorf("log:\n%v\nwant the last %d entries in commit order:\n%v", log.Entries, limit, want)
		}
		if got, want := version, uint64(1+agents*perAgent); got != want {
			t.Errorf("log.json at version %d, want %d: one version per entry", got, want)
		}
		t.Logf("%d entries in %d attempts: %.2f attempts per entry", len(all), attempts, float64(attempts)/float64(len(all)))
		verifyReplay(t, w, dir)
	})

	t.Run("ReleaseAll", func(t *testing.T) {
		const rounds = 4
		tasks := taskIDs(24)
		dir := t.TempDir()
		w := startWatcher(t, dir)
		setupBoardOf(t, dir, tasks)
		reports := runAgents(t, agentSpecs(dir, "release", agents, func(i int, s *agentSpec) { s.N = rounds }))

		var board struct{ Tasks map[string]boardTask }
		readData(t, dir, "tasks.json", &board)
		for _, id := range tasks {
			if task := board.Tasks[id]; task.Owner != nil || task.Status != "open" {
				t.Errorf("%s: owner %v status %s, want every task released", id, task.Owner, task.Status)
			}
		}
		for agent, ops := range opsOf(reports, "release") {
			if got, want := len(ops), rounds; got != want {
				t.Errorf("%s: %d releases, want %d", agent, got, want)
			}
			for _, o := range ops {
				switch {
				case o.Key == "0" && o.Status != statusNoChange:
					t.Errorf("%s: release holding nothing: %s, want %s", agent, o.Status, statusNoChange)
				case o.Key != "0" && (o.Status != journal.StatusApplied || o.Attempts != 1):
					t.Errorf("%s: release of %s tasks: %s in %d attempts, want applied at once: without if_version, the others' claims do not conflict", agent, o.Key, o.Status, o.Attempts)
				}
			}
		}
		verifyReplay(t, w, dir)
	})
}

// contention runs agents processes that each make perAgent read-modify-write
// increments of one counter through journal.Updater, checks that every
// increment landed exactly once and that every agent finished, and returns
// the attempts of each update and how long the slowest agent took.
func contention(tb testing.TB, agents, perAgent, maxAttempts int) ([]int, time.Duration) {
	tb.Helper()
	dir := tb.TempDir()
	w := startWatcher(tb, dir)
	setupDoc(tb, dir, "counter.json", map[string]any{"n": 0})
	reports := runAgents(tb, agentSpecs(dir, "counter", agents, func(i int, s *agentSpec) {
		s.N, s.MaxAttempts = perAgent, maxAttempts
	}))
	var c struct{ N int }
	version := readData(tb, dir, "counter.json", &c)
	if got, want := c.N, agents*perAgent; got != want {
		tb.Errorf("n=%d, want %d: every increment exactly once", got, want)
	}
	if got, want := version, uint64(1+agents*perAgent); got != want {
		tb.Errorf("counter.json at version %d, want %d", got, want)
	}
	var attempts []int
	var elapsed time.Duration
	for _, rep := range reports {
		elapsed = max(elapsed, rep.Elapsed)
	}
	var perAgentStats []string
	for _, rep := range reports {
		ops := opsOf([]agentReport{rep}, "increment")[rep.Agent]
		if got, want := len(ops), perAgent; got != want {
			tb.Errorf("%s made %d increments, want %d", rep.Agent, got, want)
		}
		var mine []int
		for _, o := range ops {
			if o.Status != journal.StatusApplied {
				tb.Errorf("%s: increment %s: %s", rep.Agent, o.Key, o.Status)
			}
			mine = append(mine, o.Attempts)
		}
		if len(mine) > 0 {
			mean, _, most := attemptStats(mine)
			perAgentStats = append(perAgentStats, fmt.Sprintf("%s %.2f/%d", rep.Agent, mean, most))
		}
		attempts = append(attempts, mine...)
	}
	tb.Logf("attempts per update by agent (mean/max): %s", strings.Join(perAgentStats, ", "))
	verifyReplay(tb, w, dir)
	return attempts, elapsed
}

// attemptStats returns the mean, 99th percentile and maximum of attempts.
func attemptStats(attempts []int) (mean float64, p99, most int) {
	s := slices.Sorted(slices.Values(attempts))
	total := 0
	for _, a := range s {
		total += a
	}
	return float64(total) / float64(len(s)), s[(len(s)*99)/100], s[len(s)-1]
}

// TestUpdater_Contention is the helper under contention: eight agent
// processes increment one counter by read-modify-write through
// journal.Updater with its default knobs. Every increment must land
// exactly once, and every agent must finish its own (no starvation, no
// ErrConflict).
func TestUpdater_Contention(t *testing.T) {
	const agents, perAgent = 8, 10
	attempts, elapsed := contention(t, agents, perAgent, 0)
	mean, p99, most := attemptStats(attempts)
	t.Logf("%d agents x %d updates in %s: %.2f attempts per update (p99 %d, max %d; the limit is %d)",
		agents, perAgent, elapsed.Round(time.Millisecond), mean, p99, most, journal.DefaultMaxAttempts)
}

// BenchmarkUpdater_Contention measures attempts per successful update
// with 2, 8 and 32 agent processes on one counter (docs/recipes.md):
//
//	go test -run '^$' -bench Updater_Contention -benchtime 320x ./cmd/stateward
//
// b.N is the number of updates, shared among the agents; ns/op is the
// time from the agents' common start to the last update, per update. The
// attempt limit is raised so that the tail shows instead of failing.
func BenchmarkUpdater_Contention(b *testing.B) {
	for _, agents := range []int{2, 8, 32} {
		b.Run(fmt.Sprintf("agents=%d", agents), func(b *testing.B) {
			perAgent := max(1, b.N/agents)
			attempts, elapsed := contention(b, agents, perAgent, 1000)
			mean, p99, most := attemptStats(attempts)
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(len(attempts)), "ns/op")
			b.ReportMetric(mean, "attempts/update")
			b.ReportMetric(float64(p99), "p99-attempts")
			b.ReportMetric(float64(most), "max-attempts")
		})
	}
}

// shellDriver is what each agent's shell runs, with the functions of
// docs/recipes.md sourced from $RECIPES: every recipe once, and a race for
// the task "contested". It writes its ids to $OUT.
const shellDriver = `set -e
. "$RECIPES"
ensure tasks.json '{"tasks":{}}'
ensure metrics.json '{"claims":{}}'
won=0
if claim contested; then count_claim contested; won=1; else [ $? -eq 3 ]; fi
t=$(create_task "task of $AGENT")
claim "$t"
count_claim "$t"
count_claim "$t"
transition "$t" in_progress
if transition "$t" in_progress; then exit 1; else [ $? -eq 3 ]; fi
if transition "$t" open; then exit 1; else [ $? -eq 2 ]; fi
c=$(spawn "$t" "part of $t")
claim "$c"
count_claim "$c"
transition "$t" done
if spawn "$t" "too late" >/dev/null; then exit 1; else [ $? -eq 3 ]; fi
remember "$AGENT" '"working"'
remember "$AGENT-tmp" '1'
remember "$AGENT-tmp" 'null'
remember shared "\"$AGENT\""
log_append "$AGENT 1" 3
log_append "$AGENT 2" 3
release_all
[ -z "$(release_all)" ]
echo "$t $c $won" >"$OUT"
`

// TestRecipes_Shell sources the shell functions of docs/recipes.md and
// runs every recipe with them from four agents' shells at once, with
// "stateward" being this test binary.
func TestRecipes_Shell(t *testing.T) {
	needTools(t, "the shell recipes", "sh", "jq", "od", "tr")
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "recipes.md"))
	if err != nil {
		t.Fatal(err)
	}
	var lib strings.Builder
	in := false
	for line := range strings.Lines(string(doc)) {
		switch {
		case !in && strings.TrimSpace(line) == "```sh":
			in = true
		case in && strings.TrimSpace(line) == "```":
			in = false
		case in:
			lib.WriteString(line)
		}
	}
	for _, fn := range []string{"new_id", "ensure", "create_task", "claim", "transition", "spawn", "count_claim", "remember", "log_append", "release_all"} {
		if !strings.Contains(lib.String(), "\n"+fn+"() ") && !strings.HasPrefix(lib.String(), fn+"() ") {
			t.Fatalf("docs/recipes.md defines no shell function %s", fn)
		}
	}
	tmp := t.TempDir()
	recipes := filepath.Join(tmp, "recipes.sh")
	bin := filepath.Join(tmp, "bin")
	if err := os.WriteFile(recipes, []byte(lib.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	self := selfCmd(t)
	wrapper := fmt.Sprintf("#!/bin/sh\nexec env %s=1 %s \"$@\"\n", childEnv, strconv.Quote(self.Path))
	if err := os.WriteFile(filepath.Join(bin, "stateward"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	w := startWatcher(t, dir)
	setupBoardOf(t, dir, []string{"contested"})

	const agents = 4
	ctx, cancel := context.WithTimeout(t.Context(), recipeTimeout)
	defer cancel()
	type ran struct {
		agent string
		out   []byte
		err   error
	}
	done := make(chan ran, agents)
	for i := range agents {
		agent := fmt.Sprintf("sh-%d", i+1)
		cmd := exec.CommandContext(ctx, "sh", "-c", shellDriver)
		for _, kv := range self.Env {
			if !strings.HasPrefix(kv, childEnv+"=") && !strings.HasPrefix(kv, "PATH=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(quickExit(cmd.Env),
			"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
			"STATEWARD_DIR="+dir, "AGENT="+agent, "RECIPES="+recipes,
			"OUT="+filepath.Join(tmp, agent+".out"))
		go func() {
			out, err := cmd.CombinedOutput()
			done <- ran{agent, out, err}
		}()
	}
	for range agents {
		r := <-done
		if r.err != nil {
			t.Errorf("%s: %v\n%s", r.agent, r.err, r.out)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	var board struct{ Tasks map[string]boardTask }
	readData(t, dir, "tasks.json", &board)
	var metrics struct{ Claims map[string]int }
	readData(t, dir, "metrics.json", &metrics)
	var state struct {
		Notes map[string]any `json:"notes"`
	}
	readData(t, dir, "state.json", &state)
	var log struct{ Entries []string }
	logVersion := readData(t, dir, "log.json", &log)

	winners := 0
	for i := range agents {
		agent := fmt.Sprintf("sh-%d", i+1)
		out, err := os.ReadFile(filepath.Join(tmp, agent+".out"))
		if err != nil {
			t.Fatal(err)
		}
		var task, child string
		var won int
		if _, err := fmt.Sscan(string(out), &task, &child, &won); err != nil {
			t.Fatalf("%s: %q: %v", agent, out, err)
		}
		winners += won
		if !strings.HasPrefix(task, agent+"-") || !strings.HasPrefix(child, agent+"-") {
			t.Errorf("%s: ids %s and %s, want them prefixed by the agent", agent, task, child)
		}
		tk, ch := board.Tasks[task], board.Tasks[child]
		if tk.Status != "done" || tk.Owner == nil || *tk.Owner != agent || !slices.Equal(tk.Subtasks, []string{child}) {
			t.Errorf("%s: task %+v, want done, owned, with the one subtask %s", agent, tk, child)
		}
		if ch.Status != "open" || ch.Owner != nil || ch.Parent == nil || *ch.Parent != task {
			t.Errorf("%s: subtask %+v, want released (open, no owner) and linked to %s", agent, ch, task)
		}
		if got, want := metrics.Claims[agent], 2+won; got != want {
			t.Errorf("metrics /claims/%s=%d, want %d (a count sent twice counts once)", agent, got, want)
		}
		if got := state.Notes[agent]; got != "working" {
			t.Errorf("notes/%s=%v, want working", agent, got)
		}
		if _, ok := state.Notes[agent+"-tmp"]; ok {
			t.Errorf("notes/%s-tmp still there, want it deleted", agent)
		}
	}
	if winners != 1 {
		t.Errorf("%d agents won the contested task, want 1", winners)
	}
	if c := board.Tasks["contested"]; c.Owner != nil || c.Status != "open" {
		t.Errorf("contested task: owner %v status %s, want it released by its winner", c.Owner, c.Status)
	}
	if shared, _ := state.Notes["shared"].(string); !strings.HasPrefix(shared, "sh-") {
		t.Errorf("notes/shared=%v, want an agent's name", state.Notes["shared"])
	}
	if got, want := len(log.Entries), 3; got != want {
		t.Errorf("log has %d entries, want the cap, %d: %v", got, want, log.Entries)
	}
	if got, want := logVersion, uint64(2*agents); got != want {
		t.Errorf("log.json at version %d, want %d: one per append", got, want)
	}
	if got, want := len(board.Tasks), 1+2*agents; got != want {
		t.Errorf("board has %d tasks, want %d", got, want)
	}
	verifyReplay(t, w, dir)
}
