package journal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// replaceFile writes data to path by rename, as the watcher does, so that a
// reader sees the old or the new content, never a mix.
func replaceFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// writeVersions replaces the versions file of dir with v.
func writeVersions(tb testing.TB, dir string, v Versions) {
	tb.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	if err := replaceFile(filepath.Join(dir, VersionsPath), data); err != nil {
		tb.Fatal(err)
	}
}

// writeDoc replaces document name of dir with data.
func writeDoc(tb testing.TB, dir, name string, data []byte) {
	tb.Helper()
	if err := replaceFile(filepath.Join(dir, name), data); err != nil {
		tb.Fatal(err)
	}
}

// readDoc calls ReadDocument with a bounded context.
func readDoc(tb testing.TB, dir, name string, d time.Duration) (Document, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), d)
	defer cancel()
	return ReadDocument(ctx, dir, name)
}

// sameDoc reports whether got is want, comparing Data byte for byte.
func sameDoc(got, want Document) bool {
	return got.File == want.File && got.Version == want.Version && string(got.Data) == string(want.Data)
}

func TestHash(t *testing.T) {
	if got, want := Hash([]byte("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Errorf("Hash(abc)=%s, want %s", got, want)
	}
}

func TestReadVersions(t *testing.T) {
	t.Run("Missing", func(t *testing.T) {
		v, err := ReadVersions(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if v.Commit != 0 || v.Docs == nil || len(v.Docs) != 0 {
			t.Errorf("ReadVersions(empty dir)=%+v, want commit 0 and an empty, non-nil Docs", v)
		}
	})
	t.Run("NoDocs", func(t *testing.T) {
		dir := t.TempDir()
		if err := replaceFile(filepath.Join(dir, VersionsPath), []byte(`{"commit":3}`)); err != nil {
			t.Fatal(err)
		}
		v, err := ReadVersions(dir)
		if err != nil || v.Commit != 3 || v.Docs == nil {
			t.Errorf("ReadVersions=%+v, %v; want commit 3 and a non-nil Docs", v, err)
		}
	})
	t.Run("RoundTrip", func(t *testing.T) {
		dir := t.TempDir()
		want := Versions{Commit: 9, Docs: map[string]DocVersion{
			"a.json": {Version: 4, Exists: true, SHA256: Hash([]byte("{}"))},
			"b.json": {Version: 2},
			"c.json": {Version: 1, Exists: true, SHA256: Hash([]byte("{")), Broken: "unexpected end of JSON input"},
		}}
		writeVersions(t, dir, want)
		got, err := ReadVersions(dir)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ReadVersions=%+v, %v; want %+v", got, err, want)
		}
	})
	t.Run("Corrupt", func(t *testing.T) {
		dir := t.TempDir()
		if err := replaceFile(filepath.Join(dir, VersionsPath), []byte(`{"commit":`)); err != nil {
			t.Fatal(err)
		}
		if v, err := ReadVersions(dir); err == nil {
			t.Errorf("ReadVersions(corrupt)=%+v, want an error", v)
		}
	})
}

func TestReadDocument(t *testing.T) {
	t.Run("Versioned", func(t *testing.T) {
		dir := t.TempDir()
		data := []byte("{\n  \"tasks\": [ {\"id\": 1, \"title\": \"a<b>\"} ],\n  \"n\": 2\n}\n")
		writeDoc(t, dir, "tasks.json", data)
		writeVersions(t, dir, Versions{Commit: 7, Docs: map[string]DocVersion{
			"tasks.json": {Version: 3, Exists: true, SHA256: Hash(data)},
		}})
		got, err := readDoc(t, dir, "tasks.json", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		want := Document{File: "tasks.json", Version: 3, Data: json.RawMessage(`{"tasks":[{"id":1,"title":"a<b>"}],"n":2}`)}
		if !sameDoc(got, want) {
			t.Errorf("ReadDocument=%s, want %s", mustMarshal(t, got), mustMarshal(t, want))
		}
	})

	t.Run("MissingNoVersions", func(t *testing.T) {
		got, err := readDoc(t, t.TempDir(), "state.json", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if want := (Document{File: "state.json", Version: 0, Data: json.RawMessage("null")}); !sameDoc(got, want) {
			t.Errorf("ReadDocument=%+v, want %+v", got, want)
		}
		if got, want := string(mustMarshal(t, got)), `{"file":"state.json","version":0,"data":null}`; got != want {
			t.Errorf("json=%s, want %s", got, want)
		}
	})

	t.Run("MissingNotInVersions", func(t *testing.T) {
		dir := t.TempDir()
		writeVersions(t, dir, Versions{Commit: 2, Docs: map[string]DocVersion{"other.json": {Version: 2, Exists: true, SHA256: Hash(nil)}}})
		got, err := readDoc(t, dir, "state.json", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if want := (Document{File: "state.json", Version: 0, Data: json.RawMessage("null")}); !sameDoc(got, want) {
			t.Errorf("ReadDocument=%+v, want %+v", got, want)
		}
	})

	t.Run("Deleted", func(t *testing.T) {
		dir := t.TempDir()
		writeVersions(t, dir, Versions{Commit: 9, Docs: map[string]DocVersion{"state.json": {Version: 5, Exists: false}}})
		got, err := readDoc(t, dir, "state.json", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if want := (Document{File: "state.json", Version: 5, Data: json.RawMessage("null")}); !sameDoc(got, want) {
			t.Errorf("ReadDocument=%+v, want %+v", got, want)
		}
	})

	t.Run("Unversioned", func(t *testing.T) {
		for name, setup := range map[string]func(t *testing.T, dir string){
			"ChangedOutside": func(t *testing.T, dir string) {
				writeDoc(t, dir, "a.json", []byte(`{"v":2}`))
				writeVersions(t, dir, Versions{Docs: map[string]DocVersion{"a.json": {Version: 1, Exists: true, SHA256: Hash([]byte(`{"v":1}`))}}})
			},
			"CreatedOutside": func(t *testing.T, dir string) {
				writeDoc(t, dir, "a.json", []byte(`{}`))
			},
			"CreatedOutsideAfterDelete": func(t *testing.T, dir string) {
				writeDoc(t, dir, "a.json", []byte(`{}`))
				writeVersions(t, dir, Versions{Docs: map[string]DocVersion{"a.json": {Version: 3}}})
			},
			"DeletedOutside": func(t *testing.T, dir string) {
				writeVersions(t, dir, Versions{Docs: map[string]DocVersion{"a.json": {Version: 1, Exists: true, SHA256: Hash([]byte(`{}`))}}})
			},
		} {
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				setup(t, dir)
				ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
				defer cancel()
				got, err := ReadDocument(ctx, dir, "a.json")
				if !errors.Is(err, ErrUnversioned) {
					t.Fatalf("ReadDocument=%+v, %v; want ErrUnversioned", got, err)
				}
				if ctx.Err() == nil {
					t.Error("ReadDocument gave up before its deadline")
				}
			})
		}
	})

	t.Run("VersionsCatchUp", func(t *testing.T) {
		// The watcher has renamed version 2 of the document into place but
		// not yet the versions file that names it: ReadDocument waits for
		// the versions file rather than pair v2 data with version 1.
		synctest.Test(t, func(t *testing.T) {
			dir := t.TempDir()
			v1, v2 := []byte(`{"v":1}`), []byte(`{"v":2}`)
			writeDoc(t, dir, "a.json", v2)
			writeVersions(t, dir, Versions{Commit: 1, Docs: map[string]DocVersion{"a.json": {Version: 1, Exists: true, SHA256: Hash(v1)}}})
			if _, err := readDocumentOnce(dir, "a.json"); !errors.Is(err, ErrUnversioned) {
				t.Fatalf("readDocumentOnce in the window=%v, want ErrUnversioned", err)
			}
			type answer struct {
				doc Document
				err error
			}
			ch := make(chan answer, 1)
			go func() {
				doc, err := ReadDocument(t.Context(), dir, "a.json")
				ch <- answer{doc, err}
			}()
			synctest.Wait() // ReadDocument has found no match and is waiting to retry
			select {
			case a := <-ch:
				t.Fatalf("ReadDocument returned %+v, %v in the window", a.doc, a.err)
			default:
			}
			writeVersions(t, dir, Versions{Commit: 2, Docs: map[string]DocVersion{"a.json": {Version: 2, Exists: true, SHA256: Hash(v2)}}})
			a := <-ch
			if want := (Document{File: "a.json", Version: 2, Data: v2}); a.err != nil || !sameDoc(a.doc, want) {
				t.Fatalf("ReadDocument=%+v, %v; want %+v", a.doc, a.err, want)
			}
		})
	})

	t.Run("VersionsAheadOfReader", func(t *testing.T) {
		// Versions says v2 and the file has v2 (the watcher finished a
		// commit): the pair is consistent.
		dir := t.TempDir()
		v2 := []byte(`{"v":2}`)
		writeDoc(t, dir, "a.json", v2)
		writeVersions(t, dir, Versions{Commit: 2, Docs: map[string]DocVersion{"a.json": {Version: 2, Exists: true, SHA256: Hash(v2)}}})
		got, err := readDoc(t, dir, "a.json", 10*time.Second)
		if want := (Document{File: "a.json", Version: 2, Data: v2}); err != nil || !sameDoc(got, want) {
			t.Fatalf("ReadDocument=%+v, %v; want %+v", got, err, want)
		}
	})

	t.Run("ConcurrentCommits", func(t *testing.T) {
		// A writer commits versions 1..n the way the watcher does (document
		// by rename, then the versions file by rename), sometimes deleting
		// the document, while readers check that every answer pairs the data
		// with the version that wrote it.
		dir := t.TempDir()
		const n = 150
		body := func(v uint64) []byte {
			return fmt.Appendf(nil, `{"v": %d, "pad": "%s"}`, v, strings.Repeat("x", int(v%7)))
		}
		deleted := func(v uint64) bool { return v%10 == 5 }
		done := make(chan struct{})
		writerErr := make(chan error, 1)
		go func() {
			defer close(done)
			docs := map[string]DocVersion{}
			for v := uint64(1); v <= n; v++ {
				p := filepath.Join(dir, "a.json")
				if deleted(v) {
					if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
						writerErr <- err
						return
					}
					docs["a.json"] = DocVersion{Version: v}
				} else {
					if err := replaceFile(p, body(v)); err != nil {
						writerErr <- err
						return
					}
					docs["a.json"] = DocVersion{Version: v, Exists: true, SHA256: Hash(body(v))}
				}
				data, _ := json.Marshal(Versions{Commit: v, Docs: docs})
				if err := replaceFile(filepath.Join(dir, VersionsPath), data); err != nil {
					writerErr <- err
					return
				}
			}
		}()
		var wg sync.WaitGroup
		var mu sync.Mutex
		reads := 0
		for range 4 {
			wg.Go(func() {
				var last uint64
				for {
					select {
					case <-done:
						return
					default:
					}
					doc, err := readDoc(t, dir, "a.json", 10*time.Second)
					if err != nil {
						t.Errorf("ReadDocument: %v", err)
						return
					}
					if doc.Version < last {
						t.Errorf("version went back from %d to %d", last, doc.Version)
					}
					last = doc.Version
					var want json.RawMessage
					switch {
					case doc.Version == 0 || deleted(doc.Version):
						want = json.RawMessage("null")
					default:
						var c bytes.Buffer
						if err := json.Compact(&c, body(doc.Version)); err != nil {
							t.Error(err)
							return
						}
						want = c.Bytes()
					}
					if string(doc.Data) != string(want) {
						t.Errorf("version %d read with data %s, want %s", doc.Version, doc.Data, want)
						return
					}
					mu.Lock()
					reads++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		select {
		case err := <-writerErr:
			t.Fatal(err)
		default:
		}
		got, err := readDoc(t, dir, "a.json", 10*time.Second)
		if err != nil || got.Version != n {
			t.Errorf("final ReadDocument=%+v, %v; want version %d", got, err, n)
		}
		t.Logf("%d consistent reads during %d commits", reads, n)
	})

	t.Run("BadName", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(`{}`), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"", "../a.json", "a/b.json", "secret", ".stateward/versions.json", "a.txt", "/etc/passwd"} {
			doc, err := readDoc(t, dir, name, 10*time.Second)
			if !errors.Is(err, ErrBadName) {
				t.Errorf("ReadDocument(%q)=%+v, %v; want ErrBadName", name, doc, err)
			}
		}
	})

	t.Run("CorruptVersions", func(t *testing.T) {
		// Not a window to wait out: the error comes at once.
		dir := t.TempDir()
		if err := replaceFile(filepath.Join(dir, VersionsPath), []byte(`not json`)); err != nil {
			t.Fatal(err)
		}
		doc, err := readDoc(t, dir, "a.json", 10*time.Second)
		if err == nil || errors.Is(err, ErrUnversioned) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("ReadDocument=%+v, %v; want the versions file's error", doc, err)
		}
	})
}

func mustMarshal(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
