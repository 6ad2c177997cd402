package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stateward/stateward/replay"
)

// TestSubmit_TimeoutSaysWhy: a --wait that gets no result says what is
// known, not a guess: whether a watcher holds the lock (and its pid), the
// last commit, the document's state and the agent's backlog.
func TestSubmit_TimeoutSaysWhy(t *testing.T) {
	patch := `[{"op":"add","path":"","value":{}}]`
	t.Run("NoWatcher", func(t *testing.T) {
		dir := t.TempDir()
		r := mustRun(t, exitTimeout, "", "submit", "--dir", dir, "--agent", "bob", "--file", "t.json", "--wait", "--timeout", "300ms", patch)
		for _, want := range []string{
			"seq 1 appended to the journal of bob, but no result within 300ms",
			"no watcher holds the lock of " + dir,
			"stateward watch --dir " + dir,
			"agent bob: 1 intents not processed yet",
		} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
			}
		}
	})
	t.Run("WatcherStuck", func(t *testing.T) {
		// A watcher that holds the lock but does not progress, with the
		// document unusable on disk.
		dir := t.TempDir()
		a := replay.NewApplier(dir, nil)
		if err := a.Open(); err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if err := os.WriteFile(filepath.Join(dir, "t.json"), []byte("{"), 0o644); err != nil {
			t.Fatal(err)
		}
		mustRun(t, exitOK, "", "submit", "--dir", dir, "--agent", "bob", "--file", "t.json", patch)
		if _, err := a.Step(t.Context()); err != nil {
			t.Fatal(err)
		}
		r := mustRun(t, exitTimeout, "", "submit", "--dir", dir, "--agent", "bob", "--file", "t.json", "--wait", "--timeout", "300ms", patch)
		for _, want := range []string{
			fmt.Sprintf("watcher (pid %d) holds the lock of %s; last commit 1 (batch 1)", os.Getpid(), dir),
			"t.json: unusable: not valid JSON",
			"agent bob: 1 intents not processed yet (last processed seq 1); last error: seq 1: document t.json on disk is unusable",
			"the watcher runs but has not reached this intent",
		} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
			}
		}
		if strings.Contains(r.stderr, "is a watcher running") {
			t.Errorf("stderr guesses instead of saying what is known:\n%s", r.stderr)
		}
	})
}

// TestMessages_NoPackagePrefix: CLI error messages do not carry Go package
// prefixes.
func TestMessages_NoPackagePrefix(t *testing.T) {
	dir := t.TempDir()
	r := mustRun(t, exitUsage, "", "submit", "--dir", dir, "--agent", "al", "--file", "x..json", "[]")
	if want := `stateward submit: bad name: document "x..json" must match`; !strings.HasPrefix(r.stderr, want) {
		t.Errorf("stderr %q, want it to start with %q", r.stderr, want)
	}
	for _, tc := range []struct{ in, want string }{
		{"journal: bad name: x", "bad name: x"},
		{"write seg: journal: closed", "write seg: closed"},
		{"replay: stopped after a failed commit: sync: input/output error", "stopped after a failed commit: sync: input/output error"},
		{"cannot read the journal: permission denied", "cannot read the journal: permission denied"},
		{"open: journal: ", "open: journal: "},
	} {
		if got := withoutPrefixes(tc.in); got != tc.want {
			t.Errorf("withoutPrefixes(%q)=%q, want %q", tc.in, got, tc.want)
		}
	}
}
