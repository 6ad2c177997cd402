package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/stateward/stateward/journal"
)

// TestApplier_HandEditRace makes 40 hand edits (read the document, add a
// key, write a temp file, rename it over the document), each once the
// watcher has replaced the previous one, while an agent pipelines
// increments and the watcher replaces the document continuously. An edit
// that lands while the watcher replaces the file is adopted as the next
// version, so every key is kept; the put-back path must have run at least
// once (its log line).
func TestApplier_HandEditRace(t *testing.T) {
	const edits = 40
	dir := t.TempDir()
	appendRaw(t, dir, "seed", intentLine(1, "state.json", `"if_version":0,"merge":{"n":0}`))
	var logBuf bytes.Buffer
	var logMu sync.Mutex
	a := NewApplier(dir, hclog.New(&hclog.LoggerOptions{Output: &lockedWriter{w: &logBuf, mu: &logMu}, Level: hclog.Warn}))
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	drain(t, a)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() { // the watcher
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := a.Step(t.Context()); err != nil {
				errs <- fmt.Errorf("Step: %w", err)
				return
			}
		}
	}()
	go func() { // the agent: increments, never waiting for results
		defer wg.Done()
		w, err := journal.OpenWriter(dir, "agent")
		if err != nil {
			errs <- err
			return
		}
		defer w.Close()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := w.Append(journal.Intent{File: "state.json", Patch: json.RawMessage(`[{"op":"inc","path":"/n","value":1}]`)}); err != nil {
				errs <- err
				return
			}
		}
	}()
	path := filepath.Join(dir, "state.json")
	for i := range edits {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("edit %d: document is not JSON: %v", i, err)
		}
		doc[fmt.Sprintf("k%02d", i)] = true
		out, _ := json.Marshal(doc)
		tmp := filepath.Join(dir, "hand-edit.tmp")
		if err := os.WriteFile(tmp, out, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		// The next edit once the watcher has replaced this one and the
		// file at the name holds its key (a new version written after
		// adopting it; during a put-back the name holds the watcher's
		// displaced version for a moment, which an editor must not copy).
		if !waitReplaced(t, path, out, fmt.Sprintf(`"k%02d":true`, i)) {
			break
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	drain(t, a)
	doc := readJSON(t, dir, "state.json").(map[string]any)
	var lost []string
	for i := range edits {
		if k := fmt.Sprintf("k%02d", i); doc[k] != true {
			lost = append(lost, k)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d hand edits lost: %v", len(lost), edits, lost)
	}
	a.Close()
	logMu.Lock()
	kept := strings.Count(logBuf.String(), "the edit is kept and adopted as the next version")
	logMu.Unlock()
	t.Logf("%d of %d edits landed while the watcher replaced the document and were put back", kept, edits)
	if kept < 1 {
		t.Errorf("no edit landed while the watcher replaced the document: the put-back path never ran")
	}
	mustVerify(t, dir)
}

// TestApplier_HandEditCrash lands a hand edit between the watcher's check
// of a document and its replacement, then crashes the watcher at each step
// of the replacement: the edit is adopted as the next version after
// recovery, the batch's own intents are applied exactly once, and Verify
// agrees. "none" does not crash.
func TestApplier_HandEditCrash(t *testing.T) {
	for _, point := range []string{"none", "after-doc-exchange:s.json", "after-doc-putback:s.json", "after-doc-rename:s.json", "after-dir-sync"} {
		t.Run(strings.ReplaceAll(point, ":", "_"), func(t *testing.T) {
			dir := t.TempDir()
			appendRaw(t, dir, "x", intentLine(1, "s.json", `"if_version":0,"merge":{"n":0}`))
			a := MustOpen(t, dir)
			drain(t, a)
			appendRaw(t, dir, "x", intentLine(2, "s.json", `"patch":[{"op":"inc","path":"/n","value":1}]`))
			edit := []byte(`{"hand":"edit","n":0}`)
			a.hook = func(p string) {
				switch p {
				case "before-doc-exchange:s.json":
					tmp := filepath.Join(dir, "hand.tmp")
					if err := os.WriteFile(tmp, edit, 0o644); err != nil {
						t.Fatal(err)
					}
					if err := os.Rename(tmp, filepath.Join(dir, "s.json")); err != nil {
						t.Fatal(err)
					}
				case point:
					panic(crashed{p})
				}
			}
			func() {
				defer func() {
					if r := recover(); r != nil {
						if _, ok := r.(crashed); !ok {
							panic(r)
						}
					} else if point != "none" {
						t.Fatalf("crash point %s was never reached", point)
					}
				}()
				drain(t, a)
			}()
			a.Close()

			b := MustOpen(t, dir)
			drain(t, b)
			b.Close()
			got, err := os.ReadFile(filepath.Join(dir, "s.json"))
			if err != nil {
				t.Fatal(err)
			}
			if doc := readJSON(t, dir, "s.json").(map[string]any); doc["hand"] != "edit" {
				t.Errorf("the hand edit was lost: s.json is %s", got)
			}
			d, err := journal.ReadDocument(t.Context(), dir, "s.json")
			if err != nil {
				t.Fatal(err)
			}
			if got, want := d.Version, uint64(3); got != want {
				t.Errorf("version %d, want %d (1 created, 2 the increment, 3 the edit adopted after it)", got, want)
			}
			if r := readResults(t, dir, "x"); len(r) != 2 || r[1].Status != journal.StatusApplied || r[1].Version != 2 {
				t.Errorf("results %+v, want the increment applied once at version 2", r)
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), ".swap-") || strings.HasPrefix(e.Name(), ".tmp-") {
					t.Errorf("left behind: %s", e.Name())
				}
			}
			mustVerify(t, dir)
		})
	}
}

// noExchangeFS is a file system without renameat2's flags.
type noExchangeFS struct{ fsys }

func (noExchangeFS) Exchange(a, b string) error {
	return &os.LinkError{Op: "renameat2", Old: a, New: b, Err: errNoRenameFlags}
}

func (noExchangeFS) RenameNoReplace(a, b string) error {
	return &os.LinkError{Op: "renameat2", Old: a, New: b, Err: errNoRenameFlags}
}

// TestApplier_NoExchange runs the watcher on a file system that cannot
// exchange files: documents are still created and replaced (by a plain
// rename), and an edit made between two batches is still adopted.
func TestApplier_NoExchange(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	a := NewApplier(dir, nil)
	a.fs = noExchangeFS{rootFS{root}}
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	appendRaw(t, dir, "x", intentLine(1, "s.json", `"if_version":0,"merge":{"n":0}`)+intentLine(2, "s.json", `"patch":[{"op":"inc","path":"/n","value":1}]`))
	drain(t, a)
	if err := os.WriteFile(filepath.Join(dir, "s.json"), []byte(`{"hand":"edit","n":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	appendRaw(t, dir, "x", intentLine(3, "s.json", `"patch":[{"op":"inc","path":"/n","value":1}]`))
	drain(t, a)
	doc := readJSON(t, dir, "s.json").(map[string]any)
	if doc["hand"] != "edit" || doc["n"] != float64(2) {
		t.Errorf("s.json = %v, want the edit adopted and n = 2", doc)
	}
	if !a.plainRename {
		t.Error("plainRename not set: the fallback was not taken")
	}
	a.Close()
	mustVerify(t, dir)
}

// TestApplier_AdoptionLogNamesReplaced checks that the log line of every
// adoption (a change, a deletion, a broken file) names the version it
// replaced: an editor saving a stale copy undoes work, and the log shows
// from which version.
func TestApplier_AdoptionLogNamesReplaced(t *testing.T) {
	dir := t.TempDir()
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := hclog.New(&hclog.LoggerOptions{Output: &lockedWriter{w: &buf, mu: &mu}, Level: hclog.Info})
	appendRaw(t, dir, "x", intentLine(1, "s.json", `"if_version":0,"merge":{"n":0}`)+intentLine(2, "s.json", `"patch":[{"op":"inc","path":"/n","value":1}]`))
	a := NewApplier(dir, logger)
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	drain(t, a)
	path := filepath.Join(dir, "s.json")
	steps := []struct {
		do   func() error
		want string
	}{
		{func() error { return os.WriteFile(path, []byte(`{"n":0}`), 0o644) }, `document changed outside stateward; adopted as a new version: file=s.json replaced=2 version=3`},
		{func() error { return os.Remove(path) }, `document deleted outside stateward; adopted as a new version: file=s.json replaced=3 version=4`},
		{func() error { return os.WriteFile(path, []byte(`{`), 0o644) }, `document on disk is unusable; its intents are rejected until it is repaired: file=s.json replaced=4`},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Step(t.Context()); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		log := buf.String()
		mu.Unlock()
		if !strings.Contains(log, s.want) {
			t.Errorf("log does not contain %q:\n%s", s.want, log)
		}
	}
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// waitReplaced waits, with a deadline, until the file at path is no longer
// the one holding mine and holds key.
func waitReplaced(t *testing.T, path string, mine []byte, key string) bool {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		data, err := os.ReadFile(path)
		if err == nil && !bytes.Equal(data, mine) && bytes.Contains(bytes.Join(bytes.Fields(data), nil), []byte(key)) {
			return true
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
	t.Errorf("the watcher did not write a version holding %s within 10s", key)
	return false
}
