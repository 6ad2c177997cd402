package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeResults is a small sweep: two runs of closed and fixed cells at
// N=1 and 16 on 150KB, and a catch-up.
func fakeResults() *results {
	res := &results{Started: time.Now(), DocBytes: map[string]int{"150KB": 150818}, Options: options{Duration: time.Second, Window: 16}}
	for run := 1; run <= 2; run++ {
		for _, n := range []int{1, 16} {
			for i, c := range []string{"stateward", "lockfile", "flock", "sqlite"} {
				for _, mode := range []string{"closed", "fixed"} {
					v := float64(100 * (i + 1) * run)
					cr := cellResult{
						cellSpec:  cellSpec{Run: run, Mode: mode, Contender: c, Size: "150KB", Tasks: 1000, Agents: n, Duration: 1},
						DocBytes:  150818,
						Ops:       int(v),
						OpsPerSec: v, P50: 1 + float64(i), P99: 10 * float64(i+1), Max: 100 * float64(i+1),
						AgentMin: int(v) / n / 2, AgentMax: int(v) / n, Check: "ok", FinishMin: 1, FinishMax: 2, Finished: n,
					}
					if c == "stateward" {
						cr.WatcherRSS, cr.Commits, cr.Batches = 20<<20, 100, 10
					}
					for range cdfQs {
						cr.Quantiles = append(cr.Quantiles, cr.P50)
					}
					res.Cells = append(res.Cells, cr)
				}
			}
		}
		res.Catchups = append(res.Catchups, catchupResult{Run: run, Size: "150KB", Intents: 1000, PerSec: 50000, Elapsed: 0.02, WatcherRSS: 25 << 20, DocBytes: 150818, Check: "ok"})
		res.Floors = append(res.Floors, floorResult{Run: run, Size: "150KB", DocBytes: 150818, ReplaceMS: 1, AppendMS: 0.3})
	}
	res.Cells = append(res.Cells, cellResult{cellSpec: cellSpec{Run: 1, Mode: "closed", Contender: "lockfile", Size: "15MB", Agents: 64}, Skipped: "skipped (-skip)"})
	return res
}

func TestWriteReport(t *testing.T) {
	dir := t.TempDir()
	if err := writeReport(fakeResults(), dir); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "benchmarks.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Targets (issue 4)", "| 16 | **stateward** |", "## Catch-up", "Skipped cells", plotThroughput, plotLatencyCDF} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, name := range []string{plotThroughput, plotThroughputFixed, plotLatency, plotLatencyCDF} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Size() < 1000 {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestTargets(t *testing.T) {
	ts := fakeResults().targets()
	byName := map[string]target{}
	for _, tg := range ts {
		byName[tg.Name] = tg
	}
	// stateward 100 (run 1) vs lock file 200: 0.5x, far from 25x.
	lf := byName["Fixed work, N=16, 150KB: stateward vs .lock file (fixed work)"]
	if len(lf.Met) != 2 || lf.Met[0] || !strings.Contains(lf.verdict(), "missed") {
		t.Errorf("lock-file ratio: %+v", lf)
	}
	fair := byName["N=16, 150KB: every stateward agent within 2× of the others (closed loop: most/fewest ops per agent; fixed work: last/first to finish)"]
	if len(fair.Met) != 2 || !fair.Met[0] {
		t.Errorf("fairness 2x (max/min = 2): %+v", fair)
	}
}

func TestSummarize(t *testing.T) {
	sums := []agentSummary{
		{Name: "a", Ops: 3, Lat: []int64{1e6, 2e6, 3e6}, FinishNS: 2e9, Done: true},
		{Name: "b", Ops: 1, Lat: []int64{10e6}, FinishNS: 4e9, Done: true},
	}
	var res cellResult
	summarize(&res, sums, cellSpec{Mode: "fixed", Agents: 2}, time.Minute)
	if got, want := res.OpsPerSec, 1.0; got != want {
		t.Errorf("OpsPerSec=%v, want %v (4 ops over the last finish at 4 s)", got, want)
	}
	if res.P50 != 2 || res.Max != 10 || res.P99 != 10 {
		t.Errorf("p50=%v p99=%v max=%v, want 2, 10, 10", res.P50, res.P99, res.Max)
	}
	if res.AgentMin != 1 || res.AgentMax != 3 || res.FairRatio() != 3 {
		t.Errorf("agents %d..%d", res.AgentMin, res.AgentMax)
	}
	if res.FinishMin != 2 || res.FinishMax != 4 || res.Finished != 2 {
		t.Errorf("finish %v..%v, finished %d", res.FinishMin, res.FinishMax, res.Finished)
	}
	if len(res.Quantiles) != len(cdfQs) || math.IsNaN(res.Mean) {
		t.Errorf("quantiles %d, mean %v", len(res.Quantiles), res.Mean)
	}
}
