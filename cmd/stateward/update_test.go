package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stateward/stateward/journal"
)

// updateResult is what `update` prints: a result with its attempts.
type updateResult struct {
	journal.Result
	Attempts int `json:"attempts"`
}

// runUpdate runs `update` in-process and decodes the line it printed,
// failing unless it exits with want. For exit codes that print nothing,
// the result is zero.
func runUpdate(tb testing.TB, want int, args ...string) (updateResult, cliResult) {
	tb.Helper()
	r := mustRun(tb, want, "", append([]string{"update"}, args...)...)
	var res updateResult
	if r.stdout != "" {
		if !strings.HasSuffix(r.stdout, "\n") || strings.Count(r.stdout, "\n") != 1 {
			tb.Fatalf("output is not one line: %q", r.stdout)
		}
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			tb.Fatalf("output is not JSON: %v: %q", err, r.stdout)
		}
	}
	return res, r
}

// incScript is a COMMAND that reads {"n":N} on standard input and prints
// the patch that makes it N+1, with plain sh.
const incScript = `read -r doc; n=${doc#*:}; n=${n%\}}; echo "[{\"op\":\"replace\",\"path\":\"/n\",\"value\":$((n+1))}]"`

// journalLen returns the number of records in agent's journal.
func journalLen(tb testing.TB, dir, agent string) int {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "journal", agent, journal.SegmentName(1)))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		tb.Fatal(err)
	}
	return strings.Count(string(data), "\n")
}

// docData reads a document's data through `read`.
func docData(tb testing.TB, dir, file string) (string, uint64) {
	tb.Helper()
	r := mustRun(tb, exitOK, "", "read", "--dir", dir, file)
	var doc journal.Document
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		tb.Fatalf("read %s: %v: %q", file, err, r.stdout)
	}
	return string(doc.Data), doc.Version
}

func TestUpdate(t *testing.T) {
	needTools(t, "the COMMANDs", "sh")
	dir := t.TempDir()
	startWatcher(t, dir)

	t.Run("CreateThenIncrement", func(t *testing.T) {
		seen := filepath.Join(t.TempDir(), "seen")
		// The COMMAND records its standard input and environment.
		script := `cat >"$1.in"; echo "$STATEWARD_FILE $STATEWARD_VERSION $STATEWARD_ATTEMPT" >"$1.env"; echo '[{"op":"add","path":"","value":{"n":1}}]'`
		res, _ := runUpdate(t, exitOK, "--dir", dir, "--agent", "a1", "--file", "inc.json", "--", "sh", "-c", script, "sh", seen)
		if res.Status != journal.StatusApplied || res.Version != 1 || res.Attempts != 1 || res.Seq != 1 || res.File != "inc.json" {
			t.Errorf("result %+v, want seq 1 of inc.json applied at version 1 in 1 attempt", res)
		}
		for _, f := range []struct{ name, want string }{
			{seen + ".in", "null\n"},
			{seen + ".env", "inc.json 0 1\n"},
		} {
			got, err := os.ReadFile(f.name)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != f.want {
				t.Errorf("%s: %q, want %q", filepath.Base(f.name), got, f.want)
			}
		}
		res, _ = runUpdate(t, exitOK, "--dir", dir, "--agent", "a1", "--file", "inc.json", "sh", "-c", incScript)
		if res.Status != journal.StatusApplied || res.Version != 2 || res.Attempts != 1 {
			t.Errorf("result %+v, want applied at version 2 in 1 attempt", res)
		}
		if data, _ := docData(t, dir, "inc.json"); data != `{"n":2}` {
			t.Errorf("data=%s, want {\"n\":2}", data)
		}
	})

	// RetriesConflict: on its first run, the COMMAND has another agent
	// change the document (a `stateward submit` of this test binary)
	// before it prints its patch, which is then stale: the update
	// conflicts, runs the COMMAND again on the new document, and applies.
	t.Run("RetriesConflict", func(t *testing.T) {
		submitResultOK(t, dir, "r.json", `[{"op":"add","path":"","value":{"n":1}}]`)
		script := `if [ "$STATEWARD_ATTEMPT" = 1 ]; then
  ` + childEnv + `=1 "$1" submit --dir "$2" --agent other --file r.json --wait '[{"op":"inc","path":"/n","value":10}]' >/dev/null || exit 9
fi
` + incScript
		res, _ := runUpdate(t, exitOK, "--dir", dir, "--agent", "a2", "--file", "r.json", "--", "sh", "-c", script, "sh", os.Args[0], dir)
		if res.Status != journal.StatusApplied || res.Attempts != 2 || res.Seq != 2 {
			t.Errorf("result %+v, want applied on the second attempt (seq 2)", res)
		}
		if data, version := docData(t, dir, "r.json"); data != `{"n":12}` || version != 3 {
			t.Errorf("data=%s at version %d, want {\"n\":12} at 3: the other agent's +10 kept", data, version)
		}
		first := readResults(t, dir, "a2")[0]
		if first.Status != journal.StatusConflict {
			t.Errorf("first attempt: %+v, want a conflict", first)
		}
	})

	t.Run("ConflictExhausted", func(t *testing.T) {
		submitResultOK(t, dir, "x.json", `[{"op":"add","path":"","value":{"n":1}}]`)
		res, r := runUpdate(t, exitConflict, "--dir", dir, "--agent", "a3", "--file", "x.json", "--retries", "2", "--",
			"echo", `[{"op":"test","path":"/n","value":0},{"op":"replace","path":"/n","value":5}]`)
		if res.Status != journal.StatusConflict || res.Attempts != 3 || res.Seq != 3 {
			t.Errorf("result %+v, want the conflict of the third attempt", res)
		}
		if !strings.Contains(r.stderr, "3 attempts") {
			t.Errorf("stderr=%q, want it to say how many attempts", r.stderr)
		}
	})

	t.Run("Rejected", func(t *testing.T) {
		submitResultOK(t, dir, "rej.json", `[{"op":"add","path":"","value":{}}]`)
		res, _ := runUpdate(t, exitRejected, "--dir", dir, "--agent", "a4", "--file", "rej.json", "--",
			"echo", `[{"op":"replace","path":"/missing/x","value":1}]`)
		if res.Status != journal.StatusRejected || res.Attempts != 1 || res.Error == "" {
			t.Errorf("result %+v, want rejected at once, with the reason", res)
		}
	})

	t.Run("Merge", func(t *testing.T) {
		res, _ := runUpdate(t, exitOK, "--dir", dir, "--agent", "a5", "--file", "state.json", "--merge", "--", "echo", `{"notes":{"build":"green"}}`)
		if res.Status != journal.StatusApplied {
			t.Errorf("result %+v, want applied", res)
		}
		if data, _ := docData(t, dir, "state.json"); data != `{"notes":{"build":"green"}}` {
			t.Errorf("data=%s", data)
		}
	})

	// SkipIfVersion: a compare-and-set built from a stale read still
	// applies, as what it tests has not changed; with if_version it would
	// have conflicted.
	t.Run("SkipIfVersion", func(t *testing.T) {
		submitResultOK(t, dir, "cas.json", `[{"op":"add","path":"","value":{"owner":null,"other":0}}]`)
		script := childEnv + `=1 "$1" submit --dir "$2" --agent other --file cas.json --wait '[{"op":"inc","path":"/other","value":1}]' >/dev/null || exit 9
echo '[{"op":"test","path":"/owner","value":null},{"op":"replace","path":"/owner","value":"a6"}]'`
		res, _ := runUpdate(t, exitOK, "--dir", dir, "--agent", "a6", "--file", "cas.json", "--skip-if-version", "--", "sh", "-c", script, "sh", os.Args[0], dir)
		if res.Status != journal.StatusApplied || res.Attempts != 1 {
			t.Errorf("result %+v, want applied at once", res)
		}
		if data, _ := docData(t, dir, "cas.json"); data != `{"other":1,"owner":"a6"}` {
			t.Errorf("data=%s", data)
		}

		_, r := runUpdate(t, exitError, "--dir", dir, "--agent", "a6", "--file", "cas.json", "--skip-if-version", "--",
			"echo", `[{"op":"replace","path":"/owner","value":"a6"}]`)
		if !strings.Contains(r.stderr, "not safe without if_version") {
			t.Errorf("stderr=%q, want it to refuse a blind replace", r.stderr)
		}
		if got, want := journalLen(t, dir, "a6"), 1; got != want {
			t.Errorf("journal of a6 has %d records, want %d: nothing appended for the refused patch", got, want)
		}
	})

	t.Run("NoChange", func(t *testing.T) {
		res, r := runUpdate(t, exitOK, "--dir", dir, "--agent", "a7", "--file", "inc.json", "--", "true")
		if res != (updateResult{}) || r.stdout != "" {
			t.Errorf("stdout=%q, want nothing: COMMAND printed no patch", r.stdout)
		}
		if got := journalLen(t, dir, "a7"); got != 0 {
			t.Errorf("journal of a7 has %d records, want none", got)
		}
	})

	for _, tc := range []struct {
		name, script, stderr string
	}{
		{"CommandFails", `echo "t1 is not yours" >&2; exit 7`, "t1 is not yours"},
		{"CommandFailsStatus", `exit 7`, "exit status 7"},
		{"NotJSON", `echo '[{"op":'`, "not valid JSON"},
		{"NotAnArray", `echo '{"n":1}'`, "JSON array"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, r := runUpdate(t, exitError, "--dir", dir, "--agent", "a8", "--file", "inc.json", "--", "sh", "-c", tc.script)
			if !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr=%q, want %q", r.stderr, tc.stderr)
			}
			if got := journalLen(t, dir, "a8"); got != 0 {
				t.Errorf("journal of a8 has %d records, want none", got)
			}
		})
	}

	t.Run("NoCommand", func(t *testing.T) {
		runUpdate(t, exitError, "--dir", dir, "--agent", "a9", "--file", "inc.json", "--", "/nonexistent/command")
	})
}

// submitResultOK creates or changes a document as agent "setup" and
// fails unless it is applied.
func submitResultOK(tb testing.TB, dir, file, patch string) {
	tb.Helper()
	mustRun(tb, exitOK, "", "submit", "--dir", dir, "--agent", "setup", "--file", file, "--wait", "--timeout", "30s", patch)
}

func TestUpdate_Timeout(t *testing.T) {
	dir := t.TempDir() // no watcher
	_, r := runUpdate(t, exitTimeout, "--dir", dir, "--agent", "a", "--file", "x.json", "--timeout", "2s", "--",
		"echo", `[{"op":"add","path":"","value":1}]`)
	if !strings.Contains(r.stderr, "seq 1 appended") {
		t.Errorf("stderr=%q, want it to say the intent was appended", r.stderr)
	}
	if got, want := journalLen(t, dir, "a"), 1; got != want {
		t.Errorf("journal has %d records, want %d", got, want)
	}
}

func TestUpdate_Usage(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"NoDir", []string{"--agent", "a", "--file", "x.json", "--", "true"}},
		{"NoAgent", []string{"--dir", dir, "--file", "x.json", "--", "true"}},
		{"NoFile", []string{"--dir", dir, "--agent", "a", "--", "true"}},
		{"NoCommand", []string{"--dir", dir, "--agent", "a", "--file", "x.json"}},
		{"NoCommandAfterDashes", []string{"--dir", dir, "--agent", "a", "--file", "x.json", "--"}},
		{"BadAgent", []string{"--dir", dir, "--agent", "../a", "--file", "x.json", "--", "true"}},
		{"BadFile", []string{"--dir", dir, "--agent", "a", "--file", "x.txt", "--", "true"}},
		{"NegativeRetries", []string{"--dir", dir, "--agent", "a", "--file", "x.json", "--retries", "-1", "--", "true"}},
		{"ZeroTimeout", []string{"--dir", dir, "--agent", "a", "--file", "x.json", "--timeout", "0s", "--", "true"}},
		{"MergeSkip", []string{"--dir", dir, "--agent", "a", "--file", "x.json", "--merge", "--skip-if-version", "--", "true"}},
		{"UnknownFlag", []string{"--dir", dir, "--agent", "a", "--file", "x.json", "--bogus", "--", "true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runMain(t, "", append([]string{"update"}, tc.args...)...)
			if r.code != exitUsage {
				t.Fatalf("exit %d, want %d\nstderr:\n%s", r.code, exitUsage, r.stderr)
			}
			if _, err := os.Stat(filepath.Join(dir, "journal")); !os.IsNotExist(err) {
				t.Errorf("a usage error touched the state directory: %v", err)
			}
		})
	}
	t.Run("Help", func(t *testing.T) {
		r := runMain(t, "", "update", "--help")
		if r.code != exitOK || !strings.Contains(r.stderr, "COMMAND") {
			t.Errorf("exit %d, stderr %q; want 0 and the synopsis", r.code, r.stderr)
		}
	})
}

// TestUpdate_Processes runs `stateward update` from eight agents at once,
// each a sequence of processes incrementing one counter with a shell
// COMMAND: every increment lands once.
func TestUpdate_Processes(t *testing.T) {
	needTools(t, "the COMMANDs", "sh")
	const agents, perAgent = 8, 3
	dir := t.TempDir()
	startWatcher(t, dir)
	submitResultOK(t, dir, "n.json", `[{"op":"add","path":"","value":{"n":0}}]`)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	errs := make(chan error, agents)
	for i := range agents {
		go func() {
			for range perAgent {
				self := selfCmd(t, "update", "--dir", dir, "--agent", fmt.Sprintf("agent-%d", i+1), "--file", "n.json", "--", "sh", "-c", incScript)
				cmd := exec.CommandContext(ctx, self.Path, self.Args[1:]...)
				cmd.Env = quickExit(self.Env)
				out, err := cmd.CombinedOutput()
				if err != nil {
					errs <- fmt.Errorf("agent-%d: %v: %s", i+1, err, out)
					return
				}
			}
			errs <- nil
		}()
	}
	for range agents {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if data, version := docData(t, dir, "n.json"); data != fmt.Sprintf(`{"n":%d}`, agents*perAgent) || version != 1+agents*perAgent {
		t.Errorf("data=%s at version %d, want n=%d at version %d", data, version, agents*perAgent, 1+agents*perAgent)
	}
}
