package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stateward/stateward/journal"
	"github.com/stateward/stateward/replay"
)

// lsMode formats a file's mode as ls -l does: "drwxr-s---".
func lsMode(m os.FileMode) string {
	b := []byte("----------")
	if m.IsDir() {
		b[0] = 'd'
	}
	const rwx = "rwxrwxrwx"
	for i := range 9 {
		if m.Perm()&(1<<(8-i)) != 0 {
			b[1+i] = rwx[i]
		}
	}
	if m&os.ModeSetgid != 0 {
		if b[6] == 'x' {
			b[6] = 's'
		} else {
			b[6] = 'S'
		}
	}
	return string(b)
}

// operationsTree returns the paths and modes that the tree of the state
// directory in docs/operations.md shows, relative to the directory.
func operationsTree(tb testing.TB) map[string]string {
	tb.Helper()
	f, err := os.Open(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	var stack []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !in {
			if strings.HasPrefix(line, "    /var/lib/stateward/ ") {
				in = true
				out["."] = strings.Fields(line)[1]
			}
			continue
		}
		if strings.TrimSpace(line) == "" {
			break
		}
		r := []rune(strings.TrimPrefix(line, "    "))
		depth := 0
		for len(r) >= 4 && strings.ContainsAny(string(r[:4]), "│├└") || len(r) >= 4 && string(r[:4]) == "    " {
			r = r[4:]
			depth++
		}
		fields := strings.Fields(string(r))
		if len(fields) < 2 || depth == 0 {
			tb.Fatalf("cannot read tree line %q", line)
		}
		name := strings.ReplaceAll(strings.TrimSuffix(fields[0], "/"), "000…001", strings.TrimSuffix(journal.SegmentName(1), ".jsonl"))
		stack = append(stack[:depth-1], name)
		out[filepath.Join(stack...)] = fields[1]
	}
	if len(out) < 5 {
		tb.Fatalf("found %d entries in the tree of docs/operations.md", len(out))
	}
	return out
}

// TestModes_MatchOperationsDoc runs a watcher and an agent with the umask
// docs/operations.md asks for (0007), in a setgid 2750 state directory as
// the install steps make it, and checks every mode the tree in
// docs/operations.md shows against the files they create.
func TestModes_MatchOperationsDoc(t *testing.T) {
	old := syscall.Umask(0o007) // inherited by the watcher process
	defer syscall.Umask(old)
	dir := t.TempDir()
	if err := os.Chmod(dir, os.ModeSetgid|0o750); err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, dir)
	submitResult(t, exitOK, "", "--dir", dir, "--agent", "alice", "--file", "tasks.json", "--if-version", "0", `[{"op":"add","path":"","value":{}}]`)
	w.stop(t)
	for rel, want := range operationsTree(t) {
		fi, err := os.Lstat(filepath.Join(dir, rel))
		if err != nil {
			t.Errorf("docs/operations.md shows %s: %v", rel, err)
			continue
		}
		if got := lsMode(fi.Mode()); got != want {
			t.Errorf("%s is %s, docs/operations.md says %s", rel, got, want)
		}
	}
}

// TestModes_Documented checks the modes docs/format.md lists against the
// code's constants, and that the install steps create the folder of the
// log-level file the units name.
func TestModes_Documented(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	format := read("docs/format.md")
	for _, want := range []string{
		fmt.Sprintf("`%#o` (`journal.DirMode`)", journal.DirMode),
		fmt.Sprintf("`%#o` (`journal.FileMode`)", journal.FileMode),
		fmt.Sprintf("| the watcher | `%#o`", replay.DefaultDocMode),
	} {
		if !strings.Contains(format, want) {
			t.Errorf("docs/format.md does not say %s", want)
		}
	}
	unit := read("systemd/stateward.service")
	_, after, ok := strings.Cut(unit, "--log-level-file ")
	if !ok {
		t.Fatal("systemd/stateward.service names no --log-level-file")
	}
	folder := filepath.Dir(strings.Fields(after)[0])
	for _, doc := range []string{"docs/operations.md", "systemd/README.md"} {
		if !strings.Contains(read(doc), "install -d -m 0755 "+folder+"\n") && !strings.Contains(read(doc), "install -d -m 0755 "+folder+" ") {
			t.Errorf("the install steps of %s never create %s, the folder of the log-level file", doc, folder)
		}
	}
}
