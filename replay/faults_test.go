package replay

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stateward/stateward/journal"
)

// faultDir returns a state directory with c.json and a crashFS on it.
func faultDir(t *testing.T) (string, *crashFS) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "c.json"), []byte(`{"n":0}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, newCrashFS(t, dir)
}

func incLines(from, to uint64) string {
	var b strings.Builder
	for s := from; s <= to; s++ {
		b.WriteString(intentLine(s, "c.json", `"patch":[{"op":"inc","path":"/n","value":1}]`))
	}
	return b.String()
}

// TestApplier_FsyncFailure injects a failed fsync at each kind of file the
// commit path syncs: the watcher must stop without acknowledging anything
// of that batch, refuse to go on, and recover cleanly after a restart.
func TestApplier_FsyncFailure(t *testing.T) {
	for _, target := range []string{"journal/", ".stateward/commits/", ".tmp-c.json", "."} {
		t.Run(strings.Trim(target, "/."), func(t *testing.T) {
			dir, fs := faultDir(t)
			appendRaw(t, dir, "a", incLines(1, 3))
			a := NewApplier(dir, nil)
			a.fs = fs
			if err := a.Open(); err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			drain(t, a)
			before := len(readResults(t, dir, "a"))
			appendRaw(t, dir, "a", incLines(4, 6))
			fs.inject = func(op, name string) error {
				if (op == "sync" && strings.HasPrefix(name, target) && target != ".") || (op == "syncdir" && name == target) {
					return syscall.EIO
				}
				return nil
			}
			_, err := a.Step(t.Context())
			if !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.EIO) {
				t.Fatalf("Step with a failing fsync: %v, want ErrFailed wrapping EIO", err)
			}
			if got := len(readResults(t, dir, "a")); got != before {
				t.Fatalf("%d results after a failed fsync, want %d: something was acknowledged", got, before)
			}
			fs.inject = nil
			if _, err := a.Step(t.Context()); !errors.Is(err, ErrFailed) {
				t.Fatalf("Step after a failed fsync: %v, want ErrFailed (never retry)", err)
			}
			a.Close()

			b := MustOpen(t, dir) // the restart
			drain(t, b)
			b.Close()
			if got := readJSON(t, dir, "c.json").(map[string]any)["n"]; got != 6.0 {
				t.Errorf("n = %v after restart, want 6", got)
			}
			res := readResults(t, dir, "a")
			if len(res) != 6 {
				t.Fatalf("%d results after restart, want 6", len(res))
			}
			for i, r := range res {
				if r.Seq != uint64(i+1) || r.Status != journal.StatusApplied {
					t.Errorf("result %d = %+v", i, r)
				}
			}
			mustVerify(t, dir)
		})
	}
}

// TestApplier_NoSpace makes writes fail with ENOSPC for a while at each
// step of the commit path: nothing is acknowledged meanwhile, the watcher
// keeps trying, and it resumes by itself when space returns, having lost
// nothing.
func TestApplier_NoSpace(t *testing.T) {
	for _, target := range []string{".stateward/commits/", ".tmp-c.json", "results/"} {
		t.Run(strings.Trim(target, "/."), func(t *testing.T) {
			dir, fs := faultDir(t)
			appendRaw(t, dir, "a", incLines(1, 2))
			a := NewApplier(dir, nil)
			a.fs = fs
			if err := a.Open(); err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			drain(t, a)
			appendRaw(t, dir, "a", incLines(3, 5))
			full := 4 // writes refused before space returns
			fs.inject = func(op, name string) error {
				if op == "write" && strings.HasPrefix(name, target) && full > 0 {
					full--
					return syscall.ENOSPC
				}
				return nil
			}
			failures := 0
			for range 20 {
				n, err := a.Step(t.Context())
				if errors.Is(err, ErrNoSpace) {
					failures++
					if target != "results/" {
						if got := len(readResults(t, dir, "a")); got != 2 {
							t.Fatalf("%d results while out of space, want 2", got)
						}
					}
					continue
				}
				if err != nil {
					t.Fatalf("Step: %v", err)
				}
				if n == 0 && full == 0 {
					break
				}
			}
			if failures == 0 {
				t.Fatal("no Step reported ErrNoSpace")
			}
			a.Close()
			if got := readJSON(t, dir, "c.json").(map[string]any)["n"]; got != 5.0 {
				t.Errorf("n = %v, want 5", got)
			}
			res := readResults(t, dir, "a")
			if len(res) != 5 {
				t.Fatalf("%d results, want 5: %+v", len(res), res)
			}
			for i, r := range res {
				if r.Seq != uint64(i+1) || r.Status != journal.StatusApplied || r.Commit != uint64(i+1) {
					t.Errorf("result %d = %+v, want seq %d applied commit %d", i, r, i+1, i+1)
				}
			}
			mustVerify(t, dir)
		})
	}
}

// TestApplier_ManyAgentsOneBatch commits one batch of 5,000 agents: the
// input segments are fsynced by a bounded pool of goroutines (each holds an
// OS thread while it waits on fsync), never one per segment. (500 agents
// with -short.)
func TestApplier_ManyAgentsOneBatch(t *testing.T) {
	agents := 5000
	if testing.Short() {
		agents = 500
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "c.json"), []byte(`{"n":0}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range agents {
		appendRaw(t, dir, fmt.Sprintf("a%04d", i), incLines(1, 1))
	}
	a := NewApplier(dir, nil)
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		most   int
		synced int
	)
	base := runtime.NumGoroutine()
	a.root, a.fs = root, syncSpyFS{rootFS{root}, func(name string) {
		if strings.HasPrefix(name, "journal/") {
			mu.Lock()
			synced++
			most = max(most, runtime.NumGoroutine()-base)
			mu.Unlock()
		}
	}}
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	n, err := a.Step(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n != agents || synced != agents {
		t.Fatalf("one Step took %d lines and synced %d segments, want %d and %d", n, synced, agents, agents)
	}
	if most > maxParallel+8 {
		t.Fatalf("%d goroutines beside the test's while fsyncing the inputs, want at most %d", most, maxParallel+8)
	}
	t.Logf("at most %d goroutines beside the test's", most)
	if got := readJSON(t, dir, "c.json").(map[string]any)["n"]; got != float64(agents) {
		t.Fatalf("n = %v, want %d", got, agents)
	}
}

// syncSpyFS is an fsys that calls onSync instead of each file fsync, and
// skips folder fsyncs.
type syncSpyFS struct {
	rootFS
	onSync func(name string)
}

func (s syncSpyFS) SyncDir(string) error { return nil }

func (s syncSpyFS) OpenFile(name string, flag int, perm os.FileMode) (fileHandle, error) {
	f, err := s.rootFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return syncSpyFile{f, name, s.onSync}, nil
}

type syncSpyFile struct {
	fileHandle
	name   string
	onSync func(name string)
}

// Sync calls onSync, and does not fsync: thousands of fsyncs would make
// the test slow, and it measures the goroutines, not the disk.
func (f syncSpyFile) Sync() error {
	f.onSync(f.name)
	return nil
}
