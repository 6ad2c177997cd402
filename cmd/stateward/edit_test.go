package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stateward/stateward/journal"
)

// editorScript writes an executable sh script to a temporary folder and
// returns its path, to be given as $EDITOR: it is called with the file to
// edit as its only argument.
func editorScript(tb testing.TB, body string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "editor")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		tb.Fatal(err)
	}
	return p
}

func TestEdit(t *testing.T) {
	needTools(t, "the editor scripts", "sh")
	dir := t.TempDir()
	startWatcher(t, dir)
	submitResult(t, exitOK, "", "--dir", dir, "--agent", "setup", "--file", "doc.json", "--if-version", "0", `[{"op":"add","path":"","value":{"n":0}}]`)

	edit := func(t *testing.T, want int, env map[string]string, args ...string) cliResult {
		t.Helper()
		r := runMainEnv(t, env, "", append([]string{"edit", "--dir", dir, "--file", "doc.json"}, args...)...)
		if r.code != want {
			t.Fatalf("edit: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, want, r.stdout, r.stderr)
		}
		return r
	}

	t.Run("KnownContent", func(t *testing.T) {
		seen := filepath.Join(t.TempDir(), "seen")
		ed := editorScript(t, `cp "$1" `+seen+`; printf '%s\n' '{"n":5,"note":"by hand"}' >"$1"`)
		r := edit(t, exitOK, map[string]string{"EDITOR": ed, "USER": "alice"})
		var res journal.Result
		oneLine(t, r.stdout, &res)
		if res.Status != journal.StatusApplied || res.Version != 2 {
			t.Errorf("result %+v, want applied at version 2", res)
		}
		if got, _ := os.ReadFile(seen); compact(t, string(got)) != `{"n":0}` {
			t.Errorf("the editor was opened on %q, want the current document", got)
		}
		if data, v := docData(t, dir, "doc.json"); v != 2 || compact(t, data) != `{"n":5,"note":"by hand"}` {
			t.Errorf("document %s at version %d, want the edit at version 2", data, v)
		}
		if n := journalLen(t, dir, "edit-alice"); n != 1 {
			t.Errorf("journal of the default agent edit-alice has %d records, want 1", n)
		}
	})

	t.Run("VisualFirst", func(t *testing.T) {
		ed := editorScript(t, `printf '%s\n' '{"n":6}' >"$1"`)
		edit(t, exitOK, map[string]string{"VISUAL": ed, "EDITOR": "false"}, "--agent", "ed")
		if data, v := docData(t, dir, "doc.json"); v != 3 || compact(t, data) != `{"n":6}` {
			t.Errorf("document %s at version %d, want {\"n\":6} at version 3", data, v)
		}
	})

	t.Run("Unchanged", func(t *testing.T) {
		// Saved unchanged, and saved with only the layout changed.
		for _, body := range []string{`:`, `printf '{ "n" : 6 }' >"$1"`} {
			r := edit(t, exitOK, map[string]string{"EDITOR": editorScript(t, body)}, "--agent", "ed")
			if !strings.Contains(r.stderr, "no changes") || r.stdout != "" {
				t.Errorf("stdout %q, stderr %q: want nothing printed and \"no changes\" said", r.stdout, r.stderr)
			}
		}
		if _, v := docData(t, dir, "doc.json"); v != 3 {
			t.Errorf("version %d after unchanged saves, want 3", v)
		}
		if n := journalLen(t, dir, "ed"); n != 1 {
			t.Errorf("journal has %d records, want 1: an unchanged save submits nothing", n)
		}
	})

	t.Run("InvalidJSON", func(t *testing.T) {
		r := edit(t, exitUsage, map[string]string{"EDITOR": editorScript(t, `printf '{"n":' >"$1"`)}, "--agent", "ed")
		if !strings.Contains(r.stderr, "not valid JSON") || !strings.Contains(r.stderr, "nothing submitted") {
			t.Errorf("stderr %q: want it to say the JSON is invalid and nothing was submitted", r.stderr)
		}
		if _, v := docData(t, dir, "doc.json"); v != 3 {
			t.Errorf("version %d after an invalid save, want 3", v)
		}
		if n := journalLen(t, dir, "ed"); n != 1 {
			t.Errorf("journal has %d records, want 1: an invalid save submits nothing", n)
		}
	})

	t.Run("EditorFails", func(t *testing.T) {
		r := edit(t, exitError, map[string]string{"EDITOR": "false"}, "--agent", "ed")
		if !strings.Contains(r.stderr, "nothing submitted") {
			t.Errorf("stderr %q: want it to say nothing was submitted", r.stderr)
		}
	})

	t.Run("Conflict", func(t *testing.T) {
		// The first time the editor is open, another agent changes the
		// document (and waits until it is applied); the edit then
		// conflicts, and edit reopens the editor on the new version.
		tmp := t.TempDir()
		mark, seen := filepath.Join(tmp, "mark"), filepath.Join(tmp, "seen")
		ed := editorScript(t, `if [ ! -e `+mark+` ]; then
  touch `+mark+`
  `+childEnv+`=1 "`+os.Args[0]+`" submit --dir "`+dir+`" --agent other --file doc.json --wait '[{"op":"inc","path":"/n","value":1}]' >/dev/null || exit 1
else
  cp "$1" `+seen+`
fi
printf '%s\n' '{"n":100}' >"$1"`)
		r := edit(t, exitOK, map[string]string{"EDITOR": ed}, "--agent", "ed")
		if !strings.Contains(r.stderr, "changed while you edited it") || !strings.Contains(r.stderr, "reopening") {
			t.Errorf("stderr %q: want the conflict said, and the editor reopened", r.stderr)
		}
		if got, _ := os.ReadFile(seen); compact(t, string(got)) != `{"n":7}` {
			t.Errorf("the editor was reopened on %q, want the new version {\"n\":7}", got)
		}
		var res journal.Result
		oneLine(t, r.stdout, &res)
		if res.Status != journal.StatusApplied || res.Version != 5 {
			t.Errorf("result %+v, want applied at version 5 (3, then the other agent's 4)", res)
		}
		if data, _ := docData(t, dir, "doc.json"); compact(t, data) != `{"n":100}` {
			t.Errorf("document %s, want the edit", data)
		}
	})

	t.Run("Usage", func(t *testing.T) {
		if r := runMainEnv(t, nil, "", "edit", "--dir", dir); r.code != exitUsage {
			t.Errorf("edit without --file: exit %d, want %d", r.code, exitUsage)
		}
		if r := runMainEnv(t, nil, "", "edit", "--dir", dir, "--file", "../x.json"); r.code != exitUsage {
			t.Errorf("edit of a bad name: exit %d, want %d", r.code, exitUsage)
		}
	})
}
