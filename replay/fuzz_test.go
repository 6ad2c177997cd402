package replay

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	jsonpatch "github.com/evanphx/json-patch/v5"
)

// addConformanceSeeds adds the records of the conformance suite, when it is
// there, as seeds of a fuzz test taking a document and a patch.
func addConformanceSeeds(f *testing.F) {
	dir := os.Getenv("STATEWARD_CONFORMANCE_DIR")
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return
		}
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				dir = filepath.Join(d, "..", "shared", "conformance", "json-patch-tests")
				break
			}
			if filepath.Dir(d) == d {
				return
			}
		}
	}
	for _, file := range []string{"tests.json", "spec_tests.json"} {
		data, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			continue // the committed corpus has them too
		}
		var records []conformanceRecord
		if err := json.Unmarshal(data, &records); err != nil {
			f.Fatalf("parse %s: %v", file, err)
		}
		for _, r := range records {
			if r.Doc != nil && r.Patch != nil {
				f.Add([]byte(r.Doc), []byte(r.Patch))
			}
		}
	}
}

// FuzzApply checks Apply against github.com/evanphx/json-patch/v5 and
// checks its own invariants: a failed Apply leaves the document as it was,
// errors are classified, and a result encodes and parses back.
func FuzzApply(f *testing.F) {
	for _, s := range [][2]string{
		{`{"a":1,"b":[1,2,3],"c":{"d":"e"}}`, `[{"op":"add","path":"/b/1","value":{"x":null}},{"op":"remove","path":"/b/0"},{"op":"test","path":"/b/0/x","value":null}]`},
		{`{"a":1,"b":[1,2,3]}`, `[{"op":"move","from":"/b/0","path":"/b/-"},{"op":"copy","from":"/b","path":"/c"},{"op":"replace","path":"/c/0","value":9}]`},
		{`{"a":{"b":{"c":1}}}`, `[{"op":"move","from":"/a/b","path":"/a/b/c/d"}]`},
		{`{"a":[1,2]}`, `[{"op":"add","path":"/a/01","value":1}]`},
		{`{"a":1.0}`, `[{"op":"test","path":"/a","value":1}]`},
		{`{"a":"x"}`, `[{"op":"replace","path":"/a","value":"y"},{"op":"test","path":"/a","value":"x"}]`},
		{`{"tasks":{"t1":{"status":"open"}},"n":0}`, `[{"op":"test","path":"/tasks/t1/status","value":"open"},{"op":"replace","path":"/tasks/t1/status","value":"claimed"},{"op":"inc","path":"/n","value":1}]`},
		{`{"":{"":1}}`, `[{"op":"remove","path":"//"}]`},
		{`[[]]`, `[{"op":"add","path":"/0/-","value":[1,{"a":[]}]},{"op":"copy","from":"/0/0/1","path":"/-"}]`},
		{`{"k\"l":1,"a/b":2,"m~n":3}`, `[{"op":"move","from":"/a~1b","path":"/m~0n"},{"op":"test","path":"/k\"l","value":1}]`},
		{`{"tasks":{"t1":{"status":"done"},"t7":{"status":"open","priority":2,"blockedBy":["t1"]},"t8":{"status":"open","priority":1,"blockedBy":["t9"]}}}`, `[{"op":"claim_next","path":"/tasks","match":{"status":"open"},"deps":"blockedBy","done":{"status":"done"},"order":"priority","set":{"status":"claimed","owner":"alice"}}]`},
		{`{"tasks":[{"status":"done"},{"status":"open","d":[0]},{"status":"open","d":[2]},{"p":"a"},{"p":1}]}`, `[{"op":"claim_next","path":"/tasks","deps":"d","order":"p","set":{"x":null}},{"op":"add","path":"$claimed/at","value":1},{"op":"copy","from":"$claimed","path":"/last"}]`},
		{`{"q":{"a":{"s":"o","n":[1]},"b":{"s":"o","n":["a","b"]},"c":{"s":"x","n":["b"]}}}`, `[{"op":"claim_next","path":"/q","match":{"s":"o"},"deps":"n","done":{"s":"x"}},{"op":"test","path":"$claimed/s","value":"x"}]`},
		{`{"t":{}}`, `[{"op":"claim_next","path":"/t"}]`},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	addConformanceSeeds(f)
	opts := jsonpatch.NewApplyOptions()
	opts.SupportNegativeIndices = false // RFC 6901 has no negative indexes
	opts.EscapeHTML = false
	f.Fuzz(func(t *testing.T, docData, patchData []byte) {
		d, err := ParseDoc(docData)
		if err != nil {
			return
		}
		docData = bytes.TrimPrefix(docData, []byte(utf8BOM)) // for evanphx
		ops, err := DecodePatch(patchData)
		if err != nil {
			return
		}
		orig := d.Clone()
		before := d.AppendJSON(nil)
		// A limit far away: the size is tracked through every change and
		// must equal the bytes written, whatever happens.
		d.MaxSize = 1 << 40
		ourErr := d.Apply(ops)
		checkApplyInvariants(t, d, orig, before, ops, ourErr)
		checkClaim(t, d, orig, ops, ourErr)

		if quirk := skipDifferential(ops); quirk != "" {
			return
		}
		theirPatch, err := jsonpatch.DecodePatch(patchData)
		if err != nil {
			return // not a patch for evanphx: it validates less and differently
		}
		theirOut, theirErr, panicked := applyEvanphx(theirPatch, bytes.TrimSpace(docData), opts)
		if panicked != nil {
			// A bug of evanphx (a nil lazyNode for a null array element
			// in a test): there is nothing to compare with.
			return
		}
		switch {
		case ourErr != nil && theirErr != nil:
			return
		case ourErr == nil && theirErr == nil:
			if reflect.DeepEqual(d.Data(), decodeJSON(t, theirOut)) {
				return
			}
		}
		if why := knownDifference(orig, ops, ourErr != nil, theirErr != nil); why == "" {
			t.Fatalf("doc %s patch %s:\nours:    %v\n%s\nevanphx: %v\n%s", docData, patchData, ourErr, d.AppendJSON(nil), theirErr, theirOut)
		}
	})
}

// checkClaim checks a patch whose first op is its only claim_next: on
// success, the claimed task was the first that Ready listed before the
// Apply (it matched and was ready at decision time); with no ready task,
// Ready listed none.
func checkClaim(t *testing.T, d, orig *Doc, ops []Op, err error) {
	t.Helper()
	if len(ops) == 0 || ops[0].Kind != opClaimNext || ops[0].pathClaimed || !orig.Exists() {
		return
	}
	for _, op := range ops[1:] {
		if op.Kind == opClaimNext {
			return
		}
	}
	ready, _, rerr := orig.Clone().Ready(ops[0])
	switch {
	case errors.Is(err, ErrNoReadyTask):
		if rerr != nil || len(ready) != 0 {
			t.Fatalf("no ready task, but Ready lists %v (%v)", ready, rerr)
		}
	case err == nil:
		if rerr != nil || len(ready) == 0 || ready[0].Pointer != d.Claimed() {
			t.Fatalf("claimed %q, but Ready lists %v (%v)", d.Claimed(), ready, rerr)
		}
	}
}

// checkApplyInvariants checks the outcome of Apply on d, whose state
// before was orig and encoded as before.
func checkApplyInvariants(t *testing.T, d, orig *Doc, before []byte, ops []Op, err error) {
	t.Helper()
	after := d.AppendJSON(nil)
	if d.sized && d.size != int64(len(after)) {
		t.Fatalf("tracked size %d, but AppendJSON writes %d bytes (err %v)", d.size, len(after), err)
	}
	if err != nil && errors.Is(err, ErrNoReadyTask) {
		if errors.Is(err, ErrInvalidPatch) || errors.Is(err, ErrTestFailed) || !strings.HasPrefix(err.Error(), "no ready task under ") {
			t.Fatalf("no ready task error %q: wrongly classified or worded", err)
		}
		if after := d.AppendJSON(nil); !bytes.Equal(after, before) || !equal(d.root, orig.root) {
			t.Fatalf("failed Apply (%v) changed the document:\n%s\nwas\n%s", err, after, before)
		}
		return
	}
	if err != nil {
		if !errors.Is(err, ErrInvalidPatch) && !errors.Is(err, ErrTestFailed) {
			t.Fatalf("error %q wraps neither ErrInvalidPatch nor ErrTestFailed", err)
		}
		if errors.Is(err, ErrInvalidPatch) && errors.Is(err, ErrTestFailed) {
			t.Fatalf("error %q wraps both ErrInvalidPatch and ErrTestFailed", err)
		}
		if !strings.Contains(err.Error(), ": op ") {
			t.Fatalf("error %q does not name the op", err)
		}
		if !bytes.Equal(after, before) || d.Exists() != orig.Exists() || !equal(d.root, orig.root) {
			t.Fatalf("failed Apply (%v) changed the document:\n%s\nwas\n%s", err, after, before)
		}
		return
	}
	if !d.Exists() {
		t.Fatal("document does not exist after a successful Apply")
	}
	again, perr := ParseDoc(after)
	if perr != nil {
		t.Fatalf("result does not parse: %v\n%s", perr, after)
	}
	if !equal(again.root, d.root) {
		t.Fatalf("result parses to another value:\n%s", after)
	}
	// Applying is deterministic, and the ops can be applied again.
	c := orig.Clone()
	if err := c.Apply(ops); err != nil {
		t.Fatalf("second Apply on a clone: %v", err)
	}
	if got := c.AppendJSON(nil); !bytes.Equal(got, after) {
		t.Fatalf("second Apply on a clone gave\n%s\nfirst\n%s", got, after)
	}
}

// applyEvanphx applies p to doc with evanphx/json-patch and recovers its
// panics.
func applyEvanphx(p jsonpatch.Patch, doc []byte, opts *jsonpatch.ApplyOptions) (out []byte, err error, panicked any) {
	defer func() {
		if r := recover(); r != nil {
			panicked = r
		}
	}()
	out, err = p.ApplyWithOptions(doc, opts)
	return out, err, nil
}

// maxFuzzCopies is the most copy ops a patch may have to be compared with
// evanphx, which does not bound their growth as Apply does.
const maxFuzzCopies = 6

// skipDifferential returns why ops are not compared with evanphx, or "".
func skipDifferential(ops []Op) string {
	copies := 0
	for _, op := range ops {
		switch op.Kind {
		case opInc:
			return "inc is an extension evanphx does not have"
		case opClaimNext:
			return "claim_next is an extension evanphx does not have"
		}
		if op.pathClaimed || op.fromClaimed {
			return "$claimed is an extension evanphx does not have"
		}
		switch op.Kind {
		case opCopy:
			if copies++; copies > maxFuzzCopies {
				return "too many copies"
			}
		}
	}
	return ""
}

// knownDifference returns the known difference of evanphx/json-patch v5.9.11
// (with negative indexes off) from RFC 6902 that can explain a disagreement
// on ops applied to doc, or "" if there is none. ourFail and theirFail say
// which sides failed (neither: both applied, with different results). These are evanphx's departures from the RFCs, read from its
// patch.go, not this package's:
//
//  1. Scalar documents: evanphx holds the root as an object or array only,
//     so it fails on a document that is a string, number, boolean or null,
//     and on add or replace of "" with such a value.
//  2. Empty reference tokens: evanphx's partialDoc.get("") returns the
//     container itself, so "/a//b" means "/a/b", test, replace, and the
//     "from" of move and copy read "/a/" as "/a"; "" as the target of
//     remove, move and copy removes or adds the member "" instead of the
//     root, and copy from "" copies the document as it was before the patch.
//  3. Array indexes: evanphx parses them with strconv.Atoi, accepting "01",
//     "+1" and "-0" (RFC 6901 allows only canonical decimal).
//  4. test of a missing path against null: evanphx passes it.
//  5. Number equality: evanphx compares numbers by their text (1 != 1.0),
//     the RFC by value.
func knownDifference(doc *Doc, ops []Op, ourFail, theirFail bool) string {
	if doc.root.kind != kindObject && doc.root.kind != kindArray {
		return "1 scalar document"
	}
	for _, op := range ops {
		if (op.Kind == opAdd || op.Kind == opReplace) && len(op.path) == 0 &&
			op.Value.kind != kindObject && op.Value.kind != kindArray {
			return "1 scalar document"
		}
		if emptyTokenQuirk(op) {
			return "2 empty reference token"
		}
		for _, toks := range [][]string{op.path, op.from} {
			for _, tok := range toks {
				if n, err := strconv.Atoi(tok); err == nil && strconv.Itoa(n) != tok {
					return "3 non-canonical array index"
				}
			}
		}
		if op.Kind == opTest && ourFail && !theirFail && op.Value.kind == kindNull {
			return "4 test of a missing path against null"
		}
		if op.Kind == opTest && !ourFail && theirFail && hasNumber(op.Value) {
			return "5 numbers compared by text"
		}
	}
	return ""
}

// emptyTokenQuirk reports whether op is one of those evanphx gets wrong
// for an empty reference token or the root pointer (knownDifference 2).
func emptyTokenQuirk(op Op) bool {
	inner := func(toks []string) bool {
		for i := 0; i < len(toks)-1; i++ {
			if toks[i] == "" {
				return true
			}
		}
		return false
	}
	last := func(toks []string) bool { return len(toks) > 0 && toks[len(toks)-1] == "" }
	if inner(op.path) || inner(op.from) {
		return true
	}
	switch op.Kind {
	case opReplace, opTest:
		return last(op.path)
	case opRemove:
		return len(op.path) == 0
	case opMove, opCopy:
		return last(op.from) || len(op.from) == 0 || len(op.path) == 0
	}
	return false
}

func hasNumber(v value) bool {
	switch v.kind {
	case kindNumber:
		return true
	case kindArray:
		for _, e := range v.arr.elems {
			if hasNumber(e) {
				return true
			}
		}
	case kindObject:
		for _, m := range v.obj.members {
			if hasNumber(m.val) {
				return true
			}
		}
	}
	return false
}

// FuzzEncode checks ParseDoc against encoding/json: it accepts what
// json.Valid accepts except duplicate keys and invalid UTF-8, reads the same
// values, and AppendJSON writes what json.MarshalIndent writes.
func FuzzEncode(f *testing.F) {
	for _, s := range []string{
		`{"b":1,"a":[true,false,null,{}],"c":{"z":[]}}`,
		`"\u2028\u2029 <>& \ud800 \ud83d\ude00 \u0000\u001f\"\\\/\b\f\n\r\t é 日本"`,
		`[0,-0,1.5e+10,1E-7,12345678901234567890123]`,
		`{"a":1,"a":2}`,
		"\"\xff\"",
		`  [ 1 , { "x" : "y" } ]  `,
		`{"é":1,"e":2,"E":3,"":4}`,
		`[01]`,
		`[1,]`,
		`nul`,
		"{\"a\":\"\t\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if nesting(data) > 256 {
			// Indented output grows with the square of the depth: such
			// inputs take seconds each and tell nothing new (the depth
			// limit itself is tested in TestParseDoc).
			t.Skip("nested deeper than 256")
		}
		d, err := ParseDoc(data)
		// ParseDoc ignores a byte order mark; encoding/json does not.
		data = bytes.TrimPrefix(data, []byte(utf8BOM))
		valid := json.Valid(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidJSON) {
				t.Fatalf("error %q does not wrap ErrInvalidJSON", err)
			}
			if !valid {
				return
			}
			// The documented rejections; the error names one that applies.
			badUTF8 := !utf8.Valid(data) && strings.Contains(err.Error(), "invalid UTF-8")
			dupKey := strings.Contains(err.Error(), "duplicate key") && hasDuplicateKey(t, data)
			if !badUTF8 && !dupKey {
				t.Fatalf("ParseDoc(%q) rejects what json.Valid accepts: %v", data, err)
			}
			return
		}
		if !valid {
			t.Fatalf("ParseDoc(%q) accepts what json.Valid rejects", data)
		}
		if got, want := d.Data(), decodeJSON(t, data); !reflect.DeepEqual(got, want) {
			t.Fatalf("ParseDoc(%q).Data()=%#v, want %#v", data, got, want)
		}
		got := d.AppendJSON(nil)
		if size := d.Size(); size != int64(len(got)) {
			t.Fatalf("Size()=%d, but AppendJSON writes %d bytes of %q", size, len(got), data)
		}
		if want := marshalIndent(t, d.Data()); !bytes.Equal(got, want) {
			t.Fatalf("AppendJSON of %q:\n%s\nwant\n%s", data, got, want)
		}
		again, err := ParseDoc(got)
		if err != nil {
			t.Fatalf("AppendJSON output does not parse: %v\n%s", err, got)
		}
		if !equal(again.root, d.root) {
			t.Fatalf("AppendJSON output parses to another value:\n%s", got)
		}
	})
}

// hasDuplicateKey reports whether an object in data, valid JSON, has a key
// twice, as encoding/json's tokenizer reads the keys.
func hasDuplicateKey(tb testing.TB, data []byte) bool {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		object bool
		keys   map[string]bool
		key    bool // the next string token is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return false
		}
		if err != nil {
			tb.Fatalf("tokenize valid JSON %q: %v", data, err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.key {
			if delim, ok := tok.(json.Delim); ok && delim == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			k := tok.(string)
			if top.keys[k] {
				return true
			}
			top.keys[k] = true
			top.key = false
			continue
		}
		if top != nil && top.object {
			top.key = true // this token is the member's value
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, keys: map[string]bool{}, key: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
}

// Test that the fuzz helpers can fail: each known difference is needed.
func TestKnownDifference(t *testing.T) {
	for _, tc := range []struct{ name, doc, patch, want string }{
		{"ScalarDoc", `"x"`, `[{"op":"replace","path":"","value":"y"}]`, "1 scalar document"},
		{"EmptyInnerToken", `{"a":{"b":1}}`, `[{"op":"remove","path":"/a//b"}]`, "2 empty reference token"},
		{"NonCanonicalIndex", `[1,2]`, `[{"op":"remove","path":"/01"}]`, "3 non-canonical array index"},
		{"TestMissingNull", `{}`, `[{"op":"test","path":"/a","value":null}]`, "4 test of a missing path against null"},
		{"NumberText", `{"a":1.0}`, `[{"op":"test","path":"/a","value":1}]`, "5 numbers compared by text"},
		{"None", `{"a":1}`, `[{"op":"remove","path":"/a"}]`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := MustParseDoc(t, tc.doc)
			ops := MustDecodePatch(t, tc.patch)
			ourFail := d.Clone().Apply(ops) != nil
			if got := knownDifference(d, ops, ourFail, !ourFail); got != tc.want {
				t.Fatalf("knownDifference=%q, want %q", got, tc.want)
			}
		})
	}
	t.Run("DuplicateKeyHelper", func(t *testing.T) {
		for doc, want := range map[string]bool{
			`{"a":1,"a":2}`:               true,
			`{"a":{"a":1},"b":[{"a":1}]}`: false,
			`[{"a":1},{"a":1}]`:           false,
			`{"a":[1,{"b":2,"b":3}]}`:     true,
			`{"a":"b","b":"a"}`:           false,
		} {
			if got := hasDuplicateKey(t, []byte(doc)); got != want {
				t.Errorf("hasDuplicateKey(%s)=%v, want %v", doc, got, want)
			}
		}
	})
}

// nesting returns the greatest count of open brackets in data, a bound on
// its nesting depth.
func nesting(data []byte) int {
	depth, most := 0, 0
	for _, c := range data {
		switch c {
		case '[', '{':
			depth++
			most = max(most, depth)
		case ']', '}':
			depth--
		}
	}
	return most
}
