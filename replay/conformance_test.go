package replay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
)

// conformanceDir returns where the public JSON Patch conformance suite
// (github.com/json-patch/json-patch-tests) is: $STATEWARD_CONFORMANCE_DIR,
// or ../shared/conformance/json-patch-tests/ next to the module's root.
func conformanceDir(tb testing.TB) string {
	tb.Helper()
	if dir := os.Getenv("STATEWARD_CONFORMANCE_DIR"); dir != "" {
		return dir
	}
	wd, err := os.Getwd()
	if err != nil {
		tb.Fatalf("get working directory: %v", err)
	}
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "..", "shared", "conformance", "json-patch-tests")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			conformanceMissing(tb, fmt.Sprintf("no go.mod above %s to find ../shared/conformance/json-patch-tests/ from", wd))
		}
		dir = parent
	}
}

// conformanceMissing ends a test that cannot find the conformance suite.
// Under CI=true that is a failure: CI must run the suite. Elsewhere the
// test is skipped, and says so on standard error as well as in its skip
// message, so that a plain clone does not pass it silently.
func conformanceMissing(tb testing.TB, why string) {
	tb.Helper()
	msg := fmt.Sprintf("RFC 6902 conformance suite not found, so %s DID NOT RUN: %s (clone github.com/json-patch/json-patch-tests to ../shared/conformance/json-patch-tests next to the module, or set STATEWARD_CONFORMANCE_DIR)", tb.Name(), why)
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	fmt.Fprintf(os.Stderr, "\n*** WARNING: %s ***\n\n", msg)
	tb.Skip(msg)
}

// conformanceRecord is one record of the suite: see its README.
type conformanceRecord struct {
	Comment  string          `json:"comment"`
	Doc      json.RawMessage `json:"doc"`
	Patch    json.RawMessage `json:"patch"`
	Expected json.RawMessage `json:"expected"`
	Error    json.RawMessage `json:"error"`
	Disabled bool            `json:"disabled"`
}

func TestConformance(t *testing.T) {
	dir := conformanceDir(t)
	for _, file := range []string{"tests.json", "spec_tests.json"} {
		path := filepath.Join(dir, file)
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			conformanceMissing(t, path+" does not exist")
		}
		if err != nil {
			t.Fatalf("read suite: %v", err)
		}
		var records []conformanceRecord
		if err := json.Unmarshal(data, &records); err != nil {
			t.Fatalf("parse suite %s: %v", path, err)
		}
		if len(records) == 0 {
			t.Fatalf("suite %s has no records", path)
		}
		t.Run(file, func(t *testing.T) {
			for i, rec := range records {
				t.Run(fmt.Sprintf("%03d %s", i, rec.Comment), func(t *testing.T) {
					runConformance(t, rec)
				})
			}
		})
	}
}

func runConformance(t *testing.T, rec conformanceRecord) {
	if rec.Doc == nil && rec.Patch == nil {
		t.Skip("comment-only record")
	}
	if rec.Disabled {
		t.Skipf("record is disabled in the suite (\"disabled\": true): %q, error hint %s", rec.Comment, rec.Error)
	}
	doc, err := ParseDoc(rec.Doc)
	if err != nil {
		t.Fatalf("ParseDoc(%s): %v", rec.Doc, err)
	}
	ops, err := DecodePatch(rec.Patch)
	if err == nil {
		err = doc.Apply(ops)
	}
	if rec.Error != nil {
		if err == nil {
			t.Fatalf("patch %s on %s succeeded with %s, want an error (%s)", rec.Patch, rec.Doc, doc.AppendJSON(nil), rec.Error)
		}
		if !errors.Is(err, ErrInvalidPatch) && !errors.Is(err, ErrTestFailed) {
			t.Fatalf("error %v wraps neither ErrInvalidPatch nor ErrTestFailed", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("patch %s on %s: %v", rec.Patch, rec.Doc, err)
	}
	if rec.Expected == nil {
		return // the record only asks that the patch applies
	}
	if got, want := doc.Data(), decodeJSON(t, rec.Expected); !reflect.DeepEqual(got, want) {
		t.Fatalf("patch %s on %s:\ngot  %s\nwant %s", rec.Patch, rec.Doc, doc.AppendJSON(nil), rec.Expected)
	}
}

// decodeJSON decodes data as encoding/json does into an any with UseNumber.
func decodeJSON(tb testing.TB, data []byte) any {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		tb.Fatalf("decode %s: %v", data, err)
	}
	return v
}

// TestConformance_Missing runs TestConformance in a child process against a
// folder without the suite: under CI=true it must fail, elsewhere it must
// say on standard error that it did not run.
func TestConformance_Missing(t *testing.T) {
	if os.Getenv("STATEWARD_CONFORMANCE_CHILD") != "" {
		t.Skip("in the child")
	}
	for _, tc := range []struct {
		name   string
		ci     string
		wantOK bool
	}{
		{name: "CI", ci: "true", wantOK: false},
		{name: "Local", ci: "", wantOK: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run", "^TestConformance$", "-test.v")
			cmd.Env = append(os.Environ(), "CI="+tc.ci, "STATEWARD_CONFORMANCE_DIR="+t.TempDir(), "STATEWARD_CONFORMANCE_CHILD=1")
			out, err := cmd.CombinedOutput()
			if got := err == nil; got != tc.wantOK {
				t.Fatalf("CI=%q: child succeeded=%v, want %v; output:\n%s", tc.ci, got, tc.wantOK, out)
			}
			if !bytes.Contains(out, []byte("DID NOT RUN")) {
				t.Fatalf("CI=%q: output does not say the suite did not run:\n%s", tc.ci, out)
			}
		})
	}
}
