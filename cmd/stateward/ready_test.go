package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stateward/stateward/journal"
)

// TestReady lists a board with `ready --json`, claims from it with
// claim_next through `submit`, and checks the exit codes: 0 for a claim
// (with "claimed" in the result), 3 when no task is ready, and 0 for
// `ready` also when nothing is ready.
func TestReady(t *testing.T) {
	dir := t.TempDir()
	startWatcher(t, dir)
	submitResult(t, exitOK, "", "--dir", dir, "--agent", "setup", "--file", "board.json", `[{"op":"add","path":"","value":{"tasks":{
		"t1":{"status":"done"},
		"t2":{"status":"open","priority":2,"blockedBy":["t1"]},
		"t3":{"status":"open","priority":1,"blockedBy":["t2","t9"]},
		"t7":{"status":"open","priority":1},
		"t8":{"status":"open","blockedBy":["t8"]}}}}]`)

	readyJSON := func(t *testing.T) string {
		t.Helper()
		r := mustRun(t, exitOK, "", "ready", "--dir", dir, "--file", "board.json", "--path", "/tasks",
			"--match", `{"status":"open"}`, "--deps", "blockedBy", "--done", `{"status":"done"}`, "--order", "priority", "--json")
		var v map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || strings.Count(strings.TrimSpace(r.stdout), "\n") != 0 {
			t.Fatalf("ready --json printed %q (%v), want one JSON object", r.stdout, err)
		}
		return strings.TrimSpace(r.stdout)
	}
	if got, want := readyJSON(t), `{"version":1,"ready":[{"pointer":"/tasks/t7","task":{"priority":1,"status":"open"}},{"pointer":"/tasks/t2","task":{"blockedBy":["t1"],"priority":2,"status":"open"}}],"blocked":[{"pointer":"/tasks/t3","waiting_for":["/tasks/t9 (missing)","/tasks/t2"]},{"pointer":"/tasks/t8","waiting_for":["/tasks/t8 (cycle)"]}]}`; got != want {
		t.Errorf("ready --json:\n%s\nwant\n%s", got, want)
	}
	r := mustRun(t, exitOK, "", "ready", "--dir", dir, "--file", "board.json", "--path", "/tasks", "--match", `{"status":"open"}`, "--deps", "blockedBy", "--order", "priority")
	if !strings.Contains(r.stdout, "ready    /tasks/t7") || !strings.Contains(r.stdout, "blocked  /tasks/t8 waiting for /tasks/t8 (cycle)") {
		t.Errorf("ready:\n%s", r.stdout)
	}

	claim := `[{"op":"claim_next","path":"/tasks","match":{"status":"open"},"deps":"blockedBy","done":{"status":"done"},"order":"priority","set":{"status":"claimed","owner":"alice"}},{"op":"add","path":"$claimed/at","value":"now"}]`
	for _, want := range []string{"/tasks/t7", "/tasks/t2"} {
		res := submitResult(t, exitOK, "", "--dir", dir, "--agent", "alice", "--file", "board.json", claim)
		if res.Status != journal.StatusApplied || res.Claimed != want {
			t.Fatalf("claim result %+v, want applied, claimed %s", res, want)
		}
	}
	res := submitResult(t, exitConflict, "", "--dir", dir, "--agent", "alice", "--file", "board.json", claim)
	if res.Status != journal.StatusConflict || res.Error != "no ready task under /tasks" || res.Claimed != "" {
		t.Errorf("claim on an empty board: %+v", res)
	}
	if got, want := readyJSON(t), `{"version":3,"ready":[],"blocked":[{"pointer":"/tasks/t3","waiting_for":["/tasks/t9 (missing)","/tasks/t2"]},{"pointer":"/tasks/t8","waiting_for":["/tasks/t8 (cycle)"]}]}`; got != want {
		t.Errorf("ready --json, nothing ready:\n%s\nwant\n%s", got, want)
	}
	mustRun(t, exitUsage, "", "ready", "--dir", dir, "--file", "board.json", "--path", "/tasks", "--match", `[1]`)
	mustRun(t, exitError, "", "ready", "--dir", dir, "--file", "board.json", "--path", "/nope")
}
