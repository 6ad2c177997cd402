package replay

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stateward/stateward/journal"
)

// This file checks confinement (G5, issue 5): whatever links and ".."
// names are planted in the state directory or written into intents, the
// watcher (and status, and replay --verify) never reads, creates or
// changes a file outside it. The outside files live in their own folder,
// watched with inotify (which sees every open, read and change, not only
// the ones that leave a trace) and compared with a snapshot.

// outsideEvents is the inotify mask of the outside watch: any open, read,
// change, creation, deletion or rename.
const outsideEvents = unix.IN_OPEN | unix.IN_ACCESS | unix.IN_MODIFY | unix.IN_CREATE | unix.IN_ATTRIB |
	unix.IN_CLOSE_WRITE | unix.IN_DELETE | unix.IN_DELETE_SELF | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_MOVE_SELF

// outside is a folder outside the state directory, watched.
type outside struct {
	dir   string
	fd    int
	paths map[int]string // watch descriptor -> path
	snap  string
}

// snapshotTree describes every entry of a tree: name, type, mode, size,
// mtime and content (the link target for a link). It does not follow links.
func snapshotTree(tb testing.TB, root string) string {
	tb.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(&b, "%s %v %d %d", rel, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " -> %s", target)
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %q", data)
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return b.String()
}

// watchOutside snapshots the tree at dir, then watches it and everything in
// it. Nothing may touch the tree afterwards until check.
func watchOutside(tb testing.TB, dir string) *outside {
	tb.Helper()
	o := &outside{dir: dir, paths: map[int]string{}, snap: snapshotTree(tb, dir)}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		tb.Fatalf("inotify: %v", err)
	}
	o.fd = fd
	tb.Cleanup(func() { unix.Close(fd) })
	var paths []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&os.ModeSymlink == 0 {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	// Walked first, watched after: the walk's own opens are not seen.
	for _, p := range paths {
		wd, err := unix.InotifyAddWatch(fd, p, outsideEvents|unix.IN_DONT_FOLLOW)
		if err != nil {
			tb.Fatalf("inotify watch %s: %v", p, err)
		}
		o.paths[wd] = p
	}
	return o
}

// events drains the events seen so far, without blocking.
func (o *outside) events(tb testing.TB) []string {
	tb.Helper()
	var out []string
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(o.fd, buf)
		if errors.Is(err, unix.EAGAIN) || n <= 0 {
			return out
		}
		if err != nil {
			tb.Fatalf("read inotify: %v", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := ""
			if ev.Len > 0 {
				raw := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				name = string(bytes.TrimRight(raw, "\x00"))
			}
			if ev.Mask&unix.IN_IGNORED == 0 {
				out = append(out, fmt.Sprintf("%s %s", filepath.Join(o.paths[int(ev.Wd)], name), maskNames(ev.Mask)))
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

func maskNames(m uint32) string {
	var names []string
	for _, f := range []struct {
		bit  uint32
		name string
	}{
		{unix.IN_OPEN, "OPEN"}, {unix.IN_ACCESS, "ACCESS"}, {unix.IN_MODIFY, "MODIFY"}, {unix.IN_CREATE, "CREATE"},
		{unix.IN_ATTRIB, "ATTRIB"}, {unix.IN_CLOSE_WRITE, "CLOSE_WRITE"}, {unix.IN_CLOSE_NOWRITE, "CLOSE_NOWRITE"},
		{unix.IN_DELETE, "DELETE"}, {unix.IN_DELETE_SELF, "DELETE_SELF"}, {unix.IN_MOVED_FROM, "MOVED_FROM"},
		{unix.IN_MOVED_TO, "MOVED_TO"}, {unix.IN_MOVE_SELF, "MOVE_SELF"}, {unix.IN_ISDIR, "ISDIR"}, {unix.IN_Q_OVERFLOW, "OVERFLOW"},
	} {
		if m&f.bit != 0 {
			names = append(names, f.name)
		}
	}
	return strings.Join(names, "|")
}

// check fails the test if anything opened, read or changed the outside
// tree since watchOutside.
func (o *outside) check(tb testing.TB) {
	tb.Helper()
	if evs := o.events(tb); len(evs) > 0 {
		tb.Errorf("files outside the state directory were touched:\n%s", strings.Join(evs, "\n"))
	}
	if got := snapshotTree(tb, o.dir); got != o.snap {
		tb.Errorf("the outside tree changed:\n%s\nwas:\n%s", got, o.snap)
	}
}

func mustSymlink(tb testing.TB, target, link string) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		tb.Fatal(err)
	}
}

func mustWrite(tb testing.TB, p, text string) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// leakLines are intents that, if the watcher read them, would show up as
// leak.json in the state directory.
func leakLines(from uint64) string {
	return intentLine(from, "leak.json", `"merge":{"leaked":true}`) + intentLine(from+1, "leak.json", `"merge":{"again":true}`)
}

// TestApplier_Confinement plants links to the outside everywhere the
// watcher looks, and intents whose file names climb out, and checks that
// nothing outside is touched.
func TestApplier_Confinement(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	outBase := filepath.Base(out)

	// Outside: targets for every link.
	mustWrite(t, filepath.Join(out, "seg.jsonl"), leakLines(9))
	mustWrite(t, filepath.Join(out, "agentdir", journal.SegmentName(1)), leakLines(1))
	if err := os.Mkdir(filepath.Join(out, "results"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(out, "doc.json"), `{"secret":1}`)
	mustWrite(t, filepath.Join(out, "versions.tmp"), "do not overwrite\n")

	// Inside: the links, and journals that use them.
	seg := func(agent string, n uint64) string {
		return filepath.Join(dir, "journal", agent, journal.SegmentName(n))
	}
	mustWrite(t, seg("a", 1), ""+
		intentLine(1, "real.json", `"if_version":0,"patch":[{"op":"add","path":"","value":{"v":1}}]`)+
		intentLine(2, "link-in.json", `"merge":{"hacked":true}`)+
		intentLine(3, "link-out.json", `"merge":{"hacked":true}`)+
		intentLine(4, "dangling.json", `"if_version":0,"patch":[{"op":"add","path":"","value":{"created":true}}]`)+
		intentLine(5, "../x.json", `"merge":{"hacked":true}`)+
		intentLine(6, "/etc/x.json", `"merge":{"hacked":true}`)+
		intentLine(7, "../"+outBase+"/doc.json", `"merge":{"hacked":true}`)+
		intentLine(8, "real.json", `"merge":{"v":2}`))
	mustSymlink(t, filepath.Join(out, "seg.jsonl"), seg("a", 9))                       // a journal segment
	mustSymlink(t, filepath.Join(out, "agentdir"), filepath.Join(dir, "journal", "b")) // an agent folder
	mustWrite(t, seg("c", 1), intentLine(1, "c.json", `"merge":{"c":1}`))
	mustSymlink(t, filepath.Join(out, "results"), filepath.Join(dir, "results", "c")) // a results folder
	mustWrite(t, seg("d", 1), intentLine(1, "d.json", `"merge":{"d":1}`))
	mustSymlink(t, filepath.Join(out, "doc.json"), filepath.Join(dir, "link-out.json"))     // a document, out
	mustSymlink(t, "real.json", filepath.Join(dir, "link-in.json"))                         // a document, in
	mustSymlink(t, filepath.Join(out, "created.json"), filepath.Join(dir, "dangling.json")) // a document, dangling
	mustSymlink(t, filepath.Join(out, "versions.tmp"), filepath.Join(dir, journal.VersionsPath+".tmp"))
	mustSymlink(t, filepath.Join(out, "doc.json"), filepath.Join(dir, tempPrefix+"real.json-000000000000"))
	for _, p := range []string{filepath.Join(filepath.Dir(dir), "x.json"), "/etc/x.json"} {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists before the test", p)
		}
	}

	watch := watchOutside(t, out)
	h := &hostile{t: t, dir: dir, logs: &syncBuffer{}}
	h.a = NewApplier(dir, newBufferLogger(h.logs))
	h.open()
	h.drain()
	// More batches that touch the linked names, and a segment after the
	// linked one.
	h.appendSeg("a", 20, intentLine(20, "link-in.json", `"patch":[{"op":"add","path":"/hacked","value":true}]`)+
		intentLine(21, "link-out.json", `"if_version":0,"merge":{"hacked":true}`)+
		intentLine(22, "real.json", `"merge":{"v":3}`))
	h.drain()
	h.appendSeg("a", 20, intentLine(23, "dangling.json", `"merge":{"created":true}`)+intentLine(24, "real.json", `"merge":{"v":4}`))
	h.drain()
	st := h.status()
	h.a.Close()
	mustVerify(t, dir)
	watch.check(t)

	// What the watcher answered.
	want := map[uint64]string{
		1: applied, 2: "not a regular file", 3: "not a regular file", 4: "not a regular file",
		5: "file", 6: "file", 7: "file", 8: applied,
		20: "not a regular file", 21: "not a regular file", 22: applied, 23: "not a regular file", 24: applied,
	}
	res := h.results("a")
	if len(res) != len(want) {
		t.Errorf("agent a has %d results, want %d: %+v", len(res), len(want), res)
	}
	for _, r := range res {
		w, ok := want[r.Seq]
		switch {
		case !ok:
			t.Errorf("unexpected result %+v", r)
		case w == applied && r.Status != applied:
			t.Errorf("seq %d = %+v, want applied", r.Seq, r)
		case w != applied && (r.Status != rejected || !strings.Contains(r.Error, w)):
			t.Errorf("seq %d = %+v, want rejected naming %q", r.Seq, r, w)
		}
	}
	if got := readJSON(t, dir, "real.json"); fmt.Sprint(got) != fmt.Sprint(map[string]any{"v": 4.0}) {
		t.Errorf("real.json = %v, want {v:4}: written through link-in.json?", got)
	}
	if target, err := os.Readlink(filepath.Join(dir, "link-in.json")); err != nil || target != "real.json" {
		t.Errorf("link-in.json is no longer the link to real.json: %q, %v", target, err)
	}
	for _, ds := range st.Docs {
		if strings.HasPrefix(ds.File, "link-") || ds.File == "dangling.json" {
			if !strings.Contains(ds.State, "not a regular file") {
				t.Errorf("status of %s = %q, want it reported unusable", ds.File, ds.State)
			}
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "leak.json")); err == nil {
		t.Errorf("leak.json exists: a linked journal was read")
	}
	if got := h.results("d"); len(got) != 1 || got[0].Status != applied {
		t.Errorf("agent d results = %+v, want its intent applied", got)
	}
	if got := h.results("c"); len(got) != 0 {
		t.Errorf("agent c (results folder is a link) got results %+v", got)
	}
	logs := h.logs.String()
	for _, line := range []string{
		"ignoring a symbolic link in the journal folder",
		"not processing the journal of an agent whose results folder is not a folder",
		"document on disk is unusable",
	} {
		if !strings.Contains(logs, line) {
			t.Errorf("no log line %q; log:\n%s", line, logs)
		}
	}
	for _, p := range []string{filepath.Join(filepath.Dir(dir), "x.json"), "/etc/x.json", filepath.Join(dir, "x.json")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s was created", p)
		}
	}
}

// TestApplier_ConfinementAtOpen plants links where the watcher's own
// folders and files go: it refuses to start, or stops, with a clear error,
// and touches nothing outside.
func TestApplier_ConfinementAtOpen(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, dir, out string)
		want  string // in the error of Open, or of the Step that stops
		step  bool   // Open succeeds; a Step fails
	}{
		{
			name: "LockFile",
			plant: func(t *testing.T, dir, out string) {
				mustWrite(t, filepath.Join(out, "lock"), "4242\n")
				mustSymlink(t, filepath.Join(out, "lock"), filepath.Join(dir, lockName))
			},
			want: "lock",
		},
		{
			name: "LockFileDangling",
			plant: func(t *testing.T, dir, out string) {
				mustSymlink(t, filepath.Join(out, "newlock"), filepath.Join(dir, lockName))
			},
			want: "lock",
		},
		{
			name: "PrivateFolder",
			plant: func(t *testing.T, dir, out string) {
				if err := os.Mkdir(filepath.Join(out, "private"), 0o755); err != nil {
					t.Fatal(err)
				}
				mustSymlink(t, filepath.Join(out, "private"), filepath.Join(dir, privateDir))
			},
			want: "not a folder",
		},
		{
			name: "JournalFolder",
			plant: func(t *testing.T, dir, out string) {
				mustWrite(t, filepath.Join(out, "journal", "a", journal.SegmentName(1)), leakLines(1))
				mustSymlink(t, filepath.Join(out, "journal"), filepath.Join(dir, "journal"))
			},
			want: "journal in",
		},
		{
			name: "ResultsFolder",
			plant: func(t *testing.T, dir, out string) {
				if err := os.Mkdir(filepath.Join(out, "results"), 0o755); err != nil {
					t.Fatal(err)
				}
				mustSymlink(t, filepath.Join(out, "results"), filepath.Join(dir, "results"))
			},
			want: "results in",
		},
		{
			// Only the watcher writes in results/ (docs/security.md): a
			// link planted in an agent's results folder stops it.
			name: "ResultsSegment",
			plant: func(t *testing.T, dir, out string) {
				mustWrite(t, filepath.Join(out, "res.jsonl"), "")
				mustWrite(t, filepath.Join(dir, "journal", "a", journal.SegmentName(1)), intentLine(1, "a.json", `"merge":{"a":1}`))
				mustSymlink(t, filepath.Join(out, "res.jsonl"), filepath.Join(dir, "results", "a", journal.SegmentName(1)))
			},
			want: "results",
			step: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, out := t.TempDir(), t.TempDir()
			tc.plant(t, dir, out)
			watch := watchOutside(t, out)
			a := NewApplier(dir, nil)
			err := a.Open()
			if tc.step && err == nil {
				_, err = a.Step(t.Context())
			}
			a.Close()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one naming %q", err, tc.want)
			}
			if tc.step { // and a restart refuses to go on
				b := NewApplier(dir, nil)
				if err := b.Open(); err == nil {
					t.Errorf("Open after the stop succeeded")
				}
				b.Close()
			}
			if _, err := ReadStatus(dir); err != nil {
				t.Logf("status: %v", err)
			}
			if _, err := Verify(dir, ""); err == nil && !tc.step {
				t.Logf("verify succeeded")
			}
			watch.check(t)
		})
	}
}
