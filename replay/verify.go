package replay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"

	"github.com/stateward/stateward/journal"
)

// ErrBadOut is returned by Verify when the folder to write the rebuilt
// documents to is refused: it must be new or empty, not a symbolic link,
// and outside the state directory.
var ErrBadOut = errors.New("replay: refused --out folder")

// VerifyReport is what Verify found.
type VerifyReport struct {
	Batches  int      // commit records replayed
	Intents  int      // entries replayed
	Checked  int      // journal lines compared with the log's copy
	Docs     []string // documents rebuilt
	Problems []string // differences; empty when the directory is consistent
}

// Verify rebuilds every document of the state directory dir from an empty
// start, deciding each logged journal line of the current engine
// (engineVersion) again with the same state machine the watcher runs, and
// following as logged each line another engine decided (machine.follow),
// and compares: each decision with the logged result, each logged intent with the journal line it came from (while that
// segment exists), each batch's documents with the logged hashes, and the
// final documents with the files on disk, byte for byte. If out is not
// empty, the rebuilt documents are written there: out must be a new or
// empty folder outside dir (else the error wraps ErrBadOut, and nothing is
// written); every file is created exclusively through an os.Root on it,
// following no symbolic link.
//
// It takes the directory's lock for its duration, so it fails with an error
// wrapping ErrLocked while a watcher runs.
func Verify(dir, out string) (*VerifyReport, error) {
	if fi, err := os.Stat(filepath.Join(dir, privateDir)); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%s has no %s folder: no watcher has ever run on it, so there is nothing to replay", dir, privateDir)
	}
	var outRoot *os.Root
	if out != "" {
		r, err := openOut(dir, out)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		outRoot = r
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open state directory: %w", err)
	}
	defer root.Close()
	lk, err := lockRoot(root, dir)
	if err == nil {
		if err = lk.finish(); err != nil {
			lk.Unlock()
		}
	}
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	fs := rootFS{root}
	recs, _, _, err := readLog(fs)
	if err != nil {
		return nil, err
	}
	cp, err := readCheckpoint(fs)
	if err != nil {
		return nil, err
	}
	m := newMachine(DefaultRetainResults)
	if cp != nil {
		if m, err = cp.restore(cp.Retain); err != nil {
			return nil, err
		}
		i := 0
		for i < len(recs) && recs[i].Batch <= cp.Batch {
			i++
		}
		recs = recs[i:]
	}
	rep := &VerifyReport{Batches: len(recs)}
	problem := func(format string, args ...any) {
		if len(rep.Problems) < 100 {
			rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
		}
	}
	if cp != nil && len(recs) > 0 && recs[0].Batch != cp.Batch+1 {
		problem("checkpoint is at batch %d but the log resumes at batch %d", cp.Batch, recs[0].Batch)
	}
	jr := &journalLines{fs: fs}
	defer jr.close()
	// The journal of an agent forgotten later is gone (or begun again):
	// its lines before the forget cannot be compared.
	forgotAt := map[string]uint64{}
	for _, rec := range recs {
		for agent := range rec.Forget {
			forgotAt[agent] = rec.Batch
		}
	}
	for _, rec := range recs {
		if rec.Retain > 0 {
			m.retain = rec.Retain
		}
		m.maxDocSize, m.maxDepth = rec.MaxDocSize, rec.MaxDepth
		for _, ad := range rec.Adopt {
			if err := m.adopt(ad); err != nil {
				problem("batch %d: adoption of %s: %v", rec.Batch, ad.File, err)
			}
		}
		for i, e := range rec.Entries {
			rep.Intents++
			if e.Intent != nil {
				if line, ok := jr.line(e.Agent, e.Segment, e.Offset, len(e.Intent)); ok && rec.Batch > forgotAt[e.Agent] {
					rep.Checked++
					if !bytes.Equal(trimLine(line), e.Intent) {
						problem("batch %d entry %d: journal %s segment %s offset %d differs from the logged intent", rec.Batch, i, e.Agent, journal.SegmentName(e.Segment), e.Offset)
					}
				}
			}
			if rec.Engine != engineVersion {
				// Decided by other rules: follow the log, as recovery
				// does, and let the documents' hashes check it.
				if msg := m.follow(e); msg != "" {
					problem("batch %d entry %d (agent %s, engine %d): %s", rec.Batch, i, e.Agent, max(rec.Engine, 1), msg)
				}
				continue
			}
			var got entry
			if e.Intent != nil {
				got = m.decide(e.Agent, e.Segment, e.Offset, e.Intent, nil)
			} else {
				got = m.decide(e.Agent, e.Segment, e.Offset, nil, errors.New(e.Result.Error))
			}
			if !reflect.DeepEqual(got.Result, e.Result) {
				problem("batch %d entry %d (agent %s): logged %s, replay decides %s", rec.Batch, i, e.Agent, e.Result.AppendLine(nil), got.Result.AppendLine(nil))
			}
		}
		m.forgetAgents(rec)
		if m.commit != rec.Commit {
			problem("batch %d: logged last commit %d, replay reaches %d", rec.Batch, rec.Commit, m.commit)
		}
		for name, dr := range rec.Docs {
			d := m.doc(name)
			if d.dirty {
				d.data = d.doc.AppendJSON(nil)
				d.hash = journal.Hash(d.data)
				d.dirty = false
			}
			if d.version != dr.Version || d.hash != dr.SHA256 {
				problem("batch %d: %s logged as version %d sha256 %.12s, replay gives version %d sha256 %.12s", rec.Batch, name, dr.Version, dr.SHA256, d.version, d.hash)
			}
		}
	}
	names := make([]string, 0, len(m.docs))
	for name := range m.docs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		d := m.docs[name]
		if d.dirty { // a change the log never committed: cannot happen
			problem("%s: changed by an entry but missing from its batch's documents", name)
			continue
		}
		rep.Docs = append(rep.Docs, name)
		if d.broken != "" {
			continue // the log says the file was unusable; it is not rebuilt
		}
		disk, err := readFile(fs, name)
		exists := err == nil
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			problem("%s: %v", name, err)
			continue
		}
		switch {
		case d.broken != "":
			// The log says the file was unusable; it is not rebuilt.
		case exists != d.doc.Exists():
			problem("%s: exists on disk: %v, after replay: %v (if the watcher crashed, start it once to recover)", name, exists, d.doc.Exists())
		case exists && !bytes.Equal(disk, d.data):
			problem("%s: differs from the replayed version %d (disk sha256 %.12s, replay %.12s); if the watcher crashed, start it once to recover", name, d.version, journal.Hash(disk), journal.Hash(d.data))
		}
		if outRoot != nil && d.doc.Exists() && d.broken == "" {
			if err := writeOut(outRoot, name, d.data); err != nil {
				return rep, fmt.Errorf("write %s: %w", filepath.Join(out, name), err)
			}
		}
	}
	return rep, nil
}

// follow takes in an entry decided by another engine as the log says,
// without deciding it: the agent's window keeps its logged result as
// recovery's fold does (keepLogged), the commit counter moves as the result
// says, and an applied intent is applied to its document, without the copy
// bound (the engine that applied it drew it elsewhere). It returns what
// does not add up, or "".
func (m *machine) follow(e entry) string {
	r := e.Result
	a := m.agent(e.Agent)
	if r.Seq > a.cur.Seq {
		a.cur.Seq = r.Seq
		m.keepLogged(a, e)
	}
	if r.Retry {
		return ""
	}
	if r.Commit != m.commit+1 {
		defer func() { m.commit = r.Commit }()
		return fmt.Sprintf("logged commit %d, the previous one is %d", r.Commit, m.commit)
	}
	m.commit++
	if r.Status != journal.StatusApplied {
		return ""
	}
	in, _, err := journal.ParseIntent(e.Intent)
	if err != nil {
		return fmt.Sprintf("logged as applied, but its intent does not parse: %v", err)
	}
	d := m.doc(in.File)
	d.doc.MaxSize, d.doc.MaxDepth, d.doc.followLog = 0, 0, true
	err = applyIntent(d.doc, in)
	d.doc.followLog = false
	if err != nil {
		return fmt.Sprintf("logged as applied, but it does not apply to %s: %v", in.File, err)
	}
	d.version++
	d.dirty = true
	if r.Version != d.version {
		return fmt.Sprintf("logged as version %d of %s, following the log gives %d", r.Version, in.File, d.version)
	}
	return ""
}

// journalLines reads single lines of journals by position, keeping the
// current segment open.
type journalLines struct {
	fs    fsys
	name  string
	f     fileHandle
	fsize int64
}

func (j *journalLines) line(agent string, seg uint64, off int64, n int) ([]byte, bool) {
	name := path.Join("journal", agent, journal.SegmentName(seg))
	if name != j.name {
		j.close()
		f, err := j.fs.OpenFile(name, os.O_RDONLY, 0)
		if err != nil {
			return nil, false
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, false
		}
		j.name, j.f, j.fsize = name, f, fi.Size()
	}
	if off >= j.fsize {
		return nil, false
	}
	// The logged copy says how long the line is: read just that, with room
	// for a "\r\n".
	buf := make([]byte, min(int64(n+2), j.fsize-off))
	k, err := j.f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, false
	}
	buf = buf[:k]
	if i := bytes.IndexByte(buf, '\n'); i >= 0 {
		return buf[:i+1], true
	}
	return buf, true // longer than the copy: it differs
}

func (j *journalLines) close() {
	if j.f != nil {
		j.f.Close()
	}
	j.name, j.f = "", nil
}

// openOut checks the --out folder and opens it as an os.Root, creating it
// (and its missing parents) if it does not exist. It must not be a
// symbolic link, must be empty, and must be neither dir nor under it (nor
// dir under it): writing there would replace live documents behind the
// watcher's back.
func openOut(dir, out string) (*os.Root, error) {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadOut, out, fmt.Sprintf(format, args...))
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if realDir, err = filepath.Abs(realDir); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return nil, refuse("%v", err)
	}
	// Resolve the deepest part of the path that exists; the rest will be
	// created as plain folders.
	existing, rest := abs, ""
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = parent
	}
	if rest == "" {
		fi, err := os.Lstat(abs)
		switch {
		case err != nil:
			return nil, refuse("%v", err)
		case fi.Mode()&os.ModeSymlink != 0:
			return nil, refuse("it is a symbolic link; give a new or empty folder")
		case !fi.IsDir():
			return nil, refuse("it is not a folder; give a new or empty folder")
		}
	}
	real, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return nil, refuse("%v", err)
	}
	real = filepath.Join(real, rest)
	if within(real, realDir) || within(realDir, real) {
		return nil, refuse("it is the state directory %s, inside it or around it; give a new or empty folder outside it", dir)
	}
	if rest != "" {
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return nil, refuse("%v", err)
		}
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, refuse("%v", err)
	}
	f, err := root.OpenFile(".", os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err == nil {
		var names []string
		names, err = f.Readdirnames(1)
		f.Close()
		if len(names) > 0 {
			root.Close()
			return nil, refuse("it is not empty (it holds %s); give a new or empty folder", names[0])
		}
		if errors.Is(err, io.EOF) {
			err = nil
		}
	}
	if err != nil {
		root.Close()
		return nil, refuse("%v", err)
	}
	return root, nil
}

// within reports whether path p is base or lies under it.
func within(p, base string) bool {
	rel, err := filepath.Rel(base, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// writeOut creates name in root exclusively, never through a symbolic
// link, and writes data to it.
func writeOut(root *os.Root, name string, data []byte) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
