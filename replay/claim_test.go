package replay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stateward/stateward/journal"
)

// claimApply applies patch to doc and returns the new document (compact
// JSON), the claimed pointer and the error.
func claimApply(tb testing.TB, doc, patch string) (string, string, error) {
	tb.Helper()
	d, err := ParseDoc([]byte(doc))
	if err != nil {
		tb.Fatalf("ParseDoc: %v", err)
	}
	d.MaxSize = 1 << 20 // tracks the size, which the engine must keep exact
	ops, err := DecodePatch([]byte(patch))
	if err != nil {
		return compact(tb, doc), "", err
	}
	err = d.Apply(ops)
	out := d.AppendJSON(nil)
	if got, want := d.Size(), int64(len(out)); got != want {
		tb.Fatalf("Size()=%d, want %d", got, want)
	}
	var buf bytes.Buffer
	if cerr := json.Compact(&buf, out); cerr != nil {
		tb.Fatalf("AppendJSON wrote invalid JSON: %v", cerr)
	}
	return buf.String(), d.Claimed(), err
}

func compact(tb testing.TB, s string) string {
	tb.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		tb.Fatalf("bad JSON %s: %v", s, err)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

func TestClaimNext(t *testing.T) {
	const objBoard = `{"tasks":{
		"t1":{"status":"done"},
		"t2":{"status":"open","priority":2,"blockedBy":["t1"]},
		"t3":{"status":"open","priority":1,"blockedBy":["t4"]},
		"t4":{"status":"open","priority":0},
		"t5":{"status":"open","priority":0,"blockedBy":["nope"]},
		"t6":{"status":"open","blockedBy":["t7"]},
		"t7":{"status":"done","blockedBy":["t6"]}}}`
	const arrBoard = `{"tasks":[
		{"status":"done"},
		{"status":"open","priority":"b","blockedBy":[0]},
		{"status":"open","blockedBy":[]},
		{"status":"open","priority":5,"blockedBy":[9]},
		{"status":"open","priority":"a"},
		{"status":"open","priority":10}]}`
	claim := `{"op":"claim_next","path":"/tasks","match":{"status":"open"},"deps":"blockedBy","done":{"status":"done"},"order":"priority","set":{"status":"claimed","owner":"alice"}}`
	tests := []struct {
		name, doc, patch string
		claimed          string // "" for an error
		err              string
		check            func(t *testing.T, out string)
	}{
		// t4 (priority 0) is ready; t5 has priority 0 too but a missing
		// dependency; t6 is on a cycle with a done task.
		{name: "ObjectOrderDeps", doc: objBoard, patch: "[" + claim + "]", claimed: "/tasks/t4"},
		// Array: index 5 (number 10) before index 4 ("a") before 1 ("b")
		// before 2 (absent); index 3 has a missing dependency.
		{name: "ArrayMixedOrder", doc: arrBoard, patch: "[" + claim + "]", claimed: "/tasks/5"},
		{name: "NoOrderByKey", doc: objBoard, patch: `[{"op":"claim_next","path":"/tasks","match":{"status":"open"},"deps":"blockedBy","set":{"status":"claimed"}}]`, claimed: "/tasks/t2"},
		{name: "NoMatchEveryTask", doc: `{"q":{"b":1,"a":{"x":1}}}`, patch: `[{"op":"claim_next","path":"/q","set":{"y":2}}]`, claimed: "/q/a",
			check: func(t *testing.T, out string) {
				if want := compact(t, `{"q":{"a":{"x":1,"y":2},"b":1}}`); out != want {
					t.Errorf("document %s, want %s", out, want)
				}
			}},
		{name: "SetMergePatch", doc: `{"tasks":{"a":{"status":"open","owner":"x","n":{"k":1}}}}`,
			patch:   `[{"op":"claim_next","path":"/tasks","match":{"status":"open"},"set":{"status":"claimed","owner":null,"n":{"j":2}}}]`,
			claimed: "/tasks/a",
			check: func(t *testing.T, out string) {
				if want := compact(t, `{"tasks":{"a":{"status":"claimed","n":{"j":2,"k":1}}}}`); out != want {
					t.Errorf("document %s, want %s", out, want)
				}
			}},
		{name: "OrderMixedObject", doc: `{"t":{"a":{"p":"x"},"b":{},"c":{"p":3},"d":{"p":1.5e0},"e":{"p":-2},"f":{"p":true}}}`,
			patch: `[{"op":"claim_next","path":"/t","order":"p","set":{"p":null}},{"op":"claim_next","path":"/t","order":"p","set":{"p":null}}]`, claimed: "/t/d"},
		{name: "ClaimedSubstitution", doc: objBoard,
			patch:   "[" + claim + `,{"op":"add","path":"$claimed/started","value":"2026-12-06T03:00:00Z"},{"op":"copy","from":"$claimed/owner","path":"/lease"},{"op":"test","path":"$claimed/status","value":"claimed"}]`,
			claimed: "/tasks/t4",
			check: func(t *testing.T, out string) {
				var v struct {
					Tasks map[string]map[string]any
					Lease string
				}
				json.Unmarshal([]byte(out), &v)
				if got := v.Tasks["t4"]["started"]; got != "2026-12-06T03:00:00Z" {
					t.Errorf("started=%v", got)
				}
				if v.Lease != "alice" || v.Tasks["t4"]["owner"] != "alice" {
					t.Errorf("lease=%q task=%v", v.Lease, v.Tasks["t4"])
				}
			}},
		{name: "NothingReady", doc: `{"tasks":{"a":{"status":"open","blockedBy":["b"]},"b":{"status":"open","blockedBy":["a"]}}}`,
			patch: "[" + claim + "]", err: "no ready task under /tasks"},
		{name: "SelfCycle", doc: `{"tasks":[{"status":"open","blockedBy":[0]}]}`, patch: "[" + claim + "]", err: "no ready task under /tasks"},
		{name: "EmptyBoard", doc: `{"tasks":{}}`, patch: "[" + claim + "]", err: "no ready task under /tasks"},
		{name: "EscapedBoard", doc: `{"a/b":{"x~y":{}}}`, patch: `[{"op":"claim_next","path":"/a~1b","set":{"c":1}},{"op":"add","path":"$claimed/d","value":2}]`, claimed: "/a~1b/x~0y"},
		{name: "AtomicLaterOpFails", doc: objBoard, patch: "[" + claim + `,{"op":"test","path":"$claimed/owner","value":"bob"}]`, err: "test failed: op 1 (test $claimed/owner): value differs"},
		{name: "ClaimedWithoutClaim", doc: objBoard, patch: `[{"op":"add","path":"$claimed/x","value":1}]`, err: "names no task"},
		{name: "BoardNotContainer", doc: `{"tasks":3}`, patch: "[" + claim + "]", err: "invalid patch: op 0 (claim_next /tasks): /tasks is a number, want an object or an array of tasks"},
		{name: "BoardMissing", doc: `{}`, patch: "[" + claim + "]", err: "path not found"},
		{name: "BadMatch", doc: objBoard, patch: `[{"op":"claim_next","path":"/tasks","match":[1]}]`, err: `"match" of claim_next is an array, want an object`},
		{name: "BadDeps", doc: objBoard, patch: `[{"op":"claim_next","path":"/tasks","deps":3}]`, err: `"deps" of claim_next`},
		{name: "BadClaimedPath", doc: objBoard, patch: `[{"op":"add","path":"$claimedx","value":1}]`, err: "does not start with /"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, claimed, err := claimApply(t, tt.doc, tt.patch)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err=%v, want %q", err, tt.err)
				}
				if got, want := out, compact(t, tt.doc); got != want {
					t.Errorf("document changed by a failed patch:\n%s\nwant\n%s", got, want)
				}
				if claimed != "" {
					t.Errorf("Claimed()=%q after a failed Apply", claimed)
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if claimed != tt.claimed {
				t.Errorf("Claimed()=%q, want %q", claimed, tt.claimed)
			}
			if tt.check != nil {
				tt.check(t, out)
			}
		})
	}

	t.Run("ErrorText", func(t *testing.T) {
		_, _, err := claimApply(t, `{"tasks":{}}`, "["+claim+"]")
		if got, want := ResultError(err), "no ready task under /tasks"; got != want {
			t.Errorf("ResultError=%q, want %q", got, want)
		}
		if !errors.Is(err, ErrNoReadyTask) || errors.Is(err, ErrInvalidPatch) || errors.Is(err, ErrTestFailed) {
			t.Errorf("errors.Is: %v", err)
		}
	})
}

func TestDoc_Ready(t *testing.T) {
	d, err := ParseDoc([]byte(`{"tasks":{
		"a":{"status":"done"},
		"b":{"status":"open","p":2,"blockedBy":["a"]},
		"c":{"status":"open","p":1,"blockedBy":["a","b","zz"]},
		"d":{"status":"open","blockedBy":["e"]},
		"e":{"status":"open","blockedBy":["d"]},
		"f":{"status":"open","p":1}}}`))
	if err != nil {
		t.Fatal(err)
	}
	ops, err := DecodePatch([]byte(`[{"op":"claim_next","path":"/tasks","match":{"status":"open"},"deps":"blockedBy","order":"p"}]`))
	if err != nil {
		t.Fatal(err)
	}
	ready, blocked, err := d.Ready(ops[0])
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(map[string]any{"ready": ready, "blocked": blocked})
	want := `{"blocked":[{"pointer":"/tasks/c","waiting_for":["/tasks/zz (missing)","/tasks/b"]},{"pointer":"/tasks/d","waiting_for":["/tasks/e (cycle)"]},{"pointer":"/tasks/e","waiting_for":["/tasks/d (cycle)"]}],"ready":[{"pointer":"/tasks/f","task":{"p":1,"status":"open"}},{"pointer":"/tasks/b","task":{"blockedBy":["a"],"p":2,"status":"open"}}]}`
	if string(got) != want {
		t.Errorf("Ready:\n%s\nwant\n%s", got, want)
	}
}

func TestCompareNumbers(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"1", "2", -1}, {"2", "1", 1}, {"1", "1.0", 0}, {"-1", "0", -1}, {"0", "-0", 0},
		{"-2", "-1", -1}, {"10", "9", 1}, {"0.12", "0.123", -1}, {"1e3", "999", 1},
		{"1e999999999999999999999", "1e999999999999999999998", 1}, {"-1e-400", "1e-400", -1},
	} {
		if got := compareNumbers(tt.a, tt.b); got != tt.want {
			t.Errorf("compareNumbers(%s, %s)=%d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// randomBoard returns a random board of n tasks, an object or an array,
// with a status among open, done and claimed, some priority of a random
// type, and dependencies that may be missing or form cycles.
func randomBoard(r *rand.Rand, n int) (string, bool) {
	isArr := r.IntN(2) == 0
	statuses := []string{"open", "open", "open", "done", "claimed"}
	var b strings.Builder
	if isArr {
		b.WriteString(`{"tasks":[`)
	} else {
		b.WriteString(`{"tasks":{`)
	}
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		if !isArr {
			fmt.Fprintf(&b, `"k%d":`, r.IntN(1000)*1000+i)
		}
		fmt.Fprintf(&b, `{"status":%q`, statuses[r.IntN(len(statuses))])
		switch r.IntN(4) {
		case 0:
			fmt.Fprintf(&b, `,"priority":%d`, r.IntN(5))
		case 1:
			fmt.Fprintf(&b, `,"priority":"%c"`, 'a'+r.IntN(3))
		case 2:
			b.WriteString(`,"priority":null`)
		}
		if k := r.IntN(3); k > 0 {
			b.WriteString(`,"deps":[`)
			for j := range k {
				if j > 0 {
					b.WriteByte(',')
				}
				// Dependencies name tasks by index: an array board's
				// form; an object board's keys are looked up below.
				fmt.Fprintf(&b, "%d", r.IntN(n+2))
			}
			b.WriteByte(']')
		}
		b.WriteByte('}')
	}
	if isArr {
		b.WriteString("]}")
	} else {
		b.WriteString("}}")
	}
	return b.String(), isArr
}

// objectDeps rewrites the numeric dependencies of an object board into the
// keys of the tasks at those positions (or a missing key).
func objectDeps(doc string) string {
	var v struct {
		Tasks map[string]map[string]any `json:"tasks"`
	}
	json.Unmarshal([]byte(doc), &v)
	keys := make([]string, 0, len(v.Tasks))
	for k := range v.Tasks {
		keys = append(keys, k)
	}
	sortStrings(keys)
	for _, t := range v.Tasks {
		if ds, ok := t["deps"].([]any); ok {
			for i, d := range ds {
				j := int(d.(float64))
				if j < len(keys) {
					ds[i] = keys[j]
				} else {
					ds[i] = fmt.Sprintf("missing%d", j)
				}
			}
		}
	}
	out, _ := json.Marshal(v)
	return string(out)
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// refReady is a direct model of readiness: a task that matches, all of
// whose dependencies exist and are done, and from which no path of
// dependencies leads back to it.
func refReady(tasks []map[string]any, keyOf func(any) (int, bool), i int) bool {
	t := tasks[i]
	if t["status"] != "open" {
		return false
	}
	deps, _ := t["deps"].([]any)
	for _, d := range deps {
		j, ok := keyOf(d)
		if !ok || tasks[j]["status"] != "done" {
			return false
		}
	}
	// On a cycle: i reachable from its own dependencies.
	seen := map[int]bool{}
	stack := []int{}
	for _, d := range deps {
		if j, ok := keyOf(d); ok {
			stack = append(stack, j)
		}
	}
	for len(stack) > 0 {
		j := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if j == i {
			return false
		}
		if seen[j] {
			continue
		}
		seen[j] = true
		ds, _ := tasks[j]["deps"].([]any)
		for _, d := range ds {
			if k, ok := keyOf(d); ok {
				stack = append(stack, k)
			}
		}
	}
	return true
}

// TestClaimNext_Property claims from random boards until nothing is ready:
// each claimed task matched and was ready (by a direct model) when it was
// taken, no task is claimed twice, and the claim stops only when the model
// has no ready task left.
func TestClaimNext_Property(t *testing.T) {
	r := rand.New(rand.NewPCG(22, 1))
	rounds := 300
	if testing.Short() {
		rounds = 50
	}
	patch := []byte(`[{"op":"claim_next","path":"/tasks","match":{"status":"open"},"deps":"deps","order":"priority","set":{"status":"claimed"}},{"op":"inc","path":"/claims","value":1}]`)
	ops, err := DecodePatch(patch)
	if err != nil {
		t.Fatal(err)
	}
	for round := range rounds {
		doc, isArr := randomBoard(r, 1+r.IntN(12))
		if !isArr {
			doc = objectDeps(doc)
		}
		doc = strings.TrimSuffix(doc, "}") + `,"claims":0}`
		d, err := ParseDoc([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		claimed := map[string]bool{}
		for step := 0; ; step++ {
			// The model's view of the board before the claim.
			var v struct{ Tasks json.RawMessage }
			json.Unmarshal(d.AppendJSON(nil), &v)
			var tasks []map[string]any
			var ptrs []string
			if isArr {
				json.Unmarshal(v.Tasks, &tasks)
				for i := range tasks {
					ptrs = append(ptrs, fmt.Sprintf("/tasks/%d", i))
				}
			} else {
				var m map[string]map[string]any
				json.Unmarshal(v.Tasks, &m)
				for k := range m {
					ptrs = append(ptrs, k)
				}
				sortStrings(ptrs)
				for i, k := range ptrs {
					tasks = append(tasks, m[k])
					ptrs[i] = "/tasks/" + k
				}
			}
			keyOf := func(d any) (int, bool) {
				if isArr {
					f, ok := d.(float64)
					return int(f), ok && int(f) < len(tasks)
				}
				for i, p := range ptrs {
					if p == "/tasks/"+fmt.Sprint(d) {
						return i, true
					}
				}
				return 0, false
			}
			anyReady := false
			for i := range tasks {
				anyReady = anyReady || refReady(tasks, keyOf, i)
			}
			err := d.Apply(ops)
			if err != nil {
				if !errors.Is(err, ErrNoReadyTask) {
					t.Fatalf("round %d step %d: %v", round, step, err)
				}
				if anyReady {
					t.Fatalf("round %d: no claim, but the model has a ready task in %s", round, d.AppendJSON(nil))
				}
				break
			}
			p := d.Claimed()
			if claimed[p] {
				t.Fatalf("round %d: %s claimed twice", round, p)
			}
			claimed[p] = true
			i := -1
			for j, q := range ptrs {
				if q == p {
					i = j
				}
			}
			if i < 0 || !refReady(tasks, keyOf, i) {
				t.Fatalf("round %d: claimed %s, which was not ready in %s", round, p, v.Tasks)
			}
		}
	}
}

// TestClaimNext_Results runs claim intents through the applier: the result
// carries the claimed pointer, a conflict when nothing is ready, and
// replaying the commit log (Verify) and recovery give the same results.
func TestClaimNext_Results(t *testing.T) {
	dir := t.TempDir()
	appendRaw(t, dir, "a", intentLine(1, "b.json", `"patch":[{"op":"add","path":"","value":{"tasks":{"t1":{"status":"done"},"t7":{"status":"open","blockedBy":["t1"]},"t8":{"status":"open","blockedBy":["t7"]}}}}]`))
	claim := `"patch":[{"op":"claim_next","path":"/tasks","match":{"status":"open"},"deps":"blockedBy","done":{"status":"done"},"order":"priority","set":{"status":"claimed","owner":"alice"}},{"op":"add","path":"$claimed/at","value":"now"}]`
	appendRaw(t, dir, "a", intentLine(2, "b.json", `"id":"c",`+claim))
	appendRaw(t, dir, "a", intentLine(3, "b.json", claim))
	appendRaw(t, dir, "a", intentLine(4, "b.json", `"id":"k",`+claim))
	appendRaw(t, dir, "a", intentLine(5, "b.json", `"id":"c",`+claim)) // a retry of seq 2
	a := MustOpen(t, dir)
	drain(t, a)
	a.Close()
	res := readResults(t, dir, "a")
	if len(res) != 5 {
		t.Fatalf("%d results, want 5", len(res))
	}
	if got, want := res[4], (journal.Result{Seq: 5, ID: "c", File: "b.json", Status: journal.StatusApplied, Version: 2, Commit: 2, Claimed: "/tasks/t7", Retry: true}); got != want {
		t.Errorf("retry result %+v, want %+v", got, want)
	}
	if got, want := res[1], (journal.Result{Seq: 2, ID: "c", File: "b.json", Status: journal.StatusApplied, Version: 2, Commit: 2, Claimed: "/tasks/t7"}); got != want {
		t.Errorf("claim result %+v, want %+v", got, want)
	}
	if got, want := res[2], (journal.Result{Seq: 3, File: "b.json", Status: journal.StatusConflict, Version: 2, Commit: 3, Error: "no ready task under /tasks"}); got != want {
		t.Errorf("no-ready result %+v, want %+v", got, want)
	}
	if res[3].Status != journal.StatusConflict {
		t.Errorf("result 4: %+v", res[3])
	}
	p := filepath.Join(dir, "results", "a", journal.SegmentName(1))
	full, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(full, []byte(`"commit":2,"claimed":"/tasks/t7"}`)) {
		t.Errorf("results file:\n%s", full)
	}
	doc := readJSON(t, dir, "b.json")
	want := map[string]any{"tasks": map[string]any{"t1": map[string]any{"status": "done"}, "t7": map[string]any{"status": "claimed", "owner": "alice", "blockedBy": []any{"t1"}, "at": "now"}, "t8": map[string]any{"status": "open", "blockedBy": []any{"t7"}}}}
	if !reflect.DeepEqual(doc, want) {
		t.Errorf("document %v, want %v", doc, want)
	}
	mustVerify(t, dir)
	// Recovery writes the results again from the commit log, byte for byte.
	if err := os.WriteFile(p, full[:len(full)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	b := MustOpen(t, dir)
	b.Close()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, full) {
		t.Errorf("results after recovery\n%s\nwant\n%s", got, full)
	}
}

// TestClaimNext_Client claims through the Go client (journal.ClaimNext)
// against an applier: the claimed pointer and task, then ErrNothingReady.
func TestClaimNext_Client(t *testing.T) {
	dir := t.TempDir()
	appendRaw(t, dir, "setup", intentLine(1, "b.json", `"patch":[{"op":"add","path":"","value":{"tasks":[{"status":"open","priority":2},{"status":"open","priority":1,"after":[0]},{"status":"open","priority":3}]}}]`))
	a := MustOpen(t, dir)
	drain(t, a)
	w, err := journal.OpenWriter(dir, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := journal.OpenResults(dir, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	spec := journal.ClaimSpec{Path: "/tasks", Match: map[string]any{"status": "open"}, Deps: "after", Order: "priority", Set: map[string]any{"status": "claimed", "owner": "alice"}}
	claim := func() (journal.Claim, error) {
		type out struct {
			c   journal.Claim
			err error
		}
		ch := make(chan out, 1)
		go func() {
			c, err := journal.ClaimNext(t.Context(), w, r, "b.json", spec, json.RawMessage(`{"op":"add","path":"$claimed/at","value":1}`))
			ch <- out{c, err}
		}()
		for {
			select {
			case o := <-ch:
				return o.c, o.err
			default:
			}
			if _, err := a.Step(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, want := range []struct{ ptr, task string }{
		{"/tasks/0", `{"at":1,"owner":"alice","priority":2,"status":"claimed"}`},
		{"/tasks/2", `{"at":1,"owner":"alice","priority":3,"status":"claimed"}`},
	} {
		c, err := claim()
		if err != nil {
			t.Fatalf("ClaimNext: %v", err)
		}
		if c.Pointer != want.ptr || compact(t, string(c.Task)) != want.task || c.Result.Claimed != want.ptr {
			t.Errorf("ClaimNext: %s %s (%+v), want %s %s", c.Pointer, c.Task, c.Result, want.ptr, want.task)
		}
	}
	if _, err := claim(); !errors.Is(err, journal.ErrNothingReady) {
		t.Errorf("ClaimNext on a board with nothing ready: %v, want ErrNothingReady", err)
	}
}
