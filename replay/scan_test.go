package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stateward/stateward/journal"
)

// countFS counts the journal files opened and the agent folders listed
// through it.
type countFS struct {
	fsys
	opens, lists int
}

func (c *countFS) OpenFile(name string, flag int, perm os.FileMode) (fileHandle, error) {
	if strings.HasPrefix(name, "journal/") {
		c.opens++
	}
	return c.fsys.OpenFile(name, flag, perm)
}

func (c *countFS) ReadDir(name string) ([]os.DirEntry, error) {
	if strings.HasPrefix(name, "journal/") && name != forgetDir {
		c.lists++
	}
	return c.fsys.ReadDir(name)
}

func TestApplier_IdleAgents(t *testing.T) {
	dir := t.TempDir()
	const agents = 200
	name := func(i int) string { return fmt.Sprintf("agent%03d", i) }
	for i := range agents {
		appendRaw(t, dir, name(i), intentLine(1, "n.json", fmt.Sprintf(`"merge":{%q:1}`, name(i))))
	}
	a := MustOpen(t, dir)
	if got := drain(t, a); got != agents {
		t.Fatalf("drain = %d, want %d", got, agents)
	}
	// Folders that last changed long ago, as idle agents' folders are.
	old := time.Now().Add(-time.Hour)
	for i := range agents {
		if err := os.Chtimes(filepath.Join(dir, "journal", name(i)), old, old); err != nil {
			t.Fatal(err)
		}
	}
	drain(t, a) // lists each folder once more, now settled
	c := &countFS{fsys: a.fs}
	a.fs = c

	t.Run("RescanOpensNothing", func(t *testing.T) {
		c.opens, c.lists = 0, 0
		for range 3 {
			if n, err := a.Step(t.Context()); err != nil || n != 0 {
				t.Fatalf("Step = %d, %v; want 0, nil", n, err)
			}
		}
		if c.opens != 0 || c.lists != 0 {
			t.Errorf("3 Steps over %d idle agents opened %d journal files and listed %d agent folders; want 0 and 0", agents, c.opens, c.lists)
		}
	})
	t.Run("NewLineFound", func(t *testing.T) {
		appendRaw(t, dir, name(7), intentLine(2, "m.json", `"merge":{"a":1}`))
		c.opens, c.lists = 0, 0
		if got := drain(t, a); got != 1 {
			t.Fatalf("drain = %d, want 1", got)
		}
		if c.opens > 4 {
			t.Errorf("%d journal files opened for one line, want a few", c.opens)
		}
	})
	t.Run("Hinted", func(t *testing.T) {
		a.Hinted = true
		defer func() { a.Hinted = false }()
		appendRaw(t, dir, name(8), intentLine(2, "m.json", `"merge":{"b":1}`))
		if n, err := a.Step(t.Context()); err != nil || n != 0 {
			t.Fatalf("Step without a hint = %d, %v; want 0, nil", n, err)
		}
		a.Touch(name(8))
		if got := drain(t, a); got != 1 {
			t.Fatalf("drain after Touch = %d, want 1", got)
		}
		appendRaw(t, dir, name(9), intentLine(2, "m.json", `"merge":{"c":1}`))
		a.Rescan()
		if got := drain(t, a); got != 1 {
			t.Fatalf("drain after Rescan = %d, want 1", got)
		}
	})
}

func TestApplier_VersionsAgents(t *testing.T) {
	// versions.json, whose agents are encoded once per change, is byte
	// for byte what encoding/json writes for the whole file.
	dir := t.TempDir()
	a := MustOpen(t, dir)
	for i, ag := range []string{"b", "a", "c-1", "a.b"} {
		appendRaw(t, dir, ag, intentLine(uint64(i+1), "n.json", `"merge":{"x":1}`))
	}
	appendRaw(t, dir, "z", `{"seq":1,"file":"<&>.json","merge":{}}`+"\n") // an error with < & >
	drain(t, a)
	appendRaw(t, dir, "a", intentLine(9, "n.json", `"merge":{"y":1}`))
	drain(t, a)
	got, err := os.ReadFile(filepath.Join(dir, journal.VersionsPath))
	if err != nil {
		t.Fatal(err)
	}
	v := versionsFile{Versions: journal.Versions{Commit: a.m.commit, Docs: map[string]journal.DocVersion{}}, Batch: a.batch, Agents: map[string]agentStatus{}}
	for name, d := range a.m.docs {
		v.Docs[name] = journal.DocVersion{Version: d.version, Exists: d.doc.Exists(), SHA256: d.hash, Broken: d.broken}
	}
	for name, st := range a.m.agents {
		as := agentStatus{Offset: st.cur.Offset, Seq: st.cur.Seq, LastError: a.lastErr[name]}
		if st.cur.Segment != 0 {
			as.Segment = journal.SegmentName(st.cur.Segment)
		}
		v.Agents[name] = as
	}
	var want bytes.Buffer
	enc := json.NewEncoder(&want)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("versions.json:\n%s\nwant:\n%s", got, want.Bytes())
	}
}
