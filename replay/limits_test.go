package replay

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stateward/stateward/journal"
)

// openWithLimits opens an Applier on dir with a document size limit.
func openWithLimits(tb testing.TB, dir string, maxDocSize int64) *Applier {
	tb.Helper()
	a := NewApplier(dir, nil)
	a.MaxDocSize = maxDocSize
	if err := a.Open(); err != nil {
		tb.Fatalf("Open: %v", err)
	}
	return a
}

// TestApplier_DocLimits feeds intents that grow a document past the size
// limit (copy doubling) and past the depth limit (deeper and deeper
// values): each one that would pass a limit is rejected with an error
// naming it, nothing past the limit is written, and after a restart the
// document is still usable and replay --verify agrees.
func TestApplier_DocLimits(t *testing.T) {
	const limit = 1 << 20
	t.Run("Doubling", func(t *testing.T) {
		dir := t.TempDir()
		a := openWithLimits(t, dir, limit)
		appendRaw(t, dir, "amp", intentLine(1, "amp.json", `"patch":[{"op":"add","path":"","value":{"a":["0123456789abcdef"]}}]`))
		for i := 2; i <= 17; i++ {
			appendRaw(t, dir, "amp", intentLine(uint64(i), "amp.json", `"patch":[{"op":"copy","from":"/a","path":"/b"},{"op":"move","from":"/b","path":"/a/-"}]`))
		}
		drain(t, a)
		rejected := 0
		for _, r := range readResults(t, dir, "amp") {
			if r.Status == journal.StatusRejected {
				rejected++
				if !strings.Contains(r.Error, "document too large") || !strings.Contains(r.Error, fmt.Sprint(limit)) {
					t.Errorf("seq %d: error %q does not name the size limit", r.Seq, r.Error)
				}
			}
		}
		if rejected == 0 {
			t.Fatal("no intent was rejected: the document grew past the limit")
		}
		assertDocUsable(t, a, dir, "amp.json", limit)
	})
	t.Run("Nesting", func(t *testing.T) {
		dir := t.TempDir()
		a := openWithLimits(t, dir, limit)
		appendRaw(t, dir, "deep", intentLine(1, "deep.json", `"merge":{"x":{}}`))
		// Each intent adds 100 levels under the previous ones.
		for i := 2; i <= 9; i++ {
			path := strings.Repeat("/x", 2+100*(i-2))
			value := strings.Repeat(`{"x":`, 99) + "{}" + strings.Repeat("}", 99)
			appendRaw(t, dir, "deep", intentLine(uint64(i), "deep.json", fmt.Sprintf(`"patch":[{"op":"add","path":%q,"value":%s}]`, path, value)))
		}
		// A merge patch nested deeper than the limit.
		appendRaw(t, dir, "deep", intentLine(10, "deep.json", `"merge":{"z":`+nested(DefaultMaxDepth+1)+`}`))
		drain(t, a)
		var rejected []uint64
		for _, r := range readResults(t, dir, "deep") {
			if r.Status == journal.StatusRejected {
				rejected = append(rejected, r.Seq)
				if !strings.Contains(r.Error, fmt.Sprintf("nested deeper than %d levels", DefaultMaxDepth)) {
					t.Errorf("seq %d: error %q does not name the depth limit", r.Seq, r.Error)
				}
			} else if r.Status != journal.StatusApplied {
				t.Errorf("seq %d: %s %q", r.Seq, r.Status, r.Error)
			}
		}
		if len(rejected) == 0 || rejected[len(rejected)-1] != 10 {
			t.Fatalf("rejected seqs %v, want the deepest intents and the merge (10)", rejected)
		}
		assertDocUsable(t, a, dir, "deep.json", limit)
	})
}

// assertDocUsable checks that a document is within the size limit on disk,
// that a restarted watcher reads it and applies an intent to it, and that
// replay --verify agrees with the log.
func assertDocUsable(t *testing.T, a *Applier, dir, name string, limit int64) {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > limit {
		t.Fatalf("%s is %d bytes on disk, over the limit of %d", name, fi.Size(), limit)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := openWithLimits(t, dir, limit)
	defer b.Close()
	appendRaw(t, dir, "after", intentLine(1, name, `"patch":[{"op":"add","path":"/after","value":true}]`))
	drain(t, b)
	rs := readResults(t, dir, "after")
	if len(rs) != 1 || rs[0].Status != journal.StatusApplied {
		t.Fatalf("after a restart, an intent on %s gave %+v, want applied (the document must stay usable)", name, rs)
	}
	b.Close()
	if rep := mustVerify(t, dir); len(rep.Problems) > 0 {
		t.Fatalf("verify: %v", rep.Problems)
	}
}

// TestDoc_Size checks the size the engine tracks against the bytes
// AppendJSON writes, through every kind of change, and that MaxSize
// rejects exactly the changes that pass it.
func TestDoc_Size(t *testing.T) {
	docs := []string{`{}`, `[]`, `{"a":[1,{"b":"x\u2028\n\u0001\"y"}],"c":{}}`, `"s"`, `[[[]],{"k":null}]`}
	patches := []string{
		`[{"op":"add","path":"/n","value":{"é\t":[1,2,{}]}}]`,
		`[{"op":"add","path":"/0","value":[]}]`,
		`[{"op":"add","path":"","value":{"x":[1]}}]`,
		`[{"op":"remove","path":"/a"}]`,
		`[{"op":"remove","path":"/0"}]`,
		`[{"op":"replace","path":"/c","value":{"z":"\u2029"}}]`,
		`[{"op":"replace","path":"","value":[]}]`,
		`[{"op":"move","from":"/a/1","path":"/c/m"}]`,
		`[{"op":"move","from":"/0","path":"/1/k"}]`,
		`[{"op":"copy","from":"/a","path":"/a/0"}]`,
		`[{"op":"copy","from":"","path":"/0/0"}]`,
		`[{"op":"copy","from":"/c","path":"/a"}]`,
		`[{"op":"copy","from":"/a","path":"/c"}]`,
		`[{"op":"inc","path":"/i","value":5},{"op":"inc","path":"/i","value":99995}]`,
		`[{"op":"remove","path":"/a/1/b"},{"op":"remove","path":"/a/0"},{"op":"remove","path":"/a/0"}]`,
	}
	merges := []string{`{"a":null}`, `{"c":{"d":{"e":null,"f":1}},"g":null}`, `[1]`, `{"a":{"x":null}}`, `null`}
	check := func(t *testing.T, d *Doc, what string) {
		t.Helper()
		if got, want := d.Size(), int64(len(d.AppendJSON(nil))); got != want {
			t.Fatalf("%s: Size()=%d, want %d (len of AppendJSON)", what, got, want)
		}
	}
	for _, doc := range docs {
		for _, p := range patches {
			d := MustParseDoc(t, doc)
			d.MaxSize = 1 << 30
			err := d.Apply(MustDecodePatch(t, p))
			check(t, d, fmt.Sprintf("%s + %s (err %v)", doc, p, err))
			if err != nil {
				continue
			}
			// The same patch with MaxSize at the result's size applies; one
			// byte less rejects it and changes nothing.
			size := d.Size()
			for _, limit := range []int64{size, size - 1} {
				d := MustParseDoc(t, doc)
				before := d.Size()
				d.MaxSize = limit
				err := d.Apply(MustDecodePatch(t, p))
				switch {
				case limit == size && err != nil:
					t.Errorf("%s + %s with MaxSize %d: %v", doc, p, limit, err)
				case limit < size && size > before && !errors.Is(err, ErrLimit):
					t.Errorf("%s + %s with MaxSize %d (result %d bytes): %v, want ErrLimit", doc, p, limit, size, err)
				}
				check(t, d, "after a limited Apply")
			}
		}
		for _, p := range merges {
			d := MustParseDoc(t, doc)
			d.MaxSize = 1 << 30
			if err := d.Merge([]byte(p)); err != nil {
				t.Fatalf("Merge(%s): %v", p, err)
			}
			check(t, d, doc+" merged with "+p)
		}
	}
}
