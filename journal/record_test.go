package journal

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// compactJSON returns raw compacted, or raw itself if it is not valid JSON,
// so that tests compare raw fields without caring about whitespace.
func compactJSON(tb testing.TB, raw json.RawMessage) string {
	tb.Helper()
	if raw == nil {
		return ""
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return string(raw)
	}
	return buf.String()
}

// sameIntent reports how got and want differ, comparing raw JSON fields
// compacted; "" if they do not.
func sameIntent(tb testing.TB, got, want Intent) string {
	tb.Helper()
	var diffs []string
	if got.Seq != want.Seq {
		diffs = append(diffs, "Seq")
	}
	if got.File != want.File {
		diffs = append(diffs, "File")
	}
	if (got.Patch == nil) != (want.Patch == nil) || compactJSON(tb, got.Patch) != compactJSON(tb, want.Patch) {
		diffs = append(diffs, "Patch")
	}
	if (got.Merge == nil) != (want.Merge == nil) || compactJSON(tb, got.Merge) != compactJSON(tb, want.Merge) {
		diffs = append(diffs, "Merge")
	}
	if (got.IfVersion == nil) != (want.IfVersion == nil) || (got.IfVersion != nil && *got.IfVersion != *want.IfVersion) {
		diffs = append(diffs, "IfVersion")
	}
	if got.ID != want.ID {
		diffs = append(diffs, "ID")
	}
	if got.Time != want.Time {
		diffs = append(diffs, "Time")
	}
	if len(diffs) == 0 {
		return ""
	}
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	return "fields " + strings.Join(diffs, ",") + " differ:\n got  " + string(g) + "\n want " + string(w)
}

func u64(v uint64) *uint64 { return &v }

func TestParseIntent(t *testing.T) {
	long128 := strings.Repeat("d", 128) // longest name part before ".json"
	tests := []struct {
		name    string
		line    string
		want    Intent // checked when wantErr is ""
		wantSeq uint64
		wantErr string // substring of the error; "" for success
		badName bool   // the error must also wrap ErrBadName
	}{
		{
			name:    "ValidMinimal",
			line:    `{"seq":1,"file":"a.json","patch":[]}`,
			want:    Intent{Seq: 1, File: "a.json", Patch: json.RawMessage(`[]`)},
			wantSeq: 1,
		},
		{
			name: "ValidAllFields",
			line: `{"seq":42,"file":"tasks.json","patch":[{"op":"add","path":"/a","value":1}],` +
				`"if_version":3,"id":"req-1","time":"2024-05-01T12:00:00.5+02:00"}`,
			want: Intent{Seq: 42, File: "tasks.json", Patch: json.RawMessage(`[{"op":"add","path":"/a","value":1}]`),
				IfVersion: u64(3), ID: "req-1", Time: "2024-05-01T12:00:00.5+02:00"},
			wantSeq: 42,
		},
		{
			name:    "ValidMerge",
			line:    `{"seq":2,"file":"state.json","merge":{"a":{"b":null}}}`,
			want:    Intent{Seq: 2, File: "state.json", Merge: json.RawMessage(`{"a":{"b":null}}`)},
			wantSeq: 2,
		},
		{
			name:    "MergeNull",
			line:    `{"seq":3,"file":"state.json","merge":null}`,
			want:    Intent{Seq: 3, File: "state.json", Merge: json.RawMessage(`null`)},
			wantSeq: 3,
		},
		{
			name:    "IfVersionZero",
			line:    `{"seq":4,"file":"a.json","if_version":0,"patch":[{"op":"add","path":"","value":{}}]}`,
			want:    Intent{Seq: 4, File: "a.json", IfVersion: u64(0), Patch: json.RawMessage(`[{"op":"add","path":"","value":{}}]`)},
			wantSeq: 4,
		},
		{
			name:    "SeqMaxUint64",
			line:    `{"seq":18446744073709551615,"file":"a.json","patch":[]}`,
			want:    Intent{Seq: 18446744073709551615, File: "a.json", Patch: json.RawMessage(`[]`)},
			wantSeq: 18446744073709551615,
		},
		{
			name:    "Whitespace",
			line:    " { \"seq\" : 5 , \"file\" : \"a.json\" , \"patch\" : [ ] } ",
			want:    Intent{Seq: 5, File: "a.json", Patch: json.RawMessage(`[]`)},
			wantSeq: 5,
		},
		{
			name:    "FileMaxLength",
			line:    `{"seq":1,"file":"` + long128 + `.json","patch":[]}`,
			want:    Intent{Seq: 1, File: long128 + ".json", Patch: json.RawMessage(`[]`)},
			wantSeq: 1,
		},
		{
			name:    "IDMaxLength",
			line:    `{"seq":1,"file":"a.json","patch":[],"id":"` + strings.Repeat("é", 64) + `"}`, // 128 bytes
			want:    Intent{Seq: 1, File: "a.json", Patch: json.RawMessage(`[]`), ID: strings.Repeat("é", 64)},
			wantSeq: 1,
		},
		{
			name:    "TimeUTC",
			line:    `{"seq":1,"file":"a.json","patch":[],"time":"2024-05-01T12:00:00Z"}`,
			want:    Intent{Seq: 1, File: "a.json", Patch: json.RawMessage(`[]`), Time: "2024-05-01T12:00:00Z"},
			wantSeq: 1,
		},
		{
			name:    "UnknownFieldsIgnored",
			line:    `{"seq":6,"v":2,"file":"a.json","future":{"x":[1,2,{"y":null}]},"merge":{},"flags":["z"]}`,
			want:    Intent{Seq: 6, File: "a.json", Merge: json.RawMessage(`{}`)},
			wantSeq: 6,
		},
		{
			// Field names are exact (docs/format.md, Intent): "Seq", "FILE" and "Patch" are unknown
			// fields, to be ignored, not other spellings of known ones.
			name:    "UnknownFieldsDifferingInCaseIgnored",
			line:    `{"seq":7,"file":"a.json","merge":{},"Seq":"x","FILE":5,"Patch":{},"ID":[],"If_Version":-1,"TIME":"now"}`,
			want:    Intent{Seq: 7, File: "a.json", Merge: json.RawMessage(`{}`)},
			wantSeq: 7,
		},
		{
			name:    "TrailingNewline",
			line:    `{"seq":8,"file":"a.json","patch":[]}` + "\n",
			want:    Intent{Seq: 8, File: "a.json", Patch: json.RawMessage(`[]`)},
			wantSeq: 8,
		},
		{
			name:    "TrailingCRLF",
			line:    `{"seq":9,"file":"a.json","patch":[]}` + "\r\n",
			want:    Intent{Seq: 9, File: "a.json", Patch: json.RawMessage(`[]`)},
			wantSeq: 9,
		},

		// seq
		{name: "MissingSeq", line: `{"file":"a.json","patch":[]}`, wantErr: "missing seq"},
		{name: "SeqZero", line: `{"seq":0,"file":"a.json","patch":[]}`, wantErr: "seq"},
		{name: "SeqNegative", line: `{"seq":-1,"file":"a.json","patch":[]}`, wantErr: "seq"},
		{name: "SeqFraction", line: `{"seq":1.5,"file":"a.json","patch":[]}`, wantErr: "seq"},
		{name: "SeqIntegralFraction", line: `{"seq":1.0,"file":"a.json","patch":[]}`, wantErr: "seq"},
		{name: "SeqString", line: `{"seq":"1","file":"a.json","patch":[]}`, wantErr: "seq"},
		{name: "SeqExponent", line: `{"seq":1e3,"file":"a.json","patch":[]}`, wantErr: "seq"},
		{name: "SeqNull", line: `{"seq":null,"file":"a.json","patch":[]}`, wantErr: "seq"},
		{name: "SeqBool", line: `{"seq":true,"file":"a.json","patch":[]}`, wantErr: "seq"},
		{name: "SeqOverflow", line: `{"seq":18446744073709551616,"file":"a.json","patch":[]}`, wantErr: "seq"},

		// file: the seq is readable, so it is returned with the error.
		{name: "FileMissing", line: `{"seq":7,"patch":[]}`, wantSeq: 7, wantErr: "file"},
		{name: "FileNotString", line: `{"seq":7,"file":5,"patch":[]}`, wantSeq: 7, wantErr: "file"},
		{name: "FileNull", line: `{"seq":7,"file":null,"patch":[]}`, wantSeq: 7, wantErr: "file", badName: true}, // null reads as ""
		{name: "FileEmpty", line: `{"seq":7,"file":"","patch":[]}`, wantSeq: 7, wantErr: "file", badName: true},
		{name: "FileSlash", line: `{"seq":7,"file":"a/b.json","patch":[]}`, wantSeq: 7, wantErr: "file", badName: true},
		{name: "FileAbsolute", line: `{"seq":7,"file":"/etc/a.json","patch":[]}`, wantSeq: 7, wantErr: "file", badName: true},
		{name: "FileBackslash", line: `{"seq":7,"file":"a\\b.json","patch":[]}`, wantSeq: 7, wantErr: "file", badName: true},
		{name: "FileParent", line: `{"seq":7,"file":"../a.json","patch":[]}`, wantSeq: 7, wantErr: "file", badName: true},
		{name: "FileDotDotInside", line: `{"seq":7,"file":"a..b.json","patch":[]}`, wantSeq: 7, wantErr: "file", badName: true},
		{name: "FileNoJSONSuffix", line: `{"seq":7,"file":"tasks","patch":[]}`, wantSeq: 7, wantErr: "file", badName: true},
		{name: "FileOtherSuffix", line: `{"seq":7,"file":"tasks.txt","patch":[]}`, wantSeq: 7, wantErr: "file", badName: true},
		{name: "FileUpperSuffix", line: `{"seq":7,"file":"tasks.JSON","patch":[]}`, wantSeq: 7, wantErr: "file", badName: true},
		{name: "FileOnlySuffix", line: `{"seq":7,"file":".json","patch":[]}`, wantSeq: 7, wantErr: "file", badName: true},
		{name: "FileLeadingDot", line: `{"seq":7,"file":".tasks.json","patch":[]}`, wantSeq: 7, wantErr: "file", badName: true},
		{name: "FileTooLong", line: `{"seq":7,"file":"` + long128 + `d.json","patch":[]}`, wantSeq: 7, wantErr: "file", badName: true},
		{name: "FileSpace", line: `{"seq":7,"file":"my tasks.json","patch":[]}`, wantSeq: 7, wantErr: "file", badName: true},
		{name: "FileTrailingNewline", line: `{"seq":7,"file":"a.json\n","patch":[]}`, wantSeq: 7, wantErr: "file", badName: true},

		// patch and merge
		{name: "PatchAndMerge", line: `{"seq":7,"file":"a.json","patch":[],"merge":{}}`, wantSeq: 7, wantErr: "patch"},
		{name: "NeitherPatchNorMerge", line: `{"seq":7,"file":"a.json"}`, wantSeq: 7, wantErr: "patch"},
		{name: "PatchObject", line: `{"seq":7,"file":"a.json","patch":{"op":"add","path":"/a","value":1}}`, wantSeq: 7, wantErr: "patch"},
		{name: "PatchString", line: `{"seq":7,"file":"a.json","patch":"[]"}`, wantSeq: 7, wantErr: "patch"},
		{name: "PatchNull", line: `{"seq":7,"file":"a.json","patch":null}`, wantSeq: 7, wantErr: "patch"},

		// id, if_version, time
		{name: "IDTooLong", line: `{"seq":7,"file":"a.json","patch":[],"id":"` + strings.Repeat("x", 129) + `"}`, wantSeq: 7, wantErr: "id"},
		{name: "IDTooLongInBytes", line: `{"seq":7,"file":"a.json","patch":[],"id":"` + strings.Repeat("é", 65) + `"}`, wantSeq: 7, wantErr: "id"},
		{name: "IDNotString", line: `{"seq":7,"file":"a.json","patch":[],"id":5}`, wantSeq: 7, wantErr: "id"},
		{name: "IfVersionNegative", line: `{"seq":7,"file":"a.json","patch":[],"if_version":-1}`, wantSeq: 7, wantErr: "if_version"},
		{name: "IfVersionFloat", line: `{"seq":7,"file":"a.json","patch":[],"if_version":1.5}`, wantSeq: 7, wantErr: "if_version"},
		{name: "IfVersionString", line: `{"seq":7,"file":"a.json","patch":[],"if_version":"1"}`, wantSeq: 7, wantErr: "if_version"},
		{name: "TimeNotRFC3339", line: `{"seq":7,"file":"a.json","patch":[],"time":"2024-05-01 12:00:00"}`, wantSeq: 7, wantErr: "time"},
		{name: "TimeWord", line: `{"seq":7,"file":"a.json","patch":[],"time":"yesterday"}`, wantSeq: 7, wantErr: "time"},
		{name: "TimeNotString", line: `{"seq":7,"file":"a.json","patch":[],"time":1714564800}`, wantSeq: 7, wantErr: "time"},

		// not a record at all
		{name: "NotObjectArray", line: `[{"seq":1,"file":"a.json","patch":[]}]`, wantErr: "object"},
		{name: "NotObjectString", line: `"seq"`, wantErr: "object"},
		{name: "NotObjectNumber", line: `12`, wantErr: "object"},
		{name: "NotObjectNull", line: `null`, wantErr: "seq"},
		{name: "Empty", line: ``, wantErr: "JSON"},
		{name: "OnlyNewline", line: "\n", wantErr: "JSON"},
		{name: "InvalidJSON", line: `{"seq":1,"file":"a.json","patch":[]`, wantErr: "JSON"},
		{name: "TrailingGarbage", line: `{"seq":1,"file":"a.json","patch":[]}x`, wantErr: "JSON"},
		{name: "TwoObjects", line: `{"seq":1,"file":"a.json","patch":[]}{"seq":2}`, wantErr: "JSON"},
	}
	seen := make(map[string]bool)
	for _, tt := range tests {
		if seen[tt.name] {
			t.Fatalf("duplicate case %s", tt.name)
		}
		seen[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			in, seq, err := ParseIntent([]byte(tt.line))
			if got, want := seq, tt.wantSeq; got != want {
				t.Errorf("seq=%d, want %d", got, want)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseIntent(%q): %v", tt.line, err)
				}
				if d := sameIntent(t, in, tt.want); d != "" {
					t.Errorf("ParseIntent(%q): %s", tt.line, d)
				}
				if err := in.Validate(); err != nil {
					t.Errorf("Validate() of a parsed intent: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseIntent(%q) = %+v, want an error about %q", tt.line, in, tt.wantErr)
			}
			if !errors.Is(err, ErrBadRecord) {
				t.Errorf("error %q does not wrap ErrBadRecord", err)
			}
			if got, want := errors.Is(err, ErrBadName), tt.badName; got != want {
				t.Errorf("errors.Is(%q, ErrBadName)=%v, want %v", err, got, want)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not name %q", err, tt.wantErr)
			}
		})
	}
}

func TestIntent_Validate(t *testing.T) {
	ok := Intent{Seq: 1, File: "a.json", Patch: json.RawMessage(`[]`)}
	tests := []struct {
		name    string
		edit    func(in *Intent)
		wantErr bool
	}{
		{name: "Valid", edit: func(in *Intent) {}},
		{name: "ValidMerge", edit: func(in *Intent) { in.Patch, in.Merge = nil, json.RawMessage(`{"a":1}`) }},
		{name: "ValidMergeNull", edit: func(in *Intent) { in.Patch, in.Merge = nil, json.RawMessage(`null`) }},
		{name: "ValidPatchWithSpace", edit: func(in *Intent) { in.Patch = json.RawMessage(" \n[ ]") }},
		{name: "ValidAll", edit: func(in *Intent) {
			in.IfVersion, in.ID, in.Time = u64(0), strings.Repeat("k", MaxIDLen), "2024-01-02T03:04:05.123456789Z"
		}},
		{name: "SeqZero", edit: func(in *Intent) { in.Seq = 0 }, wantErr: true},
		{name: "BadFile", edit: func(in *Intent) { in.File = "../a.json" }, wantErr: true},
		{name: "PatchAndMerge", edit: func(in *Intent) { in.Merge = json.RawMessage(`{}`) }, wantErr: true},
		{name: "Neither", edit: func(in *Intent) { in.Patch = nil }, wantErr: true},
		{name: "PatchNotArray", edit: func(in *Intent) { in.Patch = json.RawMessage(`{}`) }, wantErr: true},
		{name: "PatchInvalidJSON", edit: func(in *Intent) { in.Patch = json.RawMessage(`[1,`) }, wantErr: true},
		{name: "PatchTwoValues", edit: func(in *Intent) { in.Patch = json.RawMessage(`[] []`) }, wantErr: true},
		{name: "MergeInvalidJSON", edit: func(in *Intent) { in.Patch, in.Merge = nil, json.RawMessage(`{"a"`) }, wantErr: true},
		{name: "IDTooLong", edit: func(in *Intent) { in.ID = strings.Repeat("k", MaxIDLen+1) }, wantErr: true},
		{name: "TimeBad", edit: func(in *Intent) { in.Time = "2024-01-02" }, wantErr: true},
		{
			// Invalid UTF-8 is written as U+FFFD (3 bytes each), so this id
			// would reach the watcher as 384 bytes and be rejected there.
			name: "IDInvalidUTF8", edit: func(in *Intent) { in.ID = strings.Repeat("\xff", MaxIDLen) }, wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := ok
			tt.edit(&in)
			err := in.Validate()
			if got, want := err != nil, tt.wantErr; got != want {
				t.Fatalf("Validate()=%v, want error %v", err, want)
			}
			if err != nil && !errors.Is(err, ErrBadRecord) {
				t.Errorf("error %q does not wrap ErrBadRecord", err)
			}
			line, merr := in.MarshalLine()
			if got, want := merr != nil, tt.wantErr; got != want {
				t.Fatalf("MarshalLine()=%q, %v; want error %v", line, merr, want)
			}
			if merr != nil {
				if line != nil {
					t.Errorf("MarshalLine returned %q with an error", line)
				}
				return
			}
			// What MarshalLine writes, the watcher accepts as the same intent.
			back, seq, err := ParseIntent(line)
			if err != nil {
				t.Fatalf("ParseIntent(MarshalLine()=%q): %v", line, err)
			}
			if seq != in.Seq {
				t.Errorf("seq=%d, want %d", seq, in.Seq)
			}
			if d := sameIntent(t, back, in); d != "" {
				t.Error(d)
			}
		})
	}
}

func TestIntent_MarshalLine(t *testing.T) {
	in := Intent{
		Seq:       12,
		File:      "tasks.json",
		Patch:     json.RawMessage("[\n  {\"op\": \"add\", \"path\": \"/a<b>&c\", \"value\": \"x\\ny\"}\n]"),
		IfVersion: u64(0),
		ID:        "id<&>",
		Time:      "2024-05-01T12:00:00Z",
	}
	line, err := in.MarshalLine()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"seq":12,"file":"tasks.json","patch":[{"op":"add","path":"/a<b>&c","value":"x\ny"}],"if_version":0,"id":"id<&>","time":"2024-05-01T12:00:00Z"}` + "\n"
	if got := string(line); got != want {
		t.Errorf("MarshalLine()=\n%s, want\n%s", got, want)
	}
	if got, want := bytes.Count(line, []byte("\n")), 1; got != want {
		t.Errorf("line has %d newlines, want %d", got, want)
	}

	t.Run("MergeNull", func(t *testing.T) {
		line, err := Intent{Seq: 1, File: "a.json", Merge: json.RawMessage("null")}.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(line), `{"seq":1,"file":"a.json","merge":null}`+"\n"; got != want {
			t.Errorf("MarshalLine()=%q, want %q", got, want)
		}
	})
}

func TestValidDocName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"a.json", true},
		{"A.json", true},
		{"0.json", true},
		{"tasks.json", true},
		{"my-doc_v1.2.json", true},
		{"a.b.json", true},
		{strings.Repeat("x", 128) + ".json", true},
		{strings.Repeat("x", 129) + ".json", false},
		{"", false},
		{".json", false},
		{".a.json", false},
		{"-a.json", false},
		{"_a.json", false},
		{"a", false},
		{"a.jsonl", false},
		{"a.json.tmp", false},
		{"a.JSON", false},
		{"a/b.json", false},
		{"a\\b.json", false},
		{"../a.json", false},
		{"a..json", false},
		{"a..b.json", false},
		{"a b.json", false},
		{"a.json\n", false},
		{"é.json", false},
	}
	for _, tt := range tests {
		if got := ValidDocName(tt.name); got != tt.want {
			t.Errorf("ValidDocName(%q)=%v, want %v", tt.name, got, tt.want)
		}
		err := CheckDocName(tt.name)
		if got := err == nil; got != tt.want {
			t.Errorf("CheckDocName(%q)=%v, want ok %v", tt.name, err, tt.want)
		}
		if err != nil && !errors.Is(err, ErrBadName) {
			t.Errorf("CheckDocName(%q)=%v does not wrap ErrBadName", tt.name, err)
		}
	}
}

func TestValidAgentName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"a", true},
		{"Z", true},
		{"7", true},
		{"claude-code_2.x", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{".", false},
		{"..", false},
		{".hidden", false},
		{"-a", false},
		{"a..b", false},
		{"a/b", false},
		{"../a", false},
		{"a b", false},
		{"a\n", false},
		{"ä", false},
	}
	for _, tt := range tests {
		if got := ValidAgentName(tt.name); got != tt.want {
			t.Errorf("ValidAgentName(%q)=%v, want %v", tt.name, got, tt.want)
		}
		err := CheckAgentName(tt.name)
		if got := err == nil; got != tt.want {
			t.Errorf("CheckAgentName(%q)=%v, want ok %v", tt.name, err, tt.want)
		}
		if err != nil && !errors.Is(err, ErrBadName) {
			t.Errorf("CheckAgentName(%q)=%v does not wrap ErrBadName", tt.name, err)
		}
	}
}

func TestSegmentName(t *testing.T) {
	for _, seq := range []uint64{0, 1, 9, 10, 42, 1 << 32, 18446744073709551615} {
		name := SegmentName(seq)
		if got, want := len(name), 20+len(".jsonl"); got != want {
			t.Errorf("len(SegmentName(%d))=%d, want %d", seq, got, want)
		}
		got, ok := ParseSegmentName(name)
		if !ok || got != seq {
			t.Errorf("ParseSegmentName(%q)=%d, %v; want %d, true", name, got, ok, seq)
		}
	}
	if got, want := SegmentName(1), "00000000000000000001.jsonl"; got != want {
		t.Errorf("SegmentName(1)=%q, want %q", got, want)
	}
	if got, want := SegmentName(1234), "00000000000000001234.jsonl"; got != want {
		t.Errorf("SegmentName(1234)=%q, want %q", got, want)
	}
}

func TestParseSegmentName(t *testing.T) {
	for _, name := range []string{
		"",
		".jsonl",
		"1.jsonl",
		"0000000000000000001.jsonl",   // 19 digits
		"000000000000000000001.jsonl", // 21 digits
		"0000000000000000000a.jsonl",
		"+0000000000000000001.jsonl",
		"-0000000000000000001.jsonl",
		" 0000000000000000001.jsonl",
		"00000000000000000001.json",
		"00000000000000000001.JSONL",
		"00000000000000000001.jsonl.tmp",
		"00000000000000000001.jsonl~",
		"00000000000000000001",
		"x00000000000000000001.jsonl",
		"99999999999999999999.jsonl", // 20 digits, past uint64
		".lock",
	} {
		if n, ok := ParseSegmentName(name); ok {
			t.Errorf("ParseSegmentName(%q)=%d, true; want false", name, n)
		}
	}
}

func TestResult_AppendLine(t *testing.T) {
	off0 := int64(0)
	off := int64(77)
	tests := []struct {
		name string
		r    Result
		want string
	}{
		{
			name: "Applied",
			r:    Result{Seq: 3, ID: "x<&>", File: "a.json", Status: StatusApplied, Version: 2, Commit: 9},
			want: `{"seq":3,"id":"x<&>","file":"a.json","status":"applied","version":2,"commit":9}`,
		},
		{
			name: "ConflictVersionZero",
			r:    Result{Seq: 4, File: "a.json", Status: StatusConflict, Commit: 10, Error: "if_version 1, document is at 0"},
			want: `{"seq":4,"file":"a.json","status":"conflict","version":0,"commit":10,"error":"if_version 1, document is at 0"}`,
		},
		{
			name: "Claimed",
			r:    Result{Seq: 5, File: "a.json", Status: StatusApplied, Version: 3, Commit: 9, Claimed: "/tasks/t~1é\"7"},
			want: `{"seq":5,"file":"a.json","status":"applied","version":3,"commit":9,"claimed":"/tasks/t~1é\"7"}`,
		},
		{
			name: "Retry",
			r:    Result{Seq: 3, File: "a.json", Status: StatusApplied, Version: 2, Commit: 9, Retry: true},
			want: `{"seq":3,"file":"a.json","status":"applied","version":2,"commit":9,"retry":true}`,
		},
		{
			name: "RejectedWithoutSeqAtOffsetZero",
			r:    Result{Status: StatusRejected, Commit: 11, Error: "not valid JSON", Segment: SegmentName(1), Offset: &off0},
			want: `{"status":"rejected","version":0,"commit":11,"error":"not valid JSON","segment":"00000000000000000001.jsonl","offset":0}`,
		},
		{
			name: "RejectedWithoutSeq",
			r:    Result{Status: StatusRejected, Commit: 12, Error: "line too long", Segment: SegmentName(5), Offset: &off},
			want: `{"status":"rejected","version":0,"commit":12,"error":"line too long","segment":"00000000000000000005.jsonl","offset":77}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := tt.r.AppendLine(nil)
			if got, want := string(line), tt.want+"\n"; got != want {
				t.Errorf("AppendLine()=\n%s, want\n%s", got, want)
			}
			if again := tt.r.AppendLine(nil); !bytes.Equal(again, line) {
				t.Errorf("AppendLine is not deterministic: %q then %q", line, again)
			}
			prefix := []byte("prev\n")
			if got, want := string(tt.r.AppendLine(prefix)), "prev\n"+string(line); got != want {
				t.Errorf("AppendLine(prefix)=%q, want %q", got, want)
			}
			back, err := ParseResult(line)
			if err != nil {
				t.Fatalf("ParseResult(%q): %v", line, err)
			}
			if !reflect.DeepEqual(back, tt.r) {
				t.Errorf("ParseResult(AppendLine())=%+v, want %+v", back, tt.r)
			}
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(line, &fields); err != nil {
				t.Fatal(err)
			}
			if tt.r.Seq == 0 {
				if _, ok := fields["seq"]; ok {
					t.Errorf("a result without seq has a \"seq\" key: %s", line)
				}
				if _, ok := fields["segment"]; !ok {
					t.Errorf("a result without seq has no \"segment\": %s", line)
				}
				if got, want := string(fields["offset"]), strconv.FormatInt(*tt.r.Offset, 10); got != want {
					t.Errorf("offset=%q, want %q: %s", got, want, line)
				}
			}
			for _, k := range []string{"status", "version", "commit"} {
				if _, ok := fields[k]; !ok {
					t.Errorf("no %q key in %s", k, line)
				}
			}
		})
	}
}

func TestParseResult(t *testing.T) {
	t.Run("WithNewline", func(t *testing.T) {
		r, err := ParseResult([]byte(`{"seq":1,"status":"applied","version":1,"commit":1,"future":true}` + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := r, (Result{Seq: 1, Status: StatusApplied, Version: 1, Commit: 1}); !reflect.DeepEqual(got, want) {
			t.Errorf("ParseResult=%+v, want %+v", got, want)
		}
	})
	for _, tt := range []struct{ name, line string }{
		{"NoStatus", `{"seq":1,"version":1,"commit":1}`},
		{"InvalidJSON", `{"seq":1,"status":"applied"`},
		{"NotObject", `["applied"]`},
		{"SeqString", `{"seq":"1","status":"applied"}`},
		{"Empty", ``},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseResult([]byte(tt.line))
			if err == nil {
				t.Fatalf("ParseResult(%q)=%+v, want an error", tt.line, r)
			}
			if !errors.Is(err, ErrBadRecord) {
				t.Errorf("error %q does not wrap ErrBadRecord", err)
			}
		})
	}
}

// TestValidName_MatchesRegexp checks the hand-written name checks against
// the regular expressions of docs/format.md (Names) on every short name over a small alphabet.
func TestValidName_MatchesRegexp(t *testing.T) {
	alphabet := []byte("aZ9._-/ ")
	var names []string
	var gen func(prefix []byte, n int)
	gen = func(prefix []byte, n int) {
		names = append(names, string(prefix))
		if n == 0 {
			return
		}
		for _, c := range alphabet {
			gen(append(prefix, c), n-1)
		}
	}
	gen(nil, 4)
	for _, long := range []int{63, 64, 65, 127, 128, 129} {
		names = append(names, strings.Repeat("a", long))
	}
	for _, n := range names {
		if got, want := ValidAgentName(n), agentNameRE.MatchString(n) && !strings.Contains(n, ".."); got != want {
			t.Errorf("ValidAgentName(%q)=%v, regexp says %v", n, got, want)
		}
		d := n + ".json"
		if got, want := ValidDocName(d), docNameRE.MatchString(d) && !strings.Contains(d, ".."); got != want {
			t.Errorf("ValidDocName(%q)=%v, regexp says %v", d, got, want)
		}
	}
}
