package main

import (
	"encoding/json"
	"testing"

	"github.com/stateward/stateward/journal"
)

func TestForget(t *testing.T) {
	dir := t.TempDir()
	startWatcher(t, dir)
	inc := `[{"op":"inc","path":"/n","value":1}]`
	submitResult(t, exitOK, "", "--dir", dir, "--agent", "a", "--file", "c.json", "--merge", `{"n":0}`)
	if res := submitResult(t, exitOK, "", "--dir", dir, "--agent", "a", "--file", "c.json", "--id", "k", inc); res.Seq != 2 {
		t.Fatalf("seq %d, want 2", res.Seq)
	}

	t.Run("RefusedWhileWriterOpen", func(t *testing.T) {
		w, err := journal.OpenWriter(dir, "a")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		r := runMain(t, "", "forget", "--dir", dir, "--agent", "a", "--timeout", "30s")
		if r.code != exitConflict {
			t.Fatalf("forget with a writer open: exit %d, want %d (stderr %q)", r.code, exitConflict, r.stderr)
		}
	})
	t.Run("Forgotten", func(t *testing.T) {
		r := mustRun(t, exitOK, "", "forget", "--dir", dir, "--agent", "a", "--timeout", "30s")
		var ans struct {
			Agent, Status string
		}
		oneLine(t, r.stdout, &ans)
		if ans.Agent != "a" || ans.Status != "forgotten" {
			t.Fatalf("forget printed %q", r.stdout)
		}
		// The name starts afresh: seq 1 again, the same id, a new intent.
		res := submitResult(t, exitOK, "", "--dir", dir, "--agent", "a", "--file", "c.json", "--id", "k", inc)
		if res.Seq != 1 || res.Retry || res.Status != journal.StatusApplied {
			t.Fatalf("after forget: %+v, want seq 1 applied", res)
		}
		var doc struct{ N int }
		if err := json.Unmarshal(readDoc(t, dir, "c.json").Data, &doc); err != nil || doc.N != 2 {
			t.Errorf("c.json n = %d (%v), want 2", doc.N, err)
		}
	})
	t.Run("Usage", func(t *testing.T) {
		mustRun(t, exitUsage, "", "forget", "--dir", dir)
		mustRun(t, exitUsage, "", "forget", "--dir", dir, "--agent", "../x")
	})
}
