package replay

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stateward/stateward/journal"
)

// requestForget writes a forget request for agent, as `stateward forget`
// does, and returns the path of its answer.
func requestForget(tb testing.TB, dir, agent, nonce string) string {
	tb.Helper()
	req, ans := ForgetRequest(agent, nonce)
	if err := os.MkdirAll(filepath.Join(dir, forgetDir), 0o775); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, req), []byte("{}\n"), 0o664); err != nil {
		tb.Fatal(err)
	}
	return filepath.Join(dir, ans)
}

// readAnswer returns the answer to a forget request.
func readAnswer(tb testing.TB, path string) forgetAnswer {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("no answer: %v", err)
	}
	var a forgetAnswer
	if err := json.Unmarshal(data, &a); err != nil {
		tb.Fatalf("answer %q: %v", data, err)
	}
	return a
}

// segmentsOf returns the segments in a folder of dir.
func segmentsOf(tb testing.TB, dir, folder string) []uint64 {
	tb.Helper()
	segs, err := journal.ListSegments(filepath.Join(dir, folder))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		tb.Fatal(err)
	}
	return segs
}

// writeAs appends intents as agent through a journal.Writer and returns
// the seq of the last.
func writeAs(tb testing.TB, dir, agent string, ins ...journal.Intent) uint64 {
	tb.Helper()
	w, err := journal.OpenWriter(dir, agent)
	if err != nil {
		tb.Fatal(err)
	}
	defer w.Close()
	var seq uint64
	for _, in := range ins {
		rec, err := w.Append(in)
		if err != nil {
			tb.Fatal(err)
		}
		seq = rec.Seq
	}
	return seq
}

func incIntent(file string) journal.Intent {
	return journal.Intent{File: file, Patch: []byte(`[{"op":"inc","path":"/n","value":1}]`)}
}

func TestApplier_Forget(t *testing.T) {
	t.Run("NameStartsAfresh", func(t *testing.T) {
		dir := t.TempDir()
		a := MustOpen(t, dir)
		writeAs(t, dir, "a", journal.Intent{File: "c.json", Merge: []byte(`{"n":0}`), ID: "k1"}, incIntent("c.json"), incIntent("c.json"))
		drain(t, a)
		ans := requestForget(t, dir, "a", "0001")
		drain(t, a)
		if got := readAnswer(t, ans); got.Status != "forgotten" || got.Agent != "a" {
			t.Fatalf("answer %+v, want forgotten", got)
		}
		if _, err := os.Stat(strings.TrimSuffix(ans, ".done") + ".req"); !os.IsNotExist(err) {
			t.Errorf("request still there after the answer (%v)", err)
		}
		if segs := segmentsOf(t, dir, "journal/a"); len(segs) != 0 {
			t.Errorf("journal segments %v after forget, want none", segs)
		}
		if segs := segmentsOf(t, dir, "results/a"); len(segs) != 0 {
			t.Errorf("results segments %v after forget, want none", segs)
		}
		// A new writer starts at seq 1, with the old id: a new intent,
		// not a retry, and its result in a fresh results file.
		if seq := writeAs(t, dir, "a", journal.Intent{File: "c.json", Patch: []byte(`[{"op":"inc","path":"/n","value":10}]`), ID: "k1"}); seq != 1 {
			t.Fatalf("new writer's first seq %d, want 1", seq)
		}
		drain(t, a)
		res := readResults(t, dir, "a")
		if len(res) != 1 || res[0].Seq != 1 || res[0].Status != journal.StatusApplied || res[0].Retry {
			t.Fatalf("results after forget %+v, want one applied seq 1", res)
		}
		if got := readJSON(t, dir, "c.json").(map[string]any)["n"]; got != 12.0 {
			t.Errorf("n = %v, want 12", got)
		}
		// Recovery and checkpoints agree: a restart does not reread.
		a.Close()
		mustVerify(t, dir)
		b := MustOpen(t, dir)
		if got := drain(t, b); got != 0 {
			t.Errorf("a restart processed %d lines again", got)
		}
	})
	t.Run("RefusedWhileWriterOpen", func(t *testing.T) {
		dir := t.TempDir()
		a := MustOpen(t, dir)
		w, err := journal.OpenWriter(dir, "a")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := w.Append(incIntent("c.json")); err != nil {
			t.Fatal(err)
		}
		ans := requestForget(t, dir, "a", "0002")
		drain(t, a)
		if got := readAnswer(t, ans); got.Status != "refused" || !strings.Contains(got.Error, "locked") {
			t.Fatalf("answer %+v, want refused (locked)", got)
		}
		if len(readResults(t, dir, "a")) != 1 {
			t.Errorf("the open writer's line was not processed")
		}
		if segs := segmentsOf(t, dir, "journal/a"); len(segs) != 1 {
			t.Errorf("journal segments %v, want the one untouched", segs)
		}
	})
	t.Run("FoldersDeletedByHand", func(t *testing.T) {
		// The folders deleted behind the watcher's back, and a new writer
		// at seq 1: the agent is stopped with an error (never read from
		// the middle of a line, never a silent retry), until forgotten.
		var logs syncBuffer
		dir := t.TempDir()
		a := NewApplier(dir, newBufferLogger(&logs))
		if err := a.Open(); err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		pad := journal.Intent{File: "c.json", Merge: []byte(`{"pad":"` + strings.Repeat("x", 200) + `"}`)}
		writeAs(t, dir, "b", pad, pad, pad)
		drain(t, a)
		for _, f := range []string{"journal/b", "results/b"} {
			if err := os.RemoveAll(filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		writeAs(t, dir, "b", incIntent("d.json"))
		drain(t, a)
		writeAs(t, dir, "b", pad, pad, pad, incIntent("d.json")) // now past the old offset
		drain(t, a)
		if res := readResults(t, dir, "b"); len(res) != 0 {
			t.Fatalf("results of a restarted journal before forget: %+v", res)
		}
		if !strings.Contains(logs.String(), "stateward forget --agent b") {
			t.Errorf("no error telling to forget the agent:\n%s", logs.String())
		}
		var v versionsFile
		if err := json.Unmarshal(mustRead(t, filepath.Join(dir, journal.VersionsPath)), &v); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(v.Agents["b"].LastError, "forget") {
			t.Errorf("status last_error %q, want the forget hint", v.Agents["b"].LastError)
		}
		ans := requestForget(t, dir, "b", "0003")
		drain(t, a)
		if got := readAnswer(t, ans); got.Status != "forgotten" {
			t.Fatalf("answer %+v", got)
		}
		res := readResults(t, dir, "b")
		if len(res) != 5 || res[0].Seq != 1 || res[4].Seq != 5 || res[0].Retry {
			t.Fatalf("results after forget %+v, want seqs 1-5 of the new journal", res)
		}
		a.Close()
		mustVerify(t, dir)
	})
}

func TestApplier_ForgetCrash(t *testing.T) {
	points := []string{"after-commit-sync", "forget-results-deleted:a", "forget-journal-deleted:a", "forget-answered"}
	for _, point := range points {
		t.Run(strings.ReplaceAll(point, ":", "_"), func(t *testing.T) {
			dir := t.TempDir()
			a := MustOpen(t, dir)
			writeAs(t, dir, "a", journal.Intent{File: "c.json", Merge: []byte(`{"n":0}`)}, incIntent("c.json"))
			drain(t, a)
			ans := requestForget(t, dir, "a", "0004")
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
			a.Close() // the process died: its locks are gone

			b := MustOpen(t, dir)
			drain(t, b)
			if got := readAnswer(t, ans); got.Status != "forgotten" {
				t.Fatalf("answer %+v after recovery", got)
			}
			if segs := segmentsOf(t, dir, "journal/a"); len(segs) != 0 {
				t.Errorf("journal segments %v after recovery, want none", segs)
			}
			if segs := segmentsOf(t, dir, "results/a"); len(segs) != 0 {
				t.Errorf("results segments %v after recovery, want none", segs)
			}
			writeAs(t, dir, "a", incIntent("c.json"))
			drain(t, b)
			res := readResults(t, dir, "a")
			if len(res) != 1 || res[0].Seq != 1 || res[0].Retry {
				t.Fatalf("results %+v, want one new seq 1", res)
			}
			if got := readJSON(t, dir, "c.json").(map[string]any)["n"]; got != 2.0 {
				t.Errorf("n = %v, want 2 (nothing applied twice)", got)
			}
			b.Close()
			mustVerify(t, dir)
		})
	}
}

func mustRead(tb testing.TB, path string) []byte {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}
