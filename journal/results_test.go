package journal

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"testing/synctest"
	"time"
)

// applied returns the result the watcher would write for seq applied as
// commit seq+100.
func applied(seq uint64) Result {
	return Result{Seq: seq, File: "a.json", Status: StatusApplied, Version: seq, Commit: seq + 100}
}

// retryOf returns the copy of r that answers a retry.
func retryOf(r Result) Result {
	r.Retry = true
	return r
}

// appendData appends data to path in one write, creating it and its folders.
func appendData(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// appendFile is appendData for the test goroutine.
func appendFile(tb testing.TB, path string, data []byte) {
	tb.Helper()
	if err := appendData(path, data); err != nil {
		tb.Fatal(err)
	}
}

// resultsPath is the results segment seg of agent in dir.
func resultsPath(dir, agent string, seg uint64) string {
	return filepath.Join(dir, "results", agent, SegmentName(seg))
}

// resultLines returns rs as the watcher writes them.
func resultLines(rs ...Result) []byte {
	var data []byte
	for _, r := range rs {
		data = r.AppendLine(data)
	}
	return data
}

// writeResults appends rs to the results segment seg of agent in dir, as
// the watcher does, in one write.
func writeResults(tb testing.TB, dir, agent string, seg uint64, rs ...Result) {
	tb.Helper()
	appendFile(tb, resultsPath(dir, agent, seg), resultLines(rs...))
}

// writeResultsAsync is writeResults from another goroutine, which may run
// while Wait is waiting; the error is checked when the test ends.
func writeResultsAsync(tb testing.TB, dir, agent string, seg uint64, rs ...Result) {
	tb.Helper()
	errc := make(chan error, 1)
	go func() { errc <- appendData(resultsPath(dir, agent, seg), resultLines(rs...)) }()
	tb.Cleanup(func() {
		if err := <-errc; err != nil {
			tb.Errorf("write results: %v", err)
		}
	})
}

// MustOpenResults opens a follower of agent's results, closed when the test ends.
func MustOpenResults(tb testing.TB, dir, agent string) *Results {
	tb.Helper()
	r, err := OpenResults(dir, agent)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

// pollingResults returns a follower that has no fsnotify watcher, as where
// inotify is unavailable, and polls every poll.
func pollingResults(dir, agent string, poll time.Duration) *Results {
	return &Results{
		dir:   dir,
		agent: agent,
		path:  filepath.Join(dir, "results", agent),
		found: make(map[uint64]Result),
		poll:  poll,

		MaxBuffered: DefaultMaxBuffered,
	}
}

// mustWait waits for seq with a bounded context and checks the result.
func mustWait(tb testing.TB, r *Results, seq uint64, want Result) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := r.Wait(ctx, seq)
	if err != nil {
		tb.Fatalf("Wait(%d): %v", seq, err)
	}
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("Wait(%d)=%+v, want %+v", seq, got, want)
	}
}

// mustNotFind checks that Wait for seq times out with an error wrapping
// context.DeadlineExceeded.
func mustNotFind(tb testing.TB, r *Results, seq uint64, d time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	got, err := r.Wait(ctx, seq)
	if !errors.Is(err, context.DeadlineExceeded) {
		tb.Fatalf("Wait(%d)=%+v, %v; want context.DeadlineExceeded", seq, got, err)
	}
}

type waitResult struct {
	res Result
	err error
}

// startWait calls r.Wait(ctx, seq) in a goroutine and returns its answer.
func startWait(ctx context.Context, r *Results, seq uint64) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		res, err := r.Wait(ctx, seq)
		ch <- waitResult{res, err}
	}()
	return ch
}

// receive returns the answer of a Wait started with startWait, failing the
// test if it does not come within 10 seconds.
func receive(tb testing.TB, ch <-chan waitResult) waitResult {
	tb.Helper()
	select {
	case w := <-ch:
		return w
	case <-time.After(10 * time.Second):
		tb.Fatal("Wait did not return")
		return waitResult{}
	}
}

func TestOpenResults(t *testing.T) {
	for _, agent := range []string{"", "../a", "a/b", ".x"} {
		if r, err := OpenResults(t.TempDir(), agent); !errors.Is(err, ErrBadName) {
			if r != nil {
				r.Close()
			}
			t.Errorf("OpenResults(%q)=%v, want ErrBadName", agent, err)
		}
	}
}

func TestResults_Wait(t *testing.T) {
	t.Run("Existing", func(t *testing.T) {
		dir := t.TempDir()
		writeResults(t, dir, "a", 1, applied(1), applied(2), applied(3))
		r := MustOpenResults(t, dir, "a")
		mustWait(t, r, 2, applied(2))
		mustWait(t, r, 3, applied(3))
		mustWait(t, r, 1, applied(1)) // back to an earlier seq
	})

	t.Run("SeqZero", func(t *testing.T) {
		r := MustOpenResults(t, t.TempDir(), "a")
		if _, err := r.Wait(t.Context(), 0); !errors.Is(err, ErrBadRecord) {
			t.Errorf("Wait(0)=%v, want ErrBadRecord", err)
		}
	})

	t.Run("Timeout", func(t *testing.T) {
		dir := t.TempDir()
		writeResults(t, dir, "a", 1, applied(1))
		r := MustOpenResults(t, dir, "a")
		mustNotFind(t, r, 2, 30*time.Millisecond)
	})

	t.Run("Canceled", func(t *testing.T) {
		r := MustOpenResults(t, t.TempDir(), "a")
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := r.Wait(ctx, 1); !errors.Is(err, context.Canceled) {
			t.Errorf("Wait with a canceled context: %v, want context.Canceled", err)
		}
	})

	t.Run("WrittenLater", func(t *testing.T) {
		dir := t.TempDir()
		writeResults(t, dir, "a", 1, applied(1))
		r := MustOpenResults(t, dir, "a")
		mustWait(t, r, 1, applied(1))
		mustNotFind(t, r, 2, 30*time.Millisecond)
		ch := startWait(t.Context(), r, 2)
		writeResultsAsync(t, dir, "a", 1, applied(2))
		if w := receive(t, ch); w.err != nil || !reflect.DeepEqual(w.res, applied(2)) {
			t.Fatalf("Wait(2)=%+v, %v; want %+v", w.res, w.err, applied(2))
		}
	})

	t.Run("FolderCreatedLater", func(t *testing.T) {
		for name, pre := range map[string]func(dir string){
			"NoResultsFolder": func(string) {},
			"NoAgentFolder":   func(dir string) { writeResults(t, dir, "other", 1, applied(1)) },
		} {
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				pre(dir)
				r := MustOpenResults(t, dir, "a")
				mustNotFind(t, r, 1, 30*time.Millisecond)
				ch := startWait(t.Context(), r, 1)
				writeResultsAsync(t, dir, "a", 1, applied(1))
				if w := receive(t, ch); w.err != nil || !reflect.DeepEqual(w.res, applied(1)) {
					t.Fatalf("Wait(1)=%+v, %v; want %+v", w.res, w.err, applied(1))
				}
			})
		}
	})

	t.Run("FirstNotRetry", func(t *testing.T) {
		dir := t.TempDir()
		orig := applied(3)
		retry := retryOf(orig)
		retry.Commit = 999 // a copy must not win over the original either way
		writeResults(t, dir, "a", 1, applied(1), applied(2), orig, applied(4), retry, retry)
		mustWait(t, MustOpenResults(t, dir, "a"), 3, orig)
	})

	t.Run("RetryCopyStartsSegment", func(t *testing.T) {
		// A retry copy may be the first record of a results segment, which
		// it then names (docs/format.md, Result): segment 5 follows segment 1, which holds seqs
		// 1 to 10. The original results are still found.
		dir := t.TempDir()
		var first []Result
		for s := uint64(1); s <= 10; s++ {
			first = append(first, applied(s))
		}
		writeResults(t, dir, "a", 1, first...)
		writeResults(t, dir, "a", 5, retryOf(applied(5)), applied(11))
		for _, seq := range []uint64{7, 5, 10, 1, 11} {
			mustWait(t, MustOpenResults(t, dir, "a"), seq, applied(seq))
		}
		r := MustOpenResults(t, dir, "a")
		for _, seq := range []uint64{4, 6, 7, 11} {
			mustWait(t, r, seq, applied(seq))
		}
	})

	t.Run("SkipsResultsWithoutSeq", func(t *testing.T) {
		dir := t.TempDir()
		off0, off := int64(0), int64(12)
		noSeq := []Result{
			{Status: StatusRejected, Commit: 1, Error: "not valid JSON", Segment: SegmentName(1), Offset: &off0},
			{Status: StatusRejected, Commit: 2, Error: "line too long", Segment: SegmentName(1), Offset: &off},
		}
		writeResults(t, dir, "a", 1, noSeq[0], noSeq[1], applied(1))
		appendFile(t, filepath.Join(dir, "results", "a", SegmentName(1)), []byte("garbage\n{\"seq\":2}\n"))
		writeResults(t, dir, "a", 1, applied(2))
		r := MustOpenResults(t, dir, "a")
		mustWait(t, r, 1, applied(1))
		mustWait(t, r, 2, applied(2))
	})

	t.Run("AcrossSegments", func(t *testing.T) {
		dir := t.TempDir()
		writeResults(t, dir, "a", 1, applied(1), applied(2), applied(3))
		writeResults(t, dir, "a", 4, applied(4), applied(5), applied(6))
		writeResults(t, dir, "a", 7, applied(7), applied(8), applied(9))
		for _, seq := range []uint64{1, 3, 4, 6, 7, 9} {
			mustWait(t, MustOpenResults(t, dir, "a"), seq, applied(seq))
		}
		r := MustOpenResults(t, dir, "a")
		for _, seq := range []uint64{8, 2, 5, 6, 9} {
			mustWait(t, r, seq, applied(seq))
		}
		ch := startWait(t.Context(), r, 10)
		writeResultsAsync(t, dir, "a", 10, applied(10))
		if w := receive(t, ch); w.err != nil || !reflect.DeepEqual(w.res, applied(10)) {
			t.Fatalf("Wait(10)=%+v, %v; want %+v", w.res, w.err, applied(10))
		}
	})

	t.Run("SegmentGone", func(t *testing.T) {
		// A segment compacted away between listing and reading is skipped.
		dir := t.TempDir()
		writeResults(t, dir, "a", 1, applied(1))
		writeResults(t, dir, "a", 2, applied(2))
		r := MustOpenResults(t, dir, "a")
		mustWait(t, r, 1, applied(1))
		if err := os.Remove(filepath.Join(dir, "results", "a", SegmentName(1))); err != nil {
			t.Fatal(err)
		}
		mustWait(t, r, 2, applied(2))
	})
}

func TestWaitResult(t *testing.T) {
	dir := t.TempDir()
	writeResults(t, dir, "a", 1, applied(1))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, err := WaitResult(ctx, dir, "a", 1)
	if err != nil || !reflect.DeepEqual(got, applied(1)) {
		t.Fatalf("WaitResult=%+v, %v; want %+v", got, err, applied(1))
	}
	if _, err := WaitResult(ctx, dir, "../a", 1); !errors.Is(err, ErrBadName) {
		t.Errorf("WaitResult with a bad agent: %v, want ErrBadName", err)
	}
}

// TestResults_Polling runs Wait without fsnotify, as on NFS, in a synctest
// bubble: synctest.Wait returns once Wait is blocked on its poll timer, so
// every write below happens while Wait is waiting.
func TestResults_Polling(t *testing.T) {
	const poll = 20 * time.Millisecond

	t.Run("WrittenLater", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			dir := t.TempDir()
			writeResults(t, dir, "a", 1, applied(1))
			r := pollingResults(dir, "a", poll)
			ch := startWait(t.Context(), r, 2)
			synctest.Wait()
			select {
			case w := <-ch:
				t.Fatalf("Wait(2) returned %+v, %v before its result was written", w.res, w.err)
			default:
			}
			writeResults(t, dir, "a", 1, applied(2))
			if w := <-ch; w.err != nil || !reflect.DeepEqual(w.res, applied(2)) {
				t.Fatalf("Wait(2)=%+v, %v; want %+v", w.res, w.err, applied(2))
			}
		})
	})

	t.Run("FolderCreatedLater", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			dir := t.TempDir()
			r := pollingResults(dir, "a", poll)
			ch := startWait(t.Context(), r, 1)
			synctest.Wait()
			writeResults(t, dir, "a", 1, applied(1), retryOf(applied(1)))
			if w := <-ch; w.err != nil || !reflect.DeepEqual(w.res, applied(1)) {
				t.Fatalf("Wait(1)=%+v, %v; want %+v", w.res, w.err, applied(1))
			}
		})
	})

	t.Run("TornLine", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "results", "a", SegmentName(1))
			line := applied(1).AppendLine(nil)
			r := pollingResults(dir, "a", poll)
			ch := startWait(t.Context(), r, 1)
			synctest.Wait()
			appendFile(t, p, line[:len(line)-1]) // all but the newline
			time.Sleep(3 * poll)                 // fake time: Wait scans the torn line
			synctest.Wait()
			select {
			case w := <-ch:
				t.Fatalf("Wait(1) returned %+v, %v for a line without its newline", w.res, w.err)
			default:
			}
			appendFile(t, p, []byte("\n"))
			if w := <-ch; w.err != nil || !reflect.DeepEqual(w.res, applied(1)) {
				t.Fatalf("Wait(1)=%+v, %v; want %+v", w.res, w.err, applied(1))
			}
		})
	})

	t.Run("Sequence", func(t *testing.T) {
		// Results arrive one by one, some in new segments, while one
		// follower waits for each seq in turn.
		synctest.Test(t, func(t *testing.T) {
			dir := t.TempDir()
			r := pollingResults(dir, "a", poll)
			const n = 12
			ch := make(chan waitResult, n)
			go func() {
				for s := uint64(1); s <= n; s++ {
					res, err := r.Wait(t.Context(), s)
					ch <- waitResult{res, err}
				}
			}()
			seg := uint64(1)
			for s := uint64(1); s <= n; s++ {
				synctest.Wait()
				if s%4 == 1 {
					seg = s
				}
				writeResults(t, dir, "a", seg, applied(s))
				if w := <-ch; w.err != nil || !reflect.DeepEqual(w.res, applied(s)) {
					t.Fatalf("Wait(%d)=%+v, %v; want %+v", s, w.res, w.err, applied(s))
				}
			}
		})
	})

	t.Run("Timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := pollingResults(t.TempDir(), "a", poll)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			start := time.Now()
			_, err := r.Wait(ctx, 1)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Wait=%v, want context.DeadlineExceeded", err)
			}
			if got := time.Since(start); got < time.Minute {
				t.Errorf("Wait gave up after %s, before its deadline", got)
			}
		})
	})
}

func TestResults_Bounded(t *testing.T) {
	const n, max = 5000, 64
	setup := func(t *testing.T, skip uint64) *Results {
		dir := t.TempDir()
		var rs []Result
		for seq := uint64(1); seq <= n; seq++ {
			if seq != skip {
				rs = append(rs, applied(seq))
			}
			if len(rs) == 1000 || (seq == n && len(rs) > 0) {
				writeResults(t, dir, "a", rs[0].Seq, rs...)
				rs = nil
			}
		}
		r := MustOpenResults(t, dir, "a")
		r.MaxBuffered = max
		return r
	}
	wait := func(t *testing.T, r *Results, seq uint64) {
		t.Helper()
		res, err := r.Wait(t.Context(), seq)
		if err != nil || res.Seq != seq {
			t.Fatalf("Wait(%d) = %+v, %v", seq, res, err)
		}
		if got := len(r.found); got > max {
			t.Fatalf("after Wait(%d): %d results kept, want at most %d", seq, got, max)
		}
	}
	t.Run("FireAndForget", func(t *testing.T) {
		// Waits now and then, for the newest only.
		r := setup(t, 0)
		wait(t, r, 1)
		for _, seq := range []uint64{1000, 2500, n} {
			wait(t, r, seq)
		}
		wait(t, r, 3) // let go, read again
		wait(t, r, n-1)
	})
	t.Run("Pipelined", func(t *testing.T) {
		r := setup(t, 0)
		for seq := uint64(1); seq <= n; seq++ {
			wait(t, r, seq)
		}
	})
	t.Run("OutOfOrder", func(t *testing.T) {
		r := setup(t, 0)
		rng := rand.New(rand.NewPCG(1, 2))
		for range 300 {
			wait(t, r, 1+rng.Uint64N(n))
		}
	})
	t.Run("NeverWritten", func(t *testing.T) {
		// Waiting for a result that never comes, behind thousands that do.
		r := setup(t, 7)
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		if _, err := r.Wait(ctx, 7); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait(7) = %v, want the context's deadline", err)
		}
		if got := len(r.found); got > max {
			t.Fatalf("%d results kept, want at most %d", got, max)
		}
		wait(t, r, 8)
		wait(t, r, n)
		wait(t, r, 6)
	})
}
