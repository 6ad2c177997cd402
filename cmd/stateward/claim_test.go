package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stateward/stateward/journal"
)

func init() {
	agentRecipes["claim_next"] = claimNextAgent
}

// claimNextAgent drains the board of tasks.json with claim_next: it claims
// the next ready task, then marks it done, until every task is done. When
// nothing is ready yet (others hold the dependencies) it reads the board
// and tries again after a short, growing pause.
func claimNextAgent(ctx context.Context, a *recipeAgent) error {
	spec := journal.ClaimSpec{
		Path: "/tasks", Match: map[string]any{"status": "open"},
		Deps: "deps", Order: "priority",
		Set: map[string]any{"status": "claimed", "owner": a.spec.Agent},
	}
	pause := time.Millisecond
	for {
		c, err := journal.ClaimNext(ctx, a.w, a.r, "tasks.json", spec,
			json.RawMessage(`{"op":"add","path":"$claimed/claimed_at","value":1}`))
		a.note("claim", c.Pointer, c.Result, 1)
		switch {
		case errors.Is(err, journal.ErrNothingReady):
			var board struct {
				Tasks map[string]struct{ Status string }
			}
			doc, err := journal.ReadDocument(ctx, a.spec.Dir, "tasks.json")
			if err != nil {
				return err
			}
			if err := json.Unmarshal(doc.Data, &board); err != nil {
				return err
			}
			left := 0
			for _, t := range board.Tasks {
				if t.Status != "done" {
					left++
				}
			}
			if left == 0 {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(a.rng.Int64N(int64(pause))) + pause/2):
			}
			pause = min(2*pause, 50*time.Millisecond)
			continue
		case err != nil:
			return err
		}
		pause = time.Millisecond
		if _, err := a.submit(ctx, "done", c.Pointer, "tasks.json", []any{
			pop("test", c.Pointer+"/owner", a.spec.Agent),
			pop("replace", c.Pointer+"/status", "done"),
		}, ""); err != nil {
			return err
		}
	}
}

// TestRecipes_ClaimNext drains a board with a random dependency DAG with
// claim_next from 16 agent processes (4 with 40 tasks under -short): every
// task is claimed exactly once, and never before each of its dependencies
// was done (by commit order).
func TestRecipes_ClaimNext(t *testing.T) {
	agents, n := 16, 200
	if testing.Short() {
		agents, n = 4, 40
	}
	r := rand.New(rand.NewPCG(22, uint64(time.Now().UnixNano())))
	tasks := map[string]any{}
	deps := map[string][]string{}
	for i := range n {
		id := fmt.Sprintf("t%03d", i)
		var ds []string
		for range r.IntN(4) {
			if i > 0 {
				ds = append(ds, fmt.Sprintf("t%03d", r.IntN(i)))
			}
		}
		deps[id] = ds
		tasks[id] = map[string]any{"status": "open", "priority": r.IntN(10), "deps": append([]string{}, ds...)}
	}
	dir := t.TempDir()
	w := startWatcher(t, dir)
	setupDoc(t, dir, "tasks.json", map[string]any{"tasks": tasks})
	reports := runAgents(t, agentSpecs(dir, "claim_next", agents, func(i int, s *agentSpec) {}))

	claimed := map[string]uint64{} // task pointer -> commit of its claim
	done := map[string]uint64{}
	for agent, ops := range opsOf(reports, "claim") {
		for _, o := range ops {
			if o.Status != journal.StatusApplied {
				continue
			}
			if _, dup := claimed[o.Key]; dup {
				t.Errorf("%s claimed twice (again by %s)", o.Key, agent)
			}
			claimed[o.Key] = o.Commit
		}
	}
	for agent, ops := range opsOf(reports, "done") {
		for _, o := range ops {
			if o.Status != journal.StatusApplied {
				t.Errorf("%s: done %s: %s", agent, o.Key, o.Status)
			}
			done[o.Key] = o.Commit
		}
	}
	if got, want := len(claimed), n; got != want {
		t.Errorf("%d tasks claimed, want %d", got, want)
	}
	for id, ds := range deps {
		c, ok := claimed["/tasks/"+id]
		if !ok {
			continue
		}
		for _, d := range ds {
			if dc, ok := done["/tasks/"+d]; !ok || dc >= c {
				t.Errorf("%s claimed at commit %d, its dependency %s done at %d", id, c, d, dc)
			}
		}
	}
	var board struct {
		Tasks map[string]struct{ Status, Owner string }
	}
	readData(t, dir, "tasks.json", &board)
	for id, task := range board.Tasks {
		if task.Status != "done" || task.Owner == "" {
			t.Errorf("%s ends %+v, want done with an owner", id, task)
		}
	}
	verifyReplay(t, w, dir)
}
