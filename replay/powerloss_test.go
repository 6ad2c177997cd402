package replay

import (
	"errors"
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

// plAgent appends journal lines through a crashFS as a client would: write,
// fsync (and fsync the folder of a new segment) before counting the line as
// acknowledged. Each intent increments /n and its own marker
// /seen/<agent>-<seq>, so the document tells which intents were applied,
// and how often, even after journals and results are compacted away.
type plAgent struct {
	fs      *crashFS
	name    string
	seq     uint64
	rotate  bool   // start a new segment at every write
	seg     uint64 // current segment
	acked   []uint64
	pending []uint64 // written, not yet fsynced
}

func (g *plAgent) append(tb testing.TB, n int) { g.write(tb, n, true) }

// write appends n lines, fsyncing them if sync is set; lines are
// acknowledged only by a later fsync.
func (g *plAgent) write(tb testing.TB, n int, sync bool) {
	tb.Helper()
	folder := path.Join("journal", g.name)
	if _, err := g.fs.Lstat(folder); errors.Is(err, os.ErrNotExist) {
		if err := g.fs.Mkdir(folder, 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := g.fs.SyncDir("journal"); err != nil {
			tb.Fatal(err)
		}
	}
	if g.seg == 0 || g.rotate {
		g.seg = g.seq + 1
	}
	name := path.Join(folder, journal.SegmentName(g.seg))
	_, statErr := g.fs.Lstat(name)
	f, err := g.fs.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if errors.Is(statErr, os.ErrNotExist) {
		if err := g.fs.SyncDir(folder); err != nil {
			tb.Fatal(err)
		}
	}
	var lines strings.Builder
	var seqs []uint64
	for range n {
		g.seq++
		seqs = append(seqs, g.seq)
		lines.WriteString(intentLine(g.seq, "c.json", fmt.Sprintf(
			`"patch":[{"op":"inc","path":"/n","value":1},{"op":"inc","path":"/seen/%s-%d","value":1}]`, g.name, g.seq)))
	}
	if _, err := f.Write([]byte(lines.String())); err != nil {
		tb.Fatal(err)
	}
	g.pending = append(g.pending, seqs...)
	if sync {
		g.sync(tb)
	}
}

// sync fsyncs the agent's segment, acknowledging what it wrote.
func (g *plAgent) sync(tb testing.TB) {
	tb.Helper()
	f, err := g.fs.OpenFile(path.Join("journal", g.name, journal.SegmentName(g.seg)), os.O_RDONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		tb.Fatal(err)
	}
	g.acked, g.pending = append(g.acked, g.pending...), nil
}

// plMode is a configuration of the power-loss workload.
type plMode struct {
	name    string
	compact bool // tiny thresholds: checkpoints, journal and result compaction at every batch
}

// configure sets the Applier's knobs for the mode.
func (md plMode) configure(a *Applier) {
	a.ResultsSyncInterval = 1 << 62 // results are never fsynced by time: recovery re-derives them
	if md.compact {
		a.CheckpointBytes = 1
		a.ResultSegmentSize = 200
		a.ResultSegmentsKept = 1
		a.ResultRetention = 0
	}
}

// powerLossWorkload runs agents and a watcher over fs until the end or a
// simulated crash; it returns the agents.
func powerLossWorkload(tb testing.TB, fs *crashFS, md plMode) (agents []*plAgent, crashed bool) {
	tb.Helper()
	agents = []*plAgent{{fs: fs, name: "a", rotate: md.compact}, {fs: fs, name: "b", rotate: md.compact}}
	var ap *Applier
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(crashedFS); !ok {
				panic(r)
			}
			crashed = true
		}
		if ap != nil { // the process is gone: its files and lock with it
			ap.closeFiles()
			if ap.lock != nil {
				ap.lock.Unlock()
			}
		}
	}()
	agents[0].append(tb, 1)
	ap = NewApplier(fs.dir, nil)
	ap.fs = fs
	md.configure(ap)
	if err := ap.Open(); err != nil {
		tb.Fatalf("Open: %v", err)
	}
	for round := range 3 {
		agents[0].append(tb, 2)
		// b is between its write and its fsync when the watcher reads:
		// the watcher must make the line durable before depending on it.
		agents[1].write(tb, 1+round%2, false)
		if _, err := ap.Step(tb.Context()); err != nil {
			tb.Fatalf("Step: %v", err)
		}
		agents[1].sync(tb)
	}
	drain(tb, ap)
	return agents, false
}

// resultsBySeq returns the original result lines of an agent under dir.
func resultsBySeq(tb testing.TB, dir, agent string) map[uint64]string {
	tb.Helper()
	out := map[uint64]string{}
	for _, r := range readResults(tb, dir, agent) {
		if !r.Retry {
			out[r.Seq] = string(r.AppendLine(nil))
		}
	}
	return out
}

// TestPowerLoss crashes a watcher and its agents at every operation that
// changes the state directory, builds what the directory would hold after
// a power loss at that moment (only fsynced data and folder entries, with
// unsynced appends lost, kept, or torn), recovers, and checks: every
// acknowledged intent was applied, and no intent twice; no result an agent
// could have seen before the crash differs afterwards; replay --verify
// passes. The compacting mode does the same with a checkpoint, journal
// compaction and result pruning at every batch.
func TestPowerLoss(t *testing.T) {
	for _, md := range []plMode{{name: "Default"}, {name: "Compacting", compact: true}} {
		t.Run(md.name, func(t *testing.T) { testPowerLoss(t, md) })
	}
}

func testPowerLoss(t *testing.T, md plMode) {
	setup := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.MkdirAll(filepath.Join(dir, "journal"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "c.json"), []byte(`{"n":0,"seen":{}}`), 0o644); err != nil {
			t.Fatal(err)
		}
		syscall.Sync()
		return dir
	}
	// A dry run counts the operations.
	dry := newCrashFS(t, setup(t))
	if _, crashed := powerLossWorkload(t, dry, md); crashed {
		t.Fatal("dry run crashed")
	}
	total := dry.ops
	if total < 50 {
		t.Fatalf("workload has only %d operations", total)
	}
	states, seeds := 0, 2
	if testing.Short() {
		seeds = 1
	}
	for k := 1; k <= total; k++ {
		for seed := range seeds {
			dir := setup(t)
			fs := newCrashFS(t, dir)
			fs.crashAt = k
			agents, crashed := powerLossWorkload(t, fs, md)
			if !crashed {
				t.Fatalf("no crash at operation %d of %d", k, total)
			}
			seen := map[string]map[uint64]string{}
			for _, g := range agents {
				if _, err := os.Stat(filepath.Join(dir, "results", g.name)); err == nil {
					seen[g.name] = resultsBySeq(t, dir, g.name)
				}
			}
			img := filepath.Join(t.TempDir(), fmt.Sprintf("image-%d-%d", k, seed))
			fs.image(t, img, rand.New(rand.NewPCG(uint64(k), uint64(seed))))
			states++
			checkRecovery(t, fmt.Sprintf("crash at op %d/%d seed %d", k, total, seed), img, md, agents, seen)
		}
	}
	t.Logf("%d crash states explored (%d operations x %d seeds), 0 violations", states, total, seeds)
}

// checkRecovery recovers the image and checks the invariants.
func checkRecovery(t *testing.T, state, img string, md plMode, agents []*plAgent, seen map[string]map[uint64]string) {
	t.Helper()
	a := NewApplier(img, nil)
	md.configure(a)
	if err := a.Open(); err != nil {
		t.Fatalf("%s: recovery: %v", state, err)
	}
	drain(t, a)
	a.Close()
	doc := readJSON(t, img, "c.json").(map[string]any)
	marks := doc["seen"].(map[string]any)
	for key, v := range marks {
		if v != 1.0 {
			t.Fatalf("%s: intent %s applied %v times", state, key, v)
		}
	}
	if got, want := doc["n"], float64(len(marks)); got != want {
		t.Fatalf("%s: n = %v, but %v intents were applied", state, got, want)
	}
	for _, g := range agents {
		for _, s := range g.acked {
			if marks[fmt.Sprintf("%s-%d", g.name, s)] != 1.0 {
				t.Fatalf("%s: agent %s seq %d was acknowledged but never applied", state, g.name, s)
			}
		}
		if len(seen[g.name]) == 0 {
			continue
		}
		after := resultsBySeq(t, img, g.name)
		for s, line := range seen[g.name] {
			if got, ok := after[s]; (ok || !md.compact) && got != line {
				t.Fatalf("%s: agent %s saw result %q before the crash; after recovery: %q", state, g.name, line, got)
			}
		}
		for s := range after {
			if marks[fmt.Sprintf("%s-%d", g.name, s)] != 1.0 {
				t.Fatalf("%s: agent %s has a result for seq %d, which was not applied", state, g.name, s)
			}
		}
	}
	rep, err := Verify(img, "")
	if err != nil {
		t.Fatalf("%s: verify: %v", state, err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("%s: verify: %s", state, strings.Join(rep.Problems, "; "))
	}
}
