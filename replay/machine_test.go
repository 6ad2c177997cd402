package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stateward/stateward/journal"
)

// settle does what a batch's commit does to the machine: encodes the
// changed documents once.
func settle(m *machine) {
	for _, d := range m.docs {
		if d.dirty {
			d.data = d.doc.AppendJSON(nil)
			d.hash = journal.Hash(d.data)
			d.dirty = false
		}
	}
}

// roundTrip writes a checkpoint of m as the watcher does and restores it.
func roundTrip(tb testing.TB, m *machine, batch uint64) (*machine, []byte) {
	tb.Helper()
	settle(m)
	data, err := json.Marshal(newCheckpoint(m, batch))
	if err != nil {
		tb.Fatal(err)
	}
	cp := new(checkpoint)
	if err := json.Unmarshal(data, cp); err != nil {
		tb.Fatal(err)
	}
	r, err := cp.restore(cp.Retain)
	if err != nil {
		tb.Fatal(err)
	}
	return r, data
}

// decideLine decides one line of agent and returns its result line.
func decideLine(m *machine, agent, line string) (entry, string) {
	e := m.decide(agent, 1, 0, []byte(line+"\n"), nil)
	settle(m)
	return e, string(e.Result.AppendLine(nil))
}

func TestMachine_RetryWindow(t *testing.T) {
	// A retry copy stays in the window after its original has left it: the
	// id is still known, live and after a checkpoint alike.
	inc := `"patch":[{"op":"inc","path":"/n","value":1}]`
	lines := []string{
		`{"seq":1,"file":"c.json","patch":[{"op":"add","path":"","value":{"n":0}}]}`,
		`{"seq":2,"file":"c.json","id":"X",` + inc + `}`,
		`{"seq":3,"file":"c.json","id":"X",` + inc + `}`, // retry by id
		`{"seq":4,"file":"c.json",` + inc + `}`,
		`{"seq":5,"file":"c.json",` + inc + `}`,
		`{"seq":6,"file":"c.json",` + inc + `}`, // seq 2 leaves the window of 4; seq 3 stays
	}
	last := `{"seq":7,"file":"c.json","id":"X",` + inc + `}`
	live := newMachine(4)
	var orig journal.Result
	for i, l := range lines {
		e, _ := decideLine(live, "a", l)
		if i == 1 {
			orig = e.Result
		}
	}
	restored, _ := roundTrip(t, live, 1)
	eLive, gotLive := decideLine(live, "a", last)
	_, gotRestored := decideLine(restored, "a", last)
	if gotLive != gotRestored {
		t.Errorf("seq 7 live:     %s      restored: %s", gotLive, gotRestored)
	}
	if r := eLive.Result; !r.Retry || r.Commit != orig.Commit || r.Seq != 7 {
		t.Errorf("seq 7 = %s, want a retry copy of commit %d", gotLive, orig.Commit)
	}
}

func TestMachine_IDReuse(t *testing.T) {
	m := newMachine(100)
	_, first := decideLine(m, "a", `{"seq":4,"file":"a.json","merge":{"x":1},"id":"job-1"}`)
	e, got := decideLine(m, "a", `{"seq":5,"file":"b.json","merge":{"x":1},"id":"job-1"}`)
	if r := e.Result; r.Status != journal.StatusRejected || r.Retry || r.File != "b.json" || r.ID != "job-1" {
		t.Fatalf("same id, other file = %s, want rejected (not a copy of %s)", got, first)
	}
	if want := `id "job-1" was used by seq 4 for a different intent`; !strings.HasPrefix(e.Result.Error, want) {
		t.Errorf("error %q, want it to start with %q", e.Result.Error, want)
	}
	if m.docs["b.json"] != nil && m.docs["b.json"].doc.Exists() {
		t.Errorf("b.json exists after a rejected intent")
	}
	for _, tc := range []struct {
		name, line string
		retry      bool
	}{
		{"OtherPatch", `{"seq":6,"file":"a.json","merge":{"x":2},"id":"job-1"}`, false},
		{"PatchForMerge", `{"seq":7,"file":"a.json","patch":[{"op":"add","path":"/x","value":1}],"id":"job-1"}`, false},
		{"IfVersion", `{"seq":8,"file":"a.json","merge":{"x":1},"if_version":0,"id":"job-1"}`, false},
		{"Same", `{"seq":9,"file":"a.json","merge":{"x":1},"id":"job-1"}`, true},
		{"SameOtherSpacingAndTime", `{"seq":10,"id":"job-1","time":"2026-01-02T03:04:05Z","file":"a.json","merge": { "x" : 1 }}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, got := decideLine(m, "a", tc.line)
			if tc.retry {
				if !e.Result.Retry || e.Result.Commit != 1 || e.Result.Status != journal.StatusApplied {
					t.Errorf("got %s, want a retry copy of %s", got, first)
				}
				return
			}
			if e.Result.Status != journal.StatusRejected || !strings.Contains(e.Result.Error, "was used by seq 4 for a different intent") {
				t.Errorf("got %s, want rejected naming seq 4", got)
			}
		})
	}
	// A rejection for a reused id does not take the id over.
	e, got = decideLine(m, "a", `{"seq":11,"file":"a.json","merge":{"x":1},"id":"job-1"}`)
	if !e.Result.Retry || e.Result.Commit != 1 {
		t.Errorf("the original intent again = %s, want a retry copy of %s", got, first)
	}
	if got, want := m.docs["a.json"].version, uint64(1); got != want {
		t.Errorf("a.json at version %d, want %d (applied once)", got, want)
	}
}

// TestMachine_CheckpointProperty runs random intent streams (ids reused,
// seqs repeated, tiny windows) through a live machine and through machines
// restored from checkpoints taken at random points, and through the commit
// log's fold: every result, every checkpoint and every retry window must be
// the same, byte for byte.
func TestMachine_CheckpointProperty(t *testing.T) {
	runs, steps := 300, 120
	if testing.Short() {
		runs = 60
	}
	if s := os.Getenv("STATEWARD_PROPERTY_RUNS"); s != "" {
		runs, _ = strconv.Atoi(s)
	}
	for run := range runs {
		seed := uint64(run)
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		retain := 1 + rng.IntN(4)
		live := newMachine(retain)
		replica, _ := roundTrip(t, live, 0)
		base, _ := roundTrip(t, live, 0) // last checkpoint, for the fold
		var since []entry                // entries decided after base
		var sinceRetain []int            // the window each was decided with
		seqs := map[string]uint64{}
		var trace []string
		for step := range steps {
			if rng.IntN(24) == 0 && live.retain > 1 {
				// A restart with a lower --retain-results: windows are
				// held as they are until each agent's next result.
				live.retain = 1 + rng.IntN(live.retain-1)
				replica.retain = live.retain
				trace = append(trace, fmt.Sprintf("retain %d", live.retain))
			}
			agent := []string{"a", "b"}[rng.IntN(2)]
			line := randomLine(rng, agent, seqs)
			trace = append(trace, agent+" "+line)
			e, got := decideLine(live, agent, line)
			_, want := decideLine(replica, agent, line)
			if got != want {
				t.Fatalf("seed %d step %d: live decides %s, restored %s\ntrace:\n%s", seed, step, got, want, strings.Join(trace, "\n"))
			}
			since, sinceRetain = append(since, e), append(sinceRetain, live.retain)
			if rng.IntN(8) == 0 {
				var a, b []byte
				replica, a = roundTrip(t, replica, uint64(step))
				_, b = roundTrip(t, live, uint64(step))
				if !bytes.Equal(a, b) {
					t.Fatalf("seed %d step %d: checkpoints differ:\nlive     %s\nrestored %s\ntrace:\n%s", seed, step, b, a, strings.Join(trace, "\n"))
				}
				checkFold(t, base, since, sinceRetain, live)
				base, since, sinceRetain = replica, nil, nil
				base, _ = roundTrip(t, base, uint64(step))
			}
		}
		checkFold(t, base, since, sinceRetain, live)
	}
}

// checkFold folds entries into a copy of base, as recovery does with the
// commit log, and checks that every retry window comes out as live's.
func checkFold(t *testing.T, base *machine, entries []entry, retain []int, live *machine) {
	t.Helper()
	m, _ := roundTrip(t, base, 0)
	for i, e := range entries {
		rec := &commitRecord{Commit: e.Result.Commit, Retain: retain[i], Entries: []entry{e}}
		if err := m.fold(rec); err != nil {
			t.Fatal(err)
		}
	}
	for name, a := range live.agents {
		b := m.agent(name)
		if got, want := b.win.entries(), a.win.entries(); !slices.Equal(got, want) {
			t.Fatalf("agent %s: window after fold\n%v\nlive\n%v", name, got, want)
		}
		if got, want := b.win.byID, a.win.byID; !maps.Equal(got, want) {
			t.Fatalf("agent %s: ids after fold %v, live %v", name, got, want)
		}
	}
}

// randomLine returns a journal line of agent: mostly the next seq, at
// times a repeat; ids from a small set; at times a line that does not
// parse.
func randomLine(rng *rand.Rand, agent string, seqs map[string]uint64) string {
	seq := seqs[agent] + 1 + uint64(rng.IntN(2))
	if seqs[agent] > 0 && rng.IntN(5) == 0 {
		seq = 1 + rng.Uint64N(seqs[agent]) // a repeat, or a seq never used
	} else {
		seqs[agent] = seq
	}
	file := []string{"x.json", "y.json"}[rng.IntN(2)]
	var extra string
	if id := []string{"", "", "i1", "i2", "i3"}[rng.IntN(5)]; id != "" {
		extra += fmt.Sprintf(`,"id":%q`, id)
	}
	if rng.IntN(4) == 0 {
		extra += fmt.Sprintf(`,"if_version":%d`, rng.IntN(3))
	}
	switch rng.IntN(8) {
	case 0:
		return fmt.Sprintf(`{"seq":%d,"file":"bad/name"%s,"merge":{}}`, seq, extra)
	case 1:
		return fmt.Sprintf(`{"seq":%d,"file":%q%s,"patch":[{"op":"add","path":"","value":{"n":0}}]}`, seq, file, extra)
	case 2:
		return fmt.Sprintf(`{"seq":%d,"file":%q%s,"merge":{"m":%d}}`, seq, file, extra, rng.IntN(2))
	case 3:
		return fmt.Sprintf(`{"seq":%d,"file":%q%s,"patch":[{"op":"remove","path":"/gone"}]}`, seq, file, extra)
	default:
		return fmt.Sprintf(`{"seq":%d,"file":%q%s,"patch":[{"op":"inc","path":"/n","value":1}]}`, seq, file, extra)
	}
}

func TestMachine_BadLineResultIsSmall(t *testing.T) {
	huge := strings.Repeat("a", 900<<10)
	m := newMachine(10)
	for i, line := range []string{
		`{"seq":1,"file":"` + huge + `.json","merge":{},"id":"` + huge + `"}`,
		`{"seq":2,"file":"f.json","patch":[{"op":"add","path":"/` + huge + `/x","value":1}],"id":"ok"}`,
		`{"seq":3,"file":"` + huge + `","merge":{}}`,
	} {
		e, got := decideLine(m, "a", line)
		if len(got) > 2<<10 {
			t.Errorf("line %d: result of %d bytes, want at most 2 KiB: %.300s", i, len(got), got)
		}
		if e.Result.Status != journal.StatusRejected {
			t.Errorf("line %d: %.300s, want rejected", i, got)
		}
	}
}

func TestCapError(t *testing.T) {
	for _, n := range []int{0, 10, MaxErrorLen - 1, MaxErrorLen, MaxErrorLen + 1, 5000, 1 << 20} {
		msg := strings.Repeat("é", n/2) + strings.Repeat("x", n%2) + " the end"
		got := capError(msg)
		if len(got) > MaxErrorLen {
			t.Errorf("len %d: capped to %d bytes, want <= %d", len(msg), len(got), MaxErrorLen)
		}
		if again := capError(got); again != got {
			t.Errorf("len %d: capError not idempotent", len(msg))
		}
		if !strings.HasSuffix(got, " the end") || !strings.HasPrefix(got, msg[:min(len(msg), 100)]) {
			t.Errorf("len %d: %q lost its start or end", len(msg), got)
		}
		if !utf8Valid(got) {
			t.Errorf("len %d: capped text is not UTF-8", len(msg))
		}
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// TestMachine_WindowMemory feeds the worst case to the retry window (the
// longest id and a capped error text on every result, each from a 16 KiB
// line) and measures the heap it holds per result
// against the bound docs/security.md states.
func TestMachine_WindowMemory(t *testing.T) {
	const retain, perResult = 2000, 1536 // docs/security.md
	m := newMachine(retain)
	id := strings.Repeat("i", journal.MaxIDLen)
	pad := strings.Repeat("p", 16<<10) // a line pinned by the window would show
	// Every intent is rejected with an error longer than the cap: its
	// document is unusable for a long reason.
	m.doc("f.json").broken = strings.Repeat("b", 4<<10)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for seq := 1; seq <= 2*retain; seq++ {
		uid := fmt.Sprintf("%08d", seq) + id[8:] // ids are kept in the index too
		line := fmt.Sprintf(`{"seq":%d,"file":"f.json","id":%q,"patch":[{"op":"add","path":"/%s","value":1}]}`, seq, uid, pad)
		m.decide("a", 1, 0, []byte(line), nil)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	a := m.agents["a"]
	if got, want := len(a.win.entries()), retain; got != want {
		t.Fatalf("%d results retained, want %d", got, want)
	}
	if k := a.win.entries()[0]; len(k.Error) < MaxErrorLen-64 || len(k.ID) != journal.MaxIDLen {
		t.Fatalf("not the worst case: error of %d bytes, id of %d", len(k.Error), len(k.ID))
	}
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("retry window of %d worst-case results: %d bytes, %d per result", retain, held, held/retain)
	if held > retain*perResult {
		t.Errorf("retry window holds %d bytes for %d results (%d each), want at most %d each", held, retain, held/retain, perResult)
	}
	runtime.KeepAlive(m)
}

func TestCheckpoint_Format(t *testing.T) {
	write := func(t *testing.T, text string) fsys {
		dir := t.TempDir()
		if err := os.MkdirAll(dir+"/"+checkpointDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir+"/"+checkpointDir+"/"+checkpointName(3), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		root, err := os.OpenRoot(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { root.Close() })
		return rootFS{root}
	}
	t.Run("Format1", func(t *testing.T) {
		// As written before format 2: whole results in "retained".
		fs := write(t, `{"batch":3,"commit":2,"retain":10,"docs":{"c.json":{"version":1,"exists":true,"data":"eyJuIjoxfQo="}},`+
			`"agents":{"a":{"cursor":{"segment":1,"offset":90,"seq":2},"results":{"segment":1,"offset":120},`+
			`"retained":[{"seq":1,"file":"c.json","status":"applied","version":1,"commit":1},{"seq":2,"id":"X","file":"c.json","status":"applied","version":1,"commit":1,"retry":true}]}}}`)
		cp, err := readCheckpoint(fs)
		if err != nil {
			t.Fatal(err)
		}
		m, err := cp.restore(cp.Retain)
		if err != nil {
			t.Fatal(err)
		}
		e, got := decideLine(m, "a", `{"seq":3,"file":"c.json","id":"X","merge":{"n":5}}`)
		if !e.Result.Retry || e.Result.Commit != 1 {
			t.Errorf("id of a format-1 checkpoint: %s, want a retry copy of commit 1", got)
		}
		if _, data := roundTrip(t, m, 4); !bytes.Contains(data, []byte(`"format":2`)) {
			t.Errorf("new checkpoint %s has no format 2", data)
		}
	})
	t.Run("Newer", func(t *testing.T) {
		fs := write(t, `{"format":3,"batch":3,"commit":2,"retain":10,"docs":{},"agents":{}}`)
		_, err := readCheckpoint(fs)
		if err == nil || !strings.Contains(err.Error(), "has format 3") {
			t.Fatalf("readCheckpoint of format 3: %v, want refused naming the format", err)
		}
	})
}

func TestCheckpoint_LoweredRetainRestoresWindowAsHeld(t *testing.T) {
	// A watcher restarted with a lower --retain-results holds its windows
	// as they were until each agent's next result; its checkpoint saves
	// them so, and the machine restored from it must hold (and answer)
	// the same.
	live := newMachine(4)
	for i := 1; i <= 4; i++ {
		decideLine(live, "a", fmt.Sprintf(`{"seq":%d,"file":"c.json","id":"j%d","merge":{"n":%d}}`, i, i, i))
	}
	live.retain = 2 // the restart's lower window
	restored, _ := roundTrip(t, live, 1)
	if got, want := len(restored.agent("a").win.entries()), len(live.agent("a").win.entries()); got != want {
		t.Fatalf("restored window holds %d entries, live %d", got, want)
	}
	retry := `{"seq":1,"file":"c.json","id":"j1","merge":{"n":1}}`
	_, gotLive := decideLine(live, "a", retry)
	_, gotRestored := decideLine(restored, "a", retry)
	if gotLive != gotRestored {
		t.Fatalf("retry answered\nlive     %s\nrestored %s", gotLive, gotRestored)
	}
	// Both trim at the agent's next result.
	decideLine(live, "a", `{"seq":5,"file":"c.json","merge":{"n":5}}`)
	decideLine(restored, "a", `{"seq":5,"file":"c.json","merge":{"n":5}}`)
	if got, want := restored.agent("a").win.entries(), live.agent("a").win.entries(); !slices.Equal(got, want) || len(got) != 2 {
		t.Fatalf("after the next result: restored %v, live %v (want 2 entries)", got, want)
	}
}
