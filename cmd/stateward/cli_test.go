package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stateward/stateward/journal"
	"github.com/stateward/stateward/replay"
)

// oneLine checks that out is exactly one line ending in "\n" and decodes
// it into v.
func oneLine(tb testing.TB, out string, v any) {
	tb.Helper()
	if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		tb.Fatalf("output is not one line: %q", out)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		tb.Fatalf("output is not JSON: %v: %q", err, out)
	}
}

// compact returns the compact form of JSON text s.
func compact(tb testing.TB, s string) string {
	tb.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(s)); err != nil {
		tb.Fatalf("compact %q: %v", s, err)
	}
	return buf.String()
}

// submitResult runs `submit --wait` and returns the result it printed,
// failing unless it exits with want.
func submitResult(tb testing.TB, want int, stdin string, args ...string) journal.Result {
	tb.Helper()
	r := mustRun(tb, want, stdin, append([]string{"submit", "--wait", "--timeout", "30s"}, args...)...)
	var res journal.Result
	oneLine(tb, r.stdout, &res)
	return res
}

// readDoc runs `read` and returns what it printed.
func readDoc(tb testing.TB, dir, doc string) journal.Document {
	tb.Helper()
	r := mustRun(tb, exitOK, "", "read", "--dir", dir, doc)
	var d journal.Document
	oneLine(tb, r.stdout, &d)
	return d
}

func TestSubmit(t *testing.T) {
	dir := t.TempDir()
	startWatcher(t, dir)

	t.Run("Append", func(t *testing.T) {
		patch := `[ {"op": "add", "path": "", "value": {"n": 1}} ]`
		r := mustRun(t, exitOK, "", "submit", "--dir", dir, "--agent", "append", "--file", "append.json", patch)
		var rec struct {
			Seq   uint64          `json:"seq"`
			File  string          `json:"file"`
			Patch json.RawMessage `json:"patch"`
			Time  string          `json:"time"`
		}
		oneLine(t, r.stdout, &rec)
		if got, want := rec.Seq, uint64(1); got != want {
			t.Errorf("seq=%d, want %d", got, want)
		}
		if got, want := rec.File, "append.json"; got != want {
			t.Errorf("file=%q, want %q", got, want)
		}
		if got, want := string(rec.Patch), compact(t, patch); got != want {
			t.Errorf("patch=%s, want %s", got, want)
		}
		if _, err := time.Parse(time.RFC3339Nano, rec.Time); err != nil {
			t.Errorf("time: %v", err)
		}

		r = mustRun(t, exitOK, "", "submit", "--dir", dir, "--agent", "append", "--file", "append.json", `[]`)
		oneLine(t, r.stdout, &rec)
		if got, want := rec.Seq, uint64(2); got != want {
			t.Errorf("second submit: seq=%d, want %d", got, want)
		}
		// The record is in the journal, and the watcher applies it.
		res, err := journal.WaitResult(t.Context(), dir, "append", 2)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := res.Status, journal.StatusApplied; got != want {
			t.Errorf("result of seq 2: status %q, want %q (%s)", got, want, res.Error)
		}
	})

	t.Run("Applied", func(t *testing.T) {
		res := submitResult(t, exitOK, "", "--dir", dir, "--agent", "applied", "--file", "applied.json", "--if-version", "0",
			`[{"op":"add","path":"","value":{"a":1}}]`)
		if res.Seq != 1 || res.File != "applied.json" || res.Status != journal.StatusApplied || res.Version != 1 || res.Commit == 0 || res.Error != "" {
			t.Errorf("result %+v, want seq 1 applied.json applied version 1 with a commit and no error", res)
		}
		res = submitResult(t, exitOK, "", "--dir", dir, "--agent", "applied", "--file", "applied.json", "--if-version", "1",
			`[{"op":"inc","path":"/a","value":41}]`)
		if res.Seq != 2 || res.Status != journal.StatusApplied || res.Version != 2 {
			t.Errorf("result %+v, want seq 2 applied version 2", res)
		}
		if got, want := string(readDoc(t, dir, "applied.json").Data), `{"a":42}`; got != want {
			t.Errorf("data=%s, want %s", got, want)
		}
	})

	t.Run("ConflictIfVersion", func(t *testing.T) {
		submitResult(t, exitOK, "", "--dir", dir, "--agent", "ifv", "--file", "ifv.json", "--if-version", "0", `[{"op":"add","path":"","value":{}}]`)
		res := submitResult(t, exitConflict, "", "--dir", dir, "--agent", "ifv", "--file", "ifv.json", "--if-version", "7", `[{"op":"add","path":"/x","value":1}]`)
		if res.Status != journal.StatusConflict || res.Version != 1 || res.Error == "" {
			t.Errorf("result %+v, want a conflict at version 1 with an error", res)
		}
		// Creating it again conflicts too: 0 means "must not exist yet".
		res = submitResult(t, exitConflict, "", "--dir", dir, "--agent", "ifv", "--file", "ifv.json", "--if-version", "0", `[{"op":"add","path":"","value":{}}]`)
		if res.Status != journal.StatusConflict {
			t.Errorf("result %+v, want a conflict", res)
		}
		if got, want := readDoc(t, dir, "ifv.json").Version, uint64(1); got != want {
			t.Errorf("version after conflicts=%d, want %d", got, want)
		}
	})

	t.Run("ConflictTest", func(t *testing.T) {
		submitResult(t, exitOK, "", "--dir", dir, "--agent", "test", "--file", "test.json", `[{"op":"add","path":"","value":{"status":"open"}}]`)
		res := submitResult(t, exitConflict, "", "--dir", dir, "--agent", "test", "--file", "test.json",
			`[{"op":"test","path":"/status","value":"closed"},{"op":"replace","path":"/status","value":"done"}]`)
		if res.Status != journal.StatusConflict || res.Error == "" {
			t.Errorf("result %+v, want a conflict with an error", res)
		}
		if got, want := string(readDoc(t, dir, "test.json").Data), `{"status":"open"}`; got != want {
			t.Errorf("data=%s, want %s (a conflicting intent changes nothing)", got, want)
		}
	})

	t.Run("Rejected", func(t *testing.T) {
		submitResult(t, exitOK, "", "--dir", dir, "--agent", "rejected", "--file", "rejected.json", `[{"op":"add","path":"","value":{"a":1}}]`)
		for _, patch := range []string{
			`[{"op":"add","path":"/b","value":2},{"op":"replace","path":"/missing","value":1}]`,
			`[{"op":"bogus","path":"/a"}]`,
			`[{"op":"add","path":"/a/b/c","value":1}]`,
		} {
			res := submitResult(t, exitRejected, "", "--dir", dir, "--agent", "rejected", "--file", "rejected.json", patch)
			if res.Status != journal.StatusRejected || res.Error == "" {
				t.Errorf("%s: result %+v, want rejected with an error", patch, res)
			}
		}
		if got, want := string(readDoc(t, dir, "rejected.json").Data), `{"a":1}`; got != want {
			t.Errorf("data=%s, want %s (intents are atomic)", got, want)
		}
	})

	t.Run("Stdin", func(t *testing.T) {
		res := submitResult(t, exitOK, `[{"op":"add","path":"","value":{"from":"stdin"}}]`+"\n",
			"--dir", dir, "--agent", "stdin", "--file", "stdin.json")
		if res.Status != journal.StatusApplied {
			t.Fatalf("PATCH absent: result %+v, want applied", res)
		}
		res = submitResult(t, exitOK, ` [{"op":"add","path":"/dash","value":true}] `,
			"--dir", dir, "--agent", "stdin", "--file", "stdin.json", "-")
		if res.Status != journal.StatusApplied {
			t.Fatalf(`PATCH "-": result %+v, want applied`, res)
		}
		// Pretty-printed JSON becomes one journal line.
		r := mustRun(t, exitOK, "[\n  {\n    \"op\": \"add\",\n    \"path\": \"/multi\",\n    \"value\": \"line\"\n  }\n]\n",
			"submit", "--dir", dir, "--agent", "stdin", "--file", "stdin.json")
		var rec journal.Intent
		oneLine(t, r.stdout, &rec)
		if got, want := string(rec.Patch), `[{"op":"add","path":"/multi","value":"line"}]`; got != want {
			t.Errorf("patch=%s, want %s", got, want)
		}
		if res, err := journal.WaitResult(t.Context(), dir, "stdin", rec.Seq); err != nil || res.Status != journal.StatusApplied {
			t.Fatalf("result of the multi-line patch: %+v, %v; want applied", res, err)
		}
		if got, want := string(readDoc(t, dir, "stdin.json").Data), `{"dash":true,"from":"stdin","multi":"line"}`; got != want {
			t.Errorf("data=%s, want %s", got, want)
		}
	})

	t.Run("Merge", func(t *testing.T) {
		submitResult(t, exitOK, "", "--dir", dir, "--agent", "merge", "--file", "merge.json",
			`[{"op":"add","path":"","value":{"keep":1,"drop":2,"nested":{"x":1}}}]`)
		res := submitResult(t, exitOK, "", "--dir", dir, "--agent", "merge", "--file", "merge.json", "--merge",
			`{"drop":null,"nested":{"y":2},"new":"v"}`)
		if res.Status != journal.StatusApplied || res.Version != 2 {
			t.Errorf("result %+v, want applied at version 2", res)
		}
		if got, want := string(readDoc(t, dir, "merge.json").Data), `{"keep":1,"nested":{"x":1,"y":2},"new":"v"}`; got != want {
			t.Errorf("data=%s, want %s", got, want)
		}
		// A merge patch need not be an object, nor the record's patch an array.
		res = submitResult(t, exitOK, "", "--dir", dir, "--agent", "merge", "--file", "merge.json", "--merge", `"replaced"`)
		if res.Status != journal.StatusApplied {
			t.Errorf("result %+v, want applied", res)
		}
		if got, want := string(readDoc(t, dir, "merge.json").Data), `"replaced"`; got != want {
			t.Errorf("data=%s, want %s", got, want)
		}
	})

	t.Run("ID", func(t *testing.T) {
		res := submitResult(t, exitOK, "", "--dir", dir, "--agent", "id", "--file", "id.json", "--id", "create-1",
			`[{"op":"add","path":"","value":{"n":0}}]`)
		if got, want := res.ID, "create-1"; got != want {
			t.Errorf("id=%q, want %q", got, want)
		}
		if res.Retry {
			t.Errorf("first use of an id: retry=true")
		}
		// The same id again is a retry: answered with the original result,
		// not applied twice.
		again := submitResult(t, exitOK, "", "--dir", dir, "--agent", "id", "--file", "id.json", "--id", "create-1",
			`[{"op":"add","path":"","value":{"n":0}}]`)
		if again.ID != "create-1" || !again.Retry || again.Seq != 2 || again.Commit != res.Commit || again.Version != res.Version {
			t.Errorf("retry: result %+v, want a copy of %+v with seq 2 and retry", again, res)
		}
		if got, want := readDoc(t, dir, "id.json").Version, uint64(1); got != want {
			t.Errorf("version=%d, want %d", got, want)
		}
	})
}

func TestSubmit_Timeout(t *testing.T) {
	dir := t.TempDir() // no watcher runs here
	start := time.Now()
	r := mustRun(t, exitTimeout, "", "submit", "--dir", dir, "--agent", "a", "--file", "doc.json", "--wait", "--timeout", "300ms", `[]`)
	if elapsed := time.Since(start); elapsed < 300*time.Millisecond {
		t.Errorf("gave up after %s, before --timeout 300ms", elapsed)
	}
	if r.stdout != "" {
		t.Errorf("stdout=%q, want nothing (no result)", r.stdout)
	}
	if !strings.Contains(r.stderr, "seq 1") || !strings.Contains(r.stderr, "300ms") {
		t.Errorf("stderr=%q, want it to name seq 1 and the timeout", r.stderr)
	}
	// The intent was appended all the same: a watcher started later applies it.
	st := readStatus(t, dir)
	if len(st.Agents) != 1 || st.Agents[0].Agent != "a" || st.Agents[0].Backlog != 1 {
		t.Errorf("status agents=%+v, want agent a with a backlog of 1", st.Agents)
	}
}

func TestSubmit_Usage(t *testing.T) {
	patch := `[{"op":"add","path":"","value":1}]`
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
	}{
		{"NoAgent", "", []string{"--file", "doc.json", patch}},
		{"NoFile", "", []string{"--agent", "a", patch}},
		{"BadAgent", "", []string{"--agent", "../a", "--file", "doc.json", patch}},
		{"BadFileTraversal", "", []string{"--agent", "a", "--file", "../doc.json", patch}},
		{"BadFileSlash", "", []string{"--agent", "a", "--file", "sub/doc.json", patch}},
		{"BadFileExtension", "", []string{"--agent", "a", "--file", "doc.txt", patch}},
		{"InvalidJSON", "", []string{"--agent", "a", "--file", "doc.json", `[{"op":"add",`}},
		{"InvalidJSONStdin", "{not json", []string{"--agent", "a", "--file", "doc.json"}},
		{"EmptyStdin", "", []string{"--agent", "a", "--file", "doc.json", "-"}},
		{"NotAnArray", "", []string{"--agent", "a", "--file", "doc.json", `{"op":"add","path":"","value":1}`}},
		{"InvalidMerge", "", []string{"--agent", "a", "--file", "doc.json", "--merge", `{"a":`}},
		{"UnknownFlag", "", []string{"--agent", "a", "--file", "doc.json", "--bogus", patch}},
		{"TwoPatches", "", []string{"--agent", "a", "--file", "doc.json", patch, patch}},
		{"NegativeIfVersion", "", []string{"--agent", "a", "--file", "doc.json", "--if-version", "-1", patch}},
		{"BadTimeout", "", []string{"--agent", "a", "--file", "doc.json", "--timeout", "soon", patch}},
		{"ZeroTimeout", "", []string{"--agent", "a", "--file", "doc.json", "--timeout", "0s", patch}},
		{"LongID", "", []string{"--agent", "a", "--file", "doc.json", "--id", strings.Repeat("x", journal.MaxIDLen+1), patch}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r := runMain(t, tc.stdin, append([]string{"submit", "--dir", dir}, tc.args...)...)
			if got, want := r.code, exitUsage; got != want {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", got, want, r.stdout, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout=%q, want nothing", r.stdout)
			}
			if r.stderr == "" {
				t.Errorf("stderr is empty, want the reason")
			}
			if _, err := os.Stat(filepath.Join(dir, "journal")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a usage error touched the state directory: stat journal: %v", err)
			}
		})
	}

	t.Run("NoDir", func(t *testing.T) {
		r := runMain(t, "", "submit", "--agent", "a", "--file", "doc.json", patch)
		if got, want := r.code, exitUsage; got != want {
			t.Fatalf("exit %d, want %d\nstderr:\n%s", got, want, r.stderr)
		}
		if !strings.Contains(r.stderr, "STATEWARD_DIR") {
			t.Errorf("stderr=%q, want it to mention STATEWARD_DIR", r.stderr)
		}
	})
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	startWatcher(t, dir)
	submitResult(t, exitOK, "", "--dir", dir, "--agent", "a", "--file", "doc.json", `[{"op":"add","path":"","value":{"list":[1,2],"s":"x"}}]`)
	submitResult(t, exitOK, "", "--dir", dir, "--agent", "a", "--file", "doc.json", `[{"op":"add","path":"/list/-","value":3}]`)

	t.Run("Existing", func(t *testing.T) {
		r := mustRun(t, exitOK, "", "read", "--dir", dir, "doc.json")
		if got, want := r.stdout, `{"file":"doc.json","version":2,"data":{"list":[1,2,3],"s":"x"}}`+"\n"; got != want {
			t.Errorf("stdout=%q, want %q", got, want)
		}
	})
	t.Run("FlagsAfterDoc", func(t *testing.T) {
		r := mustRun(t, exitOK, "", "read", "doc.json", "--dir", dir)
		var d journal.Document
		oneLine(t, r.stdout, &d)
		if got, want := d.Version, uint64(2); got != want {
			t.Errorf("version=%d, want %d", got, want)
		}
	})
	t.Run("Missing", func(t *testing.T) {
		r := mustRun(t, exitOK, "", "read", "--dir", dir, "missing.json")
		if got, want := r.stdout, `{"file":"missing.json","version":0,"data":null}`+"\n"; got != want {
			t.Errorf("stdout=%q, want %q", got, want)
		}
	})
	t.Run("MissingInEmptyDir", func(t *testing.T) {
		r := mustRun(t, exitOK, "", "read", "--dir", t.TempDir(), "doc.json")
		if got, want := r.stdout, `{"file":"doc.json","version":0,"data":null}`+"\n"; got != want {
			t.Errorf("stdout=%q, want %q", got, want)
		}
	})
	t.Run("EnvDir", func(t *testing.T) {
		r := runMainEnv(t, map[string]string{"STATEWARD_DIR": dir}, "", "read", "doc.json")
		if r.code != exitOK {
			t.Fatalf("exit %d, want 0\nstderr:\n%s", r.code, r.stderr)
		}
		var d journal.Document
		oneLine(t, r.stdout, &d)
		if got, want := d.Version, uint64(2); got != want {
			t.Errorf("version=%d, want %d", got, want)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"NoDoc", []string{"--dir", dir}},
		{"TwoDocs", []string{"--dir", dir, "doc.json", "other.json"}},
		{"BadDocName", []string{"--dir", dir, "../doc.json"}},
		{"NoDir", []string{"doc.json"}},
		{"UnknownFlag", []string{"--dir", dir, "--bogus", "doc.json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runMain(t, "", append([]string{"read"}, tc.args...)...)
			if got, want := r.code, exitUsage; got != want {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", got, want, r.stdout, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout=%q, want nothing", r.stdout)
			}
		})
	}
}

// statusJSON is the shape of `status --json` that scripts rely on.
type statusJSON struct {
	Dir     string `json:"dir"`
	Watcher string `json:"watcher"`
	Commit  uint64 `json:"commit"`
	Docs    []struct {
		File    string `json:"file"`
		Version uint64 `json:"version"`
		Exists  bool   `json:"exists"`
		Size    int64  `json:"size"`
		State   string `json:"state"`
	} `json:"docs"`
	Agents []struct {
		Agent     string `json:"agent"`
		Seq       uint64 `json:"seq"`
		Backlog   int    `json:"backlog"`
		TornTail  int64  `json:"torn_tail"`
		LastError string `json:"last_error"`
	} `json:"agents"`
}

// readStatus runs `status --json` on dir.
func readStatus(tb testing.TB, dir string) statusJSON {
	tb.Helper()
	r := mustRun(tb, exitOK, "", "status", "--dir", dir, "--json")
	var st statusJSON
	oneLine(tb, r.stdout, &st)
	return st
}

func TestStatus(t *testing.T) {
	dir := t.TempDir()
	w := startWatcher(t, dir)
	submitResult(t, exitOK, "", "--dir", dir, "--agent", "alice", "--file", "tasks.json", `[{"op":"add","path":"","value":{"tasks":{}}}]`)
	submitResult(t, exitOK, "", "--dir", dir, "--agent", "alice", "--file", "tasks.json", `[{"op":"add","path":"/tasks/t1","value":"open"}]`)
	submitResult(t, exitRejected, "", "--dir", dir, "--agent", "bob", "--file", "tasks.json", `[{"op":"remove","path":"/nope"}]`)

	t.Run("Running", func(t *testing.T) {
		st := readStatus(t, dir)
		if got, want := st.Watcher, "running (pid "+strconv.Itoa(w.Pid())+")"; got != want {
			t.Errorf("watcher=%q, want %q", got, want)
		}
		if got, want := st.Commit, uint64(3); got != want {
			t.Errorf("commit=%d, want %d", got, want)
		}
	})

	w.stop(t)
	// Written while no watcher runs: two complete lines of backlog for
	// alice, and carol's first line, torn.
	mustRun(t, exitOK, "", "submit", "--dir", dir, "--agent", "alice", "--file", "tasks.json", `[{"op":"add","path":"/tasks/t2","value":"open"}]`)
	mustRun(t, exitOK, "", "submit", "--dir", dir, "--agent", "alice", "--file", "other.json", "--merge", `{"a":1}`)
	torn := `{"seq":1,"file":"tasks.json","pat`
	carol := filepath.Join(dir, "journal", "carol")
	if err := os.MkdirAll(carol, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(carol, journal.SegmentName(1)), []byte(torn), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("JSON", func(t *testing.T) {
		st := readStatus(t, dir)
		if got, want := st.Watcher, "stopped"; got != want {
			t.Errorf("watcher=%q, want %q", got, want)
		}
		if got, want := st.Commit, uint64(3); got != want {
			t.Errorf("commit=%d, want %d", got, want)
		}
		if got, want := len(st.Docs), 1; got != want {
			t.Fatalf("docs=%+v, want %d", st.Docs, want)
		}
		if d := st.Docs[0]; d.File != "tasks.json" || d.Version != 2 || !d.Exists || d.Size == 0 || d.State != "ok" {
			t.Errorf("docs[0]=%+v, want tasks.json version 2, existing, ok", d)
		}
		type agentRow struct {
			seq      uint64
			backlog  int
			tornTail int64
			hasError bool
		}
		got := map[string]agentRow{}
		for _, a := range st.Agents {
			got[a.Agent] = agentRow{a.Seq, a.Backlog, a.TornTail, a.LastError != ""}
		}
		want := map[string]agentRow{
			"alice": {seq: 2, backlog: 2},
			"bob":   {seq: 1, hasError: true},
			"carol": {tornTail: int64(len(torn))},
		}
		if len(got) != len(want) {
			t.Errorf("agents=%+v, want %v", got, want)
		}
		for name, w := range want {
			if g, ok := got[name]; !ok || g != w {
				t.Errorf("agent %s: %+v, want %+v", name, g, w)
			}
		}
	})

	t.Run("Text", func(t *testing.T) {
		r := mustRun(t, exitOK, "", "status", "--dir", dir)
		for _, want := range []string{
			"watcher stopped",
			"DOCUMENT", "AGENT", "BACKLOG", "TORN TAIL",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("output does not contain %q:\n%s", want, r.stdout)
			}
		}
		rows := map[string][]string{}
		for line := range strings.Lines(r.stdout) {
			if f := strings.Fields(line); len(f) > 0 {
				rows[f[0]] = f
			}
		}
		if got, want := rows["tasks.json"], []string{"tasks.json", "2"}; len(got) < 2 || got[1] != want[1] {
			t.Errorf("document row %q, want it to start with %q", got, want)
		}
		if got := rows["alice"]; len(got) < 3 || got[1] != "2" || got[2] != "2" {
			t.Errorf("alice row %q, want last seq 2 and backlog 2", got)
		}
		if got, want := strings.Join(rows["carol"], " "), strconv.Itoa(len(torn))+" bytes"; !strings.Contains(got, want) {
			t.Errorf("carol row %q, want it to report a torn tail of %q", got, want)
		}
		if got := rows["bob"]; len(got) < 5 || got[4] == "-" {
			t.Errorf("bob row %q, want his last error", got)
		}
	})

	t.Run("Usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"status"},
			{"status", "--dir", dir, "extra"},
			{"status", "--dir", dir, "--bogus"},
		} {
			if r := runMain(t, "", args...); r.code != exitUsage {
				t.Errorf("%q: exit %d, want %d\nstderr:\n%s", args, r.code, exitUsage, r.stderr)
			}
		}
		if r := runMain(t, "", "status", "--dir", filepath.Join(dir, "missing")); r.code != exitError {
			t.Errorf("missing directory: exit %d, want %d\nstderr:\n%s", r.code, exitError, r.stderr)
		}
	})
}

func TestReplay(t *testing.T) {
	dir := t.TempDir()
	w := startWatcher(t, dir)
	submitResult(t, exitOK, "", "--dir", dir, "--agent", "a", "--file", "one.json", `[{"op":"add","path":"","value":{"n":0}}]`)
	submitResult(t, exitOK, "", "--dir", dir, "--agent", "b", "--file", "two.json", "--merge", `{"x":[1,2,3]}`)
	for range 3 {
		submitResult(t, exitOK, "", "--dir", dir, "--agent", "a", "--file", "one.json", `[{"op":"inc","path":"/n","value":1}]`)
	}
	submitResult(t, exitConflict, "", "--dir", dir, "--agent", "b", "--file", "one.json", "--if-version", "1", `[]`)
	submitResult(t, exitRejected, "", "--dir", dir, "--agent", "b", "--file", "two.json", `[{"op":"remove","path":"/y"}]`)

	t.Run("WatcherRunning", func(t *testing.T) {
		r := mustRun(t, exitError, "", "replay", "--dir", dir, "--verify")
		if !strings.Contains(r.stderr, "a watcher is running") || !strings.Contains(r.stderr, strconv.Itoa(w.Pid())) {
			t.Errorf("stderr=%q, want it to say a watcher (pid %d) is running", r.stderr, w.Pid())
		}
	})

	w.stop(t)

	t.Run("Verify", func(t *testing.T) {
		r := mustRun(t, exitOK, "", "replay", "--dir", dir, "--verify")
		if !strings.Contains(r.stdout, "verify: ok") {
			t.Errorf("stdout=%q, want it to say verify: ok", r.stdout)
		}
		if r.stderr != "" {
			t.Errorf("stderr=%q, want nothing", r.stderr)
		}
	})

	t.Run("Out", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "rebuilt")
		mustRun(t, exitOK, "", "replay", "--dir", dir, "--out", out)
		for _, name := range []string{"one.json", "two.json"} {
			want, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(out, name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("rebuilt %s=%q, want %q", name, got, want)
			}
		}
		// The state directory is left alone.
		mustRun(t, exitOK, "", "replay", "--dir", dir, "--verify")
	})

	t.Run("Usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"replay", "--dir", dir},
			{"replay", "--dir", dir, "--verify", "--out", t.TempDir()},
			{"replay", "--verify"},
			{"replay", "--dir", dir, "--verify", "extra"},
		} {
			if r := runMain(t, "", args...); r.code != exitUsage {
				t.Errorf("%q: exit %d, want %d\nstderr:\n%s", args, r.code, exitUsage, r.stderr)
			}
		}
	})

	t.Run("ModifiedOnDisk", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(dir, "two.json"), []byte(`{"x":"edited by hand"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		r := mustRun(t, exitError, "", "replay", "--dir", dir, "--verify")
		if !strings.Contains(r.stderr, "two.json") {
			t.Errorf("stderr=%q, want it to name two.json", r.stderr)
		}
		if strings.Contains(r.stderr, "one.json") {
			t.Errorf("stderr=%q names one.json, which is unchanged", r.stderr)
		}
		if strings.Contains(r.stdout, "verify: ok") {
			t.Errorf("stdout=%q says ok", r.stdout)
		}
	})
}

func TestWatch(t *testing.T) {
	t.Run("SecondWatcher", func(t *testing.T) {
		dir := t.TempDir()
		w := startWatcher(t, dir)
		r := mustRun(t, exitError, "", "watch", "--dir", dir)
		if !strings.Contains(r.stderr, "process "+strconv.Itoa(w.Pid())) {
			t.Errorf("stderr=%q, want it to name the pid %d holding the lock", r.stderr, w.Pid())
		}
		// The same from another process, as an operator would meet it.
		cmd := selfCmd(t, "watch", "--dir", dir)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		timer := time.NewTimer(testTimeout)
		defer timer.Stop()
		select {
		case err := <-exited:
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Errorf("second watcher process: %v, want a non-zero exit", err)
			}
		case <-timer.C:
			cmd.Process.Kill()
			<-exited
			t.Fatalf("second watcher still running after %s", testTimeout)
		}
		if !strings.Contains(out.String(), strconv.Itoa(w.Pid())) {
			t.Errorf("second watcher said %q, want it to name pid %d", out.String(), w.Pid())
		}
	})

	t.Run("Restart", func(t *testing.T) {
		dir := t.TempDir()
		w := startWatcher(t, dir)
		submitResult(t, exitOK, "", "--dir", dir, "--agent", "a", "--file", "doc.json", `[{"op":"add","path":"","value":[]}]`)
		w.stop(t)
		mustRun(t, exitOK, "", "submit", "--dir", dir, "--agent", "a", "--file", "doc.json", `[{"op":"add","path":"/-","value":"while stopped"}]`)
		startWatcher(t, dir)
		res, err := journal.WaitResult(t.Context(), dir, "a", 2)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != journal.StatusApplied || res.Commit != 2 {
			t.Errorf("result %+v, want applied as commit 2", res)
		}
		if got, want := string(readDoc(t, dir, "doc.json").Data), `["while stopped"]`; got != want {
			t.Errorf("data=%s, want %s", got, want)
		}
	})

	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"UnknownLogLevel", nil, []string{"--log-level", "bogus"}},
		{"UnknownLogLevelEnv", map[string]string{"STATEWARD_LOG_LEVEL": "bogus"}, nil},
		{"UnknownLogFormat", nil, []string{"--log-format", "xml"}},
		{"UnknownFlag", nil, []string{"--bogus"}},
		{"ExtraArgument", nil, []string{"extra"}},
		{"BadRescan", nil, []string{"--rescan", "often"}},
		{"ZeroRescan", nil, []string{"--rescan", "0s"}},
		{"ZeroMaxBatch", nil, []string{"--max-batch", "0"}},
		{"ZeroMaxAgentBatch", nil, []string{"--max-agent-batch", "0"}},
		{"ZeroRetainResults", nil, []string{"--retain-results", "0"}},
		{"TinyMaxLine", nil, []string{"--max-line", "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r := runMainEnv(t, tc.env, "", append([]string{"watch", "--dir", dir}, tc.args...)...)
			if got, want := r.code, exitUsage; got != want {
				t.Fatalf("exit %d, want %d\nstderr:\n%s", got, want, r.stderr)
			}
			if _, err := os.Stat(filepath.Join(dir, ".stateward")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a usage error started the watcher: stat .stateward: %v", err)
			}
		})
	}

	t.Run("NoDir", func(t *testing.T) {
		if r := runMain(t, "", "watch"); r.code != exitUsage {
			t.Errorf("exit %d, want %d\nstderr:\n%s", r.code, exitUsage, r.stderr)
		}
	})

	t.Run("FlagOverridesEnv", func(t *testing.T) {
		// --log-level wins over a bad STATEWARD_LOG_LEVEL; the watcher runs
		// in-process until its context is cancelled, as on SIGTERM, and
		// then exits 0.
		dir := t.TempDir()
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		log := newLogBuffer(`"@message":"ready"`)
		m := &Main{
			Stdin:  strings.NewReader(""),
			Stdout: log,
			Stderr: log,
			Getenv: func(k string) string { return map[string]string{"STATEWARD_LOG_LEVEL": "bogus"}[k] },
		}
		code := make(chan int, 1)
		go func() {
			code <- m.Run(ctx, []string{"watch", "--dir", dir, "--log-level", "INFO", "--log-format", "json"})
		}()
		select {
		case <-log.ready:
		case c := <-code:
			t.Fatalf("watch exited with %d before it was ready\nlog:\n%s", c, log)
		case <-ctx.Done():
			t.Fatalf("watch not ready after %s\nlog:\n%s", testTimeout, log)
		}
		cancel()
		timer := time.NewTimer(testTimeout)
		defer timer.Stop()
		select {
		case c := <-code:
			if c != exitOK {
				t.Errorf("exit %d after cancel, want 0\nlog:\n%s", c, log)
			}
		case <-timer.C:
			t.Fatalf("watch did not stop within %s of its context's end", testTimeout)
		}
	})
}

func TestHelp(t *testing.T) {
	for _, cmd := range []string{"watch", "submit", "read", "status", "replay", "demo", "demo-agent"} {
		t.Run(cmd, func(t *testing.T) {
			for _, flag := range []string{"--help", "-h"} {
				r := runMain(t, "", cmd, flag)
				if r.code != exitOK {
					t.Errorf("%s %s: exit %d, want 0\nstderr:\n%s", cmd, flag, r.code, r.stderr)
				}
				if want := "Usage: stateward " + cmd; !strings.Contains(r.stderr, want) {
					t.Errorf("%s %s: output %q, want it to contain %q", cmd, flag, r.stderr, want)
				}
			}
		})
	}
	for _, arg := range []string{"help", "--help", "-h"} {
		r := runMain(t, "", arg)
		if r.code != exitOK || !strings.Contains(r.stdout, "stateward submit") {
			t.Errorf("stateward %s: exit %d, stdout %q; want 0 and the usage", arg, r.code, r.stdout)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	r := runMain(t, "", "frobnicate", "--dir", t.TempDir())
	if got, want := r.code, exitUsage; got != want {
		t.Errorf("exit %d, want %d", got, want)
	}
	if !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
		t.Errorf("stderr=%q, want it to name the command", r.stderr)
	}
	if r := runMain(t, ""); r.code != exitUsage || !strings.Contains(r.stderr, "Usage:") {
		t.Errorf("no arguments: exit %d, stderr %q; want %d and the usage", r.code, r.stderr, exitUsage)
	}
}

func TestDemo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	r := mustRun(t, exitOK, "", "demo", "--agents", "3", "--tasks", "20", "--dir", dir)
	for _, want := range []string{
		"tasks claimed: 20 of 20",
		"double claims: 0",
		"claims the board lost: 0",
		"counters equal to claims: true",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output does not contain %q:\n%s", want, r.stdout)
		}
	}
	mustRun(t, exitOK, "", "replay", "--dir", dir, "--verify")

	t.Run("CancelStopsAgents", func(t *testing.T) {
		// Stand-in agents that never finish on their own (each one is a
		// watcher of a directory of its own); when the demo is cancelled
		// it must stop them, not leave them running.
		const agents = 2
		base := t.TempDir()
		var (
			mu    sync.Mutex // guards fakes
			fakes []string
			cmds  []*exec.Cmd
		)
		self := func(args ...string) *exec.Cmd {
			if args[0] != "demo-agent" {
				return selfCommand(args...)
			}
			mu.Lock()
			defer mu.Unlock()
			fd := filepath.Join(base, strconv.Itoa(len(fakes)))
			if err := os.Mkdir(fd, 0o755); err != nil {
				panic(err)
			}
			cmd := selfCommand("watch", "--dir", fd)
			fakes, cmds = append(fakes, fd), append(cmds, cmd)
			return cmd
		}
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		var stderr bytes.Buffer
		m := &Main{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }, Self: self}
		code := make(chan int, 1)
		go func() {
			code <- m.Run(ctx, []string{"demo", "--agents", strconv.Itoa(agents), "--tasks", "5", "--dir", filepath.Join(base, "d")})
		}()
		waitFor(t, testTimeout, "the stand-in agents to be ready", func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, fd := range fakes {
				if _, err := os.Stat(filepath.Join(fd, journal.VersionsPath)); err != nil {
					return false
				}
			}
			return len(fakes) == agents
		})
		cancel()
		timer := time.NewTimer(testTimeout)
		defer timer.Stop()
		select {
		case c := <-code:
			if c != exitError {
				t.Errorf("cancelled demo: exit %d, want %d\nstderr:\n%s", c, exitError, stderr.String())
			}
		case <-timer.C:
			t.Fatalf("demo still running %s after it was cancelled", testTimeout)
		}
		defer func() { // demo has returned: cmds are ours to read
			for _, cmd := range cmds {
				cmd.Process.Kill()
			}
		}()
		for _, fd := range fakes {
			waitFor(t, testTimeout, "the stand-in agent of "+fd+" to be gone", func() bool {
				lk, err := replay.TryLock(fd)
				if err != nil {
					return false
				}
				lk.Unlock()
				return true
			})
		}
	})

	t.Run("Usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"demo", "--agents", "0"},
			{"demo", "--tasks", "-1"},
			{"demo", "extra"},
		} {
			if r := runMain(t, "", args...); r.code != exitUsage {
				t.Errorf("%q: exit %d, want %d\nstderr:\n%s", args, r.code, exitUsage, r.stderr)
			}
		}
	})
}

func TestDemoAgent(t *testing.T) {
	t.Run("Claims", func(t *testing.T) {
		dir := t.TempDir()
		startWatcher(t, dir)
		if err := setupBoard(t.Context(), dir, 5); err != nil {
			t.Fatal(err)
		}
		r := mustRun(t, exitOK, "", "demo-agent", "--dir", dir, "--agent", "solo", "--max-claims", "2")
		var sum agentSummary
		oneLine(t, r.stdout, &sum)
		if sum.Agent != "solo" || len(sum.Claimed) != 2 || sum.Conflicts != 0 || sum.Intents != 4 || !slices.Equal(sum.Results, []uint64{1, 2, 3, 4}) {
			t.Errorf("summary %+v, want solo with 2 claims, 4 intents and results 1 to 4", sum)
		}
		board, err := parseBoard(readDoc(t, dir, "tasks.json").Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range sum.Claimed {
			if a := board[id].Assignee; a == nil || *a != "solo" {
				t.Errorf("%s: assignee %v, want solo", id, a)
			}
		}
	})

	t.Run("EmptyDir", func(t *testing.T) {
		r := mustRun(t, exitOK, "", "demo-agent", "--dir", t.TempDir(), "--agent", "idle")
		if got, want := r.stdout, `{"agent":"idle","claimed":[],"conflicts":0,"intents":0,"results":[]}`+"\n"; got != want {
			t.Errorf("stdout=%q, want %q", got, want)
		}
	})

	t.Run("Usage", func(t *testing.T) {
		// Without a state directory it must not fall back to the current
		// one.
		cwd := t.TempDir()
		t.Chdir(cwd)
		for _, args := range [][]string{
			{"demo-agent", "--agent", "a"},
			{"demo-agent", "--dir", cwd},
			{"demo-agent", "--dir", cwd, "--agent", "a", "extra"},
		} {
			if r := runMain(t, "", args...); r.code != exitUsage {
				t.Errorf("%q: exit %d, want %d\nstderr:\n%s", args, r.code, exitUsage, r.stderr)
			}
		}
		if ents, err := os.ReadDir(cwd); err != nil || len(ents) != 0 {
			t.Errorf("current directory after usage errors: %v, %v; want it empty", ents, err)
		}
	})
}

// TestReplay_OutRefused checks that replay --out refuses, with exit 2 and
// the reason, the state directory itself, a folder under it, a folder that
// is not empty and a symbolic link.
func TestReplay_OutRefused(t *testing.T) {
	dir := t.TempDir()
	a := replay.NewApplier(dir, nil)
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	a.Close()
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "d.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "out")
	if err := os.Symlink(t.TempDir(), link); err != nil {
		t.Fatal(err)
	}
	for out, why := range map[string]string{
		dir:                               "state directory",
		filepath.Join(dir, ".stateward"):  "state directory",
		filepath.Join(dir, "new", "here"): "state directory",
		full:                              "not empty",
		link:                              "symbolic link",
	} {
		r := runMain(t, "", "replay", "--dir", dir, "--out", out)
		if r.code != exitUsage || !strings.Contains(r.stderr, why) {
			t.Errorf("replay --out %s: exit %d, stderr %q; want %d saying %q", out, r.code, r.stderr, exitUsage, why)
		}
	}
}
