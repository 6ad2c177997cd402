package replay

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stateward/stateward/journal"
)

// TestApplier_ByteOrderMark: a document saved with a UTF-8 byte order mark
// (some editors add one) is adopted, read by journal.ReadDocument, and
// written back without the mark at its next version.
func TestApplier_ByteOrderMark(t *testing.T) {
	dir := t.TempDir()
	bomDoc := "\xef\xbb\xbf{\"note\": \"hello\"}\n"
	if err := os.WriteFile(filepath.Join(dir, "memo.json"), []byte(bomDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	a := MustOpen(t, dir)
	// A failed test: the document is adopted (read and parsed, version 1)
	// and not written.
	appendRaw(t, dir, "ed", intentLine(1, "memo.json", `"patch":[{"op":"test","path":"/note","value":"other"}]`))
	drain(t, a)
	if rs := readResults(t, dir, "ed"); len(rs) != 1 || rs[0].Status != journal.StatusConflict || rs[0].Version != 1 {
		t.Fatalf("test on a document with a byte order mark: %+v, want a conflict at version 1", rs)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "memo.json")); err != nil || string(data) != bomDoc {
		t.Fatalf("document changed by a failed test: %q, %v", data, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	doc, err := journal.ReadDocument(ctx, dir, "memo.json")
	if err != nil {
		t.Fatalf("ReadDocument of a document with a byte order mark: %v", err)
	}
	if got, want := string(doc.Data), `{"note":"hello"}`; got != want {
		t.Fatalf("ReadDocument data %s, want %s", got, want)
	}
	appendRaw(t, dir, "ed", intentLine(2, "memo.json", `"patch":[{"op":"add","path":"/n","value":1}]`))
	drain(t, a)
	data, err := os.ReadFile(filepath.Join(dir, "memo.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data), "{\n  \"n\": 1,\n  \"note\": \"hello\"\n}\n"; got != want {
		t.Fatalf("written back as %q, want %q (no byte order mark)", got, want)
	}
	if bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
		t.Fatal("byte order mark written back")
	}
	a.Close()
	if rep := mustVerify(t, dir); len(rep.Problems) > 0 {
		t.Fatalf("verify: %v", rep.Problems)
	}
}
