package replay

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stateward/stateward/journal"
)

// TestApplier_ErrorText checks the error text of results: no Go package
// prefix, the category once, the op index and path, and what to do.
func TestApplier_ErrorText(t *testing.T) {
	dir := t.TempDir()
	a := MustOpen(t, dir)
	lines := []string{
		intentLine(1, "t.json", `"patch":[{"op":"add","path":"","value":{"s":"open"}}]`),
		intentLine(2, "t.json", `"patch":[{"op":"test","path":"/s","value":"done"}]`),
		intentLine(3, "t.json", `"patch":[{"op":"add","path":"/x","value":1},{"op":"replace","path":"/missing/y","value":2}]`),
		intentLine(4, "t.json", `"patch":[{"op":"add","value":1}]`),
		intentLine(5, "t.json", `"patch":[{"op":"add","path":"/a","value":`+nested(DefaultMaxDepth)+`}]`),
		intentLine(6, "a..json", `"merge":{}`),
		"not json\n",
	}
	appendRaw(t, dir, "ag", strings.Join(lines, ""))
	drain(t, a)
	want := map[uint64][]string{
		2: {"test failed: op 0 (test /s): value differs; read the document again"},
		3: {"invalid patch: op 1 (replace /missing/y): path not found; fix the patch and submit it with a new seq"},
		4: {`invalid patch: op 0: missing "path"; fix the patch`},
		5: {"document too deep: op 0 (add /a): the document would be nested deeper than 512 levels, the limit"},
		6: {`bad record: file: bad name: document "a..json" must match`, "; fix the record and write it again with a new seq"},
		0: {"bad record: not valid JSON", "; fix the record and write it again with a new seq"},
	}
	for _, r := range readResults(t, dir, "ag") {
		if r.Seq == 1 {
			if r.Status != journal.StatusApplied {
				t.Fatalf("seq 1: %+v", r)
			}
			continue
		}
		if strings.Contains(r.Error, "replay:") || strings.Contains(r.Error, "journal:") {
			t.Errorf("seq %d: error %q carries a Go package prefix", r.Seq, r.Error)
		}
		for i, w := range want[r.Seq] {
			if i == 0 && !strings.HasPrefix(r.Error, w) || !strings.Contains(r.Error, w) {
				t.Errorf("seq %d: error %q, want it to start with %q", r.Seq, r.Error, w)
			}
		}
	}
}

// TestVerify_OlderErrorTexts: a log written by engine 1 (no engine field,
// no limits), whose error texts read differently, still verifies: its
// records are followed, not decided again. A record of the current engine
// is compared word for word.
func TestVerify_OlderErrorTexts(t *testing.T) {
	dir := t.TempDir()
	appendRaw(t, dir, "a", intentLine(1, "v.json", `"merge":{"s":"open"}`)+intentLine(2, "v.json", `"patch":[{"op":"test","path":"/s","value":"done"}]`))
	a := MustOpen(t, dir)
	drain(t, a)
	a.Close()
	newText := []byte("test failed: op 0 (test /s): value differs; read the document again, then decide and resubmit")
	oldText := []byte("replay: test failed: op 0 (test /s): value differs")
	rewrite := func(t *testing.T, dropLimits bool) {
		t.Helper()
		logs, _ := filepath.Glob(filepath.Join(dir, logDir, "*.jsonl"))
		for _, p := range logs {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var out []byte
			for line := range bytes.Lines(data) {
				text := bytes.ReplaceAll(bytes.TrimSuffix(line[9:], []byte("\n")), newText, oldText)
				if dropLimits {
					text = regexp.MustCompile(`,"max_doc_size":\d+,"max_depth":\d+|,"engine":\d+`).ReplaceAll(text, nil)
				}
				out = append(out, fmt.Sprintf("%08x ", crc32.Checksum(text, crcTable))...)
				out = append(out, text...)
				out = append(out, '\n')
			}
			if err := os.WriteFile(p, out, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		res := filepath.Join(dir, "results", "a", journal.SegmentName(1))
		data, err := os.ReadFile(res)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(res, bytes.ReplaceAll(data, newText, oldText), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rewrite(t, false)
	if rep, err := Verify(dir, ""); err != nil || len(rep.Problems) == 0 {
		t.Fatalf("Verify of a changed error text in a record with its limits: %v, %v; want a problem", rep, err)
	}
	rewrite(t, true)
	if rep := mustVerify(t, dir); len(rep.Problems) > 0 {
		t.Fatalf("Verify of an older record: %q, want no problems", rep.Problems)
	}
}
