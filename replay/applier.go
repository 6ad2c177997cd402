package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"
	"github.com/hashicorp/go-hclog"
	"github.com/natefinch/atomic"

	"github.com/stateward/stateward/journal"
)

// Defaults of an Applier's knobs.
const (
	// DefaultMaxBatch caps the journal lines one batch takes.
	DefaultMaxBatch = 4096
	// DefaultMaxAgentBatch caps the lines one agent contributes to a batch,
	// so that a flood from one agent cannot starve the others.
	DefaultMaxAgentBatch = 512
	// DefaultResultSegmentSize is the size past which an agent's results
	// continue in a new segment.
	DefaultResultSegmentSize = 64 << 20
	// DefaultResultsSyncInterval is how often results files are fsynced.
	// Results are re-derived from the commit log after a crash, so they need
	// not be fsynced one by one.
	DefaultResultsSyncInterval = time.Second
)

// Paths under the state directory that belong to the watcher.
const (
	privateDir = ".stateward"
	lockName   = ".stateward/lock"
)

var (
	// ErrLocked is returned by Open when another watcher holds the state
	// directory (G6).
	ErrLocked = errors.New("replay: state directory is locked by another watcher")
	// ErrFailed is returned by every call after a failed commit: the state
	// on disk is unknown until the process restarts and recovers (§7: after
	// a failed fsync, stop).
	ErrFailed = errors.New("replay: stopped after a failed commit")
)

// Applier is the only writer of a state directory's documents and results.
// It reads the agents' journals, decides each intent, and commits each batch
// durably. Open recovers, then Step processes what is ready; both run on the
// caller's goroutine, and an Applier is not safe for concurrent use.
type Applier struct {
	MaxLine             int           // longest intent line; set by NewApplier
	MaxBatch            int           // lines per batch; set by NewApplier
	MaxAgentBatch       int           // lines per agent per batch; set by NewApplier
	RetainResults       int           // results kept per agent for retries; set by NewApplier
	ResultSegmentSize   int64         // set by NewApplier
	ResultsSyncInterval time.Duration // set by NewApplier
	DocMode             os.FileMode   // mode of new documents, before the umask; set by NewApplier

	dir    string
	logger hclog.Logger

	lock    *flock.Flock
	m       *machine
	batch   uint64                   // last batch committed
	synced  uint64                   // last batch whose results are fsynced
	syncAt  time.Time                // when results were last fsynced
	logf    *os.File                 // newest commit log segment, O_APPEND
	res     map[string]*os.File      // open results segment per agent
	dirty   map[string]bool          // results files written since the last sync
	ids     map[string]fileID        // identity of each document file as last seen
	warned  map[string]string        // last warning logged per key, to log changes only
	lastErr map[string]string        // last rejection per agent, for status
	failed  error                    // set after a failed commit
	agents  map[string]*agentReading // per agent reading state

	// Seams for tests: writeFile replaces a document durably (temp file,
	// fsync, rename); syncDir fsyncs a directory; hook is called at each
	// named point of the commit path (crash tests stop the process there).
	writeFile func(path string, data []byte) error
	syncDir   func(path string) error
	hook      func(point string)
}

// agentReading is what the reader remembers of an agent between batches.
type agentReading struct {
	segs []uint64 // segments seen at the last listing
}

// fileID identifies a file's content cheaply.
type fileID struct {
	size  int64
	mtime int64
	ino   uint64
}

// NewApplier returns a new Applier for the state directory dir.
func NewApplier(dir string, logger hclog.Logger) *Applier {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Applier{
		MaxLine:             journal.DefaultMaxLine,
		MaxBatch:            DefaultMaxBatch,
		MaxAgentBatch:       DefaultMaxAgentBatch,
		RetainResults:       DefaultRetainResults,
		ResultSegmentSize:   DefaultResultSegmentSize,
		ResultsSyncInterval: DefaultResultsSyncInterval,
		DocMode:             0o664,
		dir:                 dir,
		logger:              logger,
		writeFile: func(path string, data []byte) error {
			return atomic.WriteFile(path, bytes.NewReader(data))
		},
		syncDir: journal.SyncDir,
	}
}

// Dir returns the state directory.
func (a *Applier) Dir() string { return a.dir }

func (a *Applier) point(name string) {
	if a.hook != nil {
		a.hook(name)
	}
}

// Open takes the state directory's lock and recovers: it reads the commit
// log, finishes the batch a crash interrupted (documents and results), and
// rebuilds the in-memory state. Afterwards the documents on disk agree with
// the commit log and Step may run.
func (a *Applier) Open() error {
	switch {
	case a.MaxLine < 2, a.MaxBatch < 1, a.MaxAgentBatch < 1, a.RetainResults < 1, a.ResultSegmentSize < 1:
		return fmt.Errorf("replay: limits must be positive (max line %d, batch %d, agent batch %d, retain %d, result segment %d)",
			a.MaxLine, a.MaxBatch, a.MaxAgentBatch, a.RetainResults, a.ResultSegmentSize)
	}
	fi, err := os.Stat(a.dir)
	if err != nil {
		return fmt.Errorf("open state directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("open state directory %s: not a directory", a.dir)
	}
	for _, rel := range []string{privateDir, "journal", "results"} {
		if err := a.mkdir(rel); err != nil {
			return err
		}
	}
	lk, err := TryLock(a.dir)
	if err != nil {
		return err
	}
	a.lock = lk
	if err := a.recover(); err != nil {
		a.lock.Unlock()
		a.lock = nil
		return err
	}
	return nil
}

// TryLock takes the lock of a state directory without waiting, and writes
// the process ID into it. If another process holds it, the error wraps
// ErrLocked and names that process.
func TryLock(dir string) (*flock.Flock, error) {
	p := filepath.Join(dir, lockName)
	lk := flock.New(p, flock.SetPermissions(0o644))
	ok, err := lk.TryLock()
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	if !ok {
		holder := "another process"
		if b, err := os.ReadFile(p); err == nil && len(bytes.TrimSpace(b)) > 0 {
			holder = "process " + string(bytes.TrimSpace(b))
		}
		return nil, fmt.Errorf("%w: %s holds %s", ErrLocked, holder, p)
	}
	if err := os.WriteFile(p, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		lk.Unlock()
		return nil, fmt.Errorf("write pid to %s: %w", p, err)
	}
	return lk, nil
}

// Close releases the state directory. It does not commit anything: a batch
// is committed whole by Step or not at all.
func (a *Applier) Close() error {
	for _, f := range a.res {
		f.Close()
	}
	a.res = nil
	if a.logf != nil {
		a.logf.Close()
		a.logf = nil
	}
	if a.lock != nil {
		err := a.lock.Unlock()
		a.lock = nil
		return err
	}
	return nil
}

// Commit returns the last commit number.
func (a *Applier) Commit() uint64 {
	if a.m == nil {
		return 0
	}
	return a.m.commit
}

// Agents returns how many agents the Applier knows.
func (a *Applier) Agents() int {
	if a.m == nil {
		return 0
	}
	return len(a.m.agents)
}

// mkdir creates a folder under the state directory and makes its entry
// durable.
func (a *Applier) mkdir(rel string) error {
	p := filepath.Join(a.dir, rel)
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		return nil
	}
	if err := os.MkdirAll(p, journal.DirMode); err != nil {
		return fmt.Errorf("create %s: %w", p, err)
	}
	for d := p; d != a.dir && d != filepath.Dir(d); d = filepath.Dir(d) {
		if err := a.syncDir(filepath.Dir(d)); err != nil {
			return a.fail(fmt.Errorf("sync folder %s: %w", filepath.Dir(d), err))
		}
	}
	return nil
}

// fail records a failure after which nothing may be acknowledged.
func (a *Applier) fail(err error) error {
	if a.failed == nil {
		a.failed = fmt.Errorf("%w: %w", ErrFailed, err)
		a.logger.Error("commit failed; stopping without acknowledging anything that depended on it", "error", err)
	}
	return a.failed
}

// Step processes one batch: it takes in external changes to documents,
// reads what is ready in every journal (each agent's lines in seq order,
// agents interleaved, at most MaxAgentBatch lines each), decides every line,
// and commits. It returns how many journal lines it processed. An error
// wrapping ErrFailed means the Applier must be abandoned: restart and
// recover.
func (a *Applier) Step(ctx context.Context) (int, error) {
	if a.failed != nil {
		return 0, a.failed
	}
	if a.m == nil {
		return 0, errors.New("replay: Step before Open")
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m := a.m
	m.adopted = m.adopted[:0]
	a.checkDocs()
	items, err := a.readJournals()
	if err != nil {
		return 0, err
	}
	if len(items) == 0 && len(m.adopted) == 0 {
		return 0, nil
	}
	entries := make([]entry, 0, len(items))
	moved := map[string]cursor{}
	for _, it := range items {
		e := m.decide(it.agent, it.seg, it.off, it.line, it.err)
		ag := m.agent(it.agent)
		ag.cur.Segment, ag.cur.Offset = it.seg, it.end
		moved[it.agent] = ag.cur
		if e.Result.Status == journal.StatusRejected {
			a.noteRejected(it.agent, e.Result)
		}
		entries = append(entries, e)
	}
	return len(items), a.commit(entries, moved)
}

func (a *Applier) noteRejected(agent string, r journal.Result) {
	if a.lastErr == nil {
		a.lastErr = map[string]string{}
	}
	where := fmt.Sprintf("seq %d", r.Seq)
	if r.Seq == 0 {
		where = fmt.Sprintf("segment %s offset %d", r.Segment, *r.Offset)
	}
	a.lastErr[agent] = where + ": " + r.Error
	a.logger.Debug("intent rejected", "agent", agent, "at", where, "error", r.Error)
}

// commit makes a decided batch durable, in the order that recovery relies
// on: commit record (fsync), documents (temp, fsync, rename; directory
// fsync), versions file, results.
func (a *Applier) commit(entries []entry, moved map[string]cursor) error {
	m := a.m
	rec := &commitRecord{
		Batch:    a.batch + 1,
		Commit:   m.commit,
		Adopt:    slices.Clone(m.adopted),
		Entries:  entries,
		Docs:     map[string]docRecord{},
		Journals: moved,
		Synced:   a.synced,
		Retain:   m.retain,
	}
	// Documents: encode each changed one once for the whole batch.
	var write []string
	for name, d := range m.docs {
		if !d.dirty {
			continue
		}
		d.data = d.doc.AppendJSON(d.data[:0:0])
		h := journal.Hash(d.data)
		rec.Docs[name] = docRecord{Version: d.version, Exists: true, SHA256: h, Prev: d.hash}
		d.prev, d.hash = d.hash, h
		write = append(write, name)
	}
	for _, ad := range m.adopted {
		if _, ok := rec.Docs[ad.File]; !ok {
			d := m.docs[ad.File]
			rec.Docs[ad.File] = docRecord{Version: d.version, Exists: d.doc.Exists(), SHA256: d.hash, Prev: d.hash}
		}
	}
	slices.Sort(write)
	// Results: where each agent's lines go.
	out := map[string][]byte{}
	rec.Results = map[string]resultPos{}
	for _, e := range entries {
		if _, ok := rec.Results[e.Agent]; !ok {
			rec.Results[e.Agent] = a.resultStart(e.Agent, e.Result)
		}
		out[e.Agent] = e.Result.AppendLine(out[e.Agent])
	}
	line, err := encodeRecord(rec)
	if err != nil {
		return a.fail(err)
	}
	// What the record depends on must be durable before it is: the journal
	// lines it consumed (an agent may not have finished its own fsync, and
	// a line lost after the record would let the agent reuse its seq), and
	// the bytes of documents it adopted.
	a.point("before-input-sync")
	if err := a.syncInputs(entries); err != nil {
		return a.fail(err)
	}

	a.point("before-commit-write")
	if err := a.appendLog(rec.Batch, line); err != nil {
		return a.fail(err)
	}
	a.batch = rec.Batch
	for _, name := range write {
		d := m.docs[name]
		d.dirty = false
		p := filepath.Join(a.dir, name)
		a.point("before-doc-write:" + name)
		if err := a.writeFile(p, d.data); err != nil {
			return a.fail(fmt.Errorf("write document %s: %w", name, err))
		}
		a.point("after-doc-rename:" + name)
		if err := a.setMode(p); err != nil {
			return a.fail(err)
		}
	}
	if len(write) > 0 {
		if err := a.syncDir(a.dir); err != nil {
			return a.fail(fmt.Errorf("sync state directory %s: %w", a.dir, err))
		}
		a.point("after-dir-sync")
		for _, name := range write {
			a.ids[name] = statID(filepath.Join(a.dir, name))
		}
	}
	if err := a.writeVersions(); err != nil {
		return a.fail(err)
	}
	a.point("after-versions")
	agents := make([]string, 0, len(out))
	for ag := range out {
		agents = append(agents, ag)
	}
	slices.Sort(agents)
	for _, ag := range agents {
		if err := a.appendResults(ag, rec.Results[ag], out[ag]); err != nil {
			return a.fail(err)
		}
		a.point("after-results:" + ag)
	}
	if time.Since(a.syncAt) >= a.ResultsSyncInterval {
		if err := a.syncResults(); err != nil {
			return a.fail(err)
		}
	}
	return nil
}

// syncInputs fsyncs the journal segments the entries came from and the
// adopted documents with their directory.
func (a *Applier) syncInputs(entries []entry) error {
	type segKey struct {
		agent string
		seg   uint64
	}
	seen := map[segKey]bool{}
	for _, e := range entries {
		k := segKey{e.Agent, e.Segment}
		if seen[k] {
			continue
		}
		seen[k] = true
		p := filepath.Join(a.dir, "journal", e.Agent, journal.SegmentName(e.Segment))
		if err := a.syncFile(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sync journal segment %s: %w", p, err)
		}
	}
	for _, ad := range a.m.adopted {
		if ad.Exists {
			p := filepath.Join(a.dir, ad.File)
			if err := a.syncFile(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("sync adopted document %s: %w", p, err)
			}
		}
	}
	if len(a.m.adopted) > 0 {
		if err := a.syncDir(a.dir); err != nil {
			return fmt.Errorf("sync state directory %s: %w", a.dir, err)
		}
	}
	return nil
}

// syncFile fsyncs a file through a read-only descriptor: on Linux, fsync
// flushes the file whatever descriptor asks.
func (a *Applier) syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// resultStart decides where an agent's results of this batch begin: at the
// end of its current results segment, or in a new one past the size limit.
func (a *Applier) resultStart(agent string, first journal.Result) resultPos {
	st := a.m.agent(agent)
	if st.res.Segment == 0 {
		return resultPos{Segment: max(first.Seq, 1)}
	}
	// A new segment is named by its first result's seq (§3), so rotate
	// only where that is an original result, newer than any before it;
	// otherwise keep appending and rotate at a later batch.
	if st.res.Offset < a.ResultSegmentSize || first.Seq == 0 || first.Retry || first.Seq <= st.res.Segment {
		return st.res
	}
	return resultPos{Segment: first.Seq}
}

// appendLog appends a commit record and fsyncs it.
func (a *Applier) appendLog(batch uint64, line []byte) error {
	if a.logf == nil {
		if err := a.mkdir(logDir); err != nil {
			return err
		}
		p := filepath.Join(a.dir, logDir, journal.SegmentName(batch))
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return fmt.Errorf("create commit log %s: %w", p, err)
		}
		if err := a.syncDir(filepath.Join(a.dir, logDir)); err != nil {
			f.Close()
			return fmt.Errorf("sync commit log folder: %w", err)
		}
		a.logf = f
	}
	if _, err := a.logf.Write(line); err != nil {
		return fmt.Errorf("write commit record %d: %w", batch, err)
	}
	a.point("after-commit-write")
	if err := a.logf.Sync(); err != nil {
		return fmt.Errorf("sync commit log: %w", err)
	}
	a.point("after-commit-sync")
	return nil
}

// appendResults writes an agent's result lines at pos.
func (a *Applier) appendResults(agent string, pos resultPos, data []byte) error {
	st := a.m.agent(agent)
	f := a.res[agent]
	if f == nil || st.res.Segment != pos.Segment {
		if f != nil {
			if err := f.Sync(); err != nil { // the old segment is done: make it durable
				return fmt.Errorf("sync results of %s: %w", agent, err)
			}
			f.Close()
		}
		var err error
		if f, err = a.openResults(agent, pos.Segment); err != nil {
			return err
		}
		a.res[agent] = f
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write results of %s: %w", agent, err)
	}
	st.res = resultPos{Segment: pos.Segment, Offset: pos.Offset + int64(len(data))}
	a.dirty[agent] = true
	return nil
}

// openResults opens (creating it and its folder, durably) an agent's
// results segment for appending.
func (a *Applier) openResults(agent string, seg uint64) (*os.File, error) {
	rel := filepath.Join("results", agent)
	if err := a.mkdir(rel); err != nil {
		return nil, err
	}
	p := filepath.Join(a.dir, rel, journal.SegmentName(seg))
	_, statErr := os.Stat(p)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, journal.FileMode)
	if err != nil {
		return nil, fmt.Errorf("open results %s: %w", p, err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		if err := a.syncDir(filepath.Dir(p)); err != nil {
			f.Close()
			return nil, fmt.Errorf("sync results folder of %s: %w", agent, err)
		}
	}
	return f, nil
}

// syncResults fsyncs every results file written since the last sync.
func (a *Applier) syncResults() error {
	for ag := range a.dirty {
		if f := a.res[ag]; f != nil {
			if err := f.Sync(); err != nil {
				return fmt.Errorf("sync results of %s: %w", ag, err)
			}
		}
		delete(a.dirty, ag)
	}
	a.synced, a.syncAt = a.batch, time.Now()
	return nil
}

// setMode gives a new document DocMode (natefinch/atomic creates 0600 temp
// files) so that agents can read it.
func (a *Applier) setMode(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("stat %s: %w", p, err)
	}
	if fi.Mode().Perm() == 0o600 && a.DocMode.Perm() != 0o600 {
		mask := syscall.Umask(0)
		syscall.Umask(mask)
		if err := os.Chmod(p, a.DocMode.Perm()&^os.FileMode(mask)); err != nil {
			return fmt.Errorf("chmod %s: %w", p, err)
		}
	}
	return nil
}

// versionsFile is what the watcher writes to journal.VersionsPath: the
// public part (versions and hashes) and where each agent is, for status.
type versionsFile struct {
	journal.Versions
	Batch  uint64                 `json:"batch"`
	Agents map[string]agentStatus `json:"agents"`
}

// agentStatus is an agent's position, as status shows it.
type agentStatus struct {
	Segment   string `json:"segment,omitempty"`
	Offset    int64  `json:"offset"`
	Seq       uint64 `json:"seq"`
	LastError string `json:"last_error,omitempty"`
}

// writeVersions replaces the versions file. It is not fsynced: recovery
// rewrites it from the commit log.
func (a *Applier) writeVersions() error {
	v := versionsFile{
		Versions: journal.Versions{Commit: a.m.commit, Docs: map[string]journal.DocVersion{}},
		Batch:    a.batch,
		Agents:   map[string]agentStatus{},
	}
	for name, d := range a.m.docs {
		dv := journal.DocVersion{Version: d.version, Exists: d.doc.Exists(), SHA256: d.hash, Broken: d.broken}
		v.Docs[name] = dv
	}
	for name, st := range a.m.agents {
		as := agentStatus{Offset: st.cur.Offset, Seq: st.cur.Seq, LastError: a.lastErr[name]}
		if st.cur.Segment != 0 {
			as.Segment = journal.SegmentName(st.cur.Segment)
		}
		v.Agents[name] = as
	}
	data, err := jsonMarshal(v)
	if err != nil {
		return fmt.Errorf("encode versions: %w", err)
	}
	p := filepath.Join(a.dir, journal.VersionsPath)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write versions: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("replace versions: %w", err)
	}
	return nil
}

// statID returns the identity of a file, or the zero fileID.
func statID(p string) fileID {
	fi, err := os.Stat(p)
	if err != nil {
		return fileID{}
	}
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino = st.Ino
	}
	return id
}

// readDocFile reads a document file as it is on disk.
func (a *Applier) readDocFile(name string) (data []byte, exists bool, err error) {
	p := filepath.Join(a.dir, name)
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, true, err
	}
	if !fi.Mode().IsRegular() {
		return nil, true, fmt.Errorf("%s is not a regular file (%s)", name, fi.Mode().Type())
	}
	data, err = os.ReadFile(p)
	return data, true, err
}

// adoptionFor looks at a document on disk and returns the adoption that
// takes it in, given the machine's current state of it. ok is false when the
// file is what the machine already has.
func (a *Applier) adoptionFor(name string, d *docState) (ad adoption, ok bool) {
	data, exists, err := a.readDocFile(name)
	ad.File = name
	switch {
	case err != nil:
		ad.Broken = err.Error()
	case !exists:
		if d == nil || (!d.doc.Exists() && d.broken == "") {
			return ad, false
		}
		ad.Version = d.version + 1
	default:
		if d != nil && d.broken == "" && d.doc.Exists() && journal.Hash(data) == d.hash {
			return ad, false
		}
		if _, perr := ParseDoc(data); perr != nil {
			ad.Broken = "not valid JSON: " + perr.Error()
		} else {
			ad.Exists, ad.Data = true, data
			ad.Version = 1
			if d != nil {
				ad.Version = d.version + 1
			}
		}
	}
	if ad.Broken != "" && d != nil && d.broken == ad.Broken {
		return ad, false
	}
	return ad, true
}

// checkDocs takes in documents changed on disk by someone else since the
// watcher last wrote or read them.
func (a *Applier) checkDocs() {
	names := make([]string, 0, len(a.m.docs))
	for name := range a.m.docs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		id := statID(filepath.Join(a.dir, name))
		if old, ok := a.ids[name]; ok && old == id {
			continue
		}
		d := a.m.docs[name]
		ad, changed := a.adoptionFor(name, d)
		a.ids[name] = id
		if !changed {
			continue
		}
		a.logAdoption(ad, d.version)
		if err := a.m.adopt(ad); err != nil {
			a.logger.Error("adopt document", "file", name, "error", err)
			continue
		}
		a.m.adopted = append(a.m.adopted, ad)
	}
}

func (a *Applier) logAdoption(ad adoption, from uint64) {
	switch {
	case ad.Broken != "":
		a.logger.Error("document on disk is unusable; its intents are rejected until it is repaired", "file", ad.File, "error", ad.Broken)
	case !ad.Exists:
		a.logger.Warn("document deleted outside stateward; adopted as a new version", "file", ad.File, "version", ad.Version)
	default:
		a.logger.Warn("document changed outside stateward; adopted as a new version", "file", ad.File, "from", from, "version", ad.Version)
	}
}

// loadDoc is the machine's loader: a document seen for the first time is
// taken in from disk if it is there.
func (a *Applier) loadDoc(name string) (adoption, bool) {
	ad, ok := a.adoptionFor(name, nil)
	a.ids[name] = statID(filepath.Join(a.dir, name))
	if ok {
		a.logAdoption(ad, 0)
	}
	return ad, ok
}

// item is one journal line read for a batch.
type item struct {
	agent    string
	seg      uint64
	off, end int64
	line     []byte
	err      error // the line could not be read: it is rejected without a seq
}

// readJournals reads the ready lines of every agent, interleaved fairly.
func (a *Applier) readJournals() ([]item, error) {
	root := filepath.Join(a.dir, "journal")
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list journals: %w", err)
	}
	var per [][]item
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() {
			continue
		}
		if !journal.ValidAgentName(name) {
			a.warnOnce("agent:"+name, "ignoring journal folder with an invalid agent name", "folder", filepath.Join(root, name))
			continue
		}
		its, err := a.readAgent(name)
		if err != nil {
			a.warnOnce("read:"+name, "cannot read journal", "agent", name, "error", err)
			continue
		}
		if len(its) > 0 {
			per = append(per, its)
		}
	}
	var out []item
	for i := 0; len(out) < a.MaxBatch; i++ {
		took := false
		for _, its := range per {
			if i < len(its) && len(out) < a.MaxBatch {
				out = append(out, its[i])
				took = true
			}
		}
		if !took {
			break
		}
	}
	return out, nil
}

func (a *Applier) warnOnce(key, msg string, args ...any) {
	text := fmt.Sprint(args...)
	if a.warned[key] == text {
		return
	}
	a.warned[key] = text
	a.logger.Warn(msg, args...)
}

// readAgent reads up to MaxAgentBatch complete lines of an agent's journal
// from its durable position.
func (a *Applier) readAgent(agent string) ([]item, error) {
	folder := filepath.Join(a.dir, "journal", agent)
	st := a.m.agent(agent)
	segs, err := journal.ListSegments(folder)
	if err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		return nil, nil
	}
	seg, off := st.cur.Segment, st.cur.Offset
	if seg == 0 {
		seg, off = segs[0], 0
	}
	var out []item
	for len(out) < a.MaxAgentBatch {
		i, found := slices.BinarySearch(segs, seg)
		newer := uint64(0)
		if next := i; found && next+1 < len(segs) {
			newer = segs[next+1]
		} else if !found && i < len(segs) {
			newer = segs[i]
		}
		if !found {
			if newer == 0 {
				return out, nil
			}
			a.warnOnce("gone:"+agent, "journal segment disappeared; continuing with the next one", "agent", agent, "segment", journal.SegmentName(seg))
			seg, off = newer, 0
			continue
		}
		its, end, torn, err := a.readSegment(agent, folder, seg, off, a.MaxAgentBatch-len(out))
		if err != nil {
			return out, err
		}
		out = append(out, its...)
		off = end
		if len(out) >= a.MaxAgentBatch || newer == 0 {
			return out, nil
		}
		if torn > 0 {
			// An unfinished line followed by a newer segment will never be
			// finished: reject it so the journal moves on.
			out = append(out, item{agent: agent, seg: seg, off: off, end: off + torn,
				err: fmt.Errorf("%w: unfinished line of %d bytes at the end of segment %s, which is followed by segment %s",
					journal.ErrBadRecord, torn, journal.SegmentName(seg), journal.SegmentName(newer))})
		}
		seg, off = newer, 0
		// The cursor moves to the new segment with the next line decided
		// from it.
	}
	return out, nil
}

// readSegment reads up to max complete lines of a segment from off. It
// returns the end of the last line read and the length of an unfinished
// line after it.
func (a *Applier) readSegment(agent, folder string, seg uint64, off int64, limit int) ([]item, int64, int64, error) {
	p := filepath.Join(folder, journal.SegmentName(seg))
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, off, 0, nil
	}
	if err != nil {
		return nil, off, 0, fmt.Errorf("open %s: %w", p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, off, 0, fmt.Errorf("stat %s: %w", p, err)
	}
	if fi.Size() < off {
		a.warnOnce("trunc:"+agent, "journal segment is shorter than what was already processed (truncated under the watcher?); waiting for it to grow",
			"agent", agent, "segment", p, "size", fi.Size(), "processed", off)
		return nil, off, 0, nil
	}
	if fi.Size() == off {
		return nil, off, 0, nil
	}
	rd := journal.NewReader(io.NewSectionReader(f, off, fi.Size()-off), off)
	rd.MaxLine = a.MaxLine
	var out []item
	for len(out) < limit {
		rec, err := rd.Next()
		switch {
		case err == nil:
			out = append(out, item{agent: agent, seg: seg, off: rec.Offset, end: rec.End(), line: bytes.Clone(rec.Line)})
		case errors.Is(err, journal.ErrLineTooLong):
			out = append(out, item{agent: agent, seg: seg, off: rec.Offset, end: rd.Offset(), err: err})
		case errors.Is(err, io.EOF):
			return out, rd.Offset(), 0, nil
		case errors.Is(err, io.ErrUnexpectedEOF):
			return out, rd.Offset(), fi.Size() - rd.Offset(), nil
		default:
			return out, rd.Offset(), 0, fmt.Errorf("read %s: %w", p, err)
		}
	}
	return out, rd.Offset(), 0, nil
}

// jsonMarshal is json.Marshal without HTML escaping.
func jsonMarshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := newEncoder(&buf)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// isTemp reports whether name is a temporary file left in the state
// directory by an interrupted document write (natefinch/atomic names them
// after the document, followed by digits).
func isTemp(name string) bool {
	i := strings.LastIndex(name, ".json")
	if i < 0 || !journal.ValidDocName(name[:i+5]) || i+5 == len(name) {
		return false
	}
	for _, c := range name[i+5:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
