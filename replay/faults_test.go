package replay

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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

// fault is a write target of TestApplier_Faults: the operations it fails.
type fault struct {
	name  string
	match func(op, name string) bool
}

// writesTo matches writes (and creations) of files under prefix.
func writesTo(prefix string) func(op, name string) bool {
	return func(op, name string) bool {
		return (op == "write" || op == "open") && strings.HasPrefix(name, prefix)
	}
}

// mkdirOf matches the creation of folder.
func mkdirOf(folder string) func(op, name string) bool {
	return func(op, name string) bool { return op == "mkdir" && name == folder }
}

// TestApplier_Faults injects ENOSPC and EIO into every write target, mid-run
// and at start-up. Out of space, Step and Open report ErrNoSpace and keep
// trying (Open holding the lock); the episode is logged once, and once when
// it ends; nothing is acknowledged meanwhile and nothing is lost after. An
// EIO stops the Applier (ErrFailed) and a restart recovers. The versions
// file is advisory: no failure of it stops recovery (a commit does not show
// its results before it, though). A checkpoint that cannot be written
// leaves no temp file.
func TestApplier_Faults(t *testing.T) {
	midRun := []fault{
		{"commit-log", writesTo(".stateward/commits/")},
		{"document", writesTo(".tmp-c.json")},
		{"results", writesTo("results/")},
		{"results-folder", mkdirOf("results/b")},
		{"checkpoint", func(op, name string) bool { // its temp file is created, then its write fails
			return op == "write" && strings.HasPrefix(name, checkpointDir+"/")
		}},
		{"versions", writesTo(".stateward/versions")},
	}
	startUp := []fault{
		{"state-folder", mkdirOf(".stateward")},
		{"journal-folder", mkdirOf("journal")},
		{"document", writesTo(".tmp-c.json")},
		{"results", writesTo("results/")},
		{"versions", writesTo(".stateward/versions")},
	}
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EIO} {
		for _, f := range midRun {
			t.Run("MidRun/"+f.name+"/"+errnoName(errno), func(t *testing.T) { testFaultMidRun(t, f, errno) })
		}
		for _, f := range startUp {
			t.Run("StartUp/"+f.name+"/"+errnoName(errno), func(t *testing.T) { testFaultStartUp(t, f, errno) })
		}
	}
}

func errnoName(e syscall.Errno) string {
	if e == syscall.ENOSPC {
		return "ENOSPC"
	}
	return "EIO"
}

// testFaultMidRun: a running Applier meets the fault in the batch of
// intents 3-5 (agents a and b); it stays for a few tries.
func testFaultMidRun(t *testing.T, f fault, errno syscall.Errno) {
	dir, fs := faultDir(t)
	appendRaw(t, dir, "a", incLines(1, 2))
	logs := &syncBuffer{}
	a := NewApplier(dir, newBufferLogger(logs))
	a.fs = fs
	if f.name == "checkpoint" {
		a.CheckpointBytes = 1
	}
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	drain(t, a)
	appendRaw(t, dir, "a", incLines(3, 4))
	appendRaw(t, dir, "b", incLines(1, 1))
	var mu sync.Mutex
	full, hit := 3, 0
	fs.inject = func(op, name string) error {
		mu.Lock()
		defer mu.Unlock()
		if full > 0 && f.match(op, name) {
			full--
			hit++
			return errno
		}
		return nil
	}
	stepErrs := 0
	for range 20 {
		n, err := a.Step(t.Context())
		if err != nil {
			stepErrs++
			if errno == syscall.EIO {
				if !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.EIO) {
					t.Fatalf("Step: %v, want ErrFailed wrapping EIO", err)
				}
				break
			}
			if !errors.Is(err, ErrNoSpace) {
				t.Fatalf("Step: %v, want ErrNoSpace", err)
			}
			if f.name != "results" && f.name != "results-folder" && f.name != "checkpoint" && f.name != "versions" && len(readResults(t, dir, "a")) != 2 {
				t.Fatalf("%d results of a while out of space, want 2", len(readResults(t, dir, "a")))
			}
			if tmps := tempFiles(t, dir); len(tmps) > 0 && f.name == "checkpoint" {
				t.Fatalf("temp files left while out of space: %v", tmps)
			}
			continue
		}
		mu.Lock()
		done := full == 0
		mu.Unlock()
		if n == 0 && done {
			break
		}
	}
	if hit == 0 {
		t.Fatalf("the fault was never met")
	}
	switch {
	case errno == syscall.ENOSPC:
		if stepErrs == 0 {
			t.Fatal("no Step reported ErrNoSpace")
		}
		if got := strings.Count(logs.String(), "out of space"); got != 1 {
			t.Errorf("out of space logged %d times, want once per episode:\n%s", got, logs)
		}
		if got := strings.Count(logs.String(), "space available again"); got != 1 {
			t.Errorf("end of the episode logged %d times, want once:\n%s", got, logs)
		}
	default:
		if stepErrs == 0 {
			t.Fatal("no Step failed on EIO")
		}
		fs.inject = nil
		a.Close()
		a = NewApplier(dir, nil) // the restart: recovery takes over
		if f.name == "checkpoint" {
			a.CheckpointBytes = 1
		}
		if err := a.Open(); err != nil {
			t.Fatalf("recovery after EIO: %v", err)
		}
	}
	drain(t, a)
	a.Close()
	checkFaultOutcome(t, dir)
}

// testFaultStartUp: recovery meets the fault. The directory holds an
// interrupted batch (its document and results not written), so that
// recovery writes a document and results.
func testFaultStartUp(t *testing.T, f fault, errno syscall.Errno) {
	dir := t.TempDir()
	if f.name != "state-folder" && f.name != "journal-folder" {
		interruptedBatch(t, dir)
	} else {
		if err := os.WriteFile(filepath.Join(dir, "c.json"), []byte(`{"n":0}`), 0o644); err != nil {
			t.Fatal(err)
		}
		appendRaw(t, dir, "a", incLines(1, 4))
		if f.name == "state-folder" {
			os.RemoveAll(filepath.Join(dir, privateDir))
		}
		os.Rename(filepath.Join(dir, "journal"), filepath.Join(dir, "journal-later"))
	}
	fs := newCrashFS(t, dir)
	logs := &syncBuffer{}
	a := NewApplier(dir, newBufferLogger(logs))
	a.fs = fs
	defer a.Close()
	full, hit := 3, 0
	fs.inject = func(op, name string) error {
		if full > 0 && f.match(op, name) {
			full--
			hit++
			return errno
		}
		return nil
	}
	var err error
	for tries := 0; tries < 10; tries++ {
		if err = a.Open(); !errors.Is(err, ErrNoSpace) {
			break
		}
		if f.name != "state-folder" {
			if _, lerr := TryLock(dir); !errors.Is(lerr, ErrLocked) {
				t.Fatalf("lock while waiting for space: %v, want it held", lerr)
			}
		}
	}
	if hit == 0 {
		t.Fatal("the fault was never met")
	}
	fs.inject = nil
	switch {
	case f.name == "versions":
		if err != nil {
			t.Fatalf("Open with a failing versions file: %v, want success (it is advisory)", err)
		}
	case errno == syscall.ENOSPC:
		if err != nil {
			t.Fatalf("Open once space returned: %v", err)
		}
		if got := strings.Count(logs.String(), "out of space"); got != 1 {
			t.Errorf("out of space logged %d times, want once:\n%s", got, logs)
		}
	default:
		if !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.EIO) {
			t.Fatalf("Open: %v, want ErrFailed wrapping EIO", err)
		}
		a = NewApplier(dir, nil) // the restart
		if err := a.Open(); err != nil {
			t.Fatalf("recovery after EIO: %v", err)
		}
	}
	if f.name == "state-folder" || f.name == "journal-folder" {
		os.RemoveAll(filepath.Join(dir, "journal"))
		if err := os.Rename(filepath.Join(dir, "journal-later"), filepath.Join(dir, "journal")); err != nil {
			t.Fatal(err)
		}
	} else {
		appendRaw(t, dir, "b", incLines(1, 1))
	}
	drain(t, a)
	a.Close()
	if f.name == "state-folder" || f.name == "journal-folder" {
		if got := readJSON(t, dir, "c.json").(map[string]any)["n"]; got != 4.0 {
			t.Fatalf("n = %v, want 4", got)
		}
		mustVerify(t, dir)
		return
	}
	checkFaultOutcome(t, dir)
}

// interruptedBatch leaves in dir the state of a watcher that crashed after
// the commit record of its second batch (intents 3 and 4 of agent a): the
// document and the results still as after the first.
func interruptedBatch(t *testing.T, dir string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "c.json"), []byte(`{"n":0}`), 0o644); err != nil {
		t.Fatal(err)
	}
	appendRaw(t, dir, "a", incLines(1, 2))
	a := NewApplier(dir, nil)
	a.ResultsSyncInterval = time.Hour
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	drain(t, a)
	doc, err := os.ReadFile(filepath.Join(dir, "c.json"))
	if err != nil {
		t.Fatal(err)
	}
	res := filepath.Join(dir, "results", "a", journal.SegmentName(1))
	fi, err := os.Stat(res)
	if err != nil {
		t.Fatal(err)
	}
	appendRaw(t, dir, "a", incLines(3, 4))
	drain(t, a)
	a.Close()
	if err := os.WriteFile(filepath.Join(dir, "c.json"), doc, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(res, fi.Size()); err != nil {
		t.Fatal(err)
	}
}

// checkFaultOutcome checks that agent a's intents 1-4 and b's 1 were each
// applied once, in order, and answered, and that the directory verifies.
func checkFaultOutcome(t *testing.T, dir string) {
	t.Helper()
	if got := readJSON(t, dir, "c.json").(map[string]any)["n"]; got != 5.0 {
		t.Errorf("n = %v, want 5", got)
	}
	for ag, want := range map[string]int{"a": 4, "b": 1} {
		res := readResults(t, dir, ag)
		if len(res) != want {
			t.Fatalf("%d results of %s, want %d: %+v", len(res), ag, want, res)
		}
		for i, r := range res {
			if r.Seq != uint64(i+1) || r.Status != journal.StatusApplied || r.Retry {
				t.Errorf("result %d of %s = %+v", i, ag, r)
			}
		}
	}
	if tmps := tempFiles(t, dir); len(tmps) > 0 {
		t.Errorf("temp files left: %v", tmps)
	}
	mustVerify(t, dir)
}

// tempFiles lists the temp files of documents, checkpoints and the
// versions file under dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, folder := range []string{".", checkpointDir, privateDir} {
		ents, _ := os.ReadDir(filepath.Join(dir, folder))
		for _, e := range ents {
			if isTemp(e.Name()) || isTempName(e.Name()) {
				out = append(out, path.Join(folder, e.Name()))
			}
		}
	}
	return out
}
