package watcher

import (
	"context"
	"testing"
	"time"

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
