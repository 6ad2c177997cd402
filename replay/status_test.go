package replay

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadStatus_Skipped: status shows the size of an unusable document,
// lists every journal entry the watcher skips and why, and finds the
// watcher without taking its lock.
func TestReadStatus_Skipped(t *testing.T) {
	dir := t.TempDir()
	a := MustOpen(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "broken.json"), []byte(`{"a":`), 0o644); err != nil {
		t.Fatal(err)
	}
	appendRaw(t, dir, "alice", intentLine(1, "broken.json", `"merge":{"a":1}`))
	drain(t, a)
	journalDir := filepath.Join(dir, "journal")
	if err := os.Mkdir(filepath.Join(journalDir, "-bad"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(journalDir, "notes.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/tmp", filepath.Join(journalDir, "link")); err != nil {
		t.Fatal(err)
	}
	appendRaw(t, dir, "carol", "")
	if err := os.WriteFile(filepath.Join(dir, "results", "carol"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	st, err := ReadStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Watcher, fmt.Sprintf("running (pid %d)", os.Getpid()); got != want {
		t.Errorf("Watcher=%q, want %q", got, want)
	}
	if len(st.Docs) != 1 || !st.Docs[0].OnDisk || st.Docs[0].Size != 5 || !strings.HasPrefix(st.Docs[0].State, "unusable: ") {
		t.Errorf("Docs=%+v, want broken.json unusable, on disk, 5 bytes", st.Docs)
	}
	want := map[string]string{
		"-bad":      "skipped: not a valid agent name",
		"alice":     "ok",
		"carol":     "skipped: results/carol is not a folder (a regular file)",
		"link":      "skipped: not a folder (a symbolic link)",
		"notes.txt": "skipped: not a folder (a regular file)",
	}
	got := map[string]string{}
	for _, as := range st.Agents {
		got[as.Agent] = as.State
	}
	if len(got) != len(want) {
		t.Errorf("agents %v, want %v", got, want)
	}
	for name, w := range want {
		if !strings.HasPrefix(got[name], w) {
			t.Errorf("agent %s: state %q, want %q", name, got[name], w)
		}
	}

	// Status never takes the lock: with no watcher, the pid file is left
	// as it is (taking the lock would rewrite it).
	a.Close()
	pidFile := filepath.Join(dir, lockName)
	if err := os.WriteFile(pidFile, []byte("12345\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err = ReadStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Watcher != "stopped" {
		t.Errorf("Watcher=%q after Close, want stopped", st.Watcher)
	}
	if b, _ := os.ReadFile(pidFile); string(b) != "12345\n" {
		t.Errorf("pid file is %q after status, want it untouched", b)
	}
	// A journal folder the watcher read and that is gone is listed.
	if err := os.RemoveAll(filepath.Join(journalDir, "alice")); err != nil {
		t.Fatal(err)
	}
	st, err = ReadStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	gone := false
	for _, as := range st.Agents {
		gone = gone || as.Agent == "alice" && strings.HasPrefix(as.State, "journal folder gone")
	}
	if !gone {
		t.Errorf("agents %+v, want alice listed as journal folder gone", st.Agents)
	}
}
