package replay

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// extractEngine1 unpacks testdata/engine1.tar.gz (see engine1/make.sh: a
// state directory written by the released engine 1) under a new folder and
// returns it.
func extractEngine1(tb testing.TB) string {
	tb.Helper()
	f, err := os.Open(filepath.Join("testdata", "engine1.tar.gz"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		tb.Fatal(err)
	}
	root := tb.TempDir()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		p := filepath.Join(root, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var out *os.File
			if out, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); err == nil {
				_, err = io.Copy(out, tr)
				if cerr := out.Close(); err == nil {
					err = cerr
				}
			}
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
	return root
}

// TestEngine1Log: a commit log written by the released engine 1 (records
// without "engine") holds decisions the current engine makes otherwise: an
// id reused for a different intent answered as a retry, a copy of more
// than 1,048,576 values rejected, two copies of more than 16 MiB applied.
// replay --verify follows those records instead of deciding them again; a
// current watcher starts on the directory, also when the last batch was
// interrupted (its document still at the previous version: redo follows the
// log too), and decides on from the state the log describes.
func TestEngine1Log(t *testing.T) {
	for _, interrupted := range []bool{false, true} {
		name := "complete"
		if interrupted {
			name = "interrupted"
		}
		t.Run(name, func(t *testing.T) {
			if !interrupted && testing.Short() {
				t.Skip("the interrupted case covers it, redo included (-short)")
			}
			root := extractEngine1(t)
			dir := filepath.Join(root, "state")
			if interrupted {
				prev, err := os.ReadFile(filepath.Join(root, "prev-w.json"))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "w.json"), prev, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			a := NewApplier(dir, nil)
			if err := a.Open(); err != nil {
				t.Fatalf("a current watcher does not start on an engine 1 log: %v", err)
			}
			// The first intent of id job-1, again: engine 1 logged a
			// retry for its reuse by a different intent, which does not
			// take the id over.
			appendRaw(t, dir, "a", `{"seq":5,"file":"t.json","id":"job-1","patch":[{"op":"replace","path":"/n","value":1}]}`+"\n")
			appendRaw(t, dir, "b", `{"seq":6,"file":"z.json","patch":[{"op":"remove","path":"/b"}]}`+"\n")
			if _, err := a.Step(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			res := readResults(t, dir, "a")
			if got := res[len(res)-1]; got.Seq != 5 || !got.Retry || got.Commit != 2 || got.Version != 2 {
				t.Fatalf("retry of job-1: %+v, want a retry copy of seq 2 (version 2, commit 2)", got)
			}
			// The whole log, engine 1's records followed and the new
			// one decided again, adds up to the files on disk.
			rep, err := Verify(dir, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) > 0 || rep.Intents != 26 {
				t.Logf("%d intents", rep.Intents)
				t.Fatalf("verify after the upgrade:\n%s", strings.Join(rep.Problems, "\n"))
			}
		})
	}
}
