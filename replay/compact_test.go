package replay

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stateward/stateward/journal"
)

// dirUsage returns the bytes of regular files under dir/rel.
func dirUsage(tb testing.TB, dir, rel string) int64 {
	tb.Helper()
	var n int64
	filepath.WalkDir(filepath.Join(dir, rel), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// TestApplier_CompactionSoak runs agents that write continuously through
// the journal client, with tiny thresholds for every kind of compaction,
// and checks that disk use stays under a stated bound the whole time, that
// nothing is lost or applied twice, that a restart recovers from the
// checkpoint, and that replay --verify passes. STATEWARD_SOAK_SECONDS makes
// it run longer.
func TestApplier_CompactionSoak(t *testing.T) {
	const (
		agents     = 6
		segSize    = 2 << 10 // client journal segments
		resSegSize = 1 << 10
		resKept    = 2
		cpBytes    = 8 << 10
		retain     = 50
	)
	duration := 2 * time.Second
	if s := os.Getenv("STATEWARD_SOAK_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("STATEWARD_SOAK_SECONDS: %v", err)
		}
		duration = time.Duration(n) * time.Second
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "c.json"), []byte(`{"n":0,"seen":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	open := func() *Applier {
		a := NewApplier(dir, nil)
		a.CheckpointBytes, a.ResultSegmentSize, a.ResultSegmentsKept, a.ResultRetention, a.RetainResults = cpBytes, resSegSize, resKept, 0, retain
		if err := a.Open(); err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := open()
	defer func() { a.Close() }()

	ctx, stop := context.WithTimeout(t.Context(), duration)
	defer stop()
	var wg sync.WaitGroup
	acked := make([][]uint64, agents)
	errs := make(chan error, agents)
	for i := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("agent-%d", i)
			w := journal.NewWriter(dir, name)
			w.SegmentSize = segSize
			if err := w.Open(); err != nil {
				errs <- err
				return
			}
			defer w.Close()
			r, err := journal.OpenResults(dir, name)
			if err != nil {
				errs <- err
				return
			}
			defer r.Close()
			for seq := uint64(1); ctx.Err() == nil; seq++ {
				rec, err := w.Append(journal.Intent{File: "c.json", Patch: []byte(fmt.Sprintf(
					`[{"op":"inc","path":"/n","value":1},{"op":"inc","path":"/seen/%s-%d","value":1}]`, name, seq))})
				if err != nil {
					errs <- err
					return
				}
				acked[i] = append(acked[i], rec.Seq)
				wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				res, err := r.Wait(wctx, rec.Seq)
				cancel()
				if err != nil {
					errs <- fmt.Errorf("%s seq %d: %w", name, rec.Seq, err)
					return
				}
				if res.Status != journal.StatusApplied {
					errs <- fmt.Errorf("%s seq %d: %+v", name, rec.Seq, res)
					return
				}
			}
		}()
	}
	// The bound: per agent, the segment being read and the one being
	// written (each at most a segment plus a line); the results segments
	// kept plus the current one; the commit log up to the checkpoint
	// threshold plus one batch; one checkpoint (the document and the
	// retained results) and its temp file while it is written.
	const line = 200
	docMax := int64(64 << 10)
	bound := int64(agents)*(2*(segSize+line)) +
		int64(agents)*int64(resKept+1)*(resSegSize+agents*line) +
		cpBytes + int64(agents)*2*line*4 +
		2*(docMax*2+int64(agents)*retain*120)
	var peak int64
	restarted, start := false, time.Now()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		if _, err := a.Step(t.Context()); err != nil {
			t.Fatal(err)
		}
		use := dirUsage(t, dir, "journal") + dirUsage(t, dir, "results") + dirUsage(t, dir, ".stateward")
		peak = max(peak, use)
		if use > bound {
			t.Fatalf("disk use %d bytes, bound %d", use, bound)
		}
		if !restarted && time.Since(start) > duration/2 {
			a.Close() // a restart mid-run recovers from the checkpoint
			a = open()
			restarted = true
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	drain(t, a)
	a.Close()
	total := 0
	doc := readJSON(t, dir, "c.json").(map[string]any)
	seen := doc["seen"].(map[string]any)
	for i, seqs := range acked {
		for _, s := range seqs {
			if v := seen[fmt.Sprintf("agent-%d-%d", i, s)]; v != 1.0 {
				t.Fatalf("agent-%d seq %d applied %v times, want 1", i, s, v)
			}
		}
		total += len(seqs)
	}
	if got := doc["n"]; got != float64(total) || len(seen) != total {
		t.Fatalf("n = %v and %d markers, want %d", got, len(seen), total)
	}
	if !restarted {
		t.Error("the run never reached the restart point")
	}
	if _, err := os.Stat(filepath.Join(dir, checkpointDir)); err != nil {
		t.Errorf("no checkpoint was written: %v", err)
	}
	mustVerify(t, dir)
	t.Logf("%d intents from %d agents in %s; peak disk use %d bytes (bound %d)", total, agents, duration, peak, bound)
}

// TestResults_WaitAcrossRotation: an agent waiting on an old result gets it
// after the results rotated, while the segment is kept; once the retention
// policy deleted it, Wait says so instead of waiting forever.
func TestResults_WaitAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	appendRaw(t, dir, "a", incLines(1, 1))
	if err := os.WriteFile(filepath.Join(dir, "c.json"), []byte(`{"n":0}`), 0o644); err != nil {
		t.Fatal(err)
	}
	a := NewApplier(dir, nil)
	a.ResultSegmentSize, a.ResultSegmentsKept, a.ResultRetention = 50, 3, 0 // a segment per result
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	drain(t, a)
	r, err := journal.OpenResults(dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for s := uint64(2); s <= 3; s++ { // one batch each: each rotates
		appendRaw(t, dir, "a", incLines(s, s))
		drain(t, a)
	}
	segs, _ := journal.ListSegments(filepath.Join(dir, "results", "a"))
	if len(segs) < 3 {
		t.Fatalf("results did not rotate: segments %v", segs)
	}
	res, err := r.Wait(t.Context(), 1)
	if err != nil || res.Seq != 1 || res.Status != journal.StatusApplied {
		t.Fatalf("Wait(1) across rotation = %+v, %v", res, err)
	}
	for s := uint64(5); s <= 8; s++ {
		appendRaw(t, dir, "a", incLines(s, s))
		drain(t, a)
	}
	segs, _ = journal.ListSegments(filepath.Join(dir, "results", "a"))
	if segs[0] <= 1 {
		t.Fatalf("old results segments were not pruned: %v", segs)
	}
	if len(segs) != 3 {
		t.Errorf("%d results segments kept, want 3: %v", len(segs), segs)
	}
	r2, err := journal.OpenResults(dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := r2.Wait(ctx, 1); !errors.Is(err, journal.ErrResultGone) {
		t.Fatalf("Wait(1) after pruning: %v, want ErrResultGone", err)
	}
	if res, err := r2.Wait(ctx, 8); err != nil || res.Seq != 8 {
		t.Fatalf("Wait(8) = %+v, %v", res, err)
	}
}
