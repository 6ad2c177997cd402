package watcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/stateward/stateward/journal"
	"github.com/stateward/stateward/replay"
)

// runWatcher starts a Watcher on a new state directory and returns the
// directory; the watcher stops, and its Run error is checked, at cleanup.
func runWatcher(t *testing.T, configure func(*Watcher)) string {
	t.Helper()
	dir := t.TempDir()
	a := replay.NewApplier(dir, nil)
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	w := New(a, nil)
	if configure != nil {
		configure(w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
		a.Close()
	})
	return dir
}

// submit appends one intent as agent and waits for its result.
func submit(t *testing.T, dir, agent string, in journal.Intent) journal.Result {
	t.Helper()
	w, err := journal.OpenWriter(dir, agent)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rec, err := w.Append(in)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	res, err := journal.WaitResult(ctx, dir, agent, rec.Seq)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestWatcher_Run(t *testing.T) {
	dir := runWatcher(t, func(w *Watcher) {
		w.RescanInterval = time.Hour // events alone must drive it
	})
	// Agents that appear after the watcher started are found through the
	// journal folder's events.
	for _, agent := range []string{"a", "b", "c"} {
		res := submit(t, dir, agent, journal.Intent{File: "n.json", Patch: []byte(`[{"op":"add","path":"/` + agent + `","value":1}]`)})
		if agent == "a" {
			res = submit(t, dir, agent, journal.Intent{File: "n.json", Merge: []byte(`{"a":1}`)})
		}
		if res.Status != journal.StatusApplied {
			t.Fatalf("agent %s: %+v, want applied", agent, res)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	doc, err := journal.ReadDocument(ctx, dir, "n.json")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(doc.Data), `{"a":1,"b":1,"c":1}`; got != want {
		t.Errorf("n.json = %s, want %s", got, want)
	}
}

func TestWatcher_Heartbeat(t *testing.T) {
	beats := make(chan struct{}, 100)
	runWatcher(t, func(w *Watcher) {
		w.HeartbeatInterval = 5 * time.Millisecond
		w.Heartbeat = func() {
			select {
			case beats <- struct{}{}:
			default:
			}
		}
	})
	// An idle loop still beats.
	deadline := time.After(10 * time.Second)
	for i := 0; i < 5; i++ {
		select {
		case <-beats:
		case <-deadline:
			t.Fatalf("%d heartbeats from an idle loop in 10s, want 5", i)
		}
	}
}

func TestWatcher_BadIntervals(t *testing.T) {
	a := replay.NewApplier(t.TempDir(), nil)
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	w := New(a, nil)
	w.RescanInterval = 0
	if err := w.Run(t.Context()); err == nil {
		t.Fatal("Run with a zero rescan interval: nil error")
	}
}

// noEvents makes a Watcher run without file events, as where inotify does
// not work.
func noEvents(w *Watcher) {
	w.newNotify = func() (notifier, error) { return nil, errors.New("events disabled by the test") }
}

// appendIntent appends one intent as agent and returns its seq.
func appendIntent(t *testing.T, dir, agent string, in journal.Intent) uint64 {
	t.Helper()
	w, err := journal.OpenWriter(dir, agent)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rec, err := w.Append(in)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Seq
}

func TestWatcher_HeartbeatDoesNotScan(t *testing.T) {
	// Without events, only the rescan may find new lines: the heartbeat,
	// however often, must not (it used to step the Applier, so that
	// "events alone" tests passed on the heartbeat).
	beats := make(chan struct{}, 1000)
	dir := runWatcher(t, func(w *Watcher) {
		noEvents(w)
		w.RescanInterval = time.Hour
		w.HeartbeatInterval = time.Millisecond
		w.Heartbeat = func() {
			select {
			case beats <- struct{}{}:
			default:
			}
		}
	})
	// Wait for the first pass (the initial scan) to be over.
	deadline := time.After(10 * time.Second)
	for i := 0; i < 3; i++ {
		select {
		case <-beats:
		case <-deadline:
			t.Fatal("no heartbeat")
		}
	}
	seq := appendIntent(t, dir, "a", journal.Intent{File: "n.json", Merge: []byte(`{"a":1}`)})
	for i := 0; i < 50; i++ {
		select {
		case <-beats:
		case <-deadline:
			t.Fatalf("%d heartbeats in 10s, want 50", i)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if res, err := journal.WaitResult(ctx, dir, "a", seq); err == nil {
		t.Fatalf("result %+v after 50 heartbeats with no events and no rescan: the heartbeat scanned", res)
	}
}

func TestWatcher_RescanWithoutEvents(t *testing.T) {
	dir := runWatcher(t, func(w *Watcher) {
		noEvents(w)
		w.RescanInterval = 20 * time.Millisecond
	})
	res := submit(t, dir, "a", journal.Intent{File: "n.json", Merge: []byte(`{"a":1}`)})
	if res.Status != journal.StatusApplied {
		t.Fatalf("%+v, want applied", res)
	}
}

// limitNotifier is a real file watcher that refuses watches beyond a
// limit, as the kernel does past fs.inotify.max_user_watches.
type limitNotifier struct {
	notifier
	mu    sync.Mutex
	left  int
	tries int
}

func (l *limitNotifier) Add(name string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tries++
	if l.left == 0 {
		return fmt.Errorf("add watch %s: %w", name, syscall.ENOSPC)
	}
	l.left--
	return l.notifier.Add(name)
}

func TestWatcher_WatchLimit(t *testing.T) {
	var logs syncBuffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Warn})
	var lim *limitNotifier
	dir := t.TempDir()
	// Three agents exist before the watcher starts; there are watches for
	// the journal folder and one agent folder only.
	for _, ag := range []string{"a", "b", "c"} {
		appendIntent(t, dir, ag, journal.Intent{File: ag + ".json", Merge: []byte(`{}`)})
	}
	a := replay.NewApplier(dir, nil)
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	w := New(a, logger)
	w.RescanInterval = 20 * time.Millisecond
	inner := w.newNotify
	w.newNotify = func() (notifier, error) {
		n, err := inner()
		if err != nil {
			return nil, err
		}
		lim = &limitNotifier{notifier: n, left: 2}
		return lim, nil
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	// Every agent is served, watched or not, old or new.
	for _, ag := range []string{"a", "b", "c", "d", "e"} {
		res := submit(t, dir, ag, journal.Intent{File: ag + ".json", Merge: []byte(`{"x":1}`)})
		if res.Status != journal.StatusApplied {
			t.Fatalf("agent %s: %+v, want applied", ag, res)
		}
	}
	if got := strings.Count(logs.String(), "out of file watches"); got != 1 {
		t.Errorf("%d logs of the watch limit, want 1:\n%s", got, logs.String())
	}
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if lim.tries != 3 {
		t.Errorf("%d watches tried, want 3 (no retry once the limit is reached)", lim.tries)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
