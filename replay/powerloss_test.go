package replay

import (
	"bytes"
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
// acknowledged.
type plAgent struct {
	fs      *crashFS
	name    string
	seq     uint64
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
	name := path.Join(folder, journal.SegmentName(1))
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
		lines.WriteString(intentLine(g.seq, "c.json", `"patch":[{"op":"inc","path":"/n","value":1}]`))
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
	f, err := g.fs.OpenFile(path.Join("journal", g.name, journal.SegmentName(1)), os.O_RDONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		tb.Fatal(err)
	}
	g.acked, g.pending = append(g.acked, g.pending...), nil
}

// powerLossWorkload runs agents and a watcher over fs until the end or a
// simulated crash; it returns the agents.
func powerLossWorkload(tb testing.TB, fs *crashFS) (agents []*plAgent, crashed bool) {
	tb.Helper()
	agents = []*plAgent{{fs: fs, name: "a"}, {fs: fs, name: "b"}}
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
	ap.ResultsSyncInterval = 1 << 62 // results are never fsynced by time: recovery re-derives them
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

// resultLines returns the result lines of an agent under dir, as text.
func resultLines(tb testing.TB, dir, agent string) []string {
	tb.Helper()
	var out []string
	for _, r := range readResults(tb, dir, agent) {
		out = append(out, string(r.AppendLine(nil)))
	}
	return out
}

// journalSeqs returns the seqs of the complete lines of an agent's journal.
func journalSeqs(tb testing.TB, dir, agent string) []uint64 {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "journal", agent, journal.SegmentName(1)))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	var seqs []uint64
	rd := journal.NewReader(bytes.NewReader(data), 0)
	for {
		rec, err := rd.Next()
		if err != nil {
			break // io.EOF, or a torn tail: not a line yet
		}
		if _, seq, err := journal.ParseIntent(rec.Line); err == nil {
			seqs = append(seqs, seq)
		}
	}
	return seqs
}

// TestPowerLoss crashes a watcher and its agents at every operation that
// changes the state directory, builds what the directory would hold after
// a power loss at that moment (only fsynced data and folder entries, with
// unsynced appends lost, kept, or torn), recovers, and checks: every
// acknowledged intent, and every durable line, was applied exactly once;
// no result an agent could have seen before the crash is missing or
// different afterwards; replay --verify passes.
func TestPowerLoss(t *testing.T) {
	setup := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.MkdirAll(filepath.Join(dir, "journal"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "c.json"), []byte(`{"n":0}`), 0o644); err != nil {
			t.Fatal(err)
		}
		syscall.Sync()
		return dir
	}
	// A dry run counts the operations.
	dry := newCrashFS(t, setup(t))
	if _, crashed := powerLossWorkload(t, dry); crashed {
		t.Fatal("dry run crashed")
	}
	total := dry.ops
	if total < 50 {
		t.Fatalf("workload has only %d operations", total)
	}
	states, seeds := 0, 3
	if testing.Short() {
		seeds = 1
	}
	for k := 1; k <= total; k++ {
		for seed := range seeds {
			dir := setup(t)
			fs := newCrashFS(t, dir)
			fs.crashAt = k
			agents, crashed := powerLossWorkload(t, fs)
			if !crashed {
				t.Fatalf("no crash at operation %d of %d", k, total)
			}
			seen := map[string][]string{}
			for _, g := range agents {
				if _, err := os.Stat(filepath.Join(dir, "results", g.name)); err == nil {
					seen[g.name] = resultLines(t, dir, g.name)
				}
			}
			img := filepath.Join(t.TempDir(), fmt.Sprintf("image-%d-%d", k, seed))
			fs.image(t, img, rand.New(rand.NewPCG(uint64(k), uint64(seed))))
			states++
			checkRecovery(t, fmt.Sprintf("crash at op %d/%d seed %d", k, total, seed), img, agents, seen)
		}
	}
	t.Logf("%d crash states explored (%d operations x %d seeds), 0 violations", states, total, seeds)
}

// checkRecovery recovers the image and checks the invariants.
func checkRecovery(t *testing.T, state, img string, agents []*plAgent, seen map[string][]string) {
	t.Helper()
	a := NewApplier(img, nil)
	if err := a.Open(); err != nil {
		t.Fatalf("%s: recovery: %v", state, err)
	}
	drain(t, a)
	a.Close()
	durable := 0
	for _, g := range agents {
		seqs := journalSeqs(t, img, g.name)
		have := map[uint64]bool{}
		for _, s := range seqs {
			have[s] = true
		}
		for _, s := range g.acked {
			if !have[s] {
				t.Fatalf("%s: agent %s seq %d was acknowledged but is not in the journal", state, g.name, s)
			}
		}
		durable += len(seqs)
		var res []journal.Result
		if len(seqs) > 0 {
			res = readResults(t, img, g.name)
		}
		originals := map[uint64]int{}
		for _, r := range res {
			if !r.Retry {
				originals[r.Seq]++
			}
			if r.Status != journal.StatusApplied {
				t.Fatalf("%s: agent %s: %+v, want applied", state, g.name, r)
			}
		}
		for _, s := range seqs {
			if originals[s] != 1 {
				t.Fatalf("%s: agent %s seq %d has %d results, want 1", state, g.name, s, originals[s])
			}
		}
		if len(originals) != len(seqs) {
			t.Fatalf("%s: agent %s has results for %d seqs, journal has %d", state, g.name, len(originals), len(seqs))
		}
		after := resultLines(t, img, g.name)
		for i, line := range seen[g.name] {
			if i >= len(after) || after[i] != line {
				t.Fatalf("%s: agent %s saw result %q before the crash; after recovery: %q", state, g.name, line, after)
			}
		}
	}
	doc := readJSON(t, img, "c.json").(map[string]any)
	if got, want := doc["n"], float64(durable); got != want {
		t.Fatalf("%s: n = %v, want %v (one per durable intent)", state, got, want)
	}
	rep, err := Verify(img, "")
	if err != nil {
		t.Fatalf("%s: verify: %v", state, err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("%s: verify: %s", state, strings.Join(rep.Problems, "; "))
	}
}
