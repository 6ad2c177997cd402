package replay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stateward/stateward/journal"
)

// MustOpen returns an open Applier on dir, closed at the end of the test.
func MustOpen(tb testing.TB, dir string) *Applier {
	tb.Helper()
	a := NewApplier(dir, nil)
	if err := a.Open(); err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { a.Close() })
	return a
}

// appendRaw appends text to an agent's first journal segment, as a client
// in another language would.
func appendRaw(tb testing.TB, dir, agent, text string) {
	tb.Helper()
	folder := filepath.Join(dir, "journal", agent)
	if err := os.MkdirAll(folder, 0o755); err != nil {
		tb.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(folder, journal.SegmentName(1)), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		tb.Fatal(err)
	}
}

// intentLine returns a journal line.
func intentLine(seq uint64, file, extra string) string {
	return fmt.Sprintf(`{"seq":%d,"file":%q,%s}`+"\n", seq, file, extra)
}

// drain steps until nothing is ready and returns the lines processed.
func drain(tb testing.TB, a *Applier) int {
	tb.Helper()
	total := 0
	for range 10_000 {
		n, err := a.Step(tb.Context())
		if err != nil {
			tb.Fatalf("Step: %v", err)
		}
		if n == 0 {
			return total
		}
		total += n
	}
	tb.Fatal("Step never ran out of work")
	return total
}

// readResults returns every result line of an agent, in file order.
func readResults(tb testing.TB, dir, agent string) []journal.Result {
	tb.Helper()
	folder := filepath.Join(dir, "results", agent)
	segs, err := journal.ListSegments(folder)
	if err != nil {
		tb.Fatal(err)
	}
	var out []journal.Result
	for _, s := range segs {
		data, err := os.ReadFile(filepath.Join(folder, journal.SegmentName(s)))
		if err != nil {
			tb.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			r, err := journal.ParseResult(sc.Bytes())
			if err != nil {
				tb.Fatalf("results of %s: %v", agent, err)
			}
			out = append(out, r)
		}
		if len(data) > 0 && data[len(data)-1] != '\n' {
			tb.Fatalf("results of %s end in a partial line", agent)
		}
	}
	return out
}

// readJSON reads a document from disk as generic JSON.
func readJSON(tb testing.TB, dir, name string) any {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		tb.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		tb.Fatalf("%s is not valid JSON: %v", name, err)
	}
	return v
}

// mustVerify runs Verify and fails the test on any problem.
func mustVerify(tb testing.TB, dir string) *VerifyReport {
	tb.Helper()
	rep, err := Verify(dir, "")
	if err != nil {
		tb.Fatalf("Verify: %v", err)
	}
	if len(rep.Problems) > 0 {
		tb.Fatalf("Verify found problems:\n%s", strings.Join(rep.Problems, "\n"))
	}
	return rep
}

func TestApplier_Step(t *testing.T) {
	dir := t.TempDir()
	appendRaw(t, dir, "a",
		intentLine(1, "tasks.json", `"if_version":0,"patch":[{"op":"add","path":"","value":{"tasks":{"t1":{"status":"open"}}}}]`)+
			intentLine(2, "tasks.json", `"patch":[{"op":"test","path":"/tasks/t1/status","value":"open"},{"op":"replace","path":"/tasks/t1/status","value":"claimed"}]`)+
			intentLine(3, "tasks.json", `"patch":[{"op":"test","path":"/tasks/t1/status","value":"open"},{"op":"replace","path":"/tasks/t1/status","value":"mine"}]`)+
			intentLine(4, "tasks.json", `"if_version":1,"merge":{"x":1}`)+
			intentLine(5, "tasks.json", `"patch":[{"op":"replace","path":"/nope/deeper","value":1}]`)+
			intentLine(6, "tasks.json", `"id":"k","merge":{"note":"hi"}`))
	a := MustOpen(t, dir)
	if got, want := drain(t, a), 6; got != want {
		t.Fatalf("processed %d lines, want %d", got, want)
	}
	res := readResults(t, dir, "a")
	want := []struct {
		status  string
		version uint64
	}{
		{journal.StatusApplied, 1},
		{journal.StatusApplied, 2},
		{journal.StatusConflict, 2},
		{journal.StatusConflict, 2},
		{journal.StatusRejected, 2},
		{journal.StatusApplied, 3},
	}
	if got := len(res); got != len(want) {
		t.Fatalf("%d results, want %d", got, len(want))
	}
	for i, w := range want {
		r := res[i]
		if r.Seq != uint64(i+1) || r.Status != w.status || r.Version != w.version || r.Commit != uint64(i+1) || r.File != "tasks.json" {
			t.Errorf("result %d = %+v, want seq %d %s version %d commit %d", i, r, i+1, w.status, w.version, i+1)
		}
		if (r.Status != journal.StatusApplied) != (r.Error != "") {
			t.Errorf("result %d: status %s with error %q", i, r.Status, r.Error)
		}
	}
	if got, want := res[5].ID, "k"; got != want {
		t.Errorf("result 6 id = %q, want %q", got, want)
	}
	doc := readJSON(t, dir, "tasks.json")
	wantDoc := map[string]any{"tasks": map[string]any{"t1": map[string]any{"status": "claimed"}}, "note": "hi"}
	if fmt.Sprint(doc) != fmt.Sprint(wantDoc) {
		t.Errorf("tasks.json = %v, want %v", doc, wantDoc)
	}
	d, err := journal.ReadDocument(t.Context(), dir, "tasks.json")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.Version, uint64(3); got != want {
		t.Errorf("ReadDocument version = %d, want %d", got, want)
	}
	a.Close()
	mustVerify(t, dir)
}

func TestApplier_Retry(t *testing.T) {
	dir := t.TempDir()
	inc := `"patch":[{"op":"inc","path":"/n","value":1}]`
	appendRaw(t, dir, "a",
		intentLine(1, "c.json", `"patch":[{"op":"add","path":"","value":{"n":0}}]`)+
			intentLine(2, "c.json", `"id":"first",`+inc)+
			intentLine(2, "c.json", `"id":"first",`+inc)+ // retry by seq
			intentLine(3, "c.json", `"id":"first",`+inc)+ // retry by id, new seq
			intentLine(5, "c.json", inc)+ // a gap is allowed
			intentLine(4, "c.json", inc)) // behind, never processed: rejected
	a := MustOpen(t, dir)
	drain(t, a)
	if got, want := readJSON(t, dir, "c.json"), any(map[string]any{"n": 2.0}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("c.json = %v, want %v (each inc applied once)", got, want)
	}
	res := readResults(t, dir, "a")
	if got, want := len(res), 6; got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	orig := res[1]
	for i, r := range res[2:4] {
		if !r.Retry || r.Commit != orig.Commit || r.Version != orig.Version || r.Status != orig.Status {
			t.Errorf("retry %d = %+v, want a copy of %+v with retry", i, r, orig)
		}
	}
	if got, want := res[2].Seq, uint64(2); got != want {
		t.Errorf("retry by seq has seq %d, want %d", got, want)
	}
	if got, want := res[3].Seq, uint64(3); got != want {
		t.Errorf("retry by id has seq %d, want %d (the retry's own seq)", got, want)
	}
	if r := res[4]; r.Seq != 5 || r.Status != journal.StatusApplied || r.Commit != orig.Commit+1 {
		t.Errorf("seq 5 = %+v, want applied with commit %d (retries take no commit number)", r, orig.Commit+1)
	}
	if r := res[5]; r.Seq != 4 || r.Status != journal.StatusRejected || !strings.Contains(r.Error, "seq 4 was never used by this agent") {
		t.Errorf("seq 4 after 5 = %+v, want rejected: never used (a gap below the last seq)", r)
	}

	// After a restart the retention index is rebuilt from the commit log.
	a.Close()
	appendRaw(t, dir, "a", intentLine(6, "c.json", `"id":"first",`+inc))
	a = MustOpen(t, dir)
	drain(t, a)
	res = readResults(t, dir, "a")
	if r := res[len(res)-1]; !r.Retry || r.Commit != orig.Commit {
		t.Errorf("retry by id after restart = %+v, want a copy of commit %d", r, orig.Commit)
	}
	a.Close()
	mustVerify(t, dir)
}

func TestApplier_BadLines(t *testing.T) {
	dir := t.TempDir()
	good := intentLine(1, "d.json", `"merge":{"a":1}`)
	garbage := "this is not json\n"
	appendRaw(t, dir, "a", good+garbage+intentLine(2, "../evil.json", `"merge":{}`)+intentLine(3, "d.json", `"merge":{"b":2}`)+`{"seq":4,"file":"d.json","mer`)
	a := MustOpen(t, dir)
	a.MaxLine = 200
	if got, want := drain(t, a), 4; got != want {
		t.Fatalf("processed %d lines, want %d (the torn tail waits)", got, want)
	}
	res := readResults(t, dir, "a")
	if got, want := len(res), 4; got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	if r := res[1]; r.Seq != 0 || r.Status != journal.StatusRejected || r.Segment != journal.SegmentName(1) || r.Offset == nil || *r.Offset != int64(len(good)) {
		t.Errorf("garbage line result = %+v, want rejected without seq at offset %d", r, len(good))
	}
	if r := res[2]; r.Seq != 2 || r.Status != journal.StatusRejected || !strings.Contains(r.Error, "file") {
		t.Errorf("bad name result = %+v, want rejected naming the file", r)
	}
	if r := res[3]; r.Seq != 3 || r.Status != journal.StatusApplied || r.Version != 2 {
		t.Errorf("good line after bad ones = %+v, want applied at version 2", r)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "evil.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file outside the state directory was created: %v", err)
	}
	// Completing the torn line makes it whole; an overlong line is rejected.
	appendRaw(t, dir, "a", `ge":{"c":3}}`+"\n"+intentLine(5, "d.json", `"merge":{"pad":"`+strings.Repeat("x", 300)+`"}`)+intentLine(6, "d.json", `"merge":{"e":5}`))
	if got, want := drain(t, a), 3; got != want {
		t.Fatalf("processed %d lines, want %d", got, want)
	}
	res = readResults(t, dir, "a")
	if r := res[4]; r.Seq != 4 || r.Status != journal.StatusApplied {
		t.Errorf("completed line = %+v, want applied", r)
	}
	if r := res[5]; r.Status != journal.StatusRejected || !strings.Contains(r.Error, "too long") {
		t.Errorf("overlong line = %+v, want rejected as too long", r)
	}
	if r := res[6]; r.Seq != 6 || r.Status != journal.StatusApplied {
		t.Errorf("line after an overlong one = %+v, want applied", r)
	}
	a.Close()
	mustVerify(t, dir)
}

func TestApplier_Fairness(t *testing.T) {
	dir := t.TempDir()
	var flood strings.Builder
	for i := 1; i <= 3000; i++ {
		flood.WriteString(intentLine(uint64(i), "flood.json", `"merge":{"n":1}`))
	}
	appendRaw(t, dir, "big", flood.String())
	appendRaw(t, dir, "small", intentLine(1, "small.json", `"merge":{"ok":true}`))
	a := MustOpen(t, dir)
	a.MaxAgentBatch = 100
	if _, err := a.Step(t.Context()); err != nil {
		t.Fatal(err)
	}
	res := readResults(t, dir, "small")
	if len(res) != 1 || res[0].Status != journal.StatusApplied {
		t.Fatalf("small agent results after one batch = %+v, want its intent applied", res)
	}
	if got, max := res[0].Commit, uint64(101); got > max {
		t.Errorf("small agent's intent got commit %d, want <= %d: a flooding agent took more than its share", got, max)
	}
	if got, want := len(readResults(t, dir, "big")), 100; got != want {
		t.Errorf("flooding agent got %d results in one batch, want %d", got, want)
	}
}

func TestApplier_ExternalChanges(t *testing.T) {
	dir := t.TempDir()
	appendRaw(t, dir, "a", intentLine(1, "s.json", `"merge":{"a":1}`)+intentLine(1, "o.json", `"merge":{"o":1}`)[0:0])
	appendRaw(t, dir, "b", intentLine(1, "o.json", `"merge":{"o":1}`))
	a := MustOpen(t, dir)
	drain(t, a)

	// An edit by someone else is adopted as a new version.
	if err := os.WriteFile(filepath.Join(dir, "s.json"), []byte(`{"a":1,"hand":"edit"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	appendRaw(t, dir, "a", intentLine(2, "s.json", `"if_version":2,"merge":{"b":2}`))
	drain(t, a)
	res := readResults(t, dir, "a")
	if r := res[len(res)-1]; r.Status != journal.StatusApplied || r.Version != 3 {
		t.Fatalf("intent after an external edit = %+v, want applied at version 3 (edit adopted as 2)", r)
	}
	if got := readJSON(t, dir, "s.json").(map[string]any)["hand"]; got != "edit" {
		t.Errorf("the external edit was overwritten: hand = %v", got)
	}

	// A broken document is never overwritten; its intents are rejected,
	// other documents go on, and a repair is adopted.
	broken := []byte(`{"a":1,`)
	if err := os.WriteFile(filepath.Join(dir, "s.json"), broken, 0o644); err != nil {
		t.Fatal(err)
	}
	appendRaw(t, dir, "a", intentLine(3, "s.json", `"merge":{"c":3}`))
	appendRaw(t, dir, "b", intentLine(2, "o.json", `"merge":{"p":2}`))
	drain(t, a)
	if r := readResults(t, dir, "a"); r[len(r)-1].Status != journal.StatusRejected || !strings.Contains(r[len(r)-1].Error, "s.json") {
		t.Errorf("intent on a broken document = %+v, want rejected naming it", r[len(r)-1])
	}
	if r := readResults(t, dir, "b"); r[len(r)-1].Status != journal.StatusApplied {
		t.Errorf("intent on another document = %+v, want applied", r[len(r)-1])
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "s.json")); !bytes.Equal(got, broken) {
		t.Errorf("broken document was rewritten to %q", got)
	}
	st, err := ReadStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ds := range st.Docs {
		found = found || (ds.File == "s.json" && strings.Contains(ds.State, "unusable"))
	}
	if !found {
		t.Errorf("status does not report s.json as unusable: %+v", st.Docs)
	}
	if err := os.WriteFile(filepath.Join(dir, "s.json"), []byte(`{"fixed":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	appendRaw(t, dir, "a", intentLine(4, "s.json", `"merge":{"d":4}`))
	drain(t, a)
	if r := readResults(t, dir, "a"); r[len(r)-1].Status != journal.StatusApplied {
		t.Errorf("intent after repair = %+v, want applied", r[len(r)-1])
	}
	a.Close()
	mustVerify(t, dir)
}

func TestApplier_Locked(t *testing.T) {
	dir := t.TempDir()
	MustOpen(t, dir)
	b := NewApplier(dir, nil)
	err := b.Open()
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if want := fmt.Sprint(os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("second Open error %q does not name pid %s", err, want)
	}
	if _, err := Verify(dir, ""); !errors.Is(err, ErrLocked) {
		t.Errorf("Verify while a watcher runs: %v, want ErrLocked", err)
	}
}

// crashed is the panic value of a simulated crash.
type crashed struct{ point string }

// TestApplier_CrashPoints stops the commit path at each named point, as a
// crash would (nothing after the point runs), then recovers and checks that
// every intent was processed exactly once and the results agree.
func TestApplier_CrashPoints(t *testing.T) {
	points := []string{
		"before-input-sync", "before-commit-write", "after-commit-write", "after-commit-sync",
		"before-doc-write:a.json", "after-doc-rename:a.json", "before-doc-write:b.json", "after-doc-rename:b.json",
		"before-doc-write:c.json", "after-doc-rename:c.json",
		"after-dir-sync", "after-versions", "after-results:x", "after-results:y",
	}
	for _, point := range points {
		t.Run(strings.ReplaceAll(point, ":", "_"), func(t *testing.T) {
			dir := t.TempDir()
			const inc = `"patch":[{"op":"inc","path":"/n","value":1}]`
			appendRaw(t, dir, "x", intentLine(1, "a.json", `"patch":[{"op":"add","path":"","value":{"n":0}}]`))
			appendRaw(t, dir, "y", intentLine(1, "b.json", `"patch":[{"op":"add","path":"","value":{"n":0}}]`))
			a := MustOpen(t, dir)
			drain(t, a)
			for i := uint64(2); i <= 4; i++ {
				appendRaw(t, dir, "x", intentLine(2*i, "a.json", inc)+intentLine(2*i+1, "b.json", inc))
				appendRaw(t, dir, "y", intentLine(i, "b.json", inc))
			}
			appendRaw(t, dir, "x", intentLine(10, "c.json", `"patch":[{"op":"add","path":"","value":{"n":1}}]`))
			a.hook = func(p string) {
				if p == point {
					panic(crashed{p})
				}
			}
			func() {
				defer func() {
					if r := recover(); r == nil {
						t.Fatalf("crash point %s was never reached", point)
					} else if _, ok := r.(crashed); !ok {
						panic(r)
					}
				}()
				drain(t, a)
			}()
			a.Close()

			// Results written before the crash are what an agent may have
			// seen: recovery must not contradict or repeat them.
			seen := map[string][]journal.Result{"x": readResults(t, dir, "x"), "y": readResults(t, dir, "y")}

			b := MustOpen(t, dir)
			drain(t, b)
			b.Close()
			for doc, want := range map[string]float64{"a.json": 3, "b.json": 6, "c.json": 1} {
				if got := readJSON(t, dir, doc).(map[string]any)["n"]; got != want {
					t.Errorf("%s n = %v, want %v (each inc exactly once)", doc, got, want)
				}
			}
			for ag, before := range seen {
				after := readResults(t, dir, ag)
				for i, r := range before {
					if i >= len(after) || fmt.Sprint(after[i]) != fmt.Sprint(r) {
						t.Fatalf("agent %s result %d was %+v before recovery, %+v after", ag, i, r, after)
					}
				}
				var last uint64
				for _, r := range after {
					if r.Seq <= last {
						t.Fatalf("agent %s results out of order or repeated: %+v", ag, after)
					}
					last = r.Seq
				}
			}
			if got, want := len(readResults(t, dir, "x")), 8; got != want {
				t.Errorf("agent x has %d results, want %d", got, want)
			}
			if got, want := len(readResults(t, dir, "y")), 4; got != want {
				t.Errorf("agent y has %d results, want %d", got, want)
			}
			mustVerify(t, dir)
		})
	}
}

func TestApplier_RepairsResults(t *testing.T) {
	dir := t.TempDir()
	for i := uint64(1); i <= 5; i++ {
		appendRaw(t, dir, "a", intentLine(i, "r.json", fmt.Sprintf(`"merge":{"k%d":%d}`, i, i)))
	}
	a := MustOpen(t, dir)
	a.ResultsSyncInterval = 1 << 62 // results never fsynced: all re-derivable
	drain(t, a)
	a.Close()
	p := filepath.Join(dir, "results", "a", journal.SegmentName(1))
	full, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{0, 1, len(full) / 2, len(full) - 1} {
		// A lost tail, as after a power failure before the results fsync,
		// then garbage where the lost bytes were.
		for _, tail := range []string{"", "\x00\x00\x00"} {
			if err := os.WriteFile(p, append(full[:cut:cut], tail...), 0o644); err != nil {
				t.Fatal(err)
			}
			b := MustOpen(t, dir)
			b.Close()
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, full) {
				t.Errorf("cut at %d + %q: results after recovery\n%s\nwant\n%s", cut, tail, got, full)
			}
		}
	}
}

func TestApplier_CommitLogDamage(t *testing.T) {
	dir := t.TempDir()
	appendRaw(t, dir, "a", intentLine(1, "l.json", `"merge":{"a":1}`))
	a := MustOpen(t, dir)
	drain(t, a)
	appendRaw(t, dir, "a", intentLine(2, "l.json", `"merge":{"b":2}`))
	drain(t, a)
	a.Close()
	logp := filepath.Join(dir, logDir, journal.SegmentName(1))
	good, err := os.ReadFile(logp)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("TornTail", func(t *testing.T) {
		if err := os.WriteFile(logp, append(bytes.Clone(good), `0000abcd {"batch":3,"com`...), 0o644); err != nil {
			t.Fatal(err)
		}
		b := MustOpen(t, dir)
		b.Close()
		if got, _ := os.ReadFile(logp); !bytes.Equal(got, good) {
			t.Errorf("torn tail not cut: log is %d bytes, want %d", len(got), len(good))
		}
	})
	t.Run("Corrupt", func(t *testing.T) {
		bad := bytes.Clone(good)
		bad[20] ^= 0x55 // inside the first record, with a good one after it
		if err := os.WriteFile(logp, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		b := NewApplier(dir, nil)
		if err := b.Open(); !errors.Is(err, ErrCorruptLog) {
			b.Close()
			t.Fatalf("Open on a corrupt log: %v, want ErrCorruptLog", err)
		}
	})
}

func TestVerify_FindsDifferences(t *testing.T) {
	dir := t.TempDir()
	appendRaw(t, dir, "a", intentLine(1, "v.json", `"merge":{"a":1}`))
	a := MustOpen(t, dir)
	drain(t, a)
	a.Close()
	mustVerify(t, dir)
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Verify(dir, out); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(dir, "v.json"))
	if got, err := os.ReadFile(filepath.Join(out, "v.json")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("--out copy = %q, %v; want %q", got, err, want)
	}
	if err := os.WriteFile(filepath.Join(dir, "v.json"), []byte(`{"a":2}`), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) == 0 || !strings.Contains(rep.Problems[0], "v.json") {
		t.Errorf("Verify after tampering: %q, want a difference naming v.json", rep.Problems)
	}

	// A journal line rewritten after it was processed no longer matches
	// the copy in the log.
	seg := filepath.Join(dir, "journal", "a", journal.SegmentName(1))
	line, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seg, bytes.Replace(line, []byte(`"a":1`), []byte(`"a":7`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err = Verify(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(rep.Problems, "\n"), "differs from the logged intent") {
		t.Errorf("Verify after rewriting a journal line: %q, want it to name the line", rep.Problems)
	}
}

// TestLock_DeletedFile deletes the pid file under a running Applier: a
// second one still cannot take the directory (the lock is on the folder
// itself), and the first writes its pid again at its next commit.
func TestLock_DeletedFile(t *testing.T) {
	dir := t.TempDir()
	a := MustOpen(t, dir)
	if err := os.Remove(filepath.Join(dir, lockName)); err != nil {
		t.Fatal(err)
	}
	if b := NewApplier(dir, nil); !errors.Is(b.Open(), ErrLocked) {
		b.Close()
		t.Fatal("a second Applier opened the directory after its lock file was deleted")
	}
	if _, err := Verify(dir, ""); !errors.Is(err, ErrLocked) {
		t.Fatalf("Verify beside a running Applier: %v, want ErrLocked", err)
	}
	appendRaw(t, dir, "a", intentLine(1, "d.json", `"merge":{"k":1}`))
	drain(t, a)
	b, err := os.ReadFile(filepath.Join(dir, lockName))
	if got, want := strings.TrimSpace(string(b)), strconv.Itoa(os.Getpid()); err != nil || got != want {
		t.Fatalf("pid file after a commit: %q, %v; want %s", got, err, want)
	}
}

// TestLock_FolderReplaced moves the state directory away from under a
// running Applier and puts a new one at its path: the Applier must stop
// before its next commit (ErrLockLost), since a second watcher could now
// take the path.
func TestLock_FolderReplaced(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	a := MustOpen(t, dir)
	if err := os.Rename(dir, dir+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	appendRaw(t, dir+".old", "a", intentLine(1, "d.json", `"merge":{"k":1}`))
	_, err := a.Step(t.Context())
	if !errors.Is(err, ErrLockLost) || !errors.Is(err, ErrFailed) {
		t.Fatalf("Step after the folder was replaced: %v, want ErrFailed wrapping ErrLockLost", err)
	}
	if res, _ := os.ReadDir(filepath.Join(dir+".old", "results")); len(res) != 0 {
		t.Fatalf("results written after the lock was lost: %v", res)
	}
	b := MustOpen(t, dir) // the folder now at the path is free
	b.Close()
}

// TestStatus_NeverLocks checks that ReadStatus tells a running watcher
// from a stopped one without taking the lock (so it never makes a watcher
// that starts at that moment fail) nor writing the pid file.
func TestStatus_NeverLocks(t *testing.T) {
	dir := t.TempDir()
	a := MustOpen(t, dir)
	st, err := ReadStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("running (pid %d)", os.Getpid()); st.Watcher != want {
		t.Fatalf("watcher %q, want %q", st.Watcher, want)
	}
	a.Close()
	pidFile := filepath.Join(dir, lockName)
	if err := os.WriteFile(pidFile, []byte("4242\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if st, err = ReadStatus(dir); err != nil || st.Watcher != "stopped" {
		t.Fatalf("watcher %q, %v; want stopped", st.Watcher, err)
	}
	if b, _ := os.ReadFile(pidFile); string(b) != "4242\n" {
		t.Fatalf("status rewrote the pid file: %q", b)
	}
	// While ReadStatus runs over and over, a watcher must open every time.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				ReadStatus(dir)
			}
		}
	}()
	for range 200 {
		lk, err := TryLock(dir)
		if err != nil {
			close(stop)
			<-done
			t.Fatalf("TryLock while status runs: %v", err)
		}
		lk.Unlock()
	}
	close(stop)
	<-done
}

// TestVerify_OutRefused checks the --out folder: it must be new or empty,
// outside the state directory, and not a link; a refusal wraps ErrBadOut
// and writes nothing anywhere. A file planted in the folder between the
// check and the write is never written through.
func TestVerify_OutRefused(t *testing.T) {
	dir := t.TempDir()
	appendRaw(t, dir, "a", intentLine(1, "d.json", `"merge":{"a":1}`))
	a := MustOpen(t, dir)
	drain(t, a)
	a.Close()
	live, _ := os.ReadFile(filepath.Join(dir, "d.json"))
	elsewhere := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(elsewhere, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	withLink := t.TempDir()
	mustSymlink(t, elsewhere, filepath.Join(withLink, "d.json"))
	nonEmpty := t.TempDir()
	if err := os.WriteFile(filepath.Join(nonEmpty, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	linkToEmpty := filepath.Join(t.TempDir(), "link")
	mustSymlink(t, t.TempDir(), linkToEmpty)
	linkToDir := filepath.Join(t.TempDir(), "link")
	mustSymlink(t, dir, linkToDir)
	for _, tc := range []struct{ name, out, why string }{
		{"StateDir", dir, "state directory"},
		{"StateDirDotted", dir + "/.", "state directory"},
		{"NewUnderStateDir", filepath.Join(dir, "sub", "out"), "state directory"},
		{"PrivateFolder", filepath.Join(dir, privateDir), "state directory"},
		{"LinkToStateDir", linkToDir, "symbolic link"},
		{"NewUnderLinkToStateDir", filepath.Join(linkToDir, "new"), "state directory"},
		{"HoldsLink", withLink, "not empty"},
		{"NotEmpty", nonEmpty, "not empty"},
		{"LinkToEmpty", linkToEmpty, "symbolic link"},
		{"File", elsewhere, "not a folder"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(dir, tc.out)
			if !errors.Is(err, ErrBadOut) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("Verify --out %s: %v, want ErrBadOut saying %q", tc.out, err, tc.why)
			}
		})
	}
	if b, _ := os.ReadFile(elsewhere); string(b) != "precious" {
		t.Errorf("the file outside was overwritten: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "d.json")); !bytes.Equal(b, live) {
		t.Errorf("the live document changed: %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "sub")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a folder was created in the state directory: %v", err)
	}
	for _, out := range []string{t.TempDir(), filepath.Join(t.TempDir(), "new", "deeper")} {
		if _, err := Verify(dir, out); err != nil {
			t.Fatalf("Verify --out %s (new or empty): %v", out, err)
		}
		if b, err := os.ReadFile(filepath.Join(out, "d.json")); err != nil || !bytes.Equal(b, live) {
			t.Fatalf("rebuilt d.json = %q, %v; want %q", b, err, live)
		}
	}
	// A link planted after the check: created exclusively, never followed.
	root, err := os.OpenRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := os.Symlink(elsewhere, filepath.Join(root.Name(), "d.json")); err != nil {
		t.Fatal(err)
	}
	if err := writeOut(root, "d.json", []byte("{}")); err == nil {
		t.Fatal("writeOut wrote over a planted link")
	}
	if b, _ := os.ReadFile(elsewhere); string(b) != "precious" {
		t.Errorf("the file outside was overwritten through a planted link: %q", b)
	}
}
