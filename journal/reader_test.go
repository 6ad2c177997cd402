package journal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// readAll calls Next until it returns an error other than ErrLineTooLong and
// returns the records (lines copied), the offsets of skipped long lines and
// that final error.
func readAll(tb testing.TB, rd *Reader) (recs []Record, skipped []int64, err error) {
	tb.Helper()
	for range 1 << 20 {
		rec, err := rd.Next()
		switch {
		case err == nil:
			if rec.Line == nil || rec.Line[len(rec.Line)-1] != '\n' {
				tb.Fatalf("Next returned line %q at %d without its newline", rec.Line, rec.Offset)
			}
			recs = append(recs, Record{Offset: rec.Offset, Line: bytes.Clone(rec.Line)})
		case errors.Is(err, ErrLineTooLong):
			if rec.Line != nil {
				tb.Fatalf("a too long line came with Line %q", rec.Line)
			}
			skipped = append(skipped, rec.Offset)
		default:
			return recs, skipped, err
		}
	}
	tb.Fatal("Next never ended")
	return nil, nil, nil
}

// recordsString formats records for comparison and messages.
func recordsString(recs []Record) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "%d:%q ", r.Offset, r.Line)
	}
	return b.String()
}

func TestReader_Next(t *testing.T) {
	t.Run("CompleteLines", func(t *testing.T) {
		data := "{\"seq\":1}\n\n{\"seq\":2}\nnot json\n"
		rd := NewReader(strings.NewReader(data), 0)
		recs, skipped, err := readAll(t, rd)
		if !errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("final error %v, want io.EOF", err)
		}
		if len(skipped) != 0 {
			t.Errorf("skipped %v, want none", skipped)
		}
		want := []Record{
			{Offset: 0, Line: []byte("{\"seq\":1}\n")},
			{Offset: 10, Line: []byte("\n")},
			{Offset: 11, Line: []byte("{\"seq\":2}\n")},
			{Offset: 21, Line: []byte("not json\n")},
		}
		if got, want := recordsString(recs), recordsString(want); got != want {
			t.Errorf("records %s, want %s", got, want)
		}
		for _, r := range recs {
			if got, want := r.End(), r.Offset+int64(len(r.Line)); got != want {
				t.Errorf("End()=%d, want %d", got, want)
			}
		}
		if got, want := rd.Offset(), int64(len(data)); got != want {
			t.Errorf("Offset()=%d, want %d", got, want)
		}
	})

	t.Run("StartOffset", func(t *testing.T) {
		rd := NewReader(strings.NewReader("ab\ncd\n"), 1000)
		if got, want := rd.Offset(), int64(1000); got != want {
			t.Fatalf("Offset()=%d, want %d", got, want)
		}
		recs, _, err := readAll(t, rd)
		if !errors.Is(err, io.EOF) {
			t.Fatalf("final error %v, want io.EOF", err)
		}
		if got, want := len(recs), 2; got != want {
			t.Fatalf("%d records, want %d", got, want)
		}
		if recs[0].Offset != 1000 || recs[1].Offset != 1003 || rd.Offset() != 1006 {
			t.Errorf("offsets %d, %d, end %d; want 1000, 1003, end 1006", recs[0].Offset, recs[1].Offset, rd.Offset())
		}
	})

	t.Run("Empty", func(t *testing.T) {
		rd := NewReader(strings.NewReader(""), 0)
		rec, err := rd.Next()
		if err != io.EOF {
			t.Fatalf("Next()=%+v, %v; want io.EOF", rec, err)
		}
		if got, want := rd.Offset(), int64(0); got != want {
			t.Errorf("Offset()=%d, want %d", got, want)
		}
	})

	t.Run("TornTail", func(t *testing.T) {
		data := "{\"seq\":1}\n{\"seq\":2,\"fi"
		rd := NewReader(strings.NewReader(data), 0)
		rec, err := rd.Next()
		if err != nil || string(rec.Line) != "{\"seq\":1}\n" {
			t.Fatalf("Next()=%q, %v; want the first line", rec.Line, err)
		}
		rec, err = rd.Next()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("Next()=%q, %v; want io.ErrUnexpectedEOF", rec.Line, err)
		}
		if rec.Line != nil {
			t.Errorf("torn line returned as %q", rec.Line)
		}
		if got, want := rd.Offset(), int64(10); got != want {
			t.Errorf("Offset()=%d, want %d (the start of the torn line)", got, want)
		}
		// Once the line is complete, a Reader started at Offset finds it whole.
		data += "le\":\"a.json\"}\n"
		rd2 := NewReader(strings.NewReader(data[rd.Offset():]), rd.Offset())
		rec, err = rd2.Next()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(rec.Line), data[10:]; got != want || rec.Offset != 10 {
			t.Errorf("Next()=%q at %d, want %q at 10", got, rec.Offset, want)
		}
	})

	t.Run("TornOnly", func(t *testing.T) {
		rd := NewReader(strings.NewReader("{"), 5)
		if _, err := rd.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("Next()=%v, want io.ErrUnexpectedEOF", err)
		}
		if got, want := rd.Offset(), int64(5); got != want {
			t.Errorf("Offset()=%d, want %d", got, want)
		}
	})

	t.Run("ReadError", func(t *testing.T) {
		boom := errors.New("boom")
		rd := NewReader(io.MultiReader(strings.NewReader("ok\npart"), iotest.ErrReader(boom)), 0)
		if rec, err := rd.Next(); err != nil || string(rec.Line) != "ok\n" {
			t.Fatalf("Next()=%q, %v; want \"ok\\n\"", rec.Line, err)
		}
		_, err := rd.Next()
		if !errors.Is(err, boom) {
			t.Fatalf("Next()=%v, want %v", err, boom)
		}
		if got, want := rd.Offset(), int64(3); got != want {
			t.Errorf("Offset()=%d, want %d", got, want)
		}
	})

	t.Run("MaxLine", func(t *testing.T) {
		exact := strings.Repeat("a", 15) + "\n" // 16 bytes
		over := strings.Repeat("b", 16) + "\n"  // 17 bytes
		data := exact + over + "c\n" + over
		rd := NewReader(strings.NewReader(data), 0)
		rd.MaxLine = 16

		rec, err := rd.Next()
		if err != nil || string(rec.Line) != exact {
			t.Fatalf("Next()=%q, %v; want the line of exactly MaxLine bytes", rec.Line, err)
		}
		rec, err = rd.Next()
		if !errors.Is(err, ErrLineTooLong) {
			t.Fatalf("Next()=%q, %v; want ErrLineTooLong", rec.Line, err)
		}
		if got, want := rec.Offset, int64(16); got != want {
			t.Errorf("too long record Offset=%d, want %d", got, want)
		}
		if rec.Line != nil {
			t.Errorf("too long record Line=%q, want nil", rec.Line)
		}
		if got, want := rd.Offset(), int64(33); got != want {
			t.Errorf("Offset()=%d after the long line, want %d", got, want)
		}
		rec, err = rd.Next()
		if err != nil || string(rec.Line) != "c\n" || rec.Offset != 33 {
			t.Fatalf("Next()=%q at %d, %v; want \"c\\n\" at 33", rec.Line, rec.Offset, err)
		}
		if _, err := rd.Next(); !errors.Is(err, ErrLineTooLong) {
			t.Fatalf("Next()=%v, want ErrLineTooLong", err)
		}
		if _, err := rd.Next(); err != io.EOF {
			t.Fatalf("Next()=%v, want io.EOF", err)
		}
	})

	t.Run("DefaultMaxLine", func(t *testing.T) {
		exact := strings.Repeat("x", DefaultMaxLine-1) + "\n"
		over := strings.Repeat("y", DefaultMaxLine) + "\n"
		rd := NewReader(strings.NewReader(exact+over+"z\n"), 0)
		if got, want := rd.MaxLine, DefaultMaxLine; got != want {
			t.Fatalf("MaxLine=%d, want %d", got, want)
		}
		rec, err := rd.Next()
		if err != nil || len(rec.Line) != DefaultMaxLine {
			t.Fatalf("Next()=%d bytes, %v; want %d bytes", len(rec.Line), err, DefaultMaxLine)
		}
		if !bytes.Equal(rec.Line, []byte(exact)) {
			t.Fatal("line of DefaultMaxLine bytes came back changed")
		}
		rec, err = rd.Next()
		if !errors.Is(err, ErrLineTooLong) || rec.Offset != int64(len(exact)) {
			t.Fatalf("Next()=%d, %v; want ErrLineTooLong at %d", rec.Offset, err, len(exact))
		}
		rec, err = rd.Next()
		if err != nil || string(rec.Line) != "z\n" || rec.End() != int64(len(exact)+len(over)+2) {
			t.Fatalf("Next()=%q ending at %d, %v; want \"z\\n\" at the end", rec.Line, rec.End(), err)
		}
	})

	t.Run("TooLongTornTail", func(t *testing.T) {
		rd := NewReader(strings.NewReader("a\n"+strings.Repeat("b", 100)), 0)
		rd.MaxLine = 10
		if _, err := rd.Next(); err != nil {
			t.Fatal(err)
		}
		if _, err := rd.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("Next()=%v, want io.ErrUnexpectedEOF: a line without its newline is not written yet", err)
		}
		if got, want := rd.Offset(), int64(2); got != want {
			t.Errorf("Offset()=%d, want %d", got, want)
		}
	})

	t.Run("LongerThanBuffer", func(t *testing.T) {
		// Lines that span several fills of the 64 KiB buffer come back whole.
		long1 := strings.Repeat("0123456789abcdef", 200<<10/16) + "\n"
		long2 := strings.Repeat("q", 64<<10-1) + "\n" // exactly the buffer size
		long3 := strings.Repeat("r", 64<<10) + "\n"   // one byte past it
		data := "a\n" + long1 + "b\n" + long2 + long3 + "c\n"
		rd := NewReader(strings.NewReader(data), 0)
		recs, skipped, err := readAll(t, rd)
		if err != io.EOF || len(skipped) != 0 {
			t.Fatalf("final error %v, skipped %v; want io.EOF, none", err, skipped)
		}
		want := []string{"a\n", long1, "b\n", long2, long3, "c\n"}
		if len(recs) != len(want) {
			t.Fatalf("%d records, want %d", len(recs), len(want))
		}
		off := int64(0)
		for i, r := range recs {
			if string(r.Line) != want[i] || r.Offset != off {
				t.Errorf("record %d: %d bytes at %d, want %d bytes at %d", i, len(r.Line), r.Offset, len(want[i]), off)
			}
			off += int64(len(want[i]))
		}
	})

	t.Run("LongerThanBufferTooLong", func(t *testing.T) {
		long := strings.Repeat("x", 150<<10) + "\n"
		rd := NewReader(strings.NewReader("a\n"+long+"b\n"), 0)
		rd.MaxLine = 100 << 10
		recs, skipped, err := readAll(t, rd)
		if err != io.EOF {
			t.Fatalf("final error %v, want io.EOF", err)
		}
		if got, want := fmt.Sprint(skipped), "[2]"; got != want {
			t.Errorf("skipped at %s, want %s", got, want)
		}
		if len(recs) != 2 || string(recs[1].Line) != "b\n" || recs[1].Offset != int64(2+len(long)) {
			t.Errorf("records %s, want \"a\\n\" and \"b\\n\"", recordsString(recs))
		}
	})

	t.Run("SmallReads", func(t *testing.T) {
		// The reader must not depend on how the underlying reader splits data.
		data := "{\"seq\":1}\n" + strings.Repeat("y", 70<<10) + "\n\n{\"seq\":3}\n{\"se"
		want, _, wantErr := readAll(t, NewReader(strings.NewReader(data), 0))
		for name, r := range map[string]io.Reader{
			"OneByte": iotest.OneByteReader(strings.NewReader(data)),
			"Half":    iotest.HalfReader(strings.NewReader(data)),
			"DataErr": iotest.DataErrReader(strings.NewReader(data)),
		} {
			rd := NewReader(r, 0)
			got, _, err := readAll(t, rd)
			if !errors.Is(err, wantErr) || recordsString(got) != recordsString(want) {
				t.Errorf("%s: %d records, %v; want %d records, %v", name, len(got), err, len(want), wantErr)
			}
			if got, want := rd.Offset(), int64(len(data)-len("{\"se")); got != want {
				t.Errorf("%s: Offset()=%d, want %d", name, got, want)
			}
		}
	})

	t.Run("EveryCut", func(t *testing.T) {
		lines := []string{
			`{"seq":1,"file":"a.json","patch":[]}` + "\n",
			`{"seq":2,"file":"b.json","merge":{"k":"v"}}` + "\n",
			`{"seq":3,"file":"c.json","patch":[{"op":"inc","path":"/n","value":1}]}` + "\n",
		}
		data := strings.Join(lines, "")
		for cut := 0; cut <= len(data); cut++ {
			rd := NewReader(strings.NewReader(data[:cut]), 0)
			recs, skipped, err := readAll(t, rd)
			var want []string
			end := 0
			for _, l := range lines {
				if end+len(l) > cut {
					break
				}
				want = append(want, l)
				end += len(l)
			}
			var got []string
			for _, r := range recs {
				got = append(got, string(r.Line))
			}
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) || len(skipped) != 0 {
				t.Fatalf("cut at %d: records %q, want %q", cut, got, want)
			}
			wantErr := io.ErrUnexpectedEOF
			if end == cut {
				wantErr = io.EOF
			}
			if err != wantErr {
				t.Fatalf("cut at %d: final error %v, want %v", cut, err, wantErr)
			}
			if got, want := rd.Offset(), int64(end); got != want {
				t.Fatalf("cut at %d: Offset()=%d, want %d", cut, got, want)
			}
		}
	})
}

func TestLastSeq(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		wantEnd int64
		wantSeq uint64
	}{
		{name: "Empty", data: "", wantEnd: 0, wantSeq: 0},
		{
			name:    "Complete",
			data:    `{"seq":1,"file":"a.json","patch":[]}` + "\n" + `{"seq":2,"file":"a.json","patch":[]}` + "\n",
			wantEnd: 74, wantSeq: 2,
		},
		{
			name:    "TornTail",
			data:    `{"seq":1,"file":"a.json","patch":[]}` + "\n" + `{"seq":9,"file":"a.json","patch":[]}`,
			wantEnd: 37, wantSeq: 1,
		},
		{
			// An invalid record still counts by its seq: its seq is used.
			name:    "InvalidRecordWithSeq",
			data:    `{"seq":1,"file":"a.json","patch":[]}` + "\n" + `{"seq":5,"file":"../x"}` + "\n",
			wantEnd: 61, wantSeq: 5,
		},
		{
			name:    "GarbageLines",
			data:    "garbage\n" + `{"seq":3,"file":"a.json","patch":[]}` + "\n" + "{\"seq\":\"x\"}\n\n",
			wantEnd: 58, wantSeq: 3,
		},
		{
			// The watcher reads this key as "seq", so the Writer must too.
			name:    "EscapedKey",
			data:    `{"seq":1,"file":"a.json","patch":[]}` + "\n" + `{"se\u0071":6,"file":"a.json","patch":[]}` + "\n",
			wantEnd: 37 + 42, wantSeq: 6,
		},
		{
			name:    "LongLine",
			data:    `{"seq":4,"file":"a.json","merge":"` + strings.Repeat("z", 2*DefaultMaxLine) + `"}` + "\n",
			wantEnd: int64(len(`{"seq":4,"file":"a.json","merge":""}`+"\n") + 2*DefaultMaxLine), wantSeq: 4,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			end, seq, err := LastSeq(strings.NewReader(tt.data))
			if err != nil {
				t.Fatal(err)
			}
			if end != tt.wantEnd || seq != tt.wantSeq {
				t.Errorf("LastSeq()=%d, %d; want %d, %d", end, seq, tt.wantEnd, tt.wantSeq)
			}
		})
	}
}
