package replay

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stateward/stateward/journal"
)

// appendSegment appends text to segment seg of an agent's journal, as a
// raw writer in another language would, with no fsync.
func appendSegment(tb testing.TB, dir, agent string, seg uint64, text string) {
	tb.Helper()
	folder := filepath.Join(dir, "journal", agent)
	if err := os.MkdirAll(folder, 0o755); err != nil {
		tb.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(folder, journal.SegmentName(seg)), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		tb.Fatal(err)
	}
}

// markLine is an intent that sets /seen/<mark> in c.json.
func markLine(seq uint64, mark string) string {
	return intentLine(seq, "c.json", fmt.Sprintf(`"patch":[{"op":"add","path":"/seen/%s","value":true}]`, mark))
}

// seenMarks returns the marks set in c.json.
func seenMarks(tb testing.TB, dir string) map[string]any {
	tb.Helper()
	return readJSON(tb, dir, "c.json").(map[string]any)["seen"].(map[string]any)
}

// obligationsDir returns a state directory with c.json, all of it durable.
func obligationsDir(tb testing.TB) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "state")
	if err := os.MkdirAll(filepath.Join(dir, "journal"), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "c.json"), []byte(`{"seen":{}}`), 0o644); err != nil {
		tb.Fatal(err)
	}
	syscall.Sync()
	return dir
}

// TestWriterObligations breaks, one at a time, each obligation that
// docs/format.md ("What a writer must do") puts on a journal writer, with a
// raw writer, and checks that what happens is what the section says.
func TestWriterObligations(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "format.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(doc), "### What a writer must do")
	section, _, _ = strings.Cut(section, "\n## ")
	for _, name := range []string{"SegmentSync", "FolderSync", "TornTailNotCut", "SegmentNames", "SeqReused"} {
		if !strings.Contains(section, "`"+name+"`") {
			t.Errorf("docs/format.md, What a writer must do, does not list the obligation %s tests", name)
		}
	}
	t.Run("SegmentSync", func(t *testing.T) {
		// A line never fsynced by its writer: lost in a power loss if the
		// watcher had not read it yet; durable if it had, because the
		// watcher fsyncs the segments it read before its commit record.
		lostBefore, lostAfter := 0, 0
		for seed := range 12 {
			for _, readFirst := range []bool{false, true} {
				fs := newCrashFS(t, obligationsDir(t))
				g := &plAgent{fs: fs, name: "a"}
				g.write(t, 1, true)  // seq 1, fsynced
				g.write(t, 1, false) // seq 2, not fsynced
				a := NewApplier(fs.dir, nil)
				a.fs = fs
				if err := a.Open(); err != nil {
					t.Fatal(err)
				}
				if readFirst {
					drain(t, a)
				}
				a.Close()
				img := filepath.Join(t.TempDir(), "img")
				fs.image(t, img, rand.New(rand.NewPCG(uint64(seed), 1)))
				b := MustOpen(t, img)
				drain(t, b)
				b.Close()
				marks := readJSON(t, img, "c.json").(map[string]any)["seen"].(map[string]any)
				if marks["a-1"] != 1.0 {
					t.Fatalf("fsynced seq 1 not applied after the power loss: %v", marks)
				}
				if marks["a-2"] == nil {
					if readFirst {
						lostAfter++
					} else {
						lostBefore++
					}
				}
			}
		}
		if lostBefore == 0 {
			t.Error("an unsynced line the watcher had not read survived every power loss: the test cannot see the loss")
		}
		if lostAfter != 0 {
			t.Errorf("an unsynced line the watcher had read was lost in %d power losses", lostAfter)
		}
	})

	t.Run("FolderSync", func(t *testing.T) {
		// A new segment whose folder entry the writer never fsynced: the
		// watcher applies its lines (it fsyncs the segment, never the
		// agent's folder); a power loss then loses the segment. The writer,
		// restarting, continues after the last seq it finds and writes
		// the lost seqs again in a segment of the same name: the watcher
		// resumes at the offset it recorded in it, so what the writer wrote
		// before that offset is never read, and a line cut by it is
		// rejected without a seq. None of it is applied.
		fs := newCrashFS(t, obligationsDir(t))
		g := &plAgent{fs: fs, name: "a"}
		g.write(t, 2, true) // segment 1: seqs 1-2, folder fsynced
		f, err := fs.OpenFile(path.Join("journal", "a", journal.SegmentName(3)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte(markLine(3, "first"))); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil { // the data, but not the folder entry
			t.Fatal(err)
		}
		f.Close()
		a := NewApplier(fs.dir, nil)
		a.fs = fs
		if err := a.Open(); err != nil {
			t.Fatal(err)
		}
		drain(t, a)
		a.Close()
		img := filepath.Join(t.TempDir(), "img")
		fs.image(t, img, rand.New(rand.NewPCG(1, 1)))
		if _, err := os.Stat(filepath.Join(img, "journal", "a", journal.SegmentName(3))); !os.IsNotExist(err) {
			t.Fatalf("segment 3 survived the power loss (%v): the test cannot see the loss", err)
		}
		appendSegment(t, img, "a", 3, markLine(3, "second"))
		b := MustOpen(t, img)
		drain(t, b)
		b.Close()
		marks := seenMarks(t, img)
		if marks["first"] != true || marks["second"] != nil {
			t.Errorf("marks %v: want the lost line applied and the reused seq not applied", marks)
		}
		n := 0
		for _, r := range readResults(t, img, "a") {
			if r.Seq == 3 && r.Status == journal.StatusApplied && !r.Retry {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d original applied results for seq 3, want 1 (the lost line's): the rewritten line must not be applied", n)
		}
	})

	t.Run("TornTailNotCut", func(t *testing.T) {
		// A writer that appends after a torn tail without cutting it: the
		// torn part and the new line are one line, not valid JSON, which
		// is rejected without a seq, naming its segment and offset; the
		// new intent is not applied.
		dir := obligationsDir(t)
		appendSegment(t, dir, "a", 1, markLine(1, "one"))
		torn := markLine(2, "torn")
		appendSegment(t, dir, "a", 1, torn[:len(torn)/2])
		appendSegment(t, dir, "a", 1, markLine(2, "two"))
		a := MustOpen(t, dir)
		drain(t, a)
		a.Close()
		res := readResults(t, dir, "a")
		if len(res) != 2 || res[1].Status != journal.StatusRejected || res[1].Seq != 0 || res[1].Offset == nil || *res[1].Offset != int64(len(markLine(1, "one"))) {
			t.Errorf("results %+v: want seq 1 applied, then a seq-less rejection at the torn line's offset", res)
		}
		if marks := seenMarks(t, dir); marks["two"] != nil || marks["torn"] != nil {
			t.Errorf("marks %v: want neither the torn nor the new line applied", marks)
		}
	})

	t.Run("SegmentNames", func(t *testing.T) {
		// Segments are read in the numeric order of their names. A new
		// segment named below the segment the watcher is reading is never
		// read: its intents get no result.
		dir := obligationsDir(t)
		appendSegment(t, dir, "a", 10, markLine(1, "one")+markLine(2, "two"))
		a := MustOpen(t, dir)
		drain(t, a)
		appendSegment(t, dir, "a", 3, markLine(3, "three"))
		appendSegment(t, dir, "a", 11, markLine(4, "four"))
		drain(t, a)
		a.Close()
		marks := seenMarks(t, dir)
		if marks["three"] != nil || marks["four"] != true {
			t.Errorf("marks %v: want segment 3 never read, segment 11 read", marks)
		}
		for _, r := range readResults(t, dir, "a") {
			if r.Seq == 3 {
				t.Errorf("seq 3, in a segment named below the one being read, got a result: %+v", r)
			}
		}
	})

	t.Run("SeqReused", func(t *testing.T) {
		// A seq not above the last one processed is a retry: answered with
		// a copy of the original result, not applied.
		dir := obligationsDir(t)
		appendSegment(t, dir, "a", 1, markLine(1, "one")+markLine(2, "two")+markLine(2, "again"))
		a := MustOpen(t, dir)
		drain(t, a)
		a.Close()
		res := readResults(t, dir, "a")
		if len(res) != 3 || !res[2].Retry || res[2].Seq != 2 || res[2].Commit != res[1].Commit {
			t.Errorf("results %+v: want the reused seq answered with a retry copy of seq 2's result", res)
		}
		if marks := seenMarks(t, dir); marks["again"] != nil {
			t.Errorf("marks %v: the reused seq was applied", marks)
		}
	})
}
