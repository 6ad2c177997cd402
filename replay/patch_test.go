package replay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// MustParseDoc parses s or fails the test.
func MustParseDoc(tb testing.TB, s string) *Doc {
	tb.Helper()
	d, err := ParseDoc([]byte(s))
	if err != nil {
		tb.Fatalf("ParseDoc(%s): %v", s, err)
	}
	return d
}

// MustDecodePatch decodes s or fails the test.
func MustDecodePatch(tb testing.TB, s string) []Op {
	tb.Helper()
	ops, err := DecodePatch([]byte(s))
	if err != nil {
		tb.Fatalf("DecodePatch(%s): %v", s, err)
	}
	return ops
}

// assertDoc fails the test unless d holds the JSON value want, as
// encoding/json decodes both.
func assertDoc(tb testing.TB, d *Doc, want string) {
	tb.Helper()
	if !d.Exists() {
		tb.Fatalf("document does not exist, want %s", want)
	}
	if got, w := d.Data(), decodeJSON(tb, []byte(want)); !reflect.DeepEqual(got, w) {
		tb.Fatalf("document is\n%s\nwant %s", d.AppendJSON(nil), want)
	}
}

func TestDecodePatch(t *testing.T) {
	t.Run("Valid", func(t *testing.T) {
		ops := MustDecodePatch(t, `[
			{"op":"add","path":"/a~1b/~0c","value":{"x":[1]},"ignored":true},
			{"op":"remove","path":"/a","value":"ignored","from":5},
			{"op":"replace","path":"","value":null},
			{"op":"move","from":"/a","path":"/b"},
			{"op":"copy","from":"","path":"/-"},
			{"op":"test","path":"/","value":false},
			{"op":"inc","path":"/n","value":-1.5e3}
		]`)
		if got, want := len(ops), 7; got != want {
			t.Fatalf("len(ops)=%d, want %d", got, want)
		}
		if got, want := ops[0].path, []string{"a/b", "~c"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("ops[0].path=%q, want %q", got, want)
		}
		if got, want := ops[4].From, ""; got != want {
			t.Fatalf("ops[4].From=%q, want %q", got, want)
		}
		if got, want := ops[5].path, []string{""}; !reflect.DeepEqual(got, want) {
			t.Fatalf("ops[5].path=%q, want %q", got, want)
		}
		for i, want := range []string{"add", "remove", "replace", "move", "copy", "test", "inc"} {
			if got := ops[i].Kind; got != want {
				t.Fatalf("ops[%d].Kind=%q, want %q", i, got, want)
			}
		}
	})
	for _, tc := range []struct {
		name, patch, want string
	}{
		{"NotJSON", `[{"op":}]`, "offset 7: unexpected character '}', expecting a value"},
		{"NotArray", `{"op":"add"}`, "patch is an object, want an array"},
		{"Null", `null`, "patch is null, want an array"},
		{"OpNotObject", `[{"op":"test","path":"","value":1}, 5]`, "op 1: operation is a number, want an object"},
		{"UnknownOp", `[{"op":"frobnicate","path":"/a"}]`, `op 0: unknown op "frobnicate"`},
		{"MissingOp", `[{"path":"/a"}]`, `op 0: missing "op"`},
		{"OpNotString", `[{"op":1,"path":"/a"}]`, `op 0: "op" is a number, want a string`},
		{"MissingPath", `[{"op":"add","value":1}]`, `op 0: missing "path"`},
		{"NullPath", `[{"op":"add","path":null,"value":1}]`, `op 0: "path" is null, want a string`},
		{"PathNoSlash", `[{"op":"add","path":"a","value":1}]`, `op 0: invalid "path" "a": does not start with /`},
		{"PathBadEscape", `[{"op":"add","path":"/a~2","value":1}]`, `op 0: invalid "path" "/a~2"`},
		{"PathTrailingTilde", `[{"op":"remove","path":"/a~"}]`, `op 0: invalid "path" "/a~"`},
		{"MissingValue", `[{"op":"test","path":"/a","value":1},{"op":"add","path":"/a"}]`, `op 1: missing "value"`},
		{"MissingValueReplace", `[{"op":"replace","path":"/a"}]`, `op 0: missing "value"`},
		{"MissingValueTest", `[{"op":"test","path":"/a"}]`, `op 0: missing "value"`},
		{"MissingFromMove", `[{"op":"move","path":"/a"}]`, `op 0: missing "from"`},
		{"MissingFromCopy", `[{"op":"copy","path":"/a"}]`, `op 0: missing "from"`},
		{"FromNotString", `[{"op":"copy","from":[],"path":"/a"}]`, `op 0: "from" is an array, want a string`},
		{"FromBadPointer", `[{"op":"move","from":"x","path":"/a"}]`, `op 0: invalid "from" "x"`},
		{"IncNull", `[{"op":"inc","path":"/a","value":null}]`, `op 0: "value" of inc is null, want a number`},
		{"IncString", `[{"op":"inc","path":"/a","value":"1"}]`, `op 0: "value" of inc is a string, want a number`},
		{"IncMissingValue", `[{"op":"inc","path":"/a"}]`, `op 0: missing "value"`},
		{"DuplicateMember", `[{"op":"add","path":"/a","value":1,"op":"remove"}]`, `duplicate key "op"`},
		{"OpCase", `[{"op":"ADD","path":"/a","value":1}]`, `unknown op "ADD"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ops, err := DecodePatch([]byte(tc.patch))
			if err == nil {
				t.Fatalf("DecodePatch(%s)=%v, want an error", tc.patch, ops)
			}
			if !errors.Is(err, ErrInvalidPatch) {
				t.Fatalf("error %q does not wrap ErrInvalidPatch", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
	t.Run("InvalidJSONWrapsBoth", func(t *testing.T) {
		_, err := DecodePatch([]byte(`[`))
		if !errors.Is(err, ErrInvalidPatch) || !errors.Is(err, ErrInvalidJSON) {
			t.Fatalf("error %q, want one wrapping ErrInvalidPatch and ErrInvalidJSON", err)
		}
	})
}

// applyCase is a patch on a document and its outcome: the resulting
// document, or an error wrapping wantErr whose message contains wantMsg.
type applyCase struct {
	name, doc, patch string
	want             string
	wantErr          error
	wantMsg          string
}

func runApplyCases(t *testing.T, cases []applyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := MustParseDoc(t, tc.doc)
			before := d.AppendJSON(nil)
			err := d.Apply(MustDecodePatch(t, tc.patch))
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Apply(%s): %v", tc.patch, err)
				}
				assertDoc(t, d, tc.want)
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Apply(%s)=%v, want an error wrapping %v", tc.patch, err, tc.wantErr)
			}
			for _, other := range []error{ErrInvalidPatch, ErrTestFailed} {
				if other != tc.wantErr && errors.Is(err, other) {
					t.Fatalf("error %q also wraps %v", err, other)
				}
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %q does not contain %q", err, tc.wantMsg)
			}
			if after := d.AppendJSON(nil); !bytes.Equal(after, before) {
				t.Fatalf("failed Apply changed the document:\n%s\nwas\n%s", after, before)
			}
		})
	}
}

func TestDoc_Apply(t *testing.T) {
	t.Run("Add", func(t *testing.T) {
		runApplyCases(t, []applyCase{
			{name: "Member", doc: `{"a":1}`, patch: `[{"op":"add","path":"/b","value":{"c":[true]}}]`, want: `{"a":1,"b":{"c":[true]}}`},
			{name: "ReplacesMember", doc: `{"a":1}`, patch: `[{"op":"add","path":"/a","value":null}]`, want: `{"a":null}`},
			{name: "EmptyKey", doc: `{"a":{}}`, patch: `[{"op":"add","path":"/a/","value":1}]`, want: `{"a":{"":1}}`},
			{name: "EscapedKey", doc: `{}`, patch: `[{"op":"add","path":"/a~1b~0c","value":1}]`, want: `{"a/b~c":1}`},
			{name: "ArrayInsert", doc: `[1,2]`, patch: `[{"op":"add","path":"/1","value":9}]`, want: `[1,9,2]`},
			{name: "ArrayFront", doc: `[1,2]`, patch: `[{"op":"add","path":"/0","value":9}]`, want: `[9,1,2]`},
			{name: "ArrayAtLength", doc: `[1,2]`, patch: `[{"op":"add","path":"/2","value":9}]`, want: `[1,2,9]`},
			{name: "ArrayDash", doc: `{"a":[1]}`, patch: `[{"op":"add","path":"/a/-","value":[2]}]`, want: `{"a":[1,[2]]}`},
			{name: "DashKeyInObject", doc: `{}`, patch: `[{"op":"add","path":"/-","value":1}]`, want: `{"-":1}`},
			{name: "Root", doc: `{"a":1}`, patch: `[{"op":"add","path":"","value":[1]}]`, want: `[1]`},
			{name: "RootScalar", doc: `{"a":1}`, patch: `[{"op":"add","path":"","value":"s"}]`, want: `"s"`},
			{name: "IndexTooLarge", doc: `[1,2]`, patch: `[{"op":"add","path":"/3","value":9}]`, wantErr: ErrInvalidPatch, wantMsg: "op 0 (add /3): index 3 out of range (array length 2)"},
			{name: "NegativeIndex", doc: `[1,2]`, patch: `[{"op":"add","path":"/-1","value":9}]`, wantErr: ErrInvalidPatch, wantMsg: `invalid array index "-1"`},
			{name: "LeadingZero", doc: `[1,2]`, patch: `[{"op":"add","path":"/01","value":9}]`, wantErr: ErrInvalidPatch, wantMsg: `invalid array index "01"`},
			{name: "MissingParent", doc: `{"a":1}`, patch: `[{"op":"add","path":"/b/c","value":9}]`, wantErr: ErrInvalidPatch, wantMsg: "op 0 (add /b/c): path not found"},
			{name: "ScalarParent", doc: `{"a":1}`, patch: `[{"op":"add","path":"/a/c","value":9}]`, wantErr: ErrInvalidPatch, wantMsg: "path not found"},
			{name: "NullParent", doc: `{"a":null}`, patch: `[{"op":"add","path":"/a/c","value":9}]`, wantErr: ErrInvalidPatch, wantMsg: "path not found"},
		})
	})
	t.Run("Remove", func(t *testing.T) {
		runApplyCases(t, []applyCase{
			{name: "Member", doc: `{"a":1,"b":2}`, patch: `[{"op":"remove","path":"/a"}]`, want: `{"b":2}`},
			{name: "Element", doc: `[1,2,3]`, patch: `[{"op":"remove","path":"/1"}]`, want: `[1,3]`},
			{name: "Last", doc: `[1,2,3]`, patch: `[{"op":"remove","path":"/2"}]`, want: `[1,2]`},
			{name: "Nested", doc: `{"a":[{"b":1,"c":2}]}`, patch: `[{"op":"remove","path":"/a/0/b"}]`, want: `{"a":[{"c":2}]}`},
			{name: "MissingMember", doc: `{"a":1}`, patch: `[{"op":"remove","path":"/b"}]`, wantErr: ErrInvalidPatch, wantMsg: "op 0 (remove /b): path not found"},
			{name: "MissingIndex", doc: `[1]`, patch: `[{"op":"remove","path":"/1"}]`, wantErr: ErrInvalidPatch, wantMsg: "path not found"},
			{name: "Dash", doc: `[1]`, patch: `[{"op":"remove","path":"/-"}]`, wantErr: ErrInvalidPatch, wantMsg: "path not found"},
			{name: "BadIndex", doc: `[1]`, patch: `[{"op":"remove","path":"/1e0"}]`, wantErr: ErrInvalidPatch, wantMsg: `invalid array index "1e0"`},
			{name: "Root", doc: `{"a":1}`, patch: `[{"op":"remove","path":""}]`, wantErr: ErrInvalidPatch, wantMsg: `op 0 (remove ""): cannot remove the whole document`},
		})
	})
	t.Run("Replace", func(t *testing.T) {
		runApplyCases(t, []applyCase{
			{name: "Member", doc: `{"a":1}`, patch: `[{"op":"replace","path":"/a","value":[2]}]`, want: `{"a":[2]}`},
			{name: "Element", doc: `[1,2]`, patch: `[{"op":"replace","path":"/1","value":null}]`, want: `[1,null]`},
			{name: "Root", doc: `{"a":1}`, patch: `[{"op":"replace","path":"","value":"bar"}]`, want: `"bar"`},
			{name: "RootOfScalar", doc: `"foo"`, patch: `[{"op":"replace","path":"","value":"bar"}]`, want: `"bar"`},
			{name: "MissingMember", doc: `{"tasks":{}}`, patch: `[{"op":"test","path":"/tasks","value":{}},{"op":"add","path":"/x","value":1},{"op":"replace","path":"/tasks/7/status","value":"done"}]`, wantErr: ErrInvalidPatch, wantMsg: "op 2 (replace /tasks/7/status): path not found"},
			{name: "MissingIndex", doc: `[1]`, patch: `[{"op":"replace","path":"/1","value":2}]`, wantErr: ErrInvalidPatch, wantMsg: "path not found"},
			{name: "Dash", doc: `[1]`, patch: `[{"op":"replace","path":"/-","value":2}]`, wantErr: ErrInvalidPatch, wantMsg: "path not found"},
		})
	})
	t.Run("Move", func(t *testing.T) {
		runApplyCases(t, []applyCase{
			{name: "Member", doc: `{"a":{"b":1},"c":{}}`, patch: `[{"op":"move","from":"/a/b","path":"/c/d"}]`, want: `{"a":{},"c":{"d":1}}`},
			{name: "ArrayForward", doc: `["all","grass","cows","eat"]`, patch: `[{"op":"move","from":"/1","path":"/3"}]`, want: `["all","cows","eat","grass"]`},
			{name: "ArrayBackward", doc: `[1,2,3]`, patch: `[{"op":"move","from":"/2","path":"/0"}]`, want: `[3,1,2]`},
			{name: "ArrayToDash", doc: `[1,2,3]`, patch: `[{"op":"move","from":"/0","path":"/-"}]`, want: `[2,3,1]`},
			{name: "ToRoot", doc: `{"a":{"b":1}}`, patch: `[{"op":"move","from":"/a","path":""}]`, want: `{"b":1}`},
			{name: "OntoItself", doc: `{"a":1}`, patch: `[{"op":"move","from":"/a","path":"/a"}]`, want: `{"a":1}`},
			{name: "RootOntoItself", doc: `{"a":1}`, patch: `[{"op":"move","from":"","path":""}]`, want: `{"a":1}`},
			{name: "OverExisting", doc: `{"a":1,"b":2}`, patch: `[{"op":"move","from":"/a","path":"/b"}]`, want: `{"b":1}`},
			{name: "IntoOwnChild", doc: `{"a":{"b":{}}}`, patch: `[{"op":"move","from":"/a","path":"/a/b/c"}]`, wantErr: ErrInvalidPatch, wantMsg: "op 0 (move /a/b/c from /a): cannot move a value into its own child"},
			{name: "RootIntoChild", doc: `{"a":{}}`, patch: `[{"op":"move","from":"","path":"/a/b"}]`, wantErr: ErrInvalidPatch, wantMsg: "own child"},
			{name: "MissingFrom", doc: `{"a":1}`, patch: `[{"op":"move","from":"/b","path":"/c"}]`, wantErr: ErrInvalidPatch, wantMsg: "path not found"},
			{name: "OntoItselfMissing", doc: `{"a":1}`, patch: `[{"op":"move","from":"/b","path":"/b"}]`, wantErr: ErrInvalidPatch, wantMsg: "path not found"},
			{name: "MissingTarget", doc: `{"a":1}`, patch: `[{"op":"move","from":"/a","path":"/b/c"}]`, wantErr: ErrInvalidPatch, wantMsg: "path not found"},
			{name: "ArrayPastEnd", doc: `[1,2,3]`, patch: `[{"op":"move","from":"/0","path":"/3"}]`, wantErr: ErrInvalidPatch, wantMsg: "out of range"},
		})
	})
	t.Run("Copy", func(t *testing.T) {
		runApplyCases(t, []applyCase{
			{name: "Member", doc: `{"a":{"b":[1]}}`, patch: `[{"op":"copy","from":"/a","path":"/c"}]`, want: `{"a":{"b":[1]},"c":{"b":[1]}}`},
			{name: "IsDeep", doc: `{"a":{"b":[1]}}`, patch: `[{"op":"copy","from":"/a","path":"/c"},{"op":"add","path":"/c/b/-","value":2},{"op":"replace","path":"/a/b/0","value":0}]`, want: `{"a":{"b":[0]},"c":{"b":[1,2]}}`},
			{name: "IntoOwnChild", doc: `{"a":{"b":1}}`, patch: `[{"op":"copy","from":"/a","path":"/a/c"}]`, want: `{"a":{"b":1,"c":{"b":1}}}`},
			{name: "ArrayElement", doc: `[1,2]`, patch: `[{"op":"copy","from":"/0","path":"/-"}]`, want: `[1,2,1]`},
			{name: "MissingFrom", doc: `{"a":1}`, patch: `[{"op":"copy","from":"/b","path":"/c"}]`, wantErr: ErrInvalidPatch, wantMsg: "op 0 (copy /c from /b): path not found"},
		})
	})
	t.Run("Test", func(t *testing.T) {
		runApplyCases(t, []applyCase{
			{name: "String", doc: `{"a":"x"}`, patch: `[{"op":"test","path":"/a","value":"x"}]`, want: `{"a":"x"}`},
			{name: "EscapedString", doc: `{"a":"é/"}`, patch: `[{"op":"test","path":"/a","value":"\u00e9\/"}]`, want: `{"a":"é/"}`},
			{name: "NumbersByValue", doc: `[1, 1.0, 1e0, 100, -0, 0.1]`, patch: `[{"op":"test","path":"/0","value":1.00},{"op":"test","path":"/1","value":1},{"op":"test","path":"/2","value":10E-1},{"op":"test","path":"/3","value":1e2},{"op":"test","path":"/4","value":0},{"op":"test","path":"/5","value":1e-1}]`, want: `[1, 1.0, 1e0, 100, -0, 0.1]`},
			{name: "ObjectKeyOrder", doc: `{"a":{"x":1,"y":[{"p":1,"q":2}]}}`, patch: `[{"op":"test","path":"/a","value":{"y":[{"q":2,"p":1}],"x":1}}]`, want: `{"a":{"x":1,"y":[{"p":1,"q":2}]}}`},
			{name: "Null", doc: `{"a":null}`, patch: `[{"op":"test","path":"/a","value":null}]`, want: `{"a":null}`},
			{name: "WholeDocument", doc: `{"a":1}`, patch: `[{"op":"test","path":"","value":{"a":1}}]`, want: `{"a":1}`},
			{name: "EmptyKey", doc: `{"":1}`, patch: `[{"op":"test","path":"/","value":1}]`, want: `{"":1}`},
			{name: "ValueDiffers", doc: `{"a":"x"}`, patch: `[{"op":"test","path":"/a","value":"y"}]`, wantErr: ErrTestFailed, wantMsg: "op 0 (test /a): value differs"},
			{name: "NumberNotString", doc: `{"a":10}`, patch: `[{"op":"test","path":"/a","value":"10"}]`, wantErr: ErrTestFailed, wantMsg: "value differs"},
			{name: "NumbersDiffer", doc: `{"a":0.1}`, patch: `[{"op":"test","path":"/a","value":0.1000000000000000001}]`, wantErr: ErrTestFailed, wantMsg: "value differs"},
			{name: "ArrayLength", doc: `{"a":[1,2]}`, patch: `[{"op":"test","path":"/a","value":[1]}]`, wantErr: ErrTestFailed, wantMsg: "value differs"},
			{name: "ExtraMember", doc: `{"a":{"x":1}}`, patch: `[{"op":"test","path":"/a","value":{"x":1,"y":null}}]`, wantErr: ErrTestFailed, wantMsg: "value differs"},
			{name: "MissingMember", doc: `{"a":1}`, patch: `[{"op":"test","path":"/b","value":null}]`, wantErr: ErrTestFailed, wantMsg: "op 0 (test /b): path not found"},
			{name: "MissingParent", doc: `{"a":1}`, patch: `[{"op":"test","path":"/b/c","value":1}]`, wantErr: ErrTestFailed, wantMsg: "path not found"},
			{name: "Dash", doc: `[1]`, patch: `[{"op":"test","path":"/-","value":1}]`, wantErr: ErrTestFailed, wantMsg: "path not found"},
			{name: "LeadingZero", doc: `["foo","bar"]`, patch: `[{"op":"test","path":"/01","value":"bar"}]`, wantErr: ErrTestFailed, wantMsg: `invalid array index "01"`},
			{name: "AfterChanges", doc: `{"a":1}`, patch: `[{"op":"add","path":"/b","value":2},{"op":"remove","path":"/a"},{"op":"test","path":"/a","value":1}]`, wantErr: ErrTestFailed, wantMsg: "op 2 (test /a): path not found"},
		})
	})
	t.Run("Inc", func(t *testing.T) {
		runApplyCases(t, []applyCase{
			{name: "Integer", doc: `{"n":41}`, patch: `[{"op":"inc","path":"/n","value":1}]`, want: `{"n":42}`},
			{name: "Negative", doc: `{"n":1}`, patch: `[{"op":"inc","path":"/n","value":-3}]`, want: `{"n":-2}`},
			{name: "Float", doc: `{"n":1.5}`, patch: `[{"op":"inc","path":"/n","value":1}]`, want: `{"n":2.5}`},
			{name: "FloatText", doc: `{"n":0.1}`, patch: `[{"op":"inc","path":"/n","value":0.2}]`, want: `{"n":0.30000000000000004}`},
			{name: "FloatToInteger", doc: `{"n":1.5}`, patch: `[{"op":"inc","path":"/n","value":0.5}]`, want: `{"n":2}`},
			{name: "Exponent", doc: `{"n":1e2}`, patch: `[{"op":"inc","path":"/n","value":1}]`, want: `{"n":101}`},
			{name: "LargeFloat", doc: `{"n":1e21}`, patch: `[{"op":"inc","path":"/n","value":1e21}]`, want: `{"n":2e+21}`},
			{name: "SmallFloat", doc: `{"n":1e-7}`, patch: `[{"op":"inc","path":"/n","value":0}]`, want: `{"n":1e-7}`},
			{name: "Overflow", doc: `{"n":9223372036854775807}`, patch: `[{"op":"inc","path":"/n","value":1}]`, want: `{"n":9223372036854776000}`},
			{name: "NegativeOverflow", doc: `{"n":-9223372036854775808}`, patch: `[{"op":"inc","path":"/n","value":-1}]`, want: `{"n":-9223372036854776000}`},
			{name: "BeyondInt64", doc: `{"n":100000000000000000000}`, patch: `[{"op":"inc","path":"/n","value":1}]`, want: `{"n":100000000000000000000}`},
			{name: "CreateMember", doc: `{"c":{}}`, patch: `[{"op":"inc","path":"/c/x","value":1.50}]`, want: `{"c":{"x":1.50}}`},
			{name: "Element", doc: `[1,2]`, patch: `[{"op":"inc","path":"/1","value":5}]`, want: `[1,7]`},
			{name: "Root", doc: `7`, patch: `[{"op":"inc","path":"","value":5}]`, want: `12`},
			{name: "Twice", doc: `{}`, patch: `[{"op":"inc","path":"/n","value":1},{"op":"inc","path":"/n","value":1}]`, want: `{"n":2}`},
			{name: "NotNumber", doc: `{"n":"1"}`, patch: `[{"op":"inc","path":"/n","value":1}]`, wantErr: ErrInvalidPatch, wantMsg: "op 0 (inc /n): cannot inc a string"},
			{name: "NotNumberNull", doc: `{"n":null}`, patch: `[{"op":"inc","path":"/n","value":1}]`, wantErr: ErrInvalidPatch, wantMsg: "cannot inc null"},
			{name: "MissingParent", doc: `{}`, patch: `[{"op":"inc","path":"/c/n","value":1}]`, wantErr: ErrInvalidPatch, wantMsg: "path not found"},
			{name: "MissingElement", doc: `[1]`, patch: `[{"op":"inc","path":"/1","value":1}]`, wantErr: ErrInvalidPatch, wantMsg: "path not found"},
			{name: "NonFinite", doc: `{"n":1.7976931348623157e308}`, patch: `[{"op":"inc","path":"/n","value":1.7976931348623157e308}]`, wantErr: ErrInvalidPatch, wantMsg: "number overflow"},
			{name: "HugeLiteral", doc: `{"n":1}`, patch: `[{"op":"inc","path":"/n","value":1e400}]`, wantErr: ErrInvalidPatch, wantMsg: "number overflow"},
		})
	})
}

func TestDoc_Apply_Atomic(t *testing.T) {
	const doc = `{"list":[1,2,3],"obj":{"a":{"x":1},"b":2},"n":5,"s":"str"}`
	// Each patch changes the document, then fails at its third op.
	for _, tc := range []struct {
		name, ops string
		wantErr   error
	}{
		{"AddToArray", `{"op":"add","path":"/list/1","value":9},{"op":"add","path":"/list/-","value":10}`, ErrInvalidPatch},
		{"RemoveFromArray", `{"op":"remove","path":"/list/0"},{"op":"remove","path":"/list/1"}`, ErrInvalidPatch},
		{"ReplaceInArray", `{"op":"replace","path":"/list/0","value":{}},{"op":"add","path":"/list/0/k","value":1}`, ErrInvalidPatch},
		{"AddRemoveMember", `{"op":"add","path":"/obj/c","value":3},{"op":"remove","path":"/obj/b"}`, ErrInvalidPatch},
		{"ReplaceMember", `{"op":"replace","path":"/obj/a","value":[]},{"op":"add","path":"/obj/a/-","value":1}`, ErrInvalidPatch},
		{"Move", `{"op":"move","from":"/obj/a","path":"/list/1"},{"op":"move","from":"/list/0","path":"/obj/z"}`, ErrInvalidPatch},
		{"MoveOverMember", `{"op":"move","from":"/obj/a","path":"/obj/b"},{"op":"move","from":"/n","path":"/list/-"}`, ErrInvalidPatch},
		{"Copy", `{"op":"copy","from":"/obj","path":"/obj2"},{"op":"copy","from":"/list","path":"/obj/a/x"}`, ErrInvalidPatch},
		{"Inc", `{"op":"inc","path":"/n","value":1},{"op":"inc","path":"/obj/new","value":1}`, ErrInvalidPatch},
		{"ReplaceRoot", `{"op":"add","path":"","value":{"fresh":[]}},{"op":"add","path":"/fresh/-","value":1}`, ErrInvalidPatch},
		{"ChangeThenTestFails", `{"op":"remove","path":"/s"},{"op":"add","path":"/s2","value":"x"}`, ErrTestFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := MustParseDoc(t, doc)
			before := d.AppendJSON(nil)
			third := `{"op":"replace","path":"/missing","value":1}`
			if tc.wantErr == ErrTestFailed {
				third = `{"op":"test","path":"/n","value":6}`
			}
			ops := MustDecodePatch(t, "["+tc.ops+","+third+"]")
			// The first two ops alone apply: the third is what fails.
			if err := MustParseDoc(t, doc).Apply(ops[:2]); err != nil {
				t.Fatalf("first two ops: %v", err)
			}
			err := d.Apply(ops)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Apply=%v, want an error wrapping %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), ": op 2 (") {
				t.Fatalf("error %q does not name op 2", err)
			}
			if after := d.AppendJSON(nil); !bytes.Equal(after, before) {
				t.Fatalf("failed Apply changed the document:\n%s\nwas\n%s", after, before)
			}
			assertDoc(t, d, doc)
			// The rolled-back document is sound: the good ops now apply.
			if err := d.Apply(ops[:2]); err != nil {
				t.Fatalf("first two ops after rollback: %v", err)
			}
			want := MustParseDoc(t, doc)
			if err := want.Apply(ops[:2]); err != nil {
				t.Fatalf("first two ops on a fresh document: %v", err)
			}
			if got, want := d.AppendJSON(nil), want.AppendJSON(nil); !bytes.Equal(got, want) {
				t.Fatalf("after rollback and reapply:\n%s\nwant\n%s", got, want)
			}
		})
	}
	t.Run("ManyOps", func(t *testing.T) {
		d := MustParseDoc(t, doc)
		before := d.AppendJSON(nil)
		var ops []string
		for i := range 200 {
			ops = append(ops,
				fmt.Sprintf(`{"op":"add","path":"/list/%d","value":%d}`, i%3, i),
				fmt.Sprintf(`{"op":"add","path":"/obj/k%d","value":{"i":%d}}`, i%17, i),
				`{"op":"move","from":"/list/0","path":"/list/-"}`,
				fmt.Sprintf(`{"op":"remove","path":"/obj/k%d/i"}`, i%17),
			)
		}
		ops = append(ops, `{"op":"remove","path":"/nope"}`)
		err := d.Apply(MustDecodePatch(t, "["+strings.Join(ops, ",")+"]"))
		if !errors.Is(err, ErrInvalidPatch) {
			t.Fatalf("Apply=%v, want ErrInvalidPatch", err)
		}
		if after := d.AppendJSON(nil); !bytes.Equal(after, before) {
			t.Fatalf("failed Apply changed the document:\n%s\nwas\n%s", after, before)
		}
	})
}

func TestDoc_Apply_NotExist(t *testing.T) {
	t.Run("AddRootCreates", func(t *testing.T) {
		var d Doc
		if d.Exists() {
			t.Fatal("zero Doc exists")
		}
		if err := d.Apply(MustDecodePatch(t, `[{"op":"add","path":"","value":{"tasks":{}}},{"op":"add","path":"/tasks/t1","value":1}]`)); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		assertDoc(t, &d, `{"tasks":{"t1":1}}`)
	})
	t.Run("FailedCreateStaysAbsent", func(t *testing.T) {
		var d Doc
		err := d.Apply(MustDecodePatch(t, `[{"op":"add","path":"","value":{}},{"op":"remove","path":"/x"}]`))
		if !errors.Is(err, ErrInvalidPatch) {
			t.Fatalf("Apply=%v, want ErrInvalidPatch", err)
		}
		if d.Exists() {
			t.Fatalf("document exists after a failed create: %s", d.AppendJSON(nil))
		}
		if got := d.AppendJSON([]byte("x")); string(got) != "x" {
			t.Fatalf("AppendJSON on an absent document appended: %q", got)
		}
		if got := d.Data(); got != nil {
			t.Fatalf("Data()=%v, want nil", got)
		}
	})
	for _, tc := range []struct {
		name, patch string
		wantErr     error
	}{
		{"Test", `[{"op":"test","path":"/a","value":1}]`, ErrTestFailed},
		{"TestRoot", `[{"op":"test","path":"","value":null}]`, ErrTestFailed},
		{"AddMember", `[{"op":"add","path":"/a","value":1}]`, ErrInvalidPatch},
		{"Remove", `[{"op":"remove","path":"/a"}]`, ErrInvalidPatch},
		{"RemoveRoot", `[{"op":"remove","path":""}]`, ErrInvalidPatch},
		{"Replace", `[{"op":"replace","path":"/a","value":1}]`, ErrInvalidPatch},
		{"ReplaceRoot", `[{"op":"replace","path":"","value":1}]`, ErrInvalidPatch},
		{"Move", `[{"op":"move","from":"/a","path":"/b"}]`, ErrInvalidPatch},
		{"Copy", `[{"op":"copy","from":"","path":""}]`, ErrInvalidPatch},
		{"Inc", `[{"op":"inc","path":"/n","value":1}]`, ErrInvalidPatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d Doc
			err := d.Apply(MustDecodePatch(t, tc.patch))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Apply(%s)=%v, want an error wrapping %v", tc.patch, err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), "document does not exist") {
				t.Fatalf("error %q does not say the document does not exist", err)
			}
			if d.Exists() {
				t.Fatal("document exists after a failed patch")
			}
		})
	}
}

func TestDoc_Apply_OpsReusable(t *testing.T) {
	ops := MustDecodePatch(t, `[{"op":"add","path":"/a","value":{"list":[1]}},{"op":"add","path":"/a/list/-","value":2}]`)
	d1, d2 := MustParseDoc(t, `{}`), MustParseDoc(t, `{}`)
	if err := d1.Apply(ops); err != nil {
		t.Fatalf("Apply to d1: %v", err)
	}
	if err := d2.Apply(ops); err != nil {
		t.Fatalf("Apply to d2: %v", err)
	}
	if err := d1.Apply(MustDecodePatch(t, `[{"op":"add","path":"/a/list/-","value":3}]`)); err != nil {
		t.Fatalf("Apply to d1: %v", err)
	}
	assertDoc(t, d1, `{"a":{"list":[1,2,3]}}`)
	assertDoc(t, d2, `{"a":{"list":[1,2]}}`)
}

func TestDoc_Apply_HandBuiltOp(t *testing.T) {
	v, err := ParseValue([]byte(`{"b":[1]}`))
	if err != nil {
		t.Fatalf("ParseValue: %v", err)
	}
	d := MustParseDoc(t, `{}`)
	if err := d.Apply([]Op{{Kind: "add", Path: "/a", Value: v}, {Kind: "copy", From: "/a/b", Path: "/c"}}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	assertDoc(t, d, `{"a":{"b":[1]},"c":[1]}`)
	for _, tc := range []struct {
		name string
		op   Op
		want string
	}{
		{"BadPath", Op{Kind: "add", Path: "a", Value: v}, `op 0 (add a): invalid "path" "a"`},
		{"NoValue", Op{Kind: "replace", Path: "/a"}, `op 0 (replace /a): missing "value"`},
		{"UnknownKind", Op{Kind: "merge", Path: "/a", Value: v}, `unknown op "merge"`},
		{"IncString", Op{Kind: "inc", Path: "/a", Value: value{kind: kindString, str: "1"}}, `"value" of inc is a string`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := d.Apply([]Op{tc.op})
			if !errors.Is(err, ErrInvalidPatch) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply=%v, want ErrInvalidPatch containing %q", err, tc.want)
			}
		})
	}
}

func TestDoc_Apply_Depth(t *testing.T) {
	nested := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	// A patch holds its values at depth 2, so they are at most maxDepth-2
	// deep; the paths below add depth.
	value := nested(maxDepth - 2)
	t.Run("AddWithinLimit", func(t *testing.T) {
		d := MustParseDoc(t, `{"a":[]}`)
		// /a/- is at depth 2: a value of depth maxDepth-2 makes maxDepth.
		if err := d.Apply(MustDecodePatch(t, `[{"op":"add","path":"/a/-","value":`+value+`}]`)); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		// Not encoded: indenting 10,000 levels writes 100 MB.
		if got, want := depthOf(d.root), maxDepth; got != want {
			t.Fatalf("depth %d, want %d", got, want)
		}
	})
	for _, tc := range []struct{ name, doc, patch string }{
		{"Add", `{"a":{"b":[]}}`, `[{"op":"add","path":"/a/b/-","value":` + value + `}]`},
		{"Replace", `{"a":{"b":[1]}}`, `[{"op":"replace","path":"/a/b/0","value":` + value + `}]`},
		{"Copy", `{"a":[],"b":` + nested(maxDepth-1) + `}`, `[{"op":"copy","from":"/b","path":"/a/-"}]`},
		{"Move", `{"a":[],"b":` + nested(maxDepth-1) + `}`, `[{"op":"move","from":"/b","path":"/a/-"}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := MustParseDoc(t, tc.doc)
			err := d.Apply(MustDecodePatch(t, tc.patch))
			if !errors.Is(err, ErrInvalidPatch) || !strings.Contains(err.Error(), "nested deeper") {
				t.Fatalf("Apply=%v, want ErrInvalidPatch: nested deeper", err)
			}
		})
	}
}

func TestDoc_Apply_CopyLimit(t *testing.T) {
	// Each copy of the whole document into itself doubles it.
	doubling := func(n int) string {
		ops := make([]string, n)
		for i := range ops {
			ops[i] = fmt.Sprintf(`{"op":"copy","from":"","path":"/x%d"}`, i)
		}
		return "[" + strings.Join(ops, ",") + "]"
	}
	d := MustParseDoc(t, `{"a":1}`)
	if err := d.Apply(MustDecodePatch(t, doubling(10))); err != nil {
		t.Fatalf("Apply of 10 doublings: %v", err)
	}
	if got, want := countValues(d.root, 1<<30), 2<<10; got != want {
		t.Fatalf("document has %d values, want %d", got, want)
	}
	d = MustParseDoc(t, `{"a":1}`)
	err := d.Apply(MustDecodePatch(t, doubling(40)))
	if !errors.Is(err, ErrInvalidPatch) || !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "would copy more than 16777216 bytes") {
		t.Fatalf("Apply of 40 doublings=%v, want ErrInvalidPatch: copies more than", err)
	}
	assertDoc(t, d, `{"a":1}`)
}

// TestDoc_Apply_CopyOverMember checks the size check of a copy onto an
// existing member, which replaces it: a copy whose result fits MaxSize is
// applied (as the same change by replace is), and one whose result does not
// fit is rejected with the size the document would really have.
func TestDoc_Apply_CopyOverMember(t *testing.T) {
	s := strings.Repeat("x", 400)
	doc := `{"a":"` + s + `","b":"` + strings.Repeat("y", 400) + `","c":""}`
	limit := int64(len(doc)) + 10
	apply := func(t *testing.T, patch string, limit int64) (*Doc, error) {
		t.Helper()
		d := MustParseDoc(t, doc)
		d.MaxSize = limit
		return d, d.Apply(MustDecodePatch(t, patch))
	}
	for _, p := range []string{
		`[{"op":"copy","from":"/a","path":"/b"}]`,
		`[{"op":"replace","path":"/b","value":"` + s + `"}]`,
		`[{"op":"copy","from":"/c","path":"/a"}]`, // shrinks
	} {
		d, err := apply(t, p, limit)
		if err != nil {
			t.Fatalf("%s on a %d-byte document with MaxSize %d: %v, want applied", p, len(doc), limit, err)
		}
		if got, want := d.Size(), int64(len(d.AppendJSON(nil))); got != want {
			t.Fatalf("%s: Size()=%d, want %d", p, got, want)
		}
	}
	// Too large: the message gives the size the result would have.
	for _, p := range []string{`[{"op":"copy","from":"/a","path":"/c"}]`} {
		whole, err := apply(t, p, 0)
		if err != nil {
			t.Fatalf("%s without a limit: %v", p, err)
		}
		_, err = apply(t, p, limit)
		want := fmt.Sprintf("the document would be %d bytes as written, over the limit of %d bytes", whole.Size(), limit)
		if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s with MaxSize %d: %v, want ErrLimit: %s", p, limit, err, want)
		}
	}
	// A copy to a new member is checked before the copy is made, with the
	// value alone as a lower bound.
	_, err := apply(t, `[{"op":"copy","from":"/a","path":"/new"}]`, limit)
	if want := "the document would be at least "; !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), want) {
		t.Fatalf("copy to a new member with MaxSize %d: %v, want ErrLimit: %s", limit, err, want)
	}
}

func TestDoc_Clone(t *testing.T) {
	d := MustParseDoc(t, `{"a":{"b":[1,{"c":2}]}}`)
	c := d.Clone()
	if err := c.Apply(MustDecodePatch(t, `[{"op":"add","path":"/a/b/1/d","value":3},{"op":"remove","path":"/a/b/0"}]`)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	assertDoc(t, d, `{"a":{"b":[1,{"c":2}]}}`)
	assertDoc(t, c, `{"a":{"b":[{"c":2,"d":3}]}}`)
	var zero Doc
	if zero.Clone().Exists() {
		t.Fatal("clone of an absent document exists")
	}
}

func TestDoc_Merge(t *testing.T) {
	// RFC 7396 appendix A, and the example of its section 3.
	for i, tc := range []struct{ doc, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`["a","b"]`, `["c","d"]`, `["c","d"]`},
		{`{"a":"b"}`, `["c"]`, `["c"]`},
		{`{"a":"foo"}`, `null`, `null`},
		{`{"a":"foo"}`, `"bar"`, `"bar"`},
		{`{"e":null}`, `{"a":1}`, `{"e":null,"a":1}`},
		{`[1,2]`, `{"a":"b","c":null}`, `{"a":"b"}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
		{
			`{"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},"tags":["example","sample"],"content":"This will be unchanged"}`,
			`{"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},"tags":["example"]}`,
			`{"title":"Hello!","author":{"givenName":"John"},"tags":["example"],"content":"This will be unchanged","phoneNumber":"+01-123-456-7890"}`,
		},
		// Not in the RFC: nulls inside arrays are values, not deletions.
		{`{}`, `{"a":[null,{"b":null}]}`, `{"a":[null,{"b":null}]}`},
	} {
		t.Run(fmt.Sprintf("A%02d", i+1), func(t *testing.T) {
			d := MustParseDoc(t, tc.doc)
			if err := d.Merge([]byte(tc.patch)); err != nil {
				t.Fatalf("Merge(%s): %v", tc.patch, err)
			}
			assertDoc(t, d, tc.want)
		})
	}
	t.Run("NotExistObject", func(t *testing.T) {
		var d Doc
		if err := d.Merge([]byte(`{"a":{"b":null,"c":1},"d":null}`)); err != nil {
			t.Fatalf("Merge: %v", err)
		}
		assertDoc(t, &d, `{"a":{"c":1}}`)
	})
	t.Run("NotExistScalar", func(t *testing.T) {
		var d Doc
		if err := d.Merge([]byte(`[1]`)); err != nil {
			t.Fatalf("Merge: %v", err)
		}
		assertDoc(t, &d, `[1]`)
	})
	t.Run("PatchNotKept", func(t *testing.T) {
		d := MustParseDoc(t, `{}`)
		patch := []byte(`{"a":"xyz"}`)
		if err := d.Merge(patch); err != nil {
			t.Fatalf("Merge: %v", err)
		}
		copy(patch, `{"a":"XYZ"}`)
		assertDoc(t, d, `{"a":"xyz"}`)
	})
	for _, tc := range []struct{ name, patch string }{
		{"InvalidJSON", `{"a":`},
		{"DuplicateKey", `{"a":1,"a":null}`},
		{"Trailing", `{} {}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := MustParseDoc(t, `{"a":{"b":1}}`)
			before := d.AppendJSON(nil)
			err := d.Merge([]byte(tc.patch))
			if !errors.Is(err, ErrInvalidPatch) || !errors.Is(err, ErrInvalidJSON) {
				t.Fatalf("Merge(%s)=%v, want ErrInvalidPatch and ErrInvalidJSON", tc.patch, err)
			}
			if after := d.AppendJSON(nil); !bytes.Equal(after, before) {
				t.Fatalf("failed Merge changed the document:\n%s\nwas\n%s", after, before)
			}
		})
	}
}

func TestNumberEqual(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"1", "1", true},
		{"1", "1.0", true},
		{"1", "1e0", true},
		{"1", "10E-1", true},
		{"100", "1e2", true},
		{"100", "1E+2", true},
		{"0.001", "1e-3", true},
		{"0", "-0", true},
		{"0", "0.000e99", true},
		{"-1.5", "-15e-1", true},
		{"12345678901234567890", "1.2345678901234567890e19", true},
		{"1e999999999999999999999", "10e999999999999999999998", true},
		{"1e999999999999999999999", "1e999999999999999999998", false},
		{"1e-999999999999999999999", "0.1e-999999999999999999998", true},
		{"1", "2", false},
		{"1", "-1", false},
		{"0.1", "0.1000000000000000001", false},
		{"9007199254740993", "9007199254740992", false},
		{"1e2", "1e3", false},
		{"10", "1", false},
	} {
		t.Run(tc.a+"="+tc.b, func(t *testing.T) {
			if got := numberEqual(tc.a, tc.b); got != tc.want {
				t.Fatalf("numberEqual(%s, %s)=%v, want %v", tc.a, tc.b, got, tc.want)
			}
			if got := numberEqual(tc.b, tc.a); got != tc.want {
				t.Fatalf("numberEqual(%s, %s)=%v, want %v", tc.b, tc.a, got, tc.want)
			}
		})
	}
}

// taskBoard returns a task board document of n tasks, about 150 bytes each
// once encoded, as agents share it.
func taskBoard(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"tasks":{`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"task-%04d":{"id":"task-%04d","title":"Implement feature %d of the board","status":"open","assignee":null,"priority":%d,"tags":["area-%d","p%d"]}`,
			i, i, i, i%5, i%7, i%3)
	}
	b.WriteString(`},"counters":{"claimed":0,"done":0,"open":`)
	fmt.Fprintf(&b, "%d", n)
	b.WriteString(`}}`)
	return []byte(b.String())
}

// claimPatches returns, for each task of a board of n tasks, the patch an
// agent submits to claim it and the one that releases it again.
func claimPatches(tb testing.TB, n int) (claim, release [][]Op) {
	tb.Helper()
	for i := range n {
		claim = append(claim, MustDecodePatch(tb, fmt.Sprintf(`[
			{"op":"test","path":"/tasks/task-%04d/status","value":"open"},
			{"op":"replace","path":"/tasks/task-%04d/status","value":"claimed"},
			{"op":"replace","path":"/tasks/task-%04d/assignee","value":"agent-%d"},
			{"op":"inc","path":"/counters/claimed","value":1}]`, i, i, i, i%8)))
		release = append(release, MustDecodePatch(tb, fmt.Sprintf(`[
			{"op":"test","path":"/tasks/task-%04d/status","value":"claimed"},
			{"op":"replace","path":"/tasks/task-%04d/status","value":"open"},
			{"op":"replace","path":"/tasks/task-%04d/assignee","value":null},
			{"op":"inc","path":"/counters/claimed","value":-1}]`, i, i, i)))
	}
	return claim, release
}

func TestTaskBoard(t *testing.T) {
	const n = 1000
	d := MustParseDoc(t, string(taskBoard(n)))
	if size := len(d.AppendJSON(nil)); size < 100_000 || size > 300_000 {
		t.Fatalf("task board of %d tasks encodes to %d bytes, want about 150 KB", n, size)
	}
	claim, release := claimPatches(t, n)
	for i := range n {
		if err := d.Apply(claim[i]); err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
	}
	// A second claim conflicts.
	if err := d.Apply(claim[7]); !errors.Is(err, ErrTestFailed) {
		t.Fatalf("second claim: %v, want ErrTestFailed", err)
	}
	if got, want := d.Data().(map[string]any)["counters"].(map[string]any)["claimed"], any(json.Number(strconv.Itoa(n))); got != want {
		t.Fatalf("claimed counter=%v, want %v", got, want)
	}
	for i := range n {
		if err := d.Apply(release[i]); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
	}
	want := MustParseDoc(t, string(taskBoard(n)))
	if got, want := d.AppendJSON(nil), want.AppendJSON(nil); !bytes.Equal(got, want) {
		t.Fatal("claiming and releasing every task did not restore the board")
	}
}

// BenchmarkApply_TaskBoard applies claim and release patches (a test, two
// replaces and an inc each) to a board of 1,000 tasks.
func BenchmarkApply_TaskBoard(b *testing.B) {
	const n = 1000
	raw := taskBoard(n)
	claim, release := claimPatches(b, n)
	var rawClaim, rawRelease [][]byte
	for i := range n {
		rawClaim = append(rawClaim, []byte(fmt.Sprintf(`[{"op":"test","path":"/tasks/task-%04d/status","value":"open"},{"op":"replace","path":"/tasks/task-%04d/status","value":"claimed"},{"op":"replace","path":"/tasks/task-%04d/assignee","value":"agent-%d"},{"op":"inc","path":"/counters/claimed","value":1}]`, i, i, i, i%8)))
		rawRelease = append(rawRelease, []byte(fmt.Sprintf(`[{"op":"test","path":"/tasks/task-%04d/status","value":"claimed"},{"op":"replace","path":"/tasks/task-%04d/status","value":"open"},{"op":"replace","path":"/tasks/task-%04d/assignee","value":null},{"op":"inc","path":"/counters/claimed","value":-1}]`, i, i, i)))
	}
	b.Run("Apply", func(b *testing.B) {
		d := MustParseDoc(b, string(raw))
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			ops := claim[i%n]
			if (i/n)%2 == 1 {
				ops = release[i%n]
			}
			if err := d.Apply(ops); err != nil {
				b.Fatalf("Apply: %v", err)
			}
			i++
		}
	})
	b.Run("DecodeAndApply", func(b *testing.B) {
		d := MustParseDoc(b, string(raw))
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			patch := rawClaim[i%n]
			if (i/n)%2 == 1 {
				patch = rawRelease[i%n]
			}
			ops, err := DecodePatch(patch)
			if err != nil {
				b.Fatalf("DecodePatch: %v", err)
			}
			if err := d.Apply(ops); err != nil {
				b.Fatalf("Apply: %v", err)
			}
			i++
		}
	})
	b.Run("Conflict", func(b *testing.B) {
		d := MustParseDoc(b, string(raw))
		for i := range n {
			if err := d.Apply(claim[i]); err != nil {
				b.Fatalf("Apply: %v", err)
			}
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := d.Apply(claim[i%n]); !errors.Is(err, ErrTestFailed) {
				b.Fatalf("Apply=%v, want ErrTestFailed", err)
			}
			i++
		}
	})
}
