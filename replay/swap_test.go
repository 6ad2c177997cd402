package replay

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// handEdit replaces document name in dir by content, as an editor does
// (write a temp file, rename it over the document).
func handEdit(tb testing.TB, dir, name, content string) {
	tb.Helper()
	tmp := filepath.Join(dir, "hand.tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		tb.Fatal(err)
	}
}

// filesWith returns the names in dir (top level) whose content contains s.
func filesWith(tb testing.TB, dir, s string) []string {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil && bytes.Contains(data, []byte(s)) {
			names = append(names, e.Name())
		}
	}
	return names
}

// crashAfterExchange leaves the hand edit F displaced under the swap name
// of the increment's batch: F lands just before the exchange, and the
// watcher crashes just after it.
func crashAfterExchange(t *testing.T, dir string) {
	t.Helper()
	appendRaw(t, dir, "x", intentLine(1, "s.json", `"if_version":0,"merge":{"n":0}`))
	a := MustOpen(t, dir)
	drain(t, a)
	appendRaw(t, dir, "x", intentLine(2, "s.json", `"patch":[{"op":"inc","path":"/n","value":1}]`))
	a.hook = func(p string) {
		switch p {
		case "before-doc-exchange:s.json":
			handEdit(t, dir, "s.json", `{"edit":"F-older"}`)
		case "after-doc-exchange:s.json":
			panic(crashed{p})
		}
	}
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Fatal("the crash point was never reached")
			} else if _, ok := r.(crashed); !ok {
				panic(r)
			}
		}()
		drain(t, a)
	}()
	a.Close()
	if got := filesWith(t, dir, "F-older"); len(got) != 1 || !strings.HasPrefix(got[0], swapPrefix) {
		t.Fatalf("F is in %v, want one swap file", got)
	}
}

// TestApplier_NewerEditWhileDown: an edit F displaced by an exchange when
// the watcher crashed is put back only over the watcher's own version. An
// edit H saved while the watcher was down, or a deletion, wins; F is kept
// aside under a ".displaced-" name, never deleted.
func TestApplier_NewerEditWhileDown(t *testing.T) {
	t.Run("Edited", func(t *testing.T) {
		dir := t.TempDir()
		crashAfterExchange(t, dir)
		handEdit(t, dir, "s.json", `{"edit":"H-newer"}`)
		b := MustOpen(t, dir)
		drain(t, b)
		b.Close()
		if doc := readJSON(t, dir, "s.json").(map[string]any); doc["edit"] != "H-newer" {
			t.Errorf("s.json is %v, want the newer edit H made while the watcher was down", doc)
		}
		if got := filesWith(t, dir, "F-older"); len(got) != 1 || !strings.HasPrefix(got[0], displacedPrefix+"s.json-") {
			t.Errorf("F is in %v, want one %ss.json-... file", got, displacedPrefix)
		}
		mustVerify(t, dir)
	})
	t.Run("Deleted", func(t *testing.T) {
		dir := t.TempDir()
		crashAfterExchange(t, dir)
		if err := os.Remove(filepath.Join(dir, "s.json")); err != nil {
			t.Fatal(err)
		}
		b := MustOpen(t, dir)
		drain(t, b)
		b.Close()
		if _, err := os.Lstat(filepath.Join(dir, "s.json")); !os.IsNotExist(err) {
			t.Errorf("s.json was deleted while the watcher was down and is back (err %v)", err)
		}
		if got := filesWith(t, dir, "F-older"); len(got) != 1 || !strings.HasPrefix(got[0], displacedPrefix+"s.json-") {
			t.Errorf("F is in %v, want one %ss.json-... file", got, displacedPrefix)
		}
	})
	t.Run("Unchanged", func(t *testing.T) {
		dir := t.TempDir()
		crashAfterExchange(t, dir)
		b := MustOpen(t, dir)
		drain(t, b)
		b.Close()
		if doc := readJSON(t, dir, "s.json").(map[string]any); doc["edit"] != "F-older" {
			t.Errorf("s.json is %v, want the edit F put back over the watcher's version", doc)
		}
		if got := filesWith(t, dir, "F-older"); len(got) != 1 || got[0] != "s.json" {
			t.Errorf("F is in %v, want only s.json", got)
		}
		mustVerify(t, dir)
	})
}

// TestApplier_StaleSwap: a swap file of an earlier batch than the last
// commit record is never put back (it cannot be judged against the last
// record): the document stays, and the file is kept aside.
func TestApplier_StaleSwap(t *testing.T) {
	dir := t.TempDir()
	appendRaw(t, dir, "x", intentLine(1, "s.json", `"if_version":0,"merge":{"n":0}`))
	a := MustOpen(t, dir)
	drain(t, a) // batch 1
	appendRaw(t, dir, "x", intentLine(2, "s.json", `"patch":[{"op":"inc","path":"/n","value":1}]`))
	drain(t, a) // batch 2, the last
	a.Close()
	stale := swapPrefix + "s.json-1.0123456789ab"
	if err := os.WriteFile(filepath.Join(dir, stale), []byte(`{"stale":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(dir, "s.json"))
	if err != nil {
		t.Fatal(err)
	}
	b := MustOpen(t, dir)
	drain(t, b)
	b.Close()
	if got, _ := os.ReadFile(filepath.Join(dir, "s.json")); !bytes.Equal(got, before) {
		t.Errorf("s.json is %s, want it unchanged: %s", got, before)
	}
	if got := filesWith(t, dir, `"stale"`); len(got) != 1 || got[0] != displacedPrefix+"s.json-1.0123456789ab" {
		t.Errorf("the stale swap's file is in %v, want %ss.json-1.0123456789ab", got, displacedPrefix)
	}
	mustVerify(t, dir)
}

// TestApplier_LoadDocIdentity: an edit that replaces a document while the
// watcher reads it for the first time is not taken for the watcher's own
// file: the next write puts it back instead of deleting it.
func TestApplier_LoadDocIdentity(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s.json"), []byte(`{"n":0}`), 0o644); err != nil {
		t.Fatal(err)
	}
	a := MustOpen(t, dir)
	drain(t, a)
	appendRaw(t, dir, "x", intentLine(1, "s.json", `"patch":[{"op":"inc","path":"/n","value":1}]`))
	done := false
	a.hook = func(p string) {
		if p == "after-doc-open:s.json" && !done {
			done = true
			handEdit(t, dir, "s.json", `{"n":0,"edit":"E"}`)
		}
	}
	drain(t, a)
	if !done {
		t.Fatal("the document was never read")
	}
	if doc := readJSON(t, dir, "s.json").(map[string]any); doc["edit"] != "E" {
		t.Errorf("s.json is %v: the edit made while the watcher first read it was deleted", doc)
	}
	a.Close()
	mustVerify(t, dir)
}

// TestApplier_PutBackExhausted: when edits keep replacing the document
// while publishDoc puts one back, it gives up with an error after
// maxPutBack exchanges and deletes none of them: the newest stays under
// the swap name, and recovery keeps it aside.
func TestApplier_PutBackExhausted(t *testing.T) {
	dir := t.TempDir()
	appendRaw(t, dir, "x", intentLine(1, "s.json", `"if_version":0,"merge":{"n":0}`))
	a := MustOpen(t, dir)
	drain(t, a)
	appendRaw(t, dir, "x", intentLine(2, "s.json", `"patch":[{"op":"inc","path":"/n","value":1}]`))
	n := 0
	a.hook = func(p string) {
		if p == "before-doc-exchange:s.json" || p == "before-doc-putback:s.json" {
			handEdit(t, dir, "s.json", `{"edit":"E`+string(rune('a'+n))+`"}`)
			n++
		}
	}
	var err error
	for range 10 {
		if _, err = a.Step(t.Context()); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("Step: no error after edits kept replacing the document")
	}
	newest := `"E` + string(rune('a'+n-1)) + `"`
	if got := filesWith(t, dir, newest); len(got) != 1 || !strings.HasPrefix(got[0], swapPrefix) {
		t.Fatalf("the newest edit %s is in %v, want a swap file", newest, got)
	}
	a.Close()
	b := MustOpen(t, dir)
	drain(t, b)
	b.Close()
	if got := filesWith(t, dir, newest); len(got) != 1 || !strings.HasPrefix(got[0], displacedPrefix) {
		t.Errorf("after recovery the newest edit %s is in %v, want a %s file", newest, got, displacedPrefix)
	}
	mustVerify(t, dir)
}
