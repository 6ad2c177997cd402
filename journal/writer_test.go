package journal

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofrs/flock"
)

// testIntent returns a valid intent without a seq; i makes it unique.
func testIntent(i int) Intent {
	return Intent{File: "a.json", Patch: json.RawMessage(fmt.Sprintf(`[{"op":"inc","path":"/n","value":%d}]`, i))}
}

// MustOpenWriter opens a Writer for agent in dir, after edit (if not nil)
// has set its knobs, and closes it when the test ends.
func MustOpenWriter(tb testing.TB, dir, agent string, edit func(*Writer)) *Writer {
	tb.Helper()
	w := NewWriter(dir, agent)
	if edit != nil {
		edit(w)
	}
	if err := w.Open(); err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { w.Close() })
	return w
}

// MustAppend appends in and returns the record as written.
func MustAppend(tb testing.TB, w *Writer, in Intent) Intent {
	tb.Helper()
	out, err := w.Append(in)
	if err != nil {
		tb.Fatalf("Append: %v", err)
	}
	return out
}

// segment is one segment file of a journal as found on disk.
type segment struct {
	first uint64
	data  []byte
	lines []string
}

// readJournal returns the segments of agent's journal in dir, in order.
func readJournal(tb testing.TB, dir, agent string) []segment {
	tb.Helper()
	folder := filepath.Join(dir, "journal", agent)
	seqs, err := ListSegments(folder)
	if err != nil {
		tb.Fatal(err)
	}
	var segs []segment
	for _, s := range seqs {
		data, err := os.ReadFile(filepath.Join(folder, SegmentName(s)))
		if err != nil {
			tb.Fatal(err)
		}
		seg := segment{first: s, data: data}
		for l := range strings.SplitAfterSeq(string(data), "\n") {
			if l != "" {
				seg.lines = append(seg.lines, l)
			}
		}
		segs = append(segs, seg)
	}
	return segs
}

// checkJournal verifies the invariants of a journal that only this package
// wrote (docs/format.md, Names and Intent): every segment ends on a line boundary, every line is a
// valid intent, seqs strictly increase across the journal, and a non-empty
// segment is named by the seq of its first record. It returns all the seqs.
func checkJournal(tb testing.TB, dir, agent string) []uint64 {
	tb.Helper()
	var all []uint64
	for _, seg := range readJournal(tb, dir, agent) {
		if len(seg.data) > 0 && seg.data[len(seg.data)-1] != '\n' {
			tb.Errorf("segment %d ends in a torn line: %q", seg.first, seg.lines[len(seg.lines)-1])
		}
		for i, l := range seg.lines {
			in, seq, err := ParseIntent([]byte(l))
			if err != nil {
				tb.Errorf("segment %d line %d %q: %v", seg.first, i, l, err)
				continue
			}
			if i == 0 && seq != seg.first {
				tb.Errorf("segment %s starts with seq %d", SegmentName(seg.first), seq)
			}
			if n := len(all); n > 0 && seq <= all[n-1] {
				tb.Errorf("seq %d after seq %d", seq, all[n-1])
			}
			all = append(all, in.Seq)
		}
	}
	return all
}

// seqRange returns first, first+1, ..., last.
func seqRange(first, last uint64) []uint64 {
	var s []uint64
	for i := first; i <= last; i++ {
		s = append(s, i)
	}
	return s
}

func TestOpenWriter(t *testing.T) {
	t.Run("CreatesFolder", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state", "dir") // not there yet
		w, err := OpenWriter(dir, "agent-1")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		fi, err := os.Stat(filepath.Join(dir, "journal", "agent-1"))
		if err != nil || !fi.IsDir() {
			t.Fatalf("journal folder: %v, %v", fi, err)
		}
		if got, want := w.LastSeq(), uint64(0); got != want {
			t.Errorf("LastSeq()=%d, want %d", got, want)
		}
		out := MustAppend(t, w, testIntent(1))
		if got, want := out.Seq, uint64(1); got != want {
			t.Errorf("first seq %d, want %d", got, want)
		}
		if _, err := os.Stat(filepath.Join(dir, "journal", "agent-1", "00000000000000000001.jsonl")); err != nil {
			t.Errorf("first segment: %v", err)
		}
		if got, want := checkJournal(t, dir, "agent-1"), []uint64{1}; !slices.Equal(got, want) {
			t.Errorf("seqs %v, want %v", got, want)
		}
	})

	t.Run("Defaults", func(t *testing.T) {
		w := NewWriter(t.TempDir(), "a")
		if w.SegmentSize != DefaultSegmentSize || w.LockTimeout != DefaultLockTimeout {
			t.Errorf("SegmentSize=%d, LockTimeout=%s; want %d, %s", w.SegmentSize, w.LockTimeout, DefaultSegmentSize, DefaultLockTimeout)
		}
	})

	t.Run("BadAgent", func(t *testing.T) {
		for _, agent := range []string{"", ".", "..", "../evil", "a/b", ".hidden", strings.Repeat("a", 65), "a b"} {
			dir := t.TempDir()
			w, err := OpenWriter(dir, agent)
			if !errors.Is(err, ErrBadName) {
				if w != nil {
					w.Close()
				}
				t.Errorf("OpenWriter(%q)=%v, want ErrBadName", agent, err)
			}
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(ents) != 0 {
				t.Errorf("OpenWriter(%q) created %v", agent, ents)
			}
		}
		if _, err := os.Stat(filepath.Join(t.TempDir(), "..", "evil")); err == nil {
			t.Error("a folder was created outside the state directory")
		}
	})

	t.Run("BadSegmentSize", func(t *testing.T) {
		w := NewWriter(t.TempDir(), "a")
		w.SegmentSize = 0
		if err := w.Open(); err == nil {
			w.Close()
			t.Fatal("Open with SegmentSize 0 succeeded")
		}
	})

	t.Run("FolderIsAFile", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "journal"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "journal", "a"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if w, err := OpenWriter(dir, "a"); err == nil {
			w.Close()
			t.Fatal("OpenWriter over a file succeeded")
		}
	})
}

func TestWriter_Append(t *testing.T) {
	t.Run("Seqs", func(t *testing.T) {
		dir := t.TempDir()
		w := MustOpenWriter(t, dir, "a", nil)
		var want bytes.Buffer
		for i := 1; i <= 3; i++ {
			out := MustAppend(t, w, testIntent(i))
			if got, want := out.Seq, uint64(i); got != want {
				t.Errorf("Append %d: seq %d, want %d", i, got, want)
			}
			if got, want := w.LastSeq(), uint64(i); got != want {
				t.Errorf("LastSeq()=%d, want %d", got, want)
			}
			line, err := out.MarshalLine()
			if err != nil {
				t.Fatal(err)
			}
			want.Write(line)
		}
		data, err := os.ReadFile(filepath.Join(dir, "journal", "a", SegmentName(1)))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(data); got != want.String() {
			t.Errorf("segment holds\n%s, want\n%s", got, want.String())
		}
	})

	t.Run("ReturnsRecordAsWritten", func(t *testing.T) {
		dir := t.TempDir()
		w := MustOpenWriter(t, dir, "a", nil)
		in := Intent{
			File:      "tasks.json",
			Merge:     json.RawMessage("{ \"tasks\" : { \"t1\" : { \"status\" : \"done\" } } }"),
			IfVersion: u64(4),
			ID:        "claim-t1",
			Time:      "2024-05-01T12:00:00Z",
		}
		out := MustAppend(t, w, in)
		want := in
		want.Seq = 1
		if d := sameIntent(t, out, want); d != "" {
			t.Error(d)
		}
		line, err := out.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(dir, "journal", "a", SegmentName(1)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, line) {
			t.Errorf("on disk %q, want MarshalLine() %q", data, line)
		}
		back, seq, err := ParseIntent(data)
		if err != nil || seq != 1 {
			t.Fatalf("ParseIntent(on disk)=%d, %v", seq, err)
		}
		if d := sameIntent(t, back, want); d != "" {
			t.Error(d)
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		dir := t.TempDir()
		w := MustOpenWriter(t, dir, "a", nil)
		MustAppend(t, w, testIntent(1))
		for name, in := range map[string]Intent{
			"BadFile":       {File: "../x.json", Patch: json.RawMessage(`[]`)},
			"PatchAndMerge": {File: "a.json", Patch: json.RawMessage(`[]`), Merge: json.RawMessage(`{}`)},
			"Neither":       {File: "a.json"},
			"BadTime":       {File: "a.json", Patch: json.RawMessage(`[]`), Time: "now"},
		} {
			if out, err := w.Append(in); !errors.Is(err, ErrBadRecord) {
				t.Errorf("%s: Append=%+v, %v; want ErrBadRecord", name, out, err)
			}
		}
		// Nothing was written and no seq was used up; the writer still works.
		if got, want := MustAppend(t, w, testIntent(2)).Seq, uint64(2); got != want {
			t.Errorf("seq after rejected appends %d, want %d", got, want)
		}
		if got, want := checkJournal(t, dir, "a"), []uint64{1, 2}; !slices.Equal(got, want) {
			t.Errorf("seqs %v, want %v", got, want)
		}
	})

	t.Run("ExplicitSeq", func(t *testing.T) {
		dir := t.TempDir()
		w := MustOpenWriter(t, dir, "a", nil)
		for i := 1; i <= 3; i++ {
			MustAppend(t, w, testIntent(i))
		}
		for _, seq := range []uint64{1, 2, 3} {
			in := testIntent(0)
			in.Seq = seq
			if _, err := w.Append(in); !errors.Is(err, ErrBadRecord) {
				t.Errorf("Append with seq %d after 3: %v, want ErrBadRecord", seq, err)
			}
		}
		in := testIntent(7)
		in.Seq = 7 // a gap is allowed: seqs only need to increase
		if got, want := MustAppend(t, w, in).Seq, uint64(7); got != want {
			t.Errorf("explicit seq %d, want %d", got, want)
		}
		if got, want := MustAppend(t, w, testIntent(8)).Seq, uint64(8); got != want {
			t.Errorf("seq after explicit 7: %d, want %d", got, want)
		}
		w.Close()
		w2 := MustOpenWriter(t, dir, "a", nil)
		if got, want := MustAppend(t, w2, testIntent(9)).Seq, uint64(9); got != want {
			t.Errorf("seq after reopen %d, want %d", got, want)
		}
		if got, want := checkJournal(t, dir, "a"), []uint64{1, 2, 3, 7, 8, 9}; !slices.Equal(got, want) {
			t.Errorf("seqs %v, want %v", got, want)
		}
	})

	t.Run("Closed", func(t *testing.T) {
		w := MustOpenWriter(t, t.TempDir(), "a", nil)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Append(testIntent(1)); !errors.Is(err, ErrClosed) {
			t.Errorf("Append after Close: %v, want ErrClosed", err)
		}
		if _, err := w.AppendBatch([]Intent{testIntent(1)}); !errors.Is(err, ErrClosed) {
			t.Errorf("AppendBatch after Close: %v, want ErrClosed", err)
		}
		if err := w.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})

	t.Run("NotOpen", func(t *testing.T) {
		w := NewWriter(t.TempDir(), "a")
		if _, err := w.Append(testIntent(1)); !errors.Is(err, ErrClosed) {
			t.Errorf("Append before Open: %v, want ErrClosed", err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		dir := t.TempDir()
		w := MustOpenWriter(t, dir, "a", func(w *Writer) { w.SegmentSize = 2000 })
		const workers, each = 8, 20
		seqs := make([][]uint64, workers)
		errs := make(chan error, workers*each)
		var wg sync.WaitGroup
		for g := range workers {
			wg.Go(func() {
				for i := range each {
					out, err := w.Append(testIntent(g*each + i))
					if err != nil {
						errs <- err
						return
					}
					seqs[g] = append(seqs[g], out.Seq)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		var all []uint64
		for g, s := range seqs {
			if !slices.IsSorted(s) {
				t.Errorf("worker %d got seqs out of order: %v", g, s)
			}
			all = append(all, s...)
		}
		slices.Sort(all)
		if want := seqRange(1, workers*each); !slices.Equal(all, want) {
			t.Errorf("seqs handed out %v, want %v", all, want)
		}
		if got, want := checkJournal(t, dir, "a"), seqRange(1, workers*each); !slices.Equal(got, want) {
			t.Errorf("seqs on disk %v, want %v", got, want)
		}
		if got := len(readJournal(t, dir, "a")); got < 2 {
			t.Errorf("%d segments, want the writers to have rotated", got)
		}
	})
}

func TestWriter_Open(t *testing.T) {
	t.Run("Reopen", func(t *testing.T) {
		dir := t.TempDir()
		w := MustOpenWriter(t, dir, "a", nil)
		for i := 1; i <= 3; i++ {
			MustAppend(t, w, testIntent(i))
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		w2 := MustOpenWriter(t, dir, "a", nil)
		if got, want := w2.LastSeq(), uint64(3); got != want {
			t.Errorf("LastSeq() after reopen %d, want %d", got, want)
		}
		if got, want := MustAppend(t, w2, testIntent(4)).Seq, uint64(4); got != want {
			t.Errorf("seq after reopen %d, want %d", got, want)
		}
		if got, want := checkJournal(t, dir, "a"), []uint64{1, 2, 3, 4}; !slices.Equal(got, want) {
			t.Errorf("seqs %v, want %v", got, want)
		}
		if got, want := len(readJournal(t, dir, "a")), 1; got != want {
			t.Errorf("%d segments, want %d: reopening continues the newest segment", got, want)
		}
	})

	// Fixtures: testdata/recover/<case>/ is the content of journal/a/.
	tests := []struct {
		name        string
		wantLastSeq uint64
		wantNext    uint64
		wantSegment uint64 // the segment the next record goes to
		wantTrunc   int64  // size of that segment after Open, before the append
	}{
		{name: "ok", wantLastSeq: 3, wantNext: 4, wantSegment: 1, wantTrunc: 213},
		{name: "torn-tail", wantLastSeq: 2, wantNext: 3, wantSegment: 1, wantTrunc: 142},
		{name: "torn-complete-record", wantLastSeq: 2, wantNext: 3, wantSegment: 1, wantTrunc: 142},
		{name: "empty-newest", wantLastSeq: 2, wantNext: 10, wantSegment: 10, wantTrunc: 0},
		{name: "two-empty-newest", wantLastSeq: 2, wantNext: 7, wantSegment: 7, wantTrunc: 0},
		{name: "torn-only-newest", wantLastSeq: 2, wantNext: 3, wantSegment: 3, wantTrunc: 0},
		{name: "garbage-lines", wantLastSeq: 2, wantNext: 3, wantSegment: 1, wantTrunc: 151},
		{name: "gap-in-seqs", wantLastSeq: 5, wantNext: 6, wantSegment: 1, wantTrunc: 142},
		{name: "rotated", wantLastSeq: 4, wantNext: 5, wantSegment: 3, wantTrunc: 142},
		{name: "other-files", wantLastSeq: 2, wantNext: 3, wantSegment: 1, wantTrunc: 142},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			folder := filepath.Join(dir, "journal", "a")
			if err := os.CopyFS(folder, os.DirFS(filepath.Join("testdata", "recover", tt.name))); err != nil {
				t.Fatal(err)
			}
			segPath := filepath.Join(folder, SegmentName(tt.wantSegment))
			before, err := os.ReadFile(segPath)
			if err != nil {
				t.Fatal(err)
			}
			w := MustOpenWriter(t, dir, "a", nil)
			if got, want := w.LastSeq(), tt.wantLastSeq; got != want {
				t.Errorf("LastSeq()=%d, want %d", got, want)
			}
			fi, err := os.Stat(segPath)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := fi.Size(), tt.wantTrunc; got != want {
				t.Errorf("segment %d is %d bytes after Open, want %d", tt.wantSegment, got, want)
			}
			out := MustAppend(t, w, testIntent(0))
			if got, want := out.Seq, tt.wantNext; got != want {
				t.Errorf("next seq %d, want %d", got, want)
			}
			line, err := out.MarshalLine()
			if err != nil {
				t.Fatal(err)
			}
			after, err := os.ReadFile(segPath)
			if err != nil {
				t.Fatal(err)
			}
			if want := string(before[:tt.wantTrunc]) + string(line); string(after) != want {
				t.Errorf("segment after append:\n%s\nwant:\n%s", after, want)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w2 := MustOpenWriter(t, dir, "a", nil)
			if got, want := w2.LastSeq(), tt.wantNext; got != want {
				t.Errorf("LastSeq() after reopen %d, want %d", got, want)
			}
		})
	}

	t.Run("TornTailAfterAppend", func(t *testing.T) {
		// An agent killed mid-append leaves part of a line: the next Open
		// cuts it, and the next record follows the last complete one.
		dir := t.TempDir()
		w := MustOpenWriter(t, dir, "a", nil)
		MustAppend(t, w, testIntent(1))
		MustAppend(t, w, testIntent(2))
		w.Close()
		p := filepath.Join(dir, "journal", "a", SegmentName(1))
		complete, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		torn, err := Intent{Seq: 3, File: "a.json", Merge: json.RawMessage(`{"x":1}`)}.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		for cut := 1; cut < len(torn); cut += 7 {
			if err := os.WriteFile(p, append(slices.Clone(complete), torn[:cut]...), 0o644); err != nil {
				t.Fatal(err)
			}
			w := MustOpenWriter(t, dir, "a", nil)
			if got, want := w.LastSeq(), uint64(2); got != want {
				t.Fatalf("cut %d: LastSeq()=%d, want %d", cut, got, want)
			}
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, complete) {
				t.Fatalf("cut %d: torn tail not cut: %q", cut, data[len(complete):])
			}
			w.Close()
		}
		w = MustOpenWriter(t, dir, "a", nil)
		if got, want := MustAppend(t, w, testIntent(3)).Seq, uint64(3); got != want {
			t.Errorf("seq after a torn tail %d, want %d", got, want)
		}
		if got, want := checkJournal(t, dir, "a"), []uint64{1, 2, 3}; !slices.Equal(got, want) {
			t.Errorf("seqs %v, want %v", got, want)
		}
	})
}

func TestWriter_Lock(t *testing.T) {
	dir := t.TempDir()
	w1 := MustOpenWriter(t, dir, "a", nil)
	MustAppend(t, w1, testIntent(1))

	w2 := NewWriter(dir, "a")
	w2.LockTimeout = 50 * time.Millisecond
	err := w2.Open()
	if !errors.Is(err, ErrLocked) {
		w2.Close()
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if _, err := w2.Append(testIntent(2)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append on a writer that failed to open: %v, want ErrClosed", err)
	}

	// Another agent is not blocked.
	MustOpenWriter(t, dir, "b", func(w *Writer) { w.LockTimeout = 50 * time.Millisecond })

	if err := w1.Close(); err != nil {
		t.Fatal(err)
	}
	w3 := MustOpenWriter(t, dir, "a", func(w *Writer) { w.LockTimeout = 5 * time.Second })
	if got, want := MustAppend(t, w3, testIntent(2)).Seq, uint64(2); got != want {
		t.Errorf("seq after taking over %d, want %d", got, want)
	}

	t.Run("WaitsForRelease", func(t *testing.T) {
		// A writer waiting for the lock gets it once the holder closes.
		done := make(chan error, 1)
		go func() {
			w := NewWriter(dir, "a")
			w.LockTimeout = 10 * time.Second
			err := w.Open()
			if err == nil {
				w.Close()
			}
			done <- err
		}()
		if err := w3.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("waiting Open: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("waiting Open did not return")
		}
	})
}

func TestWriter_Rotate(t *testing.T) {
	t.Run("Segments", func(t *testing.T) {
		dir := t.TempDir()
		folder := filepath.Join(dir, "journal", "a")
		const segSize = 200
		type call struct {
			newest uint64
			size   int64
		}
		var mu sync.Mutex
		var calls []call
		w := MustOpenWriter(t, dir, "a", func(w *Writer) {
			w.SegmentSize = segSize
			w.syncDir = func(p string) error {
				if p == folder {
					segs, err := ListSegments(folder)
					if err != nil || len(segs) == 0 {
						return fmt.Errorf("syncDir(%s) with no segment: %v", p, err)
					}
					fi, err := os.Stat(filepath.Join(folder, SegmentName(segs[len(segs)-1])))
					if err != nil {
						return err
					}
					mu.Lock()
					calls = append(calls, call{segs[len(segs)-1], fi.Size()})
					mu.Unlock()
				}
				return SyncDir(p)
			}
		})
		big := Intent{File: "a.json", Merge: json.RawMessage(`"` + strings.Repeat("z", 3*segSize) + `"`)}
		for i := 1; i <= 20; i++ {
			in := testIntent(i)
			if i == 9 || i == 10 {
				in = big // larger than a segment: alone in its own
			}
			if got, want := MustAppend(t, w, in).Seq, uint64(i); got != want {
				t.Fatalf("seq %d, want %d", got, want)
			}
		}
		if got, want := checkJournal(t, dir, "a"), seqRange(1, 20); !slices.Equal(got, want) {
			t.Errorf("seqs %v, want %v", got, want)
		}
		segs := readJournal(t, dir, "a")
		if len(segs) < 4 {
			t.Fatalf("%d segments, want several", len(segs))
		}
		for i, seg := range segs {
			if len(seg.lines) == 0 {
				t.Errorf("segment %d is empty", seg.first)
				continue
			}
			if len(seg.lines) > 1 && len(seg.data) > segSize {
				t.Errorf("segment %d has %d lines in %d bytes, over SegmentSize %d", seg.first, len(seg.lines), len(seg.data), segSize)
			}
			if i+1 < len(segs) && len(seg.data)+len(segs[i+1].lines[0]) <= segSize {
				t.Errorf("segment %d (%d bytes) ended early: the next record (%d bytes) fitted", seg.first, len(seg.data), len(segs[i+1].lines[0]))
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if got, want := len(calls), len(segs); got != want {
			t.Fatalf("syncDir called %d times for the journal folder, want once per segment (%d): %v", got, want, calls)
		}
		for i, c := range calls {
			if c.newest != segs[i].first || c.size != 0 {
				t.Errorf("syncDir call %d: newest segment %d with %d bytes; want %d, empty", i, c.newest, c.size, segs[i].first)
			}
		}
	})

	t.Run("SyncDirError", func(t *testing.T) {
		dir := t.TempDir()
		folder := filepath.Join(dir, "journal", "a")
		errInjected := errors.New("injected EIO")
		var fail atomic.Bool
		w := MustOpenWriter(t, dir, "a", func(w *Writer) {
			w.SegmentSize = 100
			w.syncDir = func(p string) error {
				if p == folder && fail.Load() {
					return errInjected
				}
				return SyncDir(p)
			}
		})
		MustAppend(t, w, testIntent(1))
		MustAppend(t, w, testIntent(2)) // 71 bytes each: every append starts a segment
		fail.Store(true)
		if out, err := w.Append(testIntent(3)); !errors.Is(err, errInjected) {
			t.Fatalf("Append with a failing directory sync: %+v, %v; want %v", out, err, errInjected)
		}
		fail.Store(false)
		if _, err := w.Append(testIntent(3)); !errors.Is(err, ErrClosed) {
			t.Errorf("Append after a failed sync: %v, want ErrClosed", err)
		}
		if got, want := checkJournal(t, dir, "a"), []uint64{1, 2}; !slices.Equal(got, want) {
			t.Errorf("seqs %v, want %v: the failed record must not be on disk", got, want)
		}
		// The lock is released: another writer takes over at once.
		w2 := MustOpenWriter(t, dir, "a", func(w *Writer) { w.LockTimeout = time.Second })
		if got, want := MustAppend(t, w2, testIntent(3)).Seq, uint64(3); got != want {
			t.Errorf("seq after recovery %d, want %d", got, want)
		}
		if got, want := checkJournal(t, dir, "a"), []uint64{1, 2, 3}; !slices.Equal(got, want) {
			t.Errorf("seqs %v, want %v", got, want)
		}
	})

	t.Run("SyncDirErrorFirstSegment", func(t *testing.T) {
		dir := t.TempDir()
		folder := filepath.Join(dir, "journal", "a")
		errInjected := errors.New("injected EIO")
		w := MustOpenWriter(t, dir, "a", func(w *Writer) {
			w.syncDir = func(p string) error {
				if p == folder {
					return errInjected
				}
				return SyncDir(p)
			}
		})
		if _, err := w.Append(testIntent(1)); !errors.Is(err, errInjected) {
			t.Fatalf("Append: %v, want %v", err, errInjected)
		}
		if _, err := w.Append(testIntent(1)); !errors.Is(err, ErrClosed) {
			t.Errorf("Append after a failed sync: %v, want ErrClosed", err)
		}
		w2 := MustOpenWriter(t, dir, "a", func(w *Writer) { w.LockTimeout = time.Second })
		if got, want := MustAppend(t, w2, testIntent(1)).Seq, uint64(1); got != want {
			t.Errorf("seq %d, want %d", got, want)
		}
	})

	t.Run("MkdirSyncError", func(t *testing.T) {
		dir := t.TempDir()
		errInjected := errors.New("injected EIO")
		w := NewWriter(dir, "a")
		w.syncDir = func(string) error { return errInjected }
		if err := w.Open(); !errors.Is(err, errInjected) {
			w.Close()
			t.Fatalf("Open with a failing directory sync: %v, want %v", err, errInjected)
		}
	})
}

func TestWriter_AppendBatch(t *testing.T) {
	t.Run("Consecutive", func(t *testing.T) {
		dir := t.TempDir()
		w := MustOpenWriter(t, dir, "a", nil)
		MustAppend(t, w, testIntent(0))
		ins := []Intent{testIntent(1), testIntent(2), testIntent(3)}
		out, err := w.AppendBatch(ins)
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		for i, in := range out {
			if got, want := in.Seq, uint64(i+2); got != want {
				t.Errorf("batch record %d: seq %d, want %d", i, got, want)
			}
			if ins[i].Seq != 0 {
				t.Errorf("AppendBatch changed its argument: seq %d", ins[i].Seq)
			}
			line, err := in.MarshalLine()
			if err != nil {
				t.Fatal(err)
			}
			want.Write(line)
		}
		segs := readJournal(t, dir, "a")
		if len(segs) != 1 {
			t.Fatalf("%d segments, want 1", len(segs))
		}
		if got := strings.Join(segs[0].lines[1:], ""); got != want.String() {
			t.Errorf("batch on disk\n%s, want\n%s", got, want.String())
		}
		if got, want := w.LastSeq(), uint64(4); got != want {
			t.Errorf("LastSeq()=%d, want %d", got, want)
		}
	})

	t.Run("NeverSplit", func(t *testing.T) {
		// A batch larger than a segment goes whole into one new segment.
		dir := t.TempDir()
		w := MustOpenWriter(t, dir, "a", func(w *Writer) { w.SegmentSize = 100 })
		MustAppend(t, w, testIntent(0))
		var ins []Intent
		for i := range 5 {
			ins = append(ins, testIntent(i))
		}
		if _, err := w.AppendBatch(ins); err != nil {
			t.Fatal(err)
		}
		if _, err := w.AppendBatch(ins[:2]); err != nil {
			t.Fatal(err)
		}
		segs := readJournal(t, dir, "a")
		var got []string
		for _, s := range segs {
			got = append(got, fmt.Sprintf("%d:%d", s.first, len(s.lines)))
		}
		if got, want := strings.Join(got, " "), "1:1 2:5 7:2"; got != want {
			t.Errorf("segments (first:lines) %s, want %s", got, want)
		}
		if got, want := checkJournal(t, dir, "a"), seqRange(1, 8); !slices.Equal(got, want) {
			t.Errorf("seqs %v, want %v", got, want)
		}
	})

	t.Run("ExplicitSeqs", func(t *testing.T) {
		dir := t.TempDir()
		w := MustOpenWriter(t, dir, "a", nil)
		ins := []Intent{testIntent(1), testIntent(2), testIntent(3)}
		ins[1].Seq = 10
		out, err := w.AppendBatch(ins)
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, in := range out {
			got = append(got, in.Seq)
		}
		if want := []uint64{1, 10, 11}; !slices.Equal(got, want) {
			t.Errorf("seqs %v, want %v", got, want)
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		// All or nothing: one bad record and none is written.
		dir := t.TempDir()
		w := MustOpenWriter(t, dir, "a", nil)
		MustAppend(t, w, testIntent(0))
		for name, ins := range map[string][]Intent{
			"BadRecord":     {testIntent(1), {File: "no/such.json", Patch: json.RawMessage(`[]`)}, testIntent(3)},
			"SeqNotGreater": {testIntent(1), {Seq: 2, File: "a.json", Patch: json.RawMessage(`[]`)}},
			"SeqBelowLast":  {{Seq: 1, File: "a.json", Patch: json.RawMessage(`[]`)}},
		} {
			if out, err := w.AppendBatch(ins); !errors.Is(err, ErrBadRecord) {
				t.Errorf("%s: AppendBatch=%v, %v; want ErrBadRecord", name, out, err)
			}
		}
		if got, want := checkJournal(t, dir, "a"), []uint64{1}; !slices.Equal(got, want) {
			t.Errorf("seqs %v, want %v", got, want)
		}
		if got, want := MustAppend(t, w, testIntent(1)).Seq, uint64(2); got != want {
			t.Errorf("seq after rejected batches %d, want %d", got, want)
		}
	})

	t.Run("Empty", func(t *testing.T) {
		dir := t.TempDir()
		w := MustOpenWriter(t, dir, "a", nil)
		for _, ins := range [][]Intent{nil, {}} {
			out, err := w.AppendBatch(ins)
			if err != nil || len(out) != 0 {
				t.Errorf("AppendBatch(%v)=%v, %v; want nothing, nil", ins, out, err)
			}
		}
		if segs := readJournal(t, dir, "a"); len(segs) != 0 {
			t.Errorf("an empty batch created %d segments", len(segs))
		}
		MustAppend(t, w, testIntent(1))
		if out, err := w.AppendBatch(nil); err != nil || len(out) != 0 {
			t.Errorf("AppendBatch(nil)=%v, %v; want nothing, nil", out, err)
		}
		if got, want := MustAppend(t, w, testIntent(2)).Seq, uint64(2); got != want {
			t.Errorf("seq after an empty batch %d, want %d", got, want)
		}
	})
}

func TestListSegments(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{SegmentName(10), SegmentName(2), SegmentName(100), ".lock", "x.jsonl", SegmentName(5) + ".tmp"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, SegmentName(7)), 0o755); err != nil { // a folder is not a segment
		t.Fatal(err)
	}
	got, err := ListSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{2, 10, 100}; !slices.Equal(got, want) {
		t.Errorf("ListSegments=%v, want %v", got, want)
	}
	got, err = ListSegments(filepath.Join(dir, "missing"))
	if err != nil || len(got) != 0 {
		t.Errorf("ListSegments(missing)=%v, %v; want none, nil", got, err)
	}
}

func TestWriter_LockParts(t *testing.T) {
	t.Run("SocketHeld", func(t *testing.T) {
		// A writer in another language holds only the abstract socket
		// (Node has no flock): Open must see it.
		dir := t.TempDir()
		folder := filepath.Join(dir, "journal", "a")
		if err := os.MkdirAll(folder, 0o755); err != nil {
			t.Fatal(err)
		}
		addr, err := WriterAddress(folder)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(addr), SunPathLen; got != want {
			t.Fatalf("len(WriterAddress)=%d, want %d", got, want)
		}
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		w := NewWriter(dir, "a")
		w.LockTimeout = 0
		if err := w.Open(); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), `"a"`) || !strings.Contains(err.Error(), folder) {
			w.Close()
			t.Fatalf("Open while the socket is held: %v, want ErrLocked naming the agent and folder", err)
		}
		ln.Close()
		w = MustOpenWriter(t, dir, "a", func(w *Writer) { w.LockTimeout = 0 })
		// While it is open, the name is taken (as a Node or Python writer
		// would find it).
		if ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"}); err == nil {
			ln.Close()
			t.Fatal("the writer's socket name was free while the writer was open")
		}
		w.Close()
		ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
		if err != nil {
			t.Fatalf("socket name not released by Close: %v", err)
		}
		ln.Close()
	})

	t.Run("FlockHeld", func(t *testing.T) {
		// A shell writer holds flock(1) on .lock.
		dir := t.TempDir()
		folder := filepath.Join(dir, "journal", "a")
		if err := os.MkdirAll(folder, 0o755); err != nil {
			t.Fatal(err)
		}
		fl := flock.New(filepath.Join(folder, LockName))
		if ok, err := fl.TryLock(); !ok || err != nil {
			t.Fatalf("TryLock: %v %v", ok, err)
		}
		w := NewWriter(dir, "a")
		w.LockTimeout = 0
		if err := w.Open(); !errors.Is(err, ErrLocked) {
			w.Close()
			t.Fatalf("Open while .lock is flocked: %v, want ErrLocked", err)
		}
		// The socket taken before the flock failed was let go.
		addr, _ := WriterAddress(folder)
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
		if err != nil {
			t.Fatalf("socket kept after a failed Open: %v", err)
		}
		ln.Close()
		fl.Unlock()
		MustOpenWriter(t, dir, "a", func(w *Writer) { w.LockTimeout = 0 })
	})

	t.Run("KilledHolder", func(t *testing.T) {
		// A writer killed by SIGKILL leaves nothing to wait out.
		if os.Getenv("STATEWARD_TEST_HOLD_WRITER") != "" {
			w, err := OpenWriter(os.Getenv("STATEWARD_TEST_HOLD_WRITER"), "a")
			if err != nil {
				fmt.Println("error:", err)
				os.Exit(1)
			}
			MustAppend(t, w, Intent{File: "a.json", Merge: json.RawMessage(`1`)})
			fmt.Println("locked")
			time.Sleep(time.Hour) // until killed
		}
		dir := t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^TestWriter_LockParts$/^KilledHolder$")
		cmd.Env = append(os.Environ(), "STATEWARD_TEST_HOLD_WRITER="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if line != "locked\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child: %q %v", line, err)
		}
		w := NewWriter(dir, "a")
		w.LockTimeout = 0
		if err := w.Open(); !errors.Is(err, ErrLocked) {
			t.Fatalf("Open while a child holds the journal: %v, want ErrLocked", err)
		}
		cmd.Process.Kill()
		cmd.Wait()
		w = MustOpenWriter(t, dir, "a", func(w *Writer) { w.LockTimeout = 0 })
		if got, want := MustAppend(t, w, testIntent(2)).Seq, uint64(2); got != want {
			t.Errorf("seq after the killed writer: %d, want %d", got, want)
		}
	})
}

func TestWriter_SeqLimit(t *testing.T) {
	const top = uint64(1<<64 - 1)
	dir := t.TempDir()
	w := MustOpenWriter(t, dir, "a", nil)
	in := testIntent(1)
	in.Seq = top - 1
	if _, err := w.Append(in); err != nil {
		t.Fatal(err)
	}
	t.Run("BatchPastTheTop", func(t *testing.T) {
		_, err := w.AppendBatch([]Intent{testIntent(2), testIntent(3)})
		if !errors.Is(err, ErrSeqExhausted) {
			t.Fatalf("AppendBatch past the largest seq: %v, want ErrSeqExhausted", err)
		}
		if got, want := w.LastSeq(), top-1; got != want {
			t.Errorf("LastSeq()=%d, want %d: nothing of the batch written", got, want)
		}
	})
	if rec, err := w.Append(testIntent(4)); err != nil || rec.Seq != top {
		t.Fatalf("Append of the largest seq = %d, %v; want %d", rec.Seq, err, top)
	}
	for _, seq := range []uint64{0, 5, top} {
		in := testIntent(5)
		in.Seq = seq
		if _, err := w.Append(in); !errors.Is(err, ErrSeqExhausted) {
			t.Errorf("Append with seq %d after the largest: %v, want ErrSeqExhausted", seq, err)
		}
	}
	w.Close()
	w = MustOpenWriter(t, dir, "a", nil)
	defer w.Close()
	if _, err := w.Append(testIntent(6)); !errors.Is(err, ErrSeqExhausted) {
		t.Errorf("Append after reopening: %v, want ErrSeqExhausted", err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "journal", "a", SegmentName(top-1)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := bytes.Count(data, []byte("\n")), 2; got != want {
		t.Errorf("journal holds %d lines, want %d", got, want)
	}
}
