package replay

import (
	"os"
	"path/filepath"
	"testing"
)

// TestApplier_DeletedWhileDown: a document deleted while the watcher is
// stopped, whose last change was in an earlier batch than the last, is
// adopted as a deletion at the next start, as a deletion while running
// is: it is not left at its old version, and replay agrees (the deletion
// is an adoption in the log).
func TestApplier_DeletedWhileDown(t *testing.T) {
	dir := t.TempDir()
	appendRaw(t, dir, "a", intentLine(1, "s.json", `"merge":{"n":1}`))
	a := MustOpen(t, dir)
	drain(t, a)
	appendRaw(t, dir, "a", intentLine(2, "t.json", `"merge":{"m":1}`)) // the last batch: not s.json
	drain(t, a)
	a.Close()

	if err := os.Remove(filepath.Join(dir, "s.json")); err != nil {
		t.Fatal(err)
	}
	appendRaw(t, dir, "a", intentLine(3, "s.json", `"if_version":2,"merge":{"back":true}`))
	a = MustOpen(t, dir)
	drain(t, a)
	a.Close()

	res := readResults(t, dir, "a")
	if r := res[len(res)-1]; r.Seq != 3 || r.Status != "applied" || r.Version != 3 {
		t.Errorf("intent at if_version 2 after the deletion = %+v, want applied at version 3 (the deletion adopted as version 2)", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "s.json")); err != nil {
		t.Errorf("s.json after the intent that recreates it: %v", err)
	}
	mustVerify(t, dir)
}
