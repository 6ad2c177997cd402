package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stateward/stateward/journal"
)

// agentProc is a `stateward demo-agent` child process.
type agentProc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer // written by os/exec until Wait returns
}

// TestEndToEnd runs the product as it is used: a watcher process and eight
// agent processes racing to claim the tasks of one board, with the watcher
// stopped and restarted while they work. Every claim must be won by one
// agent only, every counter must count every claim, every agent must get
// one result per intent in seq order, and the directory must replay to the
// documents on disk.
func TestEndToEnd(t *testing.T) {
	const (
		agents = 8
		tasks  = 200
	)
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()

	w := startWatcher(t, dir)
	if err := setupBoard(ctx, dir, tasks); err != nil {
		t.Fatalf("set up the board: %v", err)
	}
	setupCommit := commitOf(t, dir)

	var procs []*agentProc
	exited := make(chan *agentProc, agents)
	running := 0
	t.Cleanup(func() { // after a failure: leave no agent behind
		for _, p := range procs {
			p.cmd.Process.Kill()
		}
		for ; running > 0; running-- {
			<-exited
		}
	})
	for i := range agents {
		p := &agentProc{name: fmt.Sprintf("agent-%d", i+1)}
		p.cmd = selfCmd(t, "demo-agent", "--dir", dir, "--agent", p.name)
		p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", p.name, err)
		}
		procs = append(procs, p)
		running++
		go func() {
			p.cmd.Wait()
			exited <- p
		}()
	}

	// Each task costs at least two commits (the claim and its counter).
	// Stop the watcher a third of the way through and start another one.
	midway := setupCommit + 2*tasks/3
	waitFor(t, time.Until(deadlineOf(ctx)), fmt.Sprintf("commit %d", midway), func() bool {
		return commitOf(t, dir) >= midway
	})
	w.stop(t)
	stoppedAt := commitOf(t, dir)
	t.Logf("watcher stopped at commit %d (board set up at %d)", stoppedAt, setupCommit)
	w = startWatcher(t, dir)

	for running > 0 {
		select {
		case p := <-exited:
			running--
			if code := p.cmd.ProcessState.ExitCode(); code != 0 {
				t.Fatalf("%s exited %d\nstderr:\n%s", p.name, code, p.stderr.String())
			}
		case <-ctx.Done():
			t.Fatalf("%d agents still running at the deadline\nwatcher log:\n%s", running, w.log)
		}
	}
	w.stop(t)
	final := commitOf(t, dir)
	if final <= stoppedAt {
		t.Errorf("no commit after the restart (stopped at %d, final %d): the restart was not midway", stoppedAt, final)
	}

	// What the agents say they did.
	sums := map[string]agentSummary{}
	owner := map[string]string{}
	for _, p := range procs {
		var sum agentSummary
		dec := json.NewDecoder(&p.stdout)
		if err := dec.Decode(&sum); err != nil {
			t.Fatalf("%s: summary: %v", p.name, err)
		}
		if got, want := sum.Agent, p.name; got != want {
			t.Errorf("summary of %s names agent %q", want, got)
		}
		sums[p.name] = sum
		for _, id := range sum.Claimed {
			if prev, ok := owner[id]; ok {
				t.Errorf("double claim: %s by %s and %s", id, prev, p.name)
			}
			owner[id] = p.name
		}
		// One result per intent, in seq order.
		if got, want := len(sum.Results), sum.Intents; got != want {
			t.Errorf("%s: %d results for %d intents", p.name, got, want)
		}
		for i := 1; i < len(sum.Results); i++ {
			if sum.Results[i] <= sum.Results[i-1] {
				t.Errorf("%s: results out of seq order: %d after %d", p.name, sum.Results[i], sum.Results[i-1])
				break
			}
		}
		if got, want := len(sum.Claimed)*2+sum.Conflicts, sum.Intents; got != want {
			t.Errorf("%s: %d claims and %d conflicts make %d intents, summary says %d", p.name, len(sum.Claimed), sum.Conflicts, got, want)
		}
	}
	if got, want := len(owner), tasks; got != want {
		t.Errorf("%d tasks claimed, want %d", got, want)
	}

	// What the board says.
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	tdoc, err := journal.ReadDocument(rctx, dir, "tasks.json")
	if err != nil {
		t.Fatal(err)
	}
	board, err := parseBoard(tdoc.Data)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(board), tasks; got != want {
		t.Errorf("board has %d tasks, want %d", got, want)
	}
	for id, task := range board {
		who, claimed := owner[id]
		switch {
		case task.Assignee == nil:
			t.Errorf("%s: no assignee on the board (claimed by %q)", id, who)
		case !claimed:
			t.Errorf("%s: assigned to %s on the board, but no agent claimed it", id, *task.Assignee)
		case *task.Assignee != who:
			t.Errorf("%s: assigned to %s on the board, but claimed by %s", id, *task.Assignee, who)
		}
		if task.Status != "claimed" {
			t.Errorf("%s: status %q, want claimed", id, task.Status)
		}
	}
	for id := range owner {
		if _, ok := board[id]; !ok {
			t.Errorf("%s: claimed, but not on the board", id)
		}
	}

	// What the counters say.
	mdoc, err := journal.ReadDocument(rctx, dir, "metrics.json")
	if err != nil {
		t.Fatal(err)
	}
	var metrics struct {
		Claims map[string]int `json:"claims"`
	}
	if err := json.Unmarshal(mdoc.Data, &metrics); err != nil {
		t.Fatal(err)
	}
	total := 0
	for name, sum := range sums {
		if got, want := metrics.Claims[name], len(sum.Claimed); got != want {
			t.Errorf("metrics /claims/%s=%d, want %d", name, got, want)
		}
		total += metrics.Claims[name]
	}
	if got, want := total, tasks; got != want {
		t.Errorf("counters add up to %d, want %d", got, want)
	}
	if got, want := len(metrics.Claims), len(sums); got > want {
		t.Errorf("metrics counts %d agents, want at most %d: %v", got, want, metrics.Claims)
	}

	// What the results files say: one line per seq, in order, none twice.
	for name, sum := range sums {
		res := readResults(t, dir, name)
		if got, want := len(res), sum.Intents; got != want {
			t.Errorf("results/%s: %d lines for %d intents", name, got, want)
		}
		for i, r := range res {
			if got, want := r.Seq, uint64(i+1); got != want {
				t.Errorf("results/%s line %d: seq %d, want %d (one line per seq, in order)", name, i+1, got, want)
				break
			}
			if r.Retry {
				t.Errorf("results/%s seq %d: a retry, but agents never retry", name, r.Seq)
			}
		}
	}

	// The journals replay to the documents on disk.
	r := runMain(t, "", "replay", "--dir", dir, "--verify")
	if r.code != exitOK {
		t.Errorf("replay --verify: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}

	intents := 0
	for _, s := range sums {
		intents += s.Intents
	}
	t.Logf("%d agents, %d tasks, %d intents, %d commits, restart at commit %d, in %s",
		agents, tasks, intents, final, stoppedAt, time.Since(start).Round(time.Millisecond))
	if t.Failed() {
		var b strings.Builder
		for _, p := range procs {
			fmt.Fprintf(&b, "%s stderr:\n%s\n", p.name, p.stderr.String())
		}
		t.Logf("%s", b.String())
	}
}

// commitOf returns the last commit whose documents are on disk in dir.
func commitOf(tb testing.TB, dir string) uint64 {
	tb.Helper()
	v, err := journal.ReadVersions(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return v.Commit
}

// deadlineOf returns the deadline of ctx, which must have one.
func deadlineOf(ctx context.Context) time.Time {
	d, ok := ctx.Deadline()
	if !ok {
		panic("context without deadline")
	}
	return d
}
