package replay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// marshalIndent returns what AppendJSON must write for v: encoding/json's
// indented encoding with HTML escaping off, and a newline.
func marshalIndent(tb testing.TB, v any) []byte {
	tb.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil { // Encode writes the "\n"
		tb.Fatalf("encode %v: %v", v, err)
	}
	return buf.Bytes()
}

func TestDoc_AppendJSON(t *testing.T) {
	for _, tc := range []struct{ name, doc string }{
		{"Object", `{"b":1,"a":[true,false,null],"c":{"z":{},"y":[]}}`},
		{"NestedArrays", `[[],[[]],[1,[2,[3]]],{}]`},
		{"Scalars", `[0,-0,1.0,1e5,1E+2,-1.5e-7,12345678901234567890123,0.000001]`},
		{"RootString", `"x"`},
		{"RootNumber", `  -12.5e3  `},
		{"RootNull", `null`},
		{"RootTrue", `true`},
		{"EmptyObject", `{}`},
		{"EmptyArray", `[]`},
		{"Escapes", `{"s":"quote \" backslash \\ slash \/ nl \n cr \r tab \t bs \b ff \f nul \u0000 us \u001f del \u007f"}`},
		{"HTML", `{"<a href=\"x\">&amp;</a>":"<script>&</script>"}`},
		{"Unicode", `{"héllo":"日本語 😀 \u00e9 \ud83d\ude00","ключ":"значение"}`},
		{"LineSeparators", "{\"raw\":\"a\u2028b\u2029c\",\"escaped\":\"\\u2028\\u2029\",\"near\":\"\u2027\u202a\u20ac\"}"},
		{"LoneSurrogate", `["\ud800","\udc00x","\ud800\u0041","\ud83d\ude00"]`},
		{"KeyOrderBytes", `{"b":1,"B":2,"a":3,"é":4,"z":5,"_":6,"10":7,"9":8,"":9}`},
		{"Whitespace", " \t\r\n{ \"a\" : [ 1 , 2 ] }\n"},
		{"DeepKeys", `{"a":{"b":{"c":{"d":{"e":"f"}}}}}`},
		{"TaskBoard", string(taskBoard(20))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := MustParseDoc(t, tc.doc)
			got := d.AppendJSON(nil)
			if want := marshalIndent(t, d.Data()); !bytes.Equal(got, want) {
				t.Fatalf("AppendJSON:\n%s\nwant (encoding/json)\n%s", got, want)
			}
			// encoding/json decodes the input to the same values.
			if got, want := d.Data(), decodeJSON(t, []byte(tc.doc)); !reflect.DeepEqual(got, want) {
				t.Fatalf("Data()=%#v, want %#v", got, want)
			}
			// The output parses back to the same document.
			again := MustParseDoc(t, string(got))
			if !equal(again.root, d.root) {
				t.Fatalf("re-parsed document differs: %s", again.AppendJSON(nil))
			}
			if got2 := again.AppendJSON(nil); !bytes.Equal(got2, got) {
				t.Fatalf("second encoding differs:\n%s\nfirst\n%s", got2, got)
			}
		})
	}
	t.Run("Appends", func(t *testing.T) {
		d := MustParseDoc(t, `[1]`)
		if got, want := string(d.AppendJSON([]byte("x"))), "x[\n  1\n]\n"; got != want {
			t.Fatalf("AppendJSON=%q, want %q", got, want)
		}
	})
	t.Run("DeepIndent", func(t *testing.T) {
		doc := strings.Repeat(`{"k":`, 60) + "1" + strings.Repeat("}", 60)
		d := MustParseDoc(t, doc)
		if got, want := d.AppendJSON(nil), marshalIndent(t, d.Data()); !bytes.Equal(got, want) {
			t.Fatalf("AppendJSON:\n%s\nwant\n%s", got, want)
		}
	})
	t.Run("AfterPatch", func(t *testing.T) {
		d := MustParseDoc(t, `{"m":{"b":1}}`)
		if err := d.Apply(MustDecodePatch(t, `[{"op":"add","path":"/m/a","value":"<&>"},{"op":"add","path":"/m/c","value":[]},{"op":"inc","path":"/n","value":0.5}]`)); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if got, want := d.AppendJSON(nil), marshalIndent(t, d.Data()); !bytes.Equal(got, want) {
			t.Fatalf("AppendJSON:\n%s\nwant\n%s", got, want)
		}
	})
}

func TestParseDoc(t *testing.T) {
	t.Run("NumbersExact", func(t *testing.T) {
		d := MustParseDoc(t, `[1.0, 1E400, -0, 12345678901234567890123456789, 1.50]`)
		if got, want := string(d.AppendJSON(nil)), "[\n  1.0,\n  1E400,\n  -0,\n  12345678901234567890123456789,\n  1.50\n]\n"; got != want {
			t.Fatalf("AppendJSON=%q, want %q", got, want)
		}
	})
	t.Run("NotShared", func(t *testing.T) {
		data := []byte(`{"a":"xyz"}`)
		d := MustParseDoc(t, string(data))
		d2, err := ParseDoc(data)
		if err != nil {
			t.Fatalf("ParseDoc: %v", err)
		}
		copy(data, `{"a":"XYZ"}`)
		assertDoc(t, d2, `{"a":"xyz"}`)
		assertDoc(t, d, `{"a":"xyz"}`)
	})
	t.Run("MaxDepth", func(t *testing.T) {
		ok := strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth)
		if _, err := ParseDoc([]byte(ok)); err != nil {
			t.Fatalf("ParseDoc of depth %d: %v", maxDepth, err)
		}
		if !json.Valid([]byte(ok)) {
			t.Fatalf("encoding/json rejects depth %d", maxDepth)
		}
		deep := "[" + ok + "]"
		if _, err := ParseDoc([]byte(deep)); !errors.Is(err, ErrInvalidJSON) {
			t.Fatalf("ParseDoc of depth %d: %v, want ErrInvalidJSON", maxDepth+1, err)
		}
		if json.Valid([]byte(deep)) {
			t.Fatalf("encoding/json accepts depth %d", maxDepth+1)
		}
	})
	for _, tc := range []struct{ name, doc, want string }{
		{"Empty", ``, "offset 0: unexpected end of input"},
		{"Space", `  `, "offset 2: unexpected end of input"},
		{"Trailing", `{} x`, `offset 3: unexpected character 'x' after top-level value`},
		{"TwoValues", `1 2`, "offset 2"},
		{"TrailingComma", `[1,]`, "offset 3"},
		{"ObjectTrailingComma", `{"a":1,}`, "offset 7: unexpected character '}', expecting a string for an object key"},
		{"MissingColon", `{"a" 1}`, "offset 5: unexpected character '1', expecting ':'"},
		{"UnquotedKey", `{a:1}`, "offset 1"},
		{"SingleQuotes", `['a']`, "offset 1"},
		{"LeadingZero", `[01]`, "offset 2"},
		{"Plus", `+1`, "offset 0"},
		{"Dot", `1.`, "offset 2"},
		{"LeadingDot", `.5`, "offset 0"},
		{"Exponent", `1e`, "offset 2"},
		{"ExponentSign", `1e+`, "offset 3"},
		{"Minus", `-`, "offset 1"},
		{"NaN", `NaN`, "offset 0"},
		{"BadLiteral", `[tru]`, "offset 4"},
		{"Nul", `nul`, "offset 3"},
		{"Unterminated", `"abc`, "offset 4: unexpected end of input in string"},
		{"UnterminatedEscape", `"abc\`, "unexpected end of input in string"},
		{"ControlChar", "\"a\tb\"", "offset 2: control character 0x09 in string"},
		{"BadEscape", `"\x"`, `offset 1: invalid escape "\\x" in string`},
		{"BadUnicodeEscape", `"\u12G4"`, `offset 1: invalid \u escape`},
		{"ShortUnicodeEscape", `"\u12"`, `invalid \u escape`},
		{"InvalidUTF8", "\"a\xffb\"", "offset 2: invalid UTF-8 in string"},
		{"InvalidUTF8AfterEscape", "\"\\n\xc3\"", "offset 3: invalid UTF-8 in string"},
		{"InvalidUTF8Key", "{\"\xc3\x28\":1}", "offset 2: invalid UTF-8"},
		{"SurrogateUTF8", "\"\xed\xa0\x80\"", "invalid UTF-8"},
		{"DuplicateKey", `{"a":1,"b":{"x":1,"x":2}}`, `offset 11: duplicate key "x" in object`},
		{"DuplicateKeyEscaped", `{"a":1,"\u0061":2}`, `duplicate key "a"`},
		{"Unclosed", `{"a":[1,2}`, "offset 9: unexpected character '}', expecting ',' or ']'"},
		{"BOMThenJunk", "\ufeff{", "offset 4: unexpected end of input"},
		{"BOMTwice", "\ufeff\ufeff{}", "offset 3: unexpected byte 0xef"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseDoc([]byte(tc.doc))
			if err == nil {
				t.Fatalf("ParseDoc(%q)=%s, want an error", tc.doc, d.AppendJSON(nil))
			}
			if !errors.Is(err, ErrInvalidJSON) {
				t.Fatalf("error %q does not wrap ErrInvalidJSON", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// BenchmarkAppendJSON encodes task boards of 1,000 and 10,000 tasks.
func BenchmarkAppendJSON(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("Tasks%d", n), func(b *testing.B) {
			d := MustParseDoc(b, string(taskBoard(n)))
			buf := d.AppendJSON(nil)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				buf = d.AppendJSON(buf[:0])
			}
		})
		// For comparison: encoding/json on the same data.
		b.Run(fmt.Sprintf("Tasks%d/encoding_json", n), func(b *testing.B) {
			data := MustParseDoc(b, string(taskBoard(n))).Data()
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			b.ReportAllocs()
			for b.Loop() {
				buf.Reset()
				if err := enc.Encode(data); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(buf.Len()))
		})
	}
}

// BenchmarkParseDoc parses the encoding of task boards of 1,000 and 10,000
// tasks, as the watcher reads documents at start.
func BenchmarkParseDoc(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		data := MustParseDoc(b, string(taskBoard(n))).AppendJSON(nil)
		b.Run(fmt.Sprintf("Tasks%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseDoc(data); err != nil {
					b.Fatal(err)
				}
			}
		})
		// For comparison: encoding/json's Decoder with UseNumber, the
		// alternative to this package's parser.
		b.Run(fmt.Sprintf("Tasks%d/encoding_json", n), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				dec := json.NewDecoder(bytes.NewReader(data))
				dec.UseNumber()
				var v any
				if err := dec.Decode(&v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
