package replay

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// holdLegacy flocks DIR/.stateward/lock as every earlier release of the
// watcher does (LOCK_EX on the file), creating it; the lock is released
// at the end of the test. It reports whether the lock was taken.
func holdLegacy(t *testing.T, dir string) (*os.File, bool) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, privateDir), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDONLY|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err != nil && !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatal(err)
	}
	return f, err == nil
}

// TestLock_LegacyFileHeld holds DIR/.stateward/lock the way a watcher of
// an earlier release does: a new watcher (Open, TryLock, Verify) must be
// refused, and status must name the holder. A running new watcher holds
// that file too, so an earlier release is refused beside it, also after
// the file was deleted (it takes the new file at its next commit).
func TestLock_LegacyFileHeld(t *testing.T) {
	dir := t.TempDir()
	old, ok := holdLegacy(t, dir)
	if !ok {
		t.Fatal("could not take the legacy lock on a fresh directory")
	}
	if a := NewApplier(dir, nil); !errors.Is(a.Open(), ErrLocked) {
		a.Close()
		t.Fatal("a new watcher opened a directory whose .stateward/lock an earlier release holds")
	}
	if lk, err := TryLock(dir); !errors.Is(err, ErrLocked) {
		if lk != nil {
			lk.Unlock()
		}
		t.Fatalf("TryLock beside an earlier release: %v, want ErrLocked", err)
	}
	if _, err := Verify(dir, ""); !errors.Is(err, ErrLocked) {
		t.Fatalf("Verify beside an earlier release: %v, want ErrLocked", err)
	}
	if st, err := ReadStatus(dir); err != nil || st.Watcher != fmt.Sprintf("running (pid %d)", os.Getpid()) {
		t.Fatalf("status beside an earlier release: %q, %v", st.Watcher, err)
	}
	unix.Flock(int(old.Fd()), unix.LOCK_UN)

	a := MustOpen(t, dir)
	if _, ok := holdLegacy(t, dir); ok {
		t.Fatal("an earlier release could take .stateward/lock beside a running watcher")
	}
	if err := os.Remove(filepath.Join(dir, lockName)); err != nil {
		t.Fatal(err)
	}
	appendRaw(t, dir, "a", intentLine(1, "d.json", `"merge":{"k":1}`))
	drain(t, a)
	if _, ok := holdLegacy(t, dir); ok {
		t.Fatal("an earlier release could take a new .stateward/lock beside a running watcher after a commit")
	}
	b, err := os.ReadFile(filepath.Join(dir, lockName))
	if got, want := strings.TrimSpace(string(b)), strconv.Itoa(os.Getpid()); err != nil || got != want {
		t.Fatalf("pid file after a commit: %q, %v; want %s", got, err, want)
	}
}

// TestLock_NothingWrittenBeforeLock starts a watcher on a fresh directory
// that another process holds: it must be refused without writing anything
// (not even the private folder).
func TestLock_NothingWrittenBeforeLock(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if a := NewApplier(dir, nil); !errors.Is(a.Open(), ErrLocked) {
		a.Close()
		t.Fatal("a watcher opened a directory another process holds")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a refused watcher wrote in the state directory: %v", ents)
	}
}

// TestLock_ReplacedAtOpen replaces the state directory between the moment
// the watcher opens it and the moment it locks it: the lock must be on the
// folder the watcher writes in. Either Open fails, or the folder it writes
// in is locked (a second watcher on it is refused).
func TestLock_ReplacedAtOpen(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	a := NewApplier(dir, nil)
	a.hook = func(p string) {
		if p != "after-open-root" {
			return
		}
		if err := os.Rename(dir, dir+".old"); err != nil {
			t.Error(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, privateDir), 0o755); err != nil {
			t.Error(err)
		}
	}
	err := a.Open()
	defer a.Close()
	if err == nil {
		if b := NewApplier(dir+".old", nil); b.Open() == nil {
			b.Close()
			t.Fatal("two watchers opened the same folder: the first locked the new folder at its path, not the one it opened")
		}
		return
	}
	if _, serr := os.Stat(filepath.Join(dir+".old", privateDir)); serr == nil {
		t.Errorf("Open failed (%v) but wrote in the folder it never locked", err)
	}
}
