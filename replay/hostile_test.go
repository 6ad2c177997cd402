package replay

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/stateward/stateward/journal"
)

// This file is the hostile-input table of issue 5 (G5): one row per kind of
// bad input, each with the answer it must get (a rejected result naming the
// field, or a log line when no result can be addressed), and the proof that
// it blocks nobody: a good record of the same agent right after it applies,
// and so does another agent's. The decisions the rows assert (huge numbers,
// invalid UTF-8, duplicate keys, null optional fields) are documented in
// docs/security.md.

// syncBuffer is a log sink that is safe to read while the logger writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// hostile is a state directory with an Applier whose log goes to a buffer.
type hostile struct {
	t    *testing.T
	dir  string
	a    *Applier
	logs *syncBuffer
	mark int // length of the log before the bad input
}

// newHostile returns a hostile with an Applier not yet opened.
func newHostile(t *testing.T) *hostile {
	t.Helper()
	dir := t.TempDir()
	logs := &syncBuffer{}
	return &hostile{t: t, dir: dir, a: NewApplier(dir, newBufferLogger(logs)), logs: logs}
}

// newBufferLogger returns a logger that writes to w, debug lines included.
func newBufferLogger(w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: w, Level: hclog.Debug, DisableTime: true})
}

func (h *hostile) open() {
	h.t.Helper()
	if err := h.a.Open(); err != nil {
		h.t.Fatalf("Open: %v", err)
	}
	h.t.Cleanup(func() { h.a.Close() })
}

// path returns a path under the state directory.
func (h *hostile) path(parts ...string) string {
	return filepath.Join(append([]string{h.dir}, parts...)...)
}

// append appends text to an agent's first segment.
func (h *hostile) append(agent, text string) {
	h.t.Helper()
	appendRaw(h.t, h.dir, agent, text)
}

// appendSeg appends text to segment seg of an agent's journal.
func (h *hostile) appendSeg(agent string, seg uint64, text string) {
	h.t.Helper()
	folder := h.path("journal", agent)
	if err := os.MkdirAll(folder, 0o755); err != nil {
		h.t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(folder, journal.SegmentName(seg)), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		h.t.Fatal(err)
	}
}

// write writes a file under the state directory.
func (h *hostile) write(name, text string) {
	h.t.Helper()
	if err := os.WriteFile(h.path(name), []byte(text), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// step runs one batch, bounded in time: a watcher that blocks on a file is
// a failure, not a hung test.
func (h *hostile) step() int {
	h.t.Helper()
	type stepped struct {
		n   int
		err error
	}
	done := make(chan stepped, 1)
	go func() {
		n, err := h.a.Step(h.t.Context())
		done <- stepped{n, err}
	}()
	select {
	case s := <-done:
		if s.err != nil {
			h.t.Fatalf("Step: %v", s.err)
		}
		return s.n
	case <-time.After(20 * time.Second):
		h.t.Fatalf("Step blocked for 20s")
		return 0
	}
}

// drain steps until nothing is ready and returns the lines processed.
func (h *hostile) drain() int {
	h.t.Helper()
	total := 0
	for range 10_000 {
		n := h.step()
		if n == 0 {
			return total
		}
		total += n
	}
	h.t.Fatal("Step never ran out of work")
	return total
}

// results returns every result of an agent (none if it has no folder).
func (h *hostile) results(agent string) []journal.Result {
	h.t.Helper()
	if _, err := os.Lstat(h.path("results", agent)); err != nil {
		return nil
	}
	return readResults(h.t, h.dir, agent)
}

// result returns the last result of an agent for seq that is not a retry.
func (h *hostile) result(agent string, seq uint64) (journal.Result, bool) {
	h.t.Helper()
	res := h.results(agent)
	for i := len(res) - 1; i >= 0; i-- {
		if res[i].Seq == seq && !res[i].Retry {
			return res[i], true
		}
	}
	return journal.Result{}, false
}

// newLogs returns what was logged since the bad input.
func (h *hostile) newLogs() string { return h.logs.String()[h.mark:] }

// status reads the status of the directory, bounded in time.
func (h *hostile) status() *Status {
	h.t.Helper()
	type got struct {
		st  *Status
		err error
	}
	done := make(chan got, 1)
	go func() {
		st, err := ReadStatus(h.dir)
		done <- got{st, err}
	}()
	select {
	case g := <-done:
		if g.err != nil {
			h.t.Fatalf("ReadStatus: %v", g.err)
		}
		return g.st
	case <-time.After(20 * time.Second):
		h.t.Fatalf("ReadStatus blocked for 20s")
		return nil
	}
}

// docState returns the status line of a document.
func (h *hostile) docState(name string) string {
	h.t.Helper()
	for _, d := range h.status().Docs {
		if d.File == name {
			return d.State
		}
	}
	return "(not in status)"
}

// goodLine is a record that always applies: a merge into good-<agent>.json.
func goodLine(agent string, seq uint64) string {
	return intentLine(seq, "good-"+agent+".json", fmt.Sprintf(`"merge":{"s%d":true}`, seq))
}

// nested returns n nested objects, each holding the next under "x".
func nested(n int) string {
	return strings.Repeat(`{"x":`, n-1) + "{}" + strings.Repeat("}", n-1)
}

// mkfifo makes a named pipe: opening it for reading blocks until a writer
// comes, so a watcher that opened it would hang.
func mkfifo(tb testing.TB, p string) {
	tb.Helper()
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		tb.Fatal(err)
	}
}

// hostileRow is one bad input.
type hostileRow struct {
	name  string
	agent string           // the misbehaving agent; "bad" if empty
	tune  func(h *hostile) // before Open: knobs, a wrapped fsys
	setup func(h *hostile) // before the bad input; drained
	bad   func(h *hostile) // the bad input
	// What the bad input gets: a result with status (and seq, 0 for a
	// line without a readable seq) whose error contains reason, and/or a
	// log line containing log. status "" expects no result at all for seq.
	status string
	seq    uint64
	reason string
	log    string
	// next is the seq of a good record of the same agent appended after
	// the bad input (0: none), in segment nextSeg (0: the first one).
	next, nextSeg uint64
	run           func(h *hostile)               // processes the input; h.drain if nil
	check         func(t *testing.T, h *hostile) // more checks, at the end
	noVerify      string                         // why replay --verify does not apply
}

const (
	applied  = journal.StatusApplied
	rejected = journal.StatusRejected
)

func badLine(line string) func(h *hostile) {
	return func(h *hostile) { h.append("bad", line) }
}

func badIntent(seq uint64, file, extra string) func(h *hostile) {
	return badLine(intentLine(seq, file, extra))
}

func seqRows() []hostileRow {
	var rows []hostileRow
	for _, tc := range []struct{ name, seq, reason string }{
		{"Zero", "0", "seq must be >= 1"},
		{"Negative", "-1", "seq must be an integer"},
		{"Fraction", "1.5", "seq must be an integer"},
		{"String", `"1"`, "seq must be an integer"},
		{"Exponent", "1e3", "seq must be an integer"},
		{"Huge", "18446744073709551616", "seq must be an integer"},
		{"HugeExponent", "1e999", "seq must be an integer"},
		{"Null", "null", "seq must be an integer"},
		{"Bool", "true", "seq must be an integer"},
	} {
		rows = append(rows, hostileRow{
			name:   "Seq/" + tc.name,
			bad:    badLine(`{"seq":` + tc.seq + `,"file":"x.json","merge":{"a":1}}` + "\n"),
			status: rejected, reason: tc.reason, next: 1,
		})
	}
	return rows
}

func nameRows() []hostileRow {
	var rows []hostileRow
	for _, tc := range []struct{ name, file string }{
		{"Slash", `"sub/x.json"`},
		{"Backslash", `"sub\\x.json"`},
		{"DotDot", `"../x.json"`},
		{"DotDotOnly", `".."`},
		{"DotDotInside", `"a..b.json"`},
		{"Absolute", `"/etc/x.json"`},
		{"NoExtension", `"x"`},
		{"OtherExtension", `"x.txt"`},
		{"JSONThenMore", `"x.json.bak"`},
		{"LeadingDot", `".hidden.json"`},
		{"LeadingDash", `"-x.json"`},
		{"TooLong", `"` + strings.Repeat("a", 129) + `.json"`},
		{"Unicode", `"tâche.json"`},
		{"EscapedNUL", `"x\u0000.json"`},
		{"InvalidUTF8", "\"t\xff.json\""},
		{"Empty", `""`},
		{"Null", `null`},
	} {
		rows = append(rows, hostileRow{
			name:   "FileName/" + tc.name,
			bad:    badLine(`{"seq":1,"file":` + tc.file + `,"merge":{"a":1}}` + "\n"),
			status: rejected, seq: 1, reason: "bad record: file: bad name", next: 2,
			check: func(t *testing.T, h *hostile) {
				if _, err := os.Stat(filepath.Join(filepath.Dir(h.dir), "x.json")); err == nil {
					t.Errorf("a file was created outside the state directory")
				}
			},
		})
	}
	rows = append(rows, hostileRow{
		name:   "FileName/NotString",
		bad:    badLine(`{"seq":1,"file":7,"merge":{"a":1}}` + "\n"),
		status: rejected, seq: 1, reason: "file must be a string", next: 2,
	})
	return rows
}

// brokenDoc checks that a document stays as the bad input left it, that
// status reports it, and that it keeps rejecting intents.
func brokenDoc(name, state string, same func(t *testing.T, h *hostile)) func(t *testing.T, h *hostile) {
	return func(t *testing.T, h *hostile) {
		if got := h.docState(name); !strings.Contains(got, state) {
			t.Errorf("status of %s = %q, want it to contain %q", name, got, state)
		}
		// Still rejected after a restart: the watcher never replaces it
		// with a default.
		old := h.a
		old.Close()
		h.a = NewApplier(h.dir, nil)
		h.a.MaxDocSize = old.MaxDocSize
		h.open()
		h.append("bad", intentLine(100, name, `"if_version":0,"patch":[{"op":"add","path":"","value":{"fresh":true}}]`))
		h.drain()
		if r, ok := h.result("bad", 100); !ok || r.Status != rejected || !strings.Contains(r.Error, name) {
			t.Errorf("intent on %s after a restart = %+v, want rejected naming it", name, r)
		}
		same(t, h)
	}
}

// sameFile returns a check that a file under the state directory still has
// the content it had.
func sameFile(name, want string) func(t *testing.T, h *hostile) {
	return func(t *testing.T, h *hostile) {
		got, err := os.ReadFile(h.path(name))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want it untouched: %q", name, got, err, want)
		}
	}
}

// sameType returns a check that a name under the state directory is still
// of the given file type.
func sameType(name string, typ os.FileMode) func(t *testing.T, h *hostile) {
	return func(t *testing.T, h *hostile) {
		fi, err := os.Lstat(h.path(name))
		if err != nil || fi.Mode().Type() != typ {
			t.Errorf("%s: %v, %v; want it untouched (type %v)", name, fi, err, typ)
		}
	}
}

// openSwapFS is an fsys that, when a named file is first opened for
// reading, replaces it by a named pipe just before: the watcher's Lstat saw
// a regular file, its open finds a pipe (a race an attacker can win).
type openSwapFS struct {
	fsys
	dir  string
	name string
	once sync.Once
}

func (s *openSwapFS) OpenFile(name string, flag int, perm os.FileMode) (fileHandle, error) {
	if name == s.name && flag&(os.O_WRONLY|os.O_RDWR) == 0 {
		s.once.Do(func() {
			p := filepath.Join(s.dir, name)
			if err := os.Remove(p); err == nil {
				syscall.Mkfifo(p, 0o644)
			}
		})
	}
	return s.fsys.OpenFile(name, flag, perm)
}

// swapAtOpen makes the Applier's fsys an openSwapFS for name.
func swapAtOpen(name string) func(h *hostile) {
	return func(h *hostile) {
		root, err := os.OpenRoot(h.dir)
		if err != nil {
			h.t.Fatal(err)
		}
		h.t.Cleanup(func() { root.Close() })
		h.a.fs = &openSwapFS{fsys: rootFS{root}, dir: h.dir, name: name}
	}
}

func hostileRows() []hostileRow {
	const inc = `"patch":[{"op":"inc","path":"/n","value":1}]`
	rows := []hostileRow{
		// Lines that are not records.
		{name: "GarbageLine", bad: badLine("this is not json\n"), status: rejected, reason: "not valid JSON", next: 1},
		{name: "EmptyLine", bad: badLine("\n"), status: rejected, reason: "not valid JSON", next: 1},
		{name: "BlankLine", bad: badLine(" \t \r\n"), status: rejected, reason: "not valid JSON", next: 1},
		{name: "NUL", bad: badLine("\x00\x00\x00\n"), status: rejected, reason: "not valid JSON", next: 1},
		{name: "NotAnObject/Array", bad: badLine(`[1,2,3]` + "\n"), status: rejected, reason: "must be a JSON object", next: 1},
		{name: "NotAnObject/String", bad: badLine(`"seq"` + "\n"), status: rejected, reason: "must be a JSON object", next: 1},
		{name: "NotAnObject/Number", bad: badLine(`1` + "\n"), status: rejected, reason: "must be a JSON object", next: 1},
		{name: "NotAnObject/Null", bad: badLine(`null` + "\n"), status: rejected, reason: "missing seq", next: 1},
		{name: "TwoObjects", bad: badLine(`{"seq":1,"file":"x.json","merge":{}}{"seq":2}` + "\n"), status: rejected, reason: "not valid JSON", next: 1},
		{name: "MissingSeq", bad: badLine(`{"file":"x.json","merge":{"a":1}}` + "\n"), status: rejected, reason: "missing seq", next: 1},
		{
			name: "LineTooLong", tune: func(h *hostile) { h.a.MaxLine = 256 },
			bad:    badIntent(1, "x.json", `"merge":{"pad":"`+strings.Repeat("x", 300)+`"}`),
			status: rejected, reason: "too long", next: 2,
		},

		// seq going backwards.
		{
			name: "SeqBackwards/NotRetained", tune: func(h *hostile) { h.a.RetainResults = 2 },
			setup: func(h *hostile) {
				for s := uint64(1); s <= 5; s++ {
					h.append("bad", intentLine(s, "c.json", fmt.Sprintf(`"merge":{"k%d":%d}`, s, s)))
				}
			},
			bad: func(h *hostile) {
				h.append("bad", intentLine(2, "c.json", `"merge":{"replayed":true}`)) // result no longer kept
				h.append("bad", intentLine(4, "c.json", `"merge":{"replayed":true}`)) // kept: a retry
			},
			status: rejected, seq: 2, reason: "seq 2 is not above the last processed seq 5, and no result of it is retained: it was never used, or its result has left the retry window", next: 6,
			check: func(t *testing.T, h *hostile) {
				if _, ok := readJSON(t, h.dir, "c.json").(map[string]any)["replayed"]; ok {
					t.Errorf("a repeated seq was applied again")
				}
				res := h.results("bad")
				if r := res[len(res)-2]; r.Seq != 4 || !r.Retry || r.Status != applied {
					t.Errorf("repeated seq 4 = %+v, want a retry copy of its applied result", r)
				}
			},
		},
		{
			name:   "SeqBackwards/NeverUsed",
			setup:  func(h *hostile) { h.append("bad", goodLine("bad", 10)) },
			bad:    badIntent(7, "c.json", `"merge":{"a":1}`),
			status: rejected, seq: 7, reason: "seq 7 is not above the last processed seq 10", next: 11,
		},
		{
			// A gap below the newest seq: the window holds seq 1 and 5, so
			// 3 was never used (not "no longer retained").
			name: "SeqBackwards/Gap",
			setup: func(h *hostile) {
				h.append("bad", goodLine("bad", 1))
				h.append("bad", goodLine("bad", 5))
			},
			bad:    badIntent(3, "c.json", `"merge":{"a":1}`),
			status: rejected, seq: 3, reason: "seq 3 was never used by this agent, and seqs only go up: the last processed seq is 5", next: 6,
		},
		{
			name:  "SeqGap",
			setup: func(h *hostile) { h.append("bad", goodLine("bad", 1)) },
			bad: func(h *hostile) {
				h.append("bad", goodLine("bad", 5))
				h.appendSeg("bad", 100, goodLine("bad", 100)) // a gap in segment names too
			},
			status: applied, seq: 100, next: 101, nextSeg: 100,
			check: func(t *testing.T, h *hostile) {
				if r, ok := h.result("bad", 5); !ok || r.Status != applied {
					t.Errorf("seq 5 after 1 = %+v, want applied (gaps are allowed)", r)
				}
			},
		},

		// Fields.
		{name: "PatchAndMerge", bad: badIntent(1, "x.json", `"patch":[],"merge":{}`), status: rejected, seq: 1, reason: "exactly one of patch and merge", next: 2},
		{name: "NeitherPatchNorMerge", bad: badIntent(1, "x.json", `"id":"k"`), status: rejected, seq: 1, reason: "exactly one of patch and merge", next: 2},
		// Decision: patch and merge are not optional fields; null is a value
		// (for merge, a merge patch), so null plus the other is "both".
		{name: "PatchNullAndMerge", bad: badIntent(1, "x.json", `"patch":null,"merge":{"a":1}`), status: rejected, seq: 1, reason: "exactly one of patch and merge", next: 2},
		{name: "PatchNotArray", bad: badIntent(1, "x.json", `"patch":{"op":"add","path":"","value":1}`), status: rejected, seq: 1, reason: "patch must be a JSON array", next: 2},
		{name: "PatchString", bad: badIntent(1, "x.json", `"patch":"[]"`), status: rejected, seq: 1, reason: "patch must be a JSON array", next: 2},
		{
			name: "PatchEmptyOnMissingDocument", bad: badIntent(1, "x.json", `"patch":[]`),
			status: rejected, seq: 1, reason: "patch", next: 2,
			check: func(t *testing.T, h *hostile) {
				if _, err := os.Lstat(h.path("x.json")); err == nil {
					t.Errorf("an empty patch created x.json")
				}
			},
		},
		{name: "OpNotObject", bad: badIntent(1, "x.json", `"patch":[1]`), status: rejected, seq: 1, reason: "op 0: operation is a number", next: 2},
		{name: "UnknownOp", bad: badIntent(1, "x.json", `"patch":[{"op":"frob","path":"/a"}]`), status: rejected, seq: 1, reason: `op 0: unknown op "frob"`, next: 2},
		{name: "MissingOp", bad: badIntent(1, "x.json", `"patch":[{"path":"/a","value":1}]`), status: rejected, seq: 1, reason: `missing "op"`, next: 2},
		{name: "Pointer/NoSlash", bad: badIntent(1, "x.json", `"patch":[{"op":"add","path":"a","value":1}]`), status: rejected, seq: 1, reason: `invalid "path" "a"`, next: 2},
		{name: "Pointer/BadEscape", bad: badIntent(1, "x.json", `"patch":[{"op":"add","path":"/a~2","value":1}]`), status: rejected, seq: 1, reason: `invalid "path"`, next: 2},
		{name: "Pointer/BadFrom", bad: badIntent(1, "x.json", `"patch":[{"op":"copy","from":"x","path":"/a"}]`), status: rejected, seq: 1, reason: `invalid "from"`, next: 2},
		{name: "Pointer/NotString", bad: badIntent(1, "x.json", `"patch":[{"op":"remove","path":5}]`), status: rejected, seq: 1, reason: `"path" is a number`, next: 2},
		{
			// A value that would nest the document deeper than the limit:
			// 5000 levels of path plus 5001 of value.
			name:   "Patch/TooDeep",
			setup:  func(h *hostile) { h.append("bad", intentLine(1, "deep.json", `"merge":{"x":{}}`)) },
			bad:    badIntent(2, "deep.json", `"patch":[{"op":"add","path":"`+strings.Repeat("/x", 5000)+`","value":`+nested(5001)+`}]`),
			status: rejected, seq: 2, reason: "nested deeper than 512 levels", next: 3,
		},
		{
			// Decision: a line nested deeper than encoding/json's limit
			// (10000) is not read as JSON at all, so it has no readable seq.
			name:   "Line/TooDeep",
			bad:    badIntent(1, "x.json", `"merge":`+strings.Repeat("[", 12_000)+strings.Repeat("]", 12_000)),
			status: rejected, reason: "exceeded max depth", next: 2,
		},
		{
			name: "Patch/CopyAmplification",
			setup: func(h *hostile) {
				h.append("bad", intentLine(1, "amp.json", `"patch":[{"op":"add","path":"","value":{"a":[`+strings.TrimSuffix(strings.Repeat("0,", 1000), ",")+`]}}]`))
			},
			bad: func(h *hostile) {
				ops := make([]string, 3000) // 3000 copies of 7,004 bytes > 16 MiB
				for i := range ops {
					ops[i] = fmt.Sprintf(`{"op":"copy","from":"/a","path":"/b%d"}`, i)
				}
				h.append("bad", intentLine(2, "amp.json", `"patch":[`+strings.Join(ops, ",")+`]`))
			},
			status: rejected, seq: 2, reason: "would copy more than 16777216 bytes", next: 3,
			check: func(t *testing.T, h *hostile) {
				if got := len(readJSON(t, h.dir, "amp.json").(map[string]any)); got != 1 {
					t.Errorf("amp.json has %d members after a rejected patch, want 1 (all or nothing)", got)
				}
			},
		},
		// Decision: numbers are kept exactly as written, whatever their size.
		{
			name: "Number/HugeStored", bad: badIntent(1, "num.json", `"merge":{"big":1e999,"int":123456789012345678901234567890,"tiny":1e-999}`),
			status: applied, seq: 1, next: 2,
			check: func(t *testing.T, h *hostile) {
				b, _ := os.ReadFile(h.path("num.json"))
				for _, lit := range []string{`"big": 1e999`, `"int": 123456789012345678901234567890`, `"tiny": 1e-999`} {
					if !bytes.Contains(b, []byte(lit)) {
						t.Errorf("num.json = %s, want it to hold %s as written", b, lit)
					}
				}
			},
		},
		// Decision: inc whose sum is beyond float64 is rejected.
		{
			name:   "Number/IncOverflow",
			setup:  func(h *hostile) { h.append("bad", intentLine(1, "num.json", `"merge":{"big":1e999,"n":1}`)) },
			bad:    badIntent(2, "num.json", `"patch":[{"op":"inc","path":"/big","value":1}]`),
			status: rejected, seq: 2, reason: "number overflow", next: 3,
		},
		{
			name:   "Number/IncByHuge",
			setup:  func(h *hostile) { h.append("bad", intentLine(1, "num.json", `"merge":{"n":1}`)) },
			bad:    badIntent(2, "num.json", `"patch":[{"op":"inc","path":"/n","value":-1e400}]`),
			status: rejected, seq: 2, reason: "number overflow", next: 3,
		},
		// Decision: inc adds integers exactly while the sum fits in an
		// int64; beyond, it adds as float64 and writes what encoding/json
		// writes for one (the literal stored is never touched otherwise).
		{
			name:   "Number/IncBeyondInt64",
			setup:  func(h *hostile) { h.append("bad", intentLine(1, "num.json", `"merge":{"n":9223372036854775807}`)) },
			bad:    badIntent(2, "num.json", inc),
			status: applied, seq: 2, next: 3,
			check: func(t *testing.T, h *hostile) {
				if b, _ := os.ReadFile(h.path("num.json")); !bytes.Contains(b, []byte(`"n": 9223372036854776000`)) {
					t.Errorf("num.json = %s, want n = 9223372036854776000 (float64)", b)
				}
			},
		},
		// Decision: invalid UTF-8 is rejected wherever it would be kept.
		{name: "InvalidUTF8/PatchValue", bad: badIntent(1, "u.json", "\"patch\":[{\"op\":\"add\",\"path\":\"\",\"value\":\"x\xffy\"}]"), status: rejected, seq: 1, reason: "invalid UTF-8", next: 2},
		{name: "InvalidUTF8/PatchKey", bad: badIntent(1, "u.json", "\"patch\":[{\"op\":\"add\",\"path\":\"\",\"value\":{\"k\xc3\":1}}]"), status: rejected, seq: 1, reason: "invalid UTF-8", next: 2},
		{name: "InvalidUTF8/Merge", bad: badIntent(1, "u.json", "\"merge\":{\"s\":\"\xed\xa0\x80\"}"), status: rejected, seq: 1, reason: "invalid UTF-8", next: 2},
		{name: "InvalidUTF8/ID", bad: badIntent(1, "u.json", "\"id\":\"k\xff\",\"merge\":{}"), status: rejected, seq: 1, reason: "id is not valid UTF-8", next: 2},
		// Decision: duplicate keys inside a patch or merge value are
		// rejected; among a record's own fields the last one wins, as in
		// encoding/json and JavaScript.
		{name: "DuplicateKey/PatchValue", bad: badIntent(1, "k.json", `"patch":[{"op":"add","path":"","value":{"a":1,"a":2}}]`), status: rejected, seq: 1, reason: `duplicate key "a"`, next: 2},
		{name: "DuplicateKey/Op", bad: badIntent(1, "k.json", `"patch":[{"op":"add","op":"remove","path":"","value":{}}]`), status: rejected, seq: 1, reason: `duplicate key "op"`, next: 2},
		{name: "DuplicateKey/Merge", bad: badIntent(1, "k.json", `"merge":{"a":{"b":1,"b":null}}`), status: rejected, seq: 1, reason: `duplicate key "b"`, next: 2},
		{
			name: "DuplicateKey/RecordField", bad: badLine(`{"seq":1,"file":"k.json","file":"last.json","merge":{"a":1}}` + "\n"),
			status: applied, seq: 1, next: 2,
			check: func(t *testing.T, h *hostile) {
				if _, err := os.Lstat(h.path("k.json")); err == nil {
					t.Errorf("the first of two file fields was used")
				}
				readJSON(t, h.dir, "last.json")
			},
		},
		{name: "ID/TooLong", bad: badIntent(1, "x.json", `"id":"`+strings.Repeat("i", 129)+`","merge":{}`), status: rejected, seq: 1, reason: "id is 129 bytes, longer than 128", next: 2},
		{name: "ID/NotString", bad: badIntent(1, "x.json", `"id":5,"merge":{}`), status: rejected, seq: 1, reason: "id must be a string", next: 2},
		{name: "Time/NotRFC3339", bad: badIntent(1, "x.json", `"time":"2024-05-01 12:00","merge":{}`), status: rejected, seq: 1, reason: `time "2024-05-01 12:00" is not RFC 3339`, next: 2},
		{name: "Time/NotString", bad: badIntent(1, "x.json", `"time":1714557600,"merge":{}`), status: rejected, seq: 1, reason: "time must be a string", next: 2},
		{name: "IfVersion/Negative", bad: badIntent(1, "x.json", `"if_version":-1,"merge":{}`), status: rejected, seq: 1, reason: "if_version must be an integer", next: 2},
		{name: "IfVersion/Fraction", bad: badIntent(1, "x.json", `"if_version":0.0,"merge":{}`), status: rejected, seq: 1, reason: "if_version must be an integer", next: 2},
		// Decision: an optional field given as null is absent.
		{
			name: "NullOptionals", bad: badIntent(1, "x.json", `"id":null,"if_version":null,"time":null,"merge":{"a":1}`),
			status: applied, seq: 1, next: 2,
		},

		// Journals that misbehave.
		{
			name:  "TornTail",
			setup: func(h *hostile) { h.append("bad", goodLine("bad", 1)) },
			bad:   badLine(`{"seq":2,"file":"t.json","mer`),
			log:   "", // nothing: an unfinished line is waited for
			check: func(t *testing.T, h *hostile) {
				if _, ok := h.result("bad", 2); ok {
					t.Fatalf("an unfinished line got a result")
				}
				var torn int64
				for _, as := range h.status().Agents {
					if as.Agent == "bad" {
						torn = as.TornTail
					}
				}
				if torn == 0 {
					t.Errorf("status shows no torn tail")
				}
				h.append("bad", `ge":{"done":true}}`+"\n"+goodLine("bad", 3))
				h.drain()
				for _, s := range []uint64{2, 3} {
					if r, ok := h.result("bad", s); !ok || r.Status != applied {
						t.Errorf("seq %d after the line was finished = %+v, want applied", s, r)
					}
				}
			},
		},
		{
			name:  "NonSegmentFiles",
			setup: func(h *hostile) { h.append("bad", goodLine("bad", 1)) },
			bad: func(h *hostile) {
				folder := h.path("journal", "bad")
				for name, seq := range map[string]uint64{
					"notes.txt": 50, journal.SegmentName(2) + ".bak": 51, "2.jsonl": 52,
					"0000000000000000000x.jsonl": 53, journal.LockName: 54, "." + journal.SegmentName(3): 55,
				} {
					if err := os.WriteFile(filepath.Join(folder, name), []byte(goodLine("bad", seq)), 0o644); err != nil {
						h.t.Fatal(err)
					}
				}
				if err := os.Mkdir(filepath.Join(folder, journal.SegmentName(4)), 0o755); err != nil {
					h.t.Fatal(err)
				}
				mkfifo(h.t, filepath.Join(folder, journal.SegmentName(5)))
			},
			next: 2,
			check: func(t *testing.T, h *hostile) {
				for _, r := range h.results("bad") {
					if r.Seq >= 50 {
						t.Errorf("a line of a file that is not a segment was processed: %+v", r)
					}
				}
				if strings.Contains(h.newLogs(), "[WARN]") || strings.Contains(h.newLogs(), "[ERROR]") {
					t.Errorf("files that are not segments were not silently ignored:\n%s", h.newLogs())
				}
				h.status() // does not block on the pipe
			},
		},
		{
			name:  "SegmentDeleted",
			setup: func(h *hostile) { h.append("bad", goodLine("bad", 1)) },
			bad: func(h *hostile) {
				if err := os.Remove(h.path("journal", "bad", journal.SegmentName(1))); err != nil {
					h.t.Fatal(err)
				}
				h.drain()
				if !strings.Contains(h.newLogs(), "journal segment being read is gone; waiting") {
					h.t.Errorf("no log line for a deleted segment:\n%s", h.newLogs())
				}
			},
			log:  "journal segment disappeared; continuing with the next one",
			next: 2, nextSeg: 2,
			check: func(t *testing.T, h *hostile) {
				if got := len(h.results("bad")); got != 2 {
					t.Errorf("%d results, want 2 (nothing repeated)", got)
				}
			},
		},
		{
			name:  "JournalFolderDeleted",
			setup: func(h *hostile) { h.append("bad", goodLine("bad", 1)) },
			bad: func(h *hostile) {
				if err := os.RemoveAll(h.path("journal", "bad")); err != nil {
					h.t.Fatal(err)
				}
				h.drain()
				if !strings.Contains(h.newLogs(), "journal folder is gone") {
					h.t.Errorf("no log line for a deleted journal folder:\n%s", h.newLogs())
				}
			},
			log:  "journal segment disappeared; continuing with the next one",
			next: 2, nextSeg: 2,
		},
		{
			// A line that never ends is waited for, however long; once it
			// ends it is too long.
			name:  "TornTail/Huge",
			setup: func(h *hostile) { h.append("bad", goodLine("bad", 1)) },
			bad: func(h *hostile) {
				h.append("bad", `{"seq":2,"file":"t.json","merge":{"pad":"`+strings.Repeat("h", 3<<20))
				h.drain()
				if got := len(h.results("bad")); got != 1 {
					h.t.Errorf("%d results while a long line is unfinished, want 1", got)
				}
				h.append("bad", `"}}`+"\n")
			},
			status: rejected, reason: "too long", next: 3,
		},
		{
			// Decision: fields a record does not know are ignored (forward
			// compatible); field names are exact ("Seq" is unknown).
			name: "UnknownFields", bad: badLine(`{"seq":1,"Seq":99,"file":"x.json","future":{"a":[1]},"merge":{"a":1}}` + "\n"),
			status: applied, seq: 1, next: 2,
		},
		{
			name: "SegmentTruncated",
			setup: func(h *hostile) {
				h.append("bad", intentLine(1, "c.json", `"patch":[{"op":"add","path":"","value":{"n":0}}]`)+intentLine(2, "c.json", inc)+intentLine(3, "c.json", inc))
			},
			bad: func(h *hostile) {
				if err := os.Truncate(h.path("journal", "bad", journal.SegmentName(1)), 10); err != nil {
					h.t.Fatal(err)
				}
			},
			log:  "journal segment is shorter than what was already processed",
			next: 4, nextSeg: 4,
			check: func(t *testing.T, h *hostile) {
				if got := readJSON(t, h.dir, "c.json").(map[string]any)["n"]; got != 2.0 {
					t.Errorf("n = %v, want 2: something was applied again", got)
				}
				if got := len(h.results("bad")); got != 4 {
					t.Errorf("%d results, want 4", got)
				}
			},
		},
		{
			// The segment is replaced (rename over it) by a file whose
			// first lines were rewritten longer: reading resumes at the
			// processed offset, in the middle of a line.
			name: "SegmentReplaced",
			setup: func(h *hostile) {
				h.append("bad", intentLine(1, "c.json", `"patch":[{"op":"add","path":"","value":{"n":0}}]`)+intentLine(2, "c.json", inc)+intentLine(3, "c.json", inc))
			},
			bad: func(h *hostile) {
				p := h.path("journal", "bad", journal.SegmentName(1))
				text := intentLine(1, "c.json", `"merge":{"replaced":1}`) + intentLine(2, "c.json", `"merge":{"replaced":2}`) +
					intentLine(3, "c.json", `"merge":{"replaced":3,"pad":"`+strings.Repeat("p", 200)+`"}`) + intentLine(4, "c.json", inc)
				if err := os.WriteFile(p+".new", []byte(text), 0o644); err != nil {
					h.t.Fatal(err)
				}
				if err := os.Rename(p+".new", p); err != nil {
					h.t.Fatal(err)
				}
			},
			status: rejected, reason: "not valid JSON", next: 5,
			check: func(t *testing.T, h *hostile) {
				doc := readJSON(t, h.dir, "c.json").(map[string]any)
				if _, ok := doc["replaced"]; ok || doc["n"] != 3.0 {
					t.Errorf("c.json = %v, want n = 3 and none of the rewritten lines applied", doc)
				}
			},
			noVerify: "the journal line the log copied was replaced",
		},
		{
			name:  "AgentFolderInvalid",
			agent: "-bad",
			bad: func(h *hostile) {
				for _, name := range []string{"-bad", ".hidden", "with space", "ünïcode", strings.Repeat("a", 65), "a..b"} {
					h.appendSeg(name, 1, goodLine("x", 1))
				}
				h.write("journal/README", "not a folder\n")
			},
			log: "ignoring journal folder with an invalid agent name",
			check: func(t *testing.T, h *hostile) {
				ents, _ := os.ReadDir(h.path("results"))
				for _, e := range ents {
					if e.Name() != "other" {
						t.Errorf("results/%s was created for an invalid agent folder", e.Name())
					}
				}
			},
		},
		{
			name: "Flood", agent: "flood",
			tune: func(h *hostile) { h.a.MaxAgentBatch = 100 },
			bad: func(h *hostile) {
				var b strings.Builder
				b.WriteString(intentLine(1, "flood.json", `"patch":[{"op":"add","path":"","value":{"n":0}}]`))
				for s := uint64(2); s <= 20_000; s++ {
					b.WriteString(intentLine(s, "flood.json", inc))
				}
				h.append("flood", b.String())
			},
			status: applied, seq: 20_000, next: 20_001,
			run: func(h *hostile) {
				h.step()
				r, ok := h.result("other", 2)
				if !ok || r.Status != applied {
					h.t.Fatalf("the other agent's intent after one batch: %+v, want applied", r)
				}
				if got := len(h.results("flood")); got != 100 {
					h.t.Errorf("the flooding agent got %d results in one batch, want 100", got)
				}
				h.a.MaxAgentBatch = 4096
				h.drain()
			},
			check: func(t *testing.T, h *hostile) {
				if got := readJSON(t, h.dir, "flood.json").(map[string]any)["n"]; got != 19_999.0 {
					t.Errorf("n = %v, want 19999", got)
				}
			},
			noVerify: "20,000 lines take long to verify; the other rows check replay --verify",
		},
		{
			name: "FloodBytes", agent: "big",
			tune: func(h *hostile) { h.a.MaxBatchBytes = 1 << 20 },
			bad: func(h *hostile) {
				pad := strings.Repeat("b", 100_000)
				for s := uint64(1); s <= 40; s++ {
					h.append("big", intentLine(s, "big.json", `"merge":{"pad":"`+pad+`"}`))
				}
			},
			status: applied, seq: 40, next: 41,
			run: func(h *hostile) {
				h.step()
				if r, ok := h.result("other", 2); !ok || r.Status != applied {
					h.t.Fatalf("the other agent's intent after one batch: %+v, want applied", r)
				}
				// Two agents share 1 MiB: at most 512 KiB of lines, plus the
				// one that crosses the line.
				if got := len(h.results("big")); got > 6 {
					h.t.Errorf("the agent with big lines got %d lines into one batch, want <= 6", got)
				}
				h.drain()
			},
		},

		// Documents broken on disk.
		{
			name: "Document/InvalidJSON",
			bad: func(h *hostile) {
				h.write("broken.json", `{"a":`)
				h.append("bad", intentLine(1, "broken.json", `"merge":{"b":2}`))
			},
			status: rejected, seq: 1, reason: "document broken.json on disk is unusable (not valid JSON", next: 2,
			log:   "document on disk is unusable",
			check: brokenDoc("broken.json", "unusable: not valid JSON", sameFile("broken.json", `{"a":`)),
		},
		{
			name:  "Document/Directory",
			setup: func(h *hostile) { h.append("bad", intentLine(1, "dir.json", `"merge":{"a":1}`)) },
			bad: func(h *hostile) {
				if err := os.Remove(h.path("dir.json")); err != nil {
					h.t.Fatal(err)
				}
				if err := os.Mkdir(h.path("dir.json"), 0o755); err != nil {
					h.t.Fatal(err)
				}
				h.append("bad", intentLine(2, "dir.json", `"merge":{"b":2}`))
			},
			status: rejected, seq: 2, reason: "dir.json is not a regular file", next: 3,
			check: brokenDoc("dir.json", "not a regular file", sameType("dir.json", os.ModeDir)),
		},
		{
			name:  "Document/NamedPipe",
			setup: func(h *hostile) { h.append("bad", intentLine(1, "pipe.json", `"merge":{"a":1}`)) },
			bad: func(h *hostile) {
				if err := os.Remove(h.path("pipe.json")); err != nil {
					h.t.Fatal(err)
				}
				mkfifo(h.t, h.path("pipe.json"))
				h.append("bad", intentLine(2, "pipe.json", `"merge":{"b":2}`))
			},
			status: rejected, seq: 2, reason: "pipe.json is not a regular file", next: 3,
			check: brokenDoc("pipe.json", "not a regular file", sameType("pipe.json", os.ModeNamedPipe)),
		},
		{
			name: "Document/SymbolicLink",
			bad: func(h *hostile) {
				h.write("target.json", `{"t":1}`)
				if err := os.Symlink("target.json", h.path("link.json")); err != nil {
					h.t.Fatal(err)
				}
				h.append("bad", intentLine(1, "link.json", `"merge":{"b":2}`))
			},
			status: rejected, seq: 1, reason: "link.json is not a regular file", next: 2,
			check: brokenDoc("link.json", "not a regular file", func(t *testing.T, h *hostile) {
				sameType("link.json", os.ModeSymlink)(t, h)
				sameFile("target.json", `{"t":1}`)(t, h)
			}),
		},
		{
			name: "Document/TooLarge",
			tune: func(h *hostile) { h.a.MaxDocSize = 1 << 10 },
			bad: func(h *hostile) {
				h.write("large.json", `{"pad":"`+strings.Repeat("l", 2000)+`"}`)
				h.append("bad", intentLine(1, "large.json", `"merge":{"b":2}`))
			},
			status: rejected, seq: 1, reason: "larger than the limit of 1024", next: 2,
			check: brokenDoc("large.json", "larger than the limit", sameFile("large.json", `{"pad":"`+strings.Repeat("l", 2000)+`"}`)),
		},
		{
			// A regular file when the watcher looks, a named pipe when it
			// opens: the open must not block.
			name:   "Document/PipeAtOpen",
			tune:   swapAtOpen("race.json"),
			setup:  func(h *hostile) { h.write("race.json", `{"a":1}`) },
			bad:    badIntent(1, "race.json", `"merge":{"b":2}`),
			status: rejected, seq: 1, reason: "not a regular file", next: 2,
			noVerify: "the adopted document is gone",
		},
		{
			name: "Journal/PipeAtOpen", agent: "racer",
			tune: swapAtOpen("journal/racer/" + journal.SegmentName(1)),
			bad:  func(h *hostile) { h.appendSeg("racer", 1, goodLine("racer", 1)) },
			log:  "cannot read journal",
			check: func(t *testing.T, h *hostile) {
				if got := h.results("racer"); len(got) != 0 {
					t.Errorf("results %+v for a journal segment that is a pipe", got)
				}
			},
		},
	}
	rows = append(rows, seqRows()...)
	rows = append(rows, nameRows()...)
	return rows
}

// TestApplier_HostileInput feeds each bad input to a watcher and checks the
// answer it gets, that the same agent's next good record applies, and that
// another agent is served meanwhile.
func TestApplier_HostileInput(t *testing.T) {
	seen := map[string]bool{}
	for _, row := range hostileRows() {
		if seen[row.name] {
			t.Fatalf("duplicate row %s", row.name)
		}
		seen[row.name] = true
		t.Run(row.name, func(t *testing.T) {
			h := newHostile(t)
			agent := row.agent
			if agent == "" {
				agent = "bad"
			}
			if row.tune != nil {
				row.tune(h)
			}
			h.open()
			h.append("other", goodLine("other", 1))
			if row.setup != nil {
				row.setup(h)
			}
			h.drain()
			h.mark = len(h.logs.String())
			before := len(h.results(agent))

			row.bad(h)
			if row.next > 0 {
				if row.nextSeg > 0 {
					h.appendSeg(agent, row.nextSeg, goodLine(agent, row.next))
				} else {
					h.append(agent, goodLine(agent, row.next))
				}
			}
			h.append("other", goodLine("other", 2))
			if row.run != nil {
				row.run(h)
			} else {
				h.drain()
			}

			// The answer to the bad input.
			if row.status != "" {
				var r journal.Result
				found := false
				if row.seq > 0 {
					r, found = h.result(agent, row.seq)
				} else {
					for _, c := range h.results(agent)[before:] {
						if c.Seq == 0 {
							r, found = c, true
							break
						}
					}
				}
				switch {
				case !found:
					t.Errorf("no result for the bad input (seq %d); results: %+v", row.seq, h.results(agent))
				case r.Status != row.status || !strings.Contains(r.Error, row.reason):
					t.Errorf("bad input got %+v, want %s with an error containing %q", r, row.status, row.reason)
				case row.seq == 0 && (r.Segment == "" || r.Offset == nil):
					t.Errorf("a line without seq got %+v, want segment and offset", r)
				case row.status == applied && r.Error != "":
					t.Errorf("applied with error %q", r.Error)
				}
			}
			if row.log != "" && !strings.Contains(h.newLogs(), row.log) {
				t.Errorf("no log line containing %q; log:\n%s", row.log, h.newLogs())
			}
			// The same agent's next record, and the other agent's.
			if row.next > 0 {
				if r, ok := h.result(agent, row.next); !ok || r.Status != applied {
					t.Errorf("good record seq %d after the bad input = %+v (found %v), want applied", row.next, r, ok)
				}
			}
			if r, ok := h.result("other", 2); !ok || r.Status != applied {
				t.Errorf("the other agent's record = %+v (found %v), want applied", r, ok)
			}
			if row.check != nil {
				row.check(t, h)
			}
			h.a.Close()
			if row.noVerify == "" {
				mustVerify(t, h.dir)
			}
		})
	}
}
