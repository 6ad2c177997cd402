package replay

import (
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
	}
	appendRaw(t, dir, "ag", strings.Join(lines, ""))
	drain(t, a)
	want := map[uint64][]string{
		2: {"test failed: op 0 (test /s): value differs; read the document again"},
		3: {"invalid patch: op 1 (replace /missing/y): path not found; fix the patch and submit it with a new seq"},
		4: {`invalid patch: op 0: missing "path"; fix the patch`},
		5: {"document too deep: op 0 (add /a): the document would be nested deeper than 512 levels, the limit"},
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
		for _, w := range want[r.Seq] {
			if !strings.HasPrefix(r.Error, w) {
				t.Errorf("seq %d: error %q, want it to start with %q", r.Seq, r.Error, w)
			}
		}
	}
}
