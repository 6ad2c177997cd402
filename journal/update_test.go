package journal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"testing/synctest"
	"time"
)

// fakeStore stands in for the watcher in the Updater's unit tests: one
// document {"n":N} with a version, deciding intents as the watcher does
// (if_version, then a test of /n, then a replace of /n). It is used from
// the goroutine that runs Update.
type fakeStore struct {
	n       int
	version uint64
	exists  bool
	commit  uint64

	// status, if set, decides instead of the if_version check.
	status func(in Intent) string
	// interfere, if set, runs before each submit is decided: attempt is
	// 1-based. It stands for other agents writing meanwhile.
	interfere func(s *fakeStore, attempt int)

	reads     []uint64 // version of each read
	submitted []Intent
	sleeps    []time.Duration
}

func (s *fakeStore) write(n int) {
	s.n, s.exists = n, true
	s.version++
}

func (s *fakeStore) doc(name string) Document {
	if !s.exists {
		return Document{File: name, Version: s.version, Data: json.RawMessage("null")}
	}
	return Document{File: name, Version: s.version, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, s.n))}
}

// decide returns the result the watcher would give in.
func (s *fakeStore) decide(in Intent) Result {
	s.commit++
	r := Result{Seq: uint64(len(s.submitted)), File: in.File, ID: in.ID, Version: s.version, Commit: s.commit}
	if s.status != nil {
		r.Status = s.status(in)
		return r
	}
	if in.IfVersion != nil && *in.IfVersion != s.version {
		r.Status, r.Error = StatusConflict, fmt.Sprintf("if_version %d: at version %d", *in.IfVersion, s.version)
		return r
	}
	var ops []struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value int    `json:"value"`
	}
	if err := json.Unmarshal(in.Patch, &ops); err != nil {
		r.Status, r.Error = StatusRejected, err.Error()
		return r
	}
	n := s.n
	for _, op := range ops {
		switch {
		case op.Path != "/n":
			r.Status, r.Error = StatusRejected, "path not found"
			return r
		case op.Op == "test" && op.Value != n:
			r.Status, r.Error = StatusConflict, "test failed"
			return r
		case op.Op == "replace" || op.Op == "add":
			n = op.Value
		case op.Op == "inc":
			n += op.Value
		}
	}
	s.write(n)
	r.Status, r.Version = StatusApplied, s.version
	return r
}

// newFakeUpdater returns an Updater whose reads, submits and sleeps go to
// s, and whose jitter is the ceiling itself (the top of the range), so that
// its backoffs are the schedule.
func newFakeUpdater(s *fakeStore) *Updater {
	u := NewUpdater(NewWriter("state", "agent-1"), &Results{dir: "state", agent: "agent-1"})
	u.read = func(ctx context.Context, dir, name string) (Document, error) {
		if err := ctx.Err(); err != nil {
			return Document{}, err
		}
		s.reads = append(s.reads, s.version)
		return s.doc(name), nil
	}
	u.submit = func(ctx context.Context, in Intent) (Result, error) {
		s.submitted = append(s.submitted, in)
		if s.interfere != nil {
			s.interfere(s, len(s.submitted))
		}
		return s.decide(in), nil
	}
	u.jitter = func(c time.Duration) time.Duration { return c }
	u.sleep = func(ctx context.Context, d time.Duration) error {
		s.sleeps = append(s.sleeps, d)
		return ctx.Err()
	}
	return u
}

// increment is the read-modify-write of the tests: n becomes n+1.
func increment(doc Document) (Intent, error) {
	var c struct {
		N int `json:"n"`
	}
	if err := json.Unmarshal(doc.Data, &c); err != nil {
		return Intent{}, err
	}
	return Intent{Patch: json.RawMessage(fmt.Sprintf(`[{"op":"replace","path":"/n","value":%d}]`, c.N+1))}, nil
}

func TestUpdater_Update(t *testing.T) {
	t.Run("Applied", func(t *testing.T) {
		s := &fakeStore{}
		s.write(41)
		u := newFakeUpdater(s)
		res, attempts, err := u.Update(t.Context(), "counter.json", increment)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := attempts, 1; got != want {
			t.Errorf("attempts=%d, want %d", got, want)
		}
		if res.Status != StatusApplied || res.Version != 2 {
			t.Errorf("result %+v, want applied at version 2", res)
		}
		if got, want := s.n, 42; got != want {
			t.Errorf("n=%d, want %d", got, want)
		}
		in := s.submitted[0]
		if in.File != "counter.json" || in.IfVersion == nil || *in.IfVersion != 1 || in.Seq != 0 {
			t.Errorf("submitted %+v, want file counter.json, if_version 1 and seq left to Append", in)
		}
		if _, err := time.Parse(time.RFC3339Nano, in.Time); err != nil {
			t.Errorf("time %q: %v", in.Time, err)
		}
		if len(s.sleeps) != 0 {
			t.Errorf("slept %v before the first attempt or after success", s.sleeps)
		}
	})

	t.Run("Create", func(t *testing.T) {
		s := &fakeStore{}
		u := newFakeUpdater(s)
		_, _, err := u.Update(t.Context(), "new.json", func(doc Document) (Intent, error) {
			if got, want := string(doc.Data), "null"; got != want {
				t.Errorf("data of a missing document: %s, want %s", got, want)
			}
			return Intent{Patch: json.RawMessage(`[{"op":"add","path":"/n","value":1}]`)}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if in := s.submitted[0]; in.IfVersion == nil || *in.IfVersion != 0 {
			t.Errorf("if_version %v, want 0 (must not exist yet)", in.IfVersion)
		}
	})

	t.Run("RetriesConflicts", func(t *testing.T) {
		s := &fakeStore{}
		s.write(0)
		// Another agent increments before each of the first three
		// attempts is decided.
		s.interfere = func(s *fakeStore, attempt int) {
			if attempt <= 3 {
				s.write(s.n + 1)
			}
		}
		u := newFakeUpdater(s)
		res, attempts, err := u.Update(t.Context(), "counter.json", increment)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := attempts, 4; got != want {
			t.Errorf("attempts=%d, want %d", got, want)
		}
		if got, want := s.n, 4; got != want {
			t.Errorf("n=%d, want %d: 3 from the other agent and 1 from Update, none lost", got, want)
		}
		if res.Status != StatusApplied || res.Version != 5 {
			t.Errorf("result %+v, want applied at version 5", res)
		}
		// Each attempt read afresh and submitted at the version it read.
		if got, want := s.reads, []uint64{1, 2, 3, 4}; !reflect.DeepEqual(got, want) {
			t.Errorf("versions read %v, want %v", got, want)
		}
		for i, in := range s.submitted {
			if *in.IfVersion != s.reads[i] {
				t.Errorf("attempt %d: if_version %d, read version %d", i+1, *in.IfVersion, s.reads[i])
			}
		}
		if got, want := s.sleeps, []time.Duration{DefaultInitialDelay, 2 * DefaultInitialDelay, 4 * DefaultInitialDelay}; !reflect.DeepEqual(got, want) {
			t.Errorf("backoffs %v, want %v", got, want)
		}
	})

	t.Run("Exhausted", func(t *testing.T) {
		s := &fakeStore{}
		s.write(0)
		s.interfere = func(s *fakeStore, attempt int) { s.write(s.n + 1) }
		u := newFakeUpdater(s)
		u.MaxAttempts = 5
		res, attempts, err := u.Update(t.Context(), "counter.json", increment)
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("err=%v, want ErrConflict", err)
		}
		if got, want := attempts, 5; got != want {
			t.Errorf("attempts=%d, want %d", got, want)
		}
		if res.Status != StatusConflict || res.Seq != 5 {
			t.Errorf("result %+v, want the conflict of the fifth intent", res)
		}
		if got, want := len(s.sleeps), 4; got != want {
			t.Errorf("%d backoffs, want %d (none after the last attempt)", got, want)
		}
	})

	t.Run("TestOpConflictRetried", func(t *testing.T) {
		// A compare-and-set whose test fails is a conflict too: the next
		// attempt sees the new value and may find nothing to do.
		s := &fakeStore{}
		s.write(0)
		s.interfere = func(s *fakeStore, attempt int) {
			if attempt == 1 {
				s.write(7)
			}
		}
		u := newFakeUpdater(s)
		u.SkipIfVersion = true
		calls := 0
		_, attempts, err := u.Update(t.Context(), "counter.json", func(doc Document) (Intent, error) {
			calls++
			if string(doc.Data) != `{"n":0}` {
				return Intent{}, fmt.Errorf("%w: n is no longer 0", ErrNoChange)
			}
			return Intent{Patch: json.RawMessage(`[{"op":"test","path":"/n","value":0},{"op":"replace","path":"/n","value":1}]`)}, nil
		})
		if !errors.Is(err, ErrNoChange) {
			t.Fatalf("err=%v, want ErrNoChange", err)
		}
		if got, want := err.Error(), "journal: no change: n is no longer 0"; got != want {
			t.Errorf("err=%q, want the function's own error %q", got, want)
		}
		if attempts != 1 || calls != 2 || len(s.submitted) != 1 {
			t.Errorf("attempts=%d, calls=%d, submitted %d; want 1 attempt, 2 calls, 1 intent", attempts, calls, len(s.submitted))
		}
		if got, want := s.n, 7; got != want {
			t.Errorf("n=%d, want %d", got, want)
		}
	})

	t.Run("NoChange", func(t *testing.T) {
		s := &fakeStore{}
		s.write(3)
		u := newFakeUpdater(s)
		res, attempts, err := u.Update(t.Context(), "counter.json", func(Document) (Intent, error) {
			return Intent{}, ErrNoChange
		})
		if !errors.Is(err, ErrNoChange) {
			t.Fatalf("err=%v, want ErrNoChange", err)
		}
		if attempts != 0 || len(s.submitted) != 0 || res != (Result{}) {
			t.Errorf("attempts=%d, submitted %d, result %+v; want nothing submitted", attempts, len(s.submitted), res)
		}
	})

	t.Run("FuncError", func(t *testing.T) {
		s := &fakeStore{}
		boom := errors.New("boom")
		u := newFakeUpdater(s)
		_, _, err := u.Update(t.Context(), "counter.json", func(Document) (Intent, error) { return Intent{}, boom })
		if err != boom {
			t.Fatalf("err=%v, want the function's error as it is", err)
		}
	})

	t.Run("Rejected", func(t *testing.T) {
		s := &fakeStore{}
		s.write(0)
		u := newFakeUpdater(s)
		res, attempts, err := u.Update(t.Context(), "counter.json", func(Document) (Intent, error) {
			return Intent{Patch: json.RawMessage(`[{"op":"replace","path":"/missing","value":1}]`)}, nil
		})
		if !errors.Is(err, ErrRejected) {
			t.Fatalf("err=%v, want ErrRejected", err)
		}
		if attempts != 1 || res.Status != StatusRejected || len(s.sleeps) != 0 {
			t.Errorf("attempts=%d, result %+v, backoffs %v; want one rejected attempt, no retry", attempts, res, s.sleeps)
		}
	})

	t.Run("ReusedID", func(t *testing.T) {
		s := &fakeStore{}
		s.write(0)
		s.interfere = func(s *fakeStore, attempt int) { s.write(s.n + 1) }
		u := newFakeUpdater(s)
		_, attempts, err := u.Update(t.Context(), "counter.json", func(doc Document) (Intent, error) {
			in, err := increment(doc)
			in.ID = "same"
			return in, err
		})
		if !errors.Is(err, ErrBadRecord) {
			t.Fatalf("err=%v, want ErrBadRecord for an id used twice", err)
		}
		if attempts != 1 || len(s.submitted) != 1 {
			t.Errorf("attempts=%d, submitted %d; want the second attempt refused before submitting", attempts, len(s.submitted))
		}
	})

	t.Run("FieldsOverridden", func(t *testing.T) {
		s := &fakeStore{}
		s.write(0)
		u := newFakeUpdater(s)
		stale := uint64(99)
		_, _, err := u.Update(t.Context(), "counter.json", func(doc Document) (Intent, error) {
			in, err := increment(doc)
			in.Seq, in.File, in.IfVersion = 12, "other.json", &stale
			return in, err
		})
		if err != nil {
			t.Fatal(err)
		}
		if in := s.submitted[0]; in.Seq != 0 || in.File != "counter.json" || *in.IfVersion != 1 {
			t.Errorf("submitted seq %d file %s if_version %d, want 0, counter.json, 1", in.Seq, in.File, *in.IfVersion)
		}
	})
}

func TestUpdater_SkipIfVersion(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    Intent
		valid bool
	}{
		{"CompareAndSet", Intent{Patch: json.RawMessage(`[{"op":"test","path":"/n","value":0},{"op":"replace","path":"/n","value":1}]`)}, true},
		{"Inc", Intent{Patch: json.RawMessage(`[{"op":"inc","path":"/n","value":1}]`)}, true},
		{"TestOnly", Intent{Patch: json.RawMessage(`[{"op":"test","path":"/n","value":0}]`)}, true},
		{"Empty", Intent{Patch: json.RawMessage(`[]`)}, true},
		{"BlindReplace", Intent{Patch: json.RawMessage(`[{"op":"replace","path":"/n","value":1}]`)}, false},
		{"Add", Intent{Patch: json.RawMessage(`[{"op":"test","path":"/n","value":0},{"op":"add","path":"/m","value":1}]`)}, false},
		{"Remove", Intent{Patch: json.RawMessage(`[{"op":"test","path":"/n","value":0},{"op":"remove","path":"/n"}]`)}, true},
		{"BlindRemove", Intent{Patch: json.RawMessage(`[{"op":"test","path":"/n","value":0},{"op":"remove","path":"/m"}]`)}, false},
		{"ReplaceOtherPath", Intent{Patch: json.RawMessage(`[{"op":"test","path":"/a","value":0},{"op":"replace","path":"/b","value":1}]`)}, false},
		{"ReplaceSibling", Intent{Patch: json.RawMessage(`[{"op":"test","path":"/t/owner","value":"me"},{"op":"replace","path":"/t/status","value":"open"}]`)}, false},
		{"ReplacePrefixName", Intent{Patch: json.RawMessage(`[{"op":"test","path":"/a","value":0},{"op":"replace","path":"/ab","value":1}]`)}, false},
		{"TestAfterReplace", Intent{Patch: json.RawMessage(`[{"op":"replace","path":"/n","value":1},{"op":"test","path":"/n","value":1}]`)}, false},
		{"TestAbove", Intent{Patch: json.RawMessage(`[{"op":"test","path":"/t","value":{"n":0}},{"op":"replace","path":"/t/n","value":1}]`)}, true},
		{"TestWhole", Intent{Patch: json.RawMessage(`[{"op":"test","path":"","value":{"n":0}},{"op":"replace","path":"/n","value":1}]`)}, true},
		{"EachReplaceTested", Intent{Patch: json.RawMessage(`[{"op":"test","path":"/a","value":0},{"op":"test","path":"/b","value":0},{"op":"replace","path":"/a","value":1},{"op":"replace","path":"/b","value":1}]`)}, true},
		{"MoveTargetTested", Intent{Patch: json.RawMessage(`[{"op":"test","path":"/b","value":0},{"op":"move","from":"/a","path":"/b"}]`)}, true},
		{"MoveTargetUntested", Intent{Patch: json.RawMessage(`[{"op":"test","path":"/a","value":0},{"op":"move","from":"/a","path":"/b"}]`)}, false},
		{"CopyTargetTested", Intent{Patch: json.RawMessage(`[{"op":"test","path":"/b","value":0},{"op":"copy","from":"/a","path":"/b"}]`)}, true},
		{"CopyTargetUntested", Intent{Patch: json.RawMessage(`[{"op":"copy","from":"/a","path":"/b"}]`)}, false},
		{"Merge", Intent{Merge: json.RawMessage(`{"n":1}`)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &fakeStore{}
			s.write(0)
			s.status = func(Intent) string { return StatusApplied } // the check is Update's, before any submit
			u := newFakeUpdater(s)
			u.SkipIfVersion = true
			_, attempts, err := u.Update(t.Context(), "counter.json", func(Document) (Intent, error) { return tc.in, nil })
			if tc.valid {
				if err != nil {
					t.Fatal(err)
				}
				if in := s.submitted[0]; in.IfVersion != nil {
					t.Errorf("if_version %d, want none", *in.IfVersion)
				}
				return
			}
			if !errors.Is(err, ErrUnsafePatch) {
				t.Fatalf("err=%v, want ErrUnsafePatch", err)
			}
			if attempts != 0 || len(s.submitted) != 0 {
				t.Errorf("submitted %d intents, want none", len(s.submitted))
			}
		})
	}
}

// TestUpdater_Backoff checks the schedule: the ceiling starts at
// InitialDelay, grows by BackoffFactor and stays at MaxDelay; the jitter
// is drawn within [0, ceiling].
func TestUpdater_Backoff(t *testing.T) {
	t.Run("Schedule", func(t *testing.T) {
		s := &fakeStore{}
		s.write(0)
		s.interfere = func(s *fakeStore, attempt int) { s.write(s.n + 1) }
		u := newFakeUpdater(s)
		u.InitialDelay, u.BackoffFactor, u.MaxDelay, u.MaxAttempts = 10*time.Millisecond, 3, 500*time.Millisecond, 8
		var ceilings []time.Duration
		u.jitter = func(c time.Duration) time.Duration {
			ceilings = append(ceilings, c)
			return c / 2
		}
		if _, _, err := u.Update(t.Context(), "counter.json", increment); !errors.Is(err, ErrConflict) {
			t.Fatalf("err=%v, want ErrConflict", err)
		}
		ms := time.Millisecond
		if got, want := ceilings, []time.Duration{10 * ms, 30 * ms, 90 * ms, 270 * ms, 500 * ms, 500 * ms, 500 * ms}; !reflect.DeepEqual(got, want) {
			t.Errorf("ceilings %v, want %v", got, want)
		}
		for i, d := range s.sleeps {
			if d != ceilings[i]/2 {
				t.Errorf("backoff %d slept %s, want the jitter drawn, %s", i+1, d, ceilings[i]/2)
			}
		}
	})

	t.Run("Defaults", func(t *testing.T) {
		u := NewUpdater(nil, nil)
		var prev time.Duration
		for n := 1; n <= 200; n++ {
			c := u.ceiling(n)
			if c < prev || c > DefaultMaxDelay {
				t.Fatalf("ceiling(%d)=%s after %s: must grow and stay within %s", n, c, prev, DefaultMaxDelay)
			}
			prev = c
		}
		if got, want := u.ceiling(1), DefaultInitialDelay; got != want {
			t.Errorf("ceiling(1)=%s, want %s", got, want)
		}
		if got, want := prev, DefaultMaxDelay; got != want {
			t.Errorf("ceiling(200)=%s, want the cap %s", got, want)
		}
		u.InitialDelay, u.MaxDelay = 0, 0
		if got := u.ceiling(5); got != 0 {
			t.Errorf("ceiling with no delays: %s, want 0", got)
		}
	})

	t.Run("FullJitter", func(t *testing.T) {
		for _, c := range []time.Duration{0, 1, 7, time.Millisecond, DefaultMaxDelay} {
			var lo, hi bool
			for range 2000 {
				d := fullJitter(c)
				if d < 0 || d > c {
					t.Fatalf("fullJitter(%s)=%s, outside [0, %[1]s]", c, d)
				}
				lo = lo || d <= c/4
				hi = hi || d >= c-c/4
			}
			if !lo || !hi {
				t.Errorf("fullJitter(%s): 2000 draws never reached both ends of the range", c)
			}
		}
	})
}

func TestUpdater_Validate(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(u *Updater)
	}{
		{"MaxAttemptsZero", func(u *Updater) { u.MaxAttempts = 0 }},
		{"NegativeDelay", func(u *Updater) { u.InitialDelay = -time.Millisecond }},
		{"CapBelowInitial", func(u *Updater) { u.InitialDelay, u.MaxDelay = time.Second, time.Millisecond }},
		{"FactorBelowOne", func(u *Updater) { u.BackoffFactor = 0.5 }},
		{"FactorNaN", func(u *Updater) { u.BackoffFactor = math.NaN() }},
		{"OtherAgent", func(u *Updater) { u.r = &Results{dir: "state", agent: "agent-2"} }},
		{"OtherDir", func(u *Updater) { u.r = &Results{dir: "elsewhere", agent: "agent-1"} }},
		{"NoResults", func(u *Updater) { u.r = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &fakeStore{}
			u := newFakeUpdater(s)
			tc.set(u)
			if _, _, err := u.Update(t.Context(), "counter.json", increment); err == nil {
				t.Fatal("Update succeeded, want a validation error")
			}
			if len(s.reads) != 0 {
				t.Errorf("read the document before validating")
			}
		})
	}
	t.Run("BadName", func(t *testing.T) {
		u := newFakeUpdater(&fakeStore{})
		if _, _, err := u.Update(t.Context(), "../x.json", increment); !errors.Is(err, ErrBadName) {
			t.Fatalf("err=%v, want ErrBadName", err)
		}
	})
}

func TestUpdater_Cancel(t *testing.T) {
	t.Run("Before", func(t *testing.T) {
		s := &fakeStore{}
		u := newFakeUpdater(s)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, attempts, err := u.Update(ctx, "counter.json", increment)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err=%v, want context.Canceled", err)
		}
		if attempts != 0 || len(s.reads) != 0 {
			t.Errorf("attempts=%d, reads %d: want nothing done", attempts, len(s.reads))
		}
	})

	// DuringBackoff cancels while Update sleeps an hour-long backoff, with
	// the real sleep: in a synctest bubble, synctest.Wait returns once
	// Update is blocked on its timer, and the fake clock shows it returned
	// without waiting out the hour.
	t.Run("DuringBackoff", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &fakeStore{}
			s.write(0)
			s.interfere = func(s *fakeStore, attempt int) { s.write(s.n + 1) }
			u := newFakeUpdater(s)
			u.sleep = sleepContext
			u.InitialDelay, u.MaxDelay = time.Hour, time.Hour
			ctx, cancel := context.WithCancel(t.Context())
			type ret struct {
				attempts int
				err      error
			}
			done := make(chan ret)
			start := time.Now()
			go func() {
				_, attempts, err := u.Update(ctx, "counter.json", increment)
				done <- ret{attempts, err}
			}()
			synctest.Wait()
			cancel()
			r := <-done
			if !errors.Is(r.err, context.Canceled) {
				t.Fatalf("err=%v, want context.Canceled", r.err)
			}
			if r.attempts != 1 {
				t.Errorf("attempts=%d, want 1", r.attempts)
			}
			if d := time.Since(start); d != 0 {
				t.Errorf("returned after %s of fake time, want at once", d)
			}
		})
	})

	t.Run("DeadlineDuringBackoff", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &fakeStore{}
			s.write(0)
			s.interfere = func(s *fakeStore, attempt int) { s.write(s.n + 1) }
			u := newFakeUpdater(s)
			u.sleep = sleepContext
			u.MaxAttempts = 1000
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			start := time.Now()
			_, attempts, err := u.Update(ctx, "counter.json", increment)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err=%v, want context.DeadlineExceeded", err)
			}
			if d := time.Since(start); d != 3*time.Second {
				t.Errorf("returned after %s, want at the deadline, 3s", d)
			}
			// The ceilings are 5ms, 10ms, ... 320ms, then 500ms: about
			// twelve attempts fit in 3s with jitter at the ceiling.
			if attempts < 10 || attempts > 14 {
				t.Errorf("attempts=%d in 3s, want about 12", attempts)
			}
		})
	})

	// DuringWait uses the real Writer and Results with no watcher: the
	// intent is appended, no result comes, and Update returns the
	// context's error with the seq of the intent it left in the journal.
	t.Run("DuringWait", func(t *testing.T) {
		dir := t.TempDir()
		w, err := OpenWriter(dir, "agent-1")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		r, err := OpenResults(dir, "agent-1")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		u := NewUpdater(w, r)
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		res, attempts, err := u.Update(ctx, "counter.json", increment)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err=%v, want context.DeadlineExceeded", err)
		}
		if attempts != 1 || res.Seq != 1 || res.Status != "" {
			t.Errorf("attempts=%d, result %+v: want 1 attempt, seq 1, no status", attempts, res)
		}
		if got, want := w.LastSeq(), uint64(1); got != want {
			t.Errorf("journal's last seq %d, want %d", got, want)
		}
	})
}

// TestUpdater_Files runs Update through the real files: ReadDocument,
// Writer.Append and Results.Wait, with the test playing the watcher. Before
// each intent is appended, it decides it (it knows the seq the Writer
// will assign) and writes what the watcher would: the document and the
// versions file, then the result.
func TestUpdater_Files(t *testing.T) {
	dir := t.TempDir()
	w, err := OpenWriter(dir, "agent-1")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := OpenResults(dir, "agent-1")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	s := &fakeStore{}
	publish := func() {
		data := []byte(fmt.Sprintf("{\n  \"n\": %d\n}\n", s.n))
		writeDoc(t, dir, "counter.json", data)
		writeVersions(t, dir, Versions{Commit: s.commit, Docs: map[string]DocVersion{
			"counter.json": {Version: s.version, Exists: true, SHA256: Hash(data)},
		}})
	}
	s.write(10)
	s.commit = 1
	publish()

	u := NewUpdater(w, r)
	u.InitialDelay, u.MaxDelay = 0, 0
	real := u.submit
	attempt := 0
	var lines [][]byte
	u.submit = func(ctx context.Context, in Intent) (Result, error) {
		attempt++
		if attempt == 1 {
			s.write(s.n + 5) // another agent got there first
			s.commit++
		}
		in.Seq = w.LastSeq() + 1
		line, err := in.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, line)
		res := s.decide(in)
		res.Seq = in.Seq
		publish()
		p := filepath.Join(dir, "results", "agent-1", SegmentName(1))
		if err := appendData(p, res.AppendLine(nil)); err != nil {
			t.Fatal(err)
		}
		return real(ctx, in)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	res, attempts, err := u.Update(ctx, "counter.json", increment)
	if err != nil {
		t.Fatal(err)
	}
	if attempts != 2 || res.Seq != 2 || res.Status != StatusApplied || res.Version != 3 {
		t.Errorf("attempts=%d, result %+v; want the second attempt, seq 2, applied at version 3", attempts, res)
	}
	doc, err := ReadDocument(ctx, dir, "counter.json")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(doc.Data), `{"n":16}`; got != want {
		t.Errorf("data=%s, want %s", got, want)
	}
	journal, err := os.ReadFile(filepath.Join(dir, "journal", "agent-1", SegmentName(1)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := journal, bytes.Join(lines, nil); !bytes.Equal(got, want) {
		t.Errorf("journal:\n%s\nwant:\n%s", got, want)
	}
	for i, want := range []string{`"if_version":1`, `"if_version":2`} {
		if !bytes.Contains(lines[i], []byte(want)) {
			t.Errorf("intent %d: %s, want %s", i+1, lines[i], want)
		}
	}
}
