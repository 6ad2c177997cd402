package replay

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stateward/stateward/journal"
)

// tornSeg is one segment of a journal: the seq that names it and its bytes.
type tornSeg struct {
	first uint64
	data  []byte
}

// tornLine is what docs/format.md (Intent, Result) says the watcher must do with one line of a
// journal, worked out from the line's bytes alone (tornOracle).
type tornLine struct {
	seg     uint64
	off     int64  // where the line starts in its segment
	seq     uint64 // the seq the line carries, 0 if none is readable
	status  string // applied or rejected; "" for a retry
	retryOf int    // for a retry, the index of the line whose result it copies; else -1
	intent  journal.Intent
}

// tornOracle returns, for the segments of one agent's journal, what the
// watcher must answer to each complete line, and how many bytes of an
// unfinished last line it must wait for. An unfinished line that a newer
// segment follows will never be finished: it is rejected at its offset.
func tornOracle(segs []tornSeg) (lines []tornLine, tail int64) {
	var last uint64
	kept := map[uint64]int{} // seq -> line whose result the watcher retains
	for i, s := range segs {
		off := int64(0)
		for {
			nl := bytes.IndexByte(s.data[off:], '\n')
			if nl < 0 {
				break
			}
			line := s.data[off : off+int64(nl)+1]
			l := tornLine{seg: s.first, off: off, retryOf: -1}
			in, seq, err := journal.ParseIntent(line)
			l.seq = seq
			switch {
			case seq == 0:
				l.status = journal.StatusRejected
			case seq <= last:
				if k, ok := kept[seq]; ok {
					l.retryOf = k
				} else {
					l.status = journal.StatusRejected
				}
			default:
				last, kept[seq] = seq, len(lines)
				if err != nil || !tornAppliable(in) {
					l.status = journal.StatusRejected
				} else {
					l.status, l.intent = journal.StatusApplied, in
				}
			}
			lines = append(lines, l)
			off += int64(nl) + 1
		}
		if rest := int64(len(s.data)) - off; rest > 0 {
			if i == len(segs)-1 {
				tail = rest
			} else {
				lines = append(lines, tornLine{seg: s.first, off: off, status: journal.StatusRejected, retryOf: -1})
			}
		}
	}
	return lines, tail
}

// tornAppliable reports whether a valid intent's patch or merge patch is one
// the engine takes: the format checks only that it is JSON, the engine also rejects,
// for example, invalid UTF-8 in a string. (The test's merge patches never
// depend on the document, so an empty one tells.)
func tornAppliable(in journal.Intent) bool {
	return applyIntent(&Doc{}, in) == nil
}

// checkTornResults compares an agent's results with what the oracle says,
// line by line: one result per complete line, none for an unfinished one.
func checkTornResults(t *testing.T, agent string, res []journal.Result, lines []tornLine) {
	t.Helper()
	if len(res) != len(lines) {
		t.Fatalf("%s: %d results for %d complete lines (an unfinished line must get none)\nresults: %+v", agent, len(res), len(lines), res)
	}
	for i, l := range lines {
		r := res[i]
		where := fmt.Sprintf("%s line %d (segment %s offset %d)", agent, i+1, journal.SegmentName(l.seg), l.off)
		switch {
		case l.retryOf >= 0:
			o := res[l.retryOf]
			if !r.Retry || r.Seq != l.seq || r.Status != o.Status || r.Commit != o.Commit || r.Version != o.Version || r.Error != o.Error {
				t.Errorf("%s: result %+v, want a retry copy of %+v with seq %d", where, r, o, l.seq)
			}
		case l.status == journal.StatusRejected:
			if r.Status != journal.StatusRejected || r.Retry || r.Seq != l.seq || r.Error == "" {
				t.Errorf("%s: result %+v, want rejected with seq %d and an error", where, r, l.seq)
			}
			if l.seq == 0 && (r.Segment != journal.SegmentName(l.seg) || r.Offset == nil || *r.Offset != l.off) {
				t.Errorf("%s: result %+v, want rejected at segment %s offset %d", where, r, journal.SegmentName(l.seg), l.off)
			}
		default:
			if r.Status != journal.StatusApplied || r.Retry || r.Seq != l.seq || r.File != l.intent.File {
				t.Errorf("%s: result %+v, want applied with seq %d to %s", where, r, l.seq, l.intent.File)
			}
		}
	}
}

// tornAgent is one agent of the test: its journal is one corruption case.
type tornAgent struct {
	name string
	doc  string // the document its records merge into
	// segs is the journal as written. Only the newest segment changes
	// afterwards (the agent appends to it, journal.Writer cuts its torn
	// tail), so checkTorn reads that one again; the older ones are
	// remembered, as the watcher deletes them once processed (G7).
	segs []tornSeg
	res  []journal.Result
	// lines and tail are the oracle's view of the journal as it is now.
	lines []tornLine
	tail  int64
}

// readSegments returns an agent's journal segments as they are on disk.
func readSegments(tb testing.TB, folder string) []tornSeg {
	tb.Helper()
	firsts, err := journal.ListSegments(folder)
	if err != nil {
		tb.Fatal(err)
	}
	var segs []tornSeg
	for _, f := range firsts {
		data, err := os.ReadFile(filepath.Join(folder, journal.SegmentName(f)))
		if err != nil {
			tb.Fatal(err)
		}
		segs = append(segs, tornSeg{f, data})
	}
	return segs
}

// writeSegments writes a journal as it would be found on disk.
func writeSegments(tb testing.TB, dir, agent string, segs []tornSeg) {
	tb.Helper()
	folder := filepath.Join(dir, "journal", agent)
	if err := os.MkdirAll(folder, 0o755); err != nil {
		tb.Fatal(err)
	}
	for _, s := range segs {
		if err := os.WriteFile(filepath.Join(folder, journal.SegmentName(s.first)), s.data, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// checkTorn reads every agent's results and journal, checks each agent
// against the oracle, then checks the documents: they must hold exactly the
// applied lines, applied in commit order, and nothing else may exist.
func checkTorn(t *testing.T, dir string, agents []*tornAgent) {
	t.Helper()
	st, err := ReadStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]AgentStatus{}
	for _, as := range st.Agents {
		status[as.Agent] = as
	}
	type applied struct {
		agent  string
		result journal.Result
		intent journal.Intent
	}
	var all []applied
	var commits []uint64
	for _, ag := range agents {
		ag.res = readResults(t, dir, ag.name)
		newest := &ag.segs[len(ag.segs)-1]
		data, err := os.ReadFile(filepath.Join(dir, "journal", ag.name, journal.SegmentName(newest.first)))
		if err != nil {
			t.Fatalf("%s: the newest journal segment: %v", ag.name, err)
		}
		newest.data = data
		ag.lines, ag.tail = tornOracle(ag.segs)
		checkTornResults(t, ag.name, ag.res, ag.lines)
		if as := status[ag.name]; as.Backlog != 0 || as.TornTail != ag.tail {
			t.Errorf("%s: status shows backlog %d and a torn tail of %d bytes, want 0 and %d (an unfinished line is waited for)", ag.name, as.Backlog, as.TornTail, ag.tail)
		}
		for i, r := range ag.res {
			if !r.Retry {
				commits = append(commits, r.Commit)
			}
			if i < len(ag.lines) && ag.lines[i].status == journal.StatusApplied && r.Status == journal.StatusApplied {
				all = append(all, applied{ag.name, r, ag.lines[i].intent})
			}
		}
	}
	slices.Sort(commits)
	for i, c := range commits {
		if c != uint64(i+1) {
			t.Fatalf("commit numbers of the original results are not 1..%d, each once: %d at position %d", len(commits), c, i)
		}
	}
	// Apply what the results say was applied, in commit order, to empty
	// documents: the files must be exactly that.
	slices.SortFunc(all, func(a, b applied) int { return cmp.Compare(a.result.Commit, b.result.Commit) })
	docs := map[string]*Doc{}
	versions := map[string]uint64{}
	for _, a := range all {
		d := docs[a.intent.File]
		if d == nil {
			d = &Doc{}
			docs[a.intent.File] = d
		}
		if err := applyIntent(d, a.intent); err != nil {
			t.Fatalf("%s seq %d: applied by the watcher, but does not apply: %v", a.agent, a.result.Seq, err)
		}
		versions[a.intent.File]++
		if got, want := a.result.Version, versions[a.intent.File]; got != want {
			t.Errorf("%s seq %d: applied at version %d of %s, want %d", a.agent, a.result.Seq, got, a.intent.File, want)
		}
	}
	for name, d := range docs {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if want := d.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Errorf("%s on disk differs from its applied records in commit order:\n%s\nwant\n%s", name, got, want)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Type().IsRegular() && docs[e.Name()] == nil {
			t.Errorf("%s: a file no applied record created", e.Name())
		}
	}
}

// tornRecords returns n journal lines of agent, seqs 1..n, each merging the
// key "<agent>/<seq>" into doc.
func tornRecords(agent, doc string, n int) [][]byte {
	var out [][]byte
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Appendf(nil, `{"seq":%d,"file":%q,"merge":{"%s/%d":%d}}`+"\n", i, doc, agent, i, i))
	}
	return out
}

// docKeys returns the members of an object document as JSON texts.
func docKeys(tb testing.TB, dir, doc string) map[string]string {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(dir, doc))
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		tb.Fatalf("%s: %v", doc, err)
	}
	out := map[string]string{}
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

// TestApplier_TornJournals damages journals the ways crashes, power losses,
// bad sectors and careless clients do, one agent per case, and checks line by
// line against tornOracle: nothing is applied that its line does not say; an
// unfinished line is neither applied nor rejected but waited for; a damaged
// complete line is rejected at its offset (or, when its seq is still
// readable, with its seq, or answered as a retry of that seq); the agent's
// later records still apply; and the documents hold exactly the applied
// records, in commit order. Then each agent goes on (a raw client finishing
// its line, or journal.Writer cutting the torn tail and appending), and the
// same checks hold, and Verify replays the lot.
//
// Cases: the fixtures in testdata/torn (see its README), a journal cut at
// every byte offset, each 512-byte sector of a journal zeroed (and one padded
// with zeros), and every byte of a journal's last two records flipped by
// three masks. All cases share one state directory, one agent each, so that
// one watcher decides them together, as it would in life.
func TestApplier_TornJournals(t *testing.T) {
	dir := t.TempDir()
	var agents []*tornAgent
	add := func(name, doc string, segs []tornSeg) *tornAgent {
		ag := &tornAgent{name: name, doc: doc, segs: segs}
		writeSegments(t, dir, name, segs)
		agents = append(agents, ag)
		return ag
	}

	// Fixtures, with what each must give besides the oracle's checks.
	fixtures := []struct {
		name       string
		applied    []uint64 // seqs answered applied (not retries), in order
		rejectedAt []int64  // offsets of lines rejected without a seq
		retries    []uint64 // seqs answered with a retry copy
		tail       int64    // bytes waited for
		keys       map[string]string
	}{
		{name: "nul-tail", applied: []uint64{1, 2, 3}, tail: 200},
		{name: "zeroed-sector", applied: []uint64{1, 2, 3, 4, 5, 6, 7, 8, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30}, rejectedAt: []int64{496}},
		{name: "joined-lines", applied: []uint64{1, 4}, rejectedAt: []int64{61}},
		{name: "torn-then-rotated", applied: []uint64{1, 2, 3, 4}, rejectedAt: []int64{132}},
		{name: "crlf-lines", applied: []uint64{1, 2, 3}},
		{name: "garbage-line", applied: []uint64{1, 2}, rejectedAt: []int64{61}},
		{name: "empty-line", applied: []uint64{1, 2}, rejectedAt: []int64{59}},
		// A flipped seq digit is not damage the format can see: lowered to a
		// processed seq, the line is answered as a retry of it; raised, the
		// line is applied under the higher seq and the record that really has
		// that seq becomes the retry (acknowledged, never applied itself).
		{name: "seq-flipped-down", applied: []uint64{1, 2, 4}, retries: []uint64{2},
			keys: map[string]string{"seq-flipped-down/3": ""}},
		{name: "seq-flipped-up", applied: []uint64{1, 3, 4}, retries: []uint64{3},
			keys: map[string]string{"seq-flipped-up/2": "2", "seq-flipped-up/3": ""}},
		// Nor is a flipped value: intent lines carry no checksum.
		{name: "value-flipped", applied: []uint64{1, 2, 3}, keys: map[string]string{"value-flipped/2": "3"}},
		{name: "uncut-torn-tail", applied: []uint64{1, 3}, rejectedAt: []int64{64}},
	}
	fixtureAgents := map[string]*tornAgent{}
	for _, fx := range fixtures {
		fixtureAgents[fx.name] = add(fx.name, "fixture.json", readSegments(t, filepath.Join("testdata", "torn", fx.name)))
	}

	// A journal of three records cut at every offset: what a crash of the
	// agent in the middle of its write leaves.
	cuts := map[*tornAgent]int{}
	cutLen := len(bytes.Join(tornRecords("cut-000", "cut.json", 3), nil))
	for c := 0; c <= cutLen; c++ {
		name := fmt.Sprintf("cut-%03d", c) // as long as "cut-000": the same offsets
		recs := bytes.Join(tornRecords(name, "cut.json", 3), nil)
		cuts[add(name, "cut.json", []tornSeg{{1, recs[:c]}})] = c
	}

	// Each 512-byte sector of a longer journal zeroed, and the journal
	// padded with zeros to the next sector (a size that grew before its data).
	zeroAgents := map[*tornAgent]bool{}
	for i := 0; ; i++ {
		name := fmt.Sprintf("zero-%d", i)
		data := bytes.Join(tornRecords(name, "zero.json", 30), nil)
		if 512*i >= len(data) {
			break
		}
		clear(data[512*i : min(512*i+512, len(data))])
		zeroAgents[add(name, "zero.json", []tornSeg{{1, data}})] = true
	}
	pad := bytes.Join(tornRecords("zero-pad", "zero.json", 30), nil)
	pad = append(pad, make([]byte, 512-len(pad)%512)...)
	zeroAgents[add("zero-pad", "zero.json", []tornSeg{{1, pad}})] = true

	// Every byte of the last two records of a three-record journal flipped
	// by each of three masks: a low bit (digits, brackets, "\n"), the case
	// bit (field names) and the high bit (invalid UTF-8).
	flipRecs := tornRecords("flip-000-01", "flip.json", 3)
	for off := len(flipRecs[0]); off < len(bytes.Join(flipRecs, nil)); off++ {
		for _, mask := range []byte{0x01, 0x20, 0x80} {
			name := fmt.Sprintf("flip-%03d-%02x", off, mask)
			data := bytes.Join(tornRecords(name, "flip.json", 3), nil)
			data[off] ^= mask
			add(name, "flip.json", []tornSeg{{1, data}})
		}
	}

	a := MustOpen(t, dir)
	drain(t, a)
	checkTorn(t, dir, agents)
	if t.Failed() {
		t.FailNow()
	}

	// What each fixture must give.
	for _, fx := range fixtures {
		ag := fixtureAgents[fx.name]
		var applied, retries []uint64
		var rejectedAt []int64
		for _, r := range ag.res {
			switch {
			case r.Retry:
				retries = append(retries, r.Seq)
			case r.Status == journal.StatusApplied:
				applied = append(applied, r.Seq)
			case r.Seq == 0:
				rejectedAt = append(rejectedAt, *r.Offset)
			}
		}
		if !slices.Equal(applied, fx.applied) || !slices.Equal(retries, fx.retries) || !slices.Equal(rejectedAt, fx.rejectedAt) || ag.tail != fx.tail {
			t.Errorf("%s: applied %v, retries %v, rejected at %v, waiting for %d bytes; want %v, %v, %v, %d",
				fx.name, applied, retries, rejectedAt, ag.tail, fx.applied, fx.retries, fx.rejectedAt, fx.tail)
		}
		keys := docKeys(t, dir, "fixture.json")
		for k, want := range fx.keys {
			if got := keys[k]; got != want {
				t.Errorf("%s: fixture.json %q = %q, want %q", fx.name, k, got, want)
			}
		}
	}
	// A cut never leaves a damaged complete line: the complete records are
	// applied and the rest is waited for.
	for ag, c := range cuts {
		recs := tornRecords(ag.name, "cut.json", 3)
		wantLines := bytes.Count(bytes.Join(recs, nil)[:c], []byte("\n"))
		wantTail := int64(c - len(bytes.Join(recs[:wantLines], nil)))
		if got := len(ag.res); got != wantLines || ag.tail != wantTail {
			t.Errorf("%s: %d results, waiting for %d bytes; want %d results, waiting for %d bytes", ag.name, got, ag.tail, wantLines, wantTail)
		}
		for _, r := range ag.res {
			if r.Status != journal.StatusApplied {
				t.Errorf("%s: %+v, want applied", ag.name, r)
			}
		}
	}
	// Zeroed sectors: every record untouched by the zeros is applied.
	for ag := range zeroAgents {
		applied := map[uint64]bool{}
		for _, r := range ag.res {
			if r.Status == journal.StatusApplied {
				applied[r.Seq] = true
			}
		}
		data := ag.segs[0].data
		for i, rec := range tornRecords(ag.name, "zero.json", 30) {
			if bytes.Contains(data, rec) && !applied[uint64(i+1)] {
				t.Errorf("%s: intact record %d was not applied", ag.name, i+1)
			}
		}
	}
	// Count the damaged lines that are still valid intents: the format has
	// no checksum, so those apply as written.
	silent := 0
	for _, ag := range agents {
		if !strings.HasPrefix(ag.name, "flip-") {
			continue
		}
		recs := tornRecords(ag.name, "flip.json", 3)
		for _, l := range ag.lines {
			if l.status == journal.StatusApplied && !slices.ContainsFunc(recs, func(rec []byte) bool {
				in, _, _ := journal.ParseIntent(rec)
				return in.Seq == l.intent.Seq && bytes.Equal(in.Merge, l.intent.Merge) && in.File == l.intent.File
			}) {
				silent++
			}
		}
	}
	t.Logf("%d cases; %d flipped bytes left a line that is still a valid intent and was applied as written", len(agents), silent)

	// Each agent goes on. A raw client finishes the line it was writing
	// (half of the cuts); the other cut agents, and every agent that left an
	// unfinished line, reopen their journal with journal.Writer, which cuts
	// the torn tail, and append: the cut agents resend the records they
	// lost, the others one more record. The rest append one more record as
	// a raw client would, after the highest seq in their journal.
	after := map[*tornAgent]uint64{}
	for _, ag := range agents {
		c, isCut := cuts[ag]
		if isCut && c%2 == 0 {
			recs := bytes.Join(tornRecords(ag.name, "cut.json", 3), nil)
			appendRaw(t, dir, ag.name, string(recs[c:]))
			continue
		}
		if !isCut && ag.tail == 0 && len(ag.segs) == 1 {
			var last uint64
			for _, l := range ag.lines {
				last = max(last, l.seq)
			}
			after[ag] = last + 1
			appendRaw(t, dir, ag.name, intentLine(last+1, ag.doc, fmt.Sprintf(`"merge":{"%s/after":true}`, ag.name)))
			continue
		}
		w, err := journal.OpenWriter(dir, ag.name)
		if err != nil {
			t.Fatalf("%s: OpenWriter: %v", ag.name, err)
		}
		if isCut {
			for i := len(ag.res); i < 3; i++ {
				if _, err := w.Append(journal.Intent{File: "cut.json", Merge: json.RawMessage(fmt.Sprintf(`{"%s/%d":%d}`, ag.name, i+1, i+1))}); err != nil {
					t.Fatalf("%s: Append: %v", ag.name, err)
				}
			}
		} else {
			in, err := w.Append(journal.Intent{File: ag.doc, Merge: json.RawMessage(fmt.Sprintf(`{"%s/after":true}`, ag.name))})
			if err != nil {
				t.Fatalf("%s: Append: %v", ag.name, err)
			}
			after[ag] = in.Seq
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	drain(t, a)
	checkTorn(t, dir, agents)
	for _, ag := range agents {
		if ag.tail != 0 {
			t.Errorf("%s: still waiting for %d bytes after the agent went on", ag.name, ag.tail)
		}
		if seq, ok := after[ag]; ok {
			if r := ag.res[len(ag.res)-1]; r.Seq != seq || r.Status != journal.StatusApplied {
				t.Errorf("%s: the record appended after the damage got %+v, want applied with seq %d", ag.name, r, seq)
			}
		}
	}
	cutKeys := docKeys(t, dir, "cut.json")
	for ag := range cuts {
		if len(ag.res) != 3 {
			t.Errorf("%s: %d results after going on, want 3: %+v", ag.name, len(ag.res), ag.res)
		}
		for i, r := range ag.res {
			if r.Status != journal.StatusApplied || r.Retry {
				t.Errorf("%s: %+v, want applied", ag.name, r)
			}
			if got, want := cutKeys[fmt.Sprintf("%s/%d", ag.name, i+1)], fmt.Sprint(i+1); got != want {
				t.Errorf("%s: record %d is %q in cut.json, want %q (each record applied once)", ag.name, i+1, got, want)
			}
		}
	}
	a.Close()
	mustVerify(t, dir)
}
