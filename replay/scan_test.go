package replay

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// countFS counts the journal files opened and the folders listed through
// it.
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
	c.lists++
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
		if c.opens != 0 || c.lists != 3 {
			t.Errorf("3 Steps over %d idle agents opened %d journal files and listed %d folders; want 0 and 3 (the journal folder)", agents, c.opens, c.lists)
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
