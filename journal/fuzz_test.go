package journal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// refRead splits data the way docs/format.md (Intent) says: complete lines, those longer than
// maxLine skipped, a final line without "\n" not yet written. It returns one
// entry per record ("off:line" or "off:TOO LONG") and the end of the last
// complete line.
func refRead(data []byte, maxLine int) (entries []string, end int64) {
	off := 0
	for {
		i := bytes.IndexByte(data[off:], '\n')
		if i < 0 {
			return entries, int64(off)
		}
		line := data[off : off+i+1]
		if len(line) > maxLine {
			entries = append(entries, fmt.Sprintf("%d:TOO LONG", off))
		} else {
			entries = append(entries, fmt.Sprintf("%d:%q", off, line))
		}
		off += i + 1
	}
}

// readerEntries reads r to its end in the same form as refRead.
func readerEntries(t *testing.T, r io.Reader, maxLine int) (entries []string, end int64, err error) {
	rd := NewReader(r, 0)
	rd.MaxLine = maxLine
	for range 1 << 20 {
		rec, err := rd.Next()
		switch {
		case err == nil:
			if int64(len(rec.Line)) != rec.End()-rec.Offset || rec.Offset+int64(len(rec.Line)) != rd.Offset() {
				t.Fatalf("record at %d with %d bytes, reader at %d", rec.Offset, len(rec.Line), rd.Offset())
			}
			entries = append(entries, fmt.Sprintf("%d:%q", rec.Offset, rec.Line))
		case errors.Is(err, ErrLineTooLong):
			entries = append(entries, fmt.Sprintf("%d:TOO LONG", rec.Offset))
		default:
			return entries, rd.Offset(), err
		}
	}
	t.Fatal("Next never ended")
	return nil, 0, nil
}

func FuzzReader(f *testing.F) {
	f.Add([]byte(""), uint16(100))
	f.Add([]byte("\n"), uint16(0))
	f.Add([]byte("{\"seq\":1}\n{\"seq\":2}\n"), uint16(100))
	f.Add([]byte("{\"seq\":1}\n{\"seq\":2"), uint16(100))
	f.Add([]byte("aaaaaaaaaa\nb\ncccccccccccc\nd"), uint16(9))
	f.Add([]byte("0123456789\n"), uint16(10))
	f.Add([]byte("0123456789\n"), uint16(11))
	f.Add([]byte("\r\n\n\x00\n\xff\xfe"), uint16(1))
	f.Add([]byte(strings.Repeat("x", 70<<10)+"\nz\n"), uint16(65535))
	f.Fuzz(func(t *testing.T, data []byte, max uint16) {
		maxLine := int(max) + 1
		want, wantEnd := refRead(data, maxLine)
		wantErr := io.EOF
		if wantEnd < int64(len(data)) {
			wantErr = io.ErrUnexpectedEOF
		}
		for name, r := range map[string]io.Reader{
			"Whole":   bytes.NewReader(data),
			"OneByte": iotest.OneByteReader(bytes.NewReader(data)),
		} {
			got, end, err := readerEntries(t, r, maxLine)
			if err != wantErr {
				t.Fatalf("%s: final error %v, want %v", name, err, wantErr)
			}
			if end != wantEnd {
				t.Fatalf("%s: Offset()=%d, want %d", name, end, wantEnd)
			}
			if g, w := strings.Join(got, "\n"), strings.Join(want, "\n"); g != w {
				t.Fatalf("%s: records\n%s\nwant\n%s", name, g, w)
			}
		}
	})
}

func FuzzParseIntent(f *testing.F) {
	for _, s := range []string{
		`{"seq":1,"file":"a.json","patch":[]}`,
		`{"seq":42,"file":"tasks.json","patch":[{"op":"add","path":"/a","value":1}],"if_version":3,"id":"req-1","time":"2024-05-01T12:00:00.5+02:00"}`,
		`{"seq":3,"file":"state.json","merge":null}`,
		`{"seq":2,"file":"state.json","merge":{"a":{"b":null}},"future":[1]}` + "\r\n",
		`{"seq":7,"file":"../a.json","patch":[]}`,
		`{"seq":7,"file":"a.json","patch":[],"merge":{}}`,
		`{"seq":1.5,"file":"a.json","patch":[]}`,
		`{"seq":"1","file":"a.json","patch":[]}`,
		`{"seq":1e3}`,
		`{"seq":-1}`,
		`{"seq":0}`,
		`{"seq":18446744073709551616}`,
		`{"seq":1,"file":"a.json","patch":[],"id":"` + strings.Repeat("x", 129) + `"}`,
		`{"seq":1,"file":"a.json","patch":[],"id":"\xff\xfe"}`,
		`{"seq":1,"file":"a.json","patch":[],"if_version":-1}`,
		`{"seq":1,"file":"a.json","patch":[],"time":"now"}`,
		`{"Seq":1,"seq":2,"file":"a.json","merge":{}}`,
		`{"se\u0071":5,"file":"a.json","merge":{}}`,
		`{"seq":1,"seq":2,"file":"a.json","merge":{}}`,
		`{"seq":1,"file":"a.json","merge":"\u2028<&>"}`,
		`[1,2]`,
		`"x"`,
		`null`,
		`{`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		in, seq, err := ParseIntent(line)
		// The fast path must agree with encoding/json's, field by field.
		trimmed := bytes.TrimSuffix(bytes.TrimRight(line, "\n"), []byte("\r"))
		sin, sseq, serr := parseIntentSlow(trimmed)
		show := func(in Intent) string {
			iv := ptrStr(in.IfVersion)
			in.IfVersion = nil
			return fmt.Sprintf("%+v %s", in, iv)
		}
		if seq != sseq || (err == nil) != (serr == nil) || show(in) != show(sin) {
			t.Fatalf("ParseIntent(%q) = %+v, %d, %v; encoding/json path = %+v, %d, %v", line, in, seq, err, sin, sseq, serr)
		}
		if err != nil {
			if !errors.Is(err, ErrBadRecord) {
				t.Fatalf("error %q does not wrap ErrBadRecord", err)
			}
			if seq != 0 {
				// A seq returned with an error is the line's own seq.
				var fields map[string]json.RawMessage
				if jerr := json.Unmarshal(bytes.TrimRight(line, "\r\n"), &fields); jerr != nil {
					t.Fatalf("seq %d returned for a line that is not an object: %v", seq, jerr)
				}
				if s, perr := strconv.ParseUint(string(bytes.TrimSpace(fields["seq"])), 10, 64); perr != nil || s != seq {
					t.Fatalf("seq %d returned, the line's seq is %s", seq, fields["seq"])
				}
			}
		} else {
			if seq != in.Seq || seq < 1 {
				t.Fatalf("seq %d returned with intent seq %d", seq, in.Seq)
			}
			if err := in.Validate(); err != nil {
				t.Fatalf("Validate() of a parsed intent: %v", err)
			}
			// What the watcher accepts, this package writes back as the same
			// intent, and the encoding is stable.
			out, err := in.MarshalLine()
			if err != nil {
				t.Fatalf("MarshalLine() of a parsed intent: %v", err)
			}
			back, seq2, err := ParseIntent(out)
			if err != nil || seq2 != seq {
				t.Fatalf("ParseIntent(MarshalLine()=%q)=%d, %v", out, seq2, err)
			}
			if d := sameIntent(t, back, in); d != "" {
				t.Fatalf("round trip through %q: %s", out, d)
			}
			again, err := back.MarshalLine()
			if err != nil || !bytes.Equal(again, out) {
				t.Fatalf("MarshalLine not stable: %q then %q (%v)", out, again, err)
			}
		}
		// The Writer finds the last seq of a journal the way the watcher
		// reads it: LastSeq agrees with ParseIntent on a one-line journal.
		if !bytes.ContainsRune(line, '\n') {
			_, last, err := LastSeq(bytes.NewReader(append(bytes.Clone(line), '\n')))
			if err != nil {
				t.Fatal(err)
			}
			if last != seq {
				t.Fatalf("LastSeq=%d, ParseIntent seq=%d", last, seq)
			}
		}
	})
}

func ptrStr(p *uint64) string {
	if p == nil {
		return "nil"
	}
	return strconv.FormatUint(*p, 10)
}

// FuzzResult_AppendLine checks the hand-written result encoder against
// encoding/json, byte for byte.
func FuzzResult_AppendLine(f *testing.F) {
	f.Add(uint64(3), "id<&>", "a.json", "applied", uint64(2), uint64(9), "", false, "", false, int64(0))
	f.Add(uint64(0), "", "", "rejected", uint64(0), uint64(11), "op 0: unknown op \"x\"\n\t\u2028\xff", true, SegmentName(1), true, int64(0))
	f.Fuzz(func(t *testing.T, seq uint64, id, file, status string, version, commit uint64, errText string, retry bool, seg string, hasOff bool, off int64) {
		r := Result{Seq: seq, ID: id, File: file, Status: status, Version: version, Commit: commit, Error: errText, Retry: retry, Segment: seg}
		if hasOff {
			r.Offset = &off
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(r); err != nil {
			t.Fatal(err)
		}
		if got, want := string(r.AppendLine(nil)), buf.String(); got != want {
			t.Fatalf("AppendLine()=%q, encoding/json=%q", got, want)
		}
	})
}
