package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/stateward/stateward/journal"
)

// Defaults of an Applier's knobs.
const (
	// DefaultMaxBatch caps the journal lines one batch takes.
	DefaultMaxBatch = 8192
	// DefaultMaxAgentBatch caps the lines one agent contributes to a batch,
	// so that a flood from one agent cannot starve the others.
	DefaultMaxAgentBatch = 1024
	// DefaultMaxBatchBytes caps the bytes of journal lines one batch holds
	// in memory (each agent gets an equal share of it).
	DefaultMaxBatchBytes = 64 << 20
	// DefaultMaxDocSize is the largest document file the watcher reads (a
	// larger one is reported unusable) and writes (an intent that would
	// make a document larger is rejected).
	DefaultMaxDocSize = 256 << 20
	// DefaultMaxDepth is the deepest nesting of arrays and objects an
	// intent may create in a document: deep enough for any real document,
	// shallow enough for every common JSON parser (Python's json stops
	// near 1,000) and for the indentation (quadratic in the depth).
	DefaultMaxDepth = 512
	// DefaultResultSegmentSize is the size past which an agent's results
	// continue in a new segment.
	DefaultResultSegmentSize = 64 << 20
	// DefaultResultsSyncInterval is how often results files are fsynced.
	// Results are re-derived from the commit log after a crash, so they need
	// not be fsynced one by one.
	DefaultResultsSyncInterval = time.Second
	// DefaultDocMode is the mode of a new document, before the umask.
	DefaultDocMode = 0o644
)

// Modes of what the watcher creates besides documents, before the umask:
// only the watcher writes them; agents (the group) read them. The journal
// folder is the exception: agents create their folders in it.
const (
	privateDirMode  = 0o755
	privateFileMode = 0o644
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
	// ErrFailed is returned by every call after a failed fsync or another
	// error that leaves the state on disk unknown: the process must stop,
	// and recovery takes over when it restarts (docs/guarantees.md, Durability recipe).
	ErrFailed = errors.New("replay: stopped after a failed commit")
	// ErrNoSpace is returned by Open and Step when a write failed for lack
	// of space (ENOSPC, EDQUOT). Nothing that depended on it was
	// acknowledged; the next call (Open again after Open, Step after Step)
	// recovers from disk and tries again from scratch.
	ErrNoSpace = errors.New("replay: no space left; nothing acknowledged, will retry")
)

// Applier is the only writer of a state directory's documents and results.
// It reads the agents' journals, decides each intent, and commits each batch
// durably. Open recovers, then Step processes what is ready; both run on the
// caller's goroutine, and an Applier is not safe for concurrent use.
type Applier struct {
	MaxLine             int           // longest intent line; set by NewApplier
	MaxBatch            int           // lines per batch; set by NewApplier
	MaxAgentBatch       int           // lines per agent per batch; set by NewApplier
	MaxBatchBytes       int64         // bytes of lines per batch; set by NewApplier
	MaxDocSize          int64         // largest document file read or written; set by NewApplier
	MaxDepth            int           // deepest nesting an intent may create; set by NewApplier
	RetainResults       int           // results kept per agent for retries; set by NewApplier
	ResultSegmentSize   int64         // set by NewApplier
	ResultsSyncInterval time.Duration // set by NewApplier
	ResultSegmentsKept  int           // result segments always kept per agent; set by NewApplier
	ResultRetention     time.Duration // age past which older result segments go; set by NewApplier
	CheckpointBytes     int64         // commit log size that triggers a checkpoint; set by NewApplier
	DocMode             os.FileMode   // mode of new documents, before the umask; set by NewApplier
	Metrics             Metrics       // told of every committed batch (metrics.go); nil for none

	// Hinted, if set, makes Step read only the agents named by Touch since
	// the last Step and those that still had lines then, and look at every
	// agent folder only after Rescan (the watcher sets it and calls both
	// from file events and its periodic rescan). Unset (NewApplier), every
	// Step looks at every agent folder.
	Hinted bool

	dir    string
	logger hclog.Logger

	// The fields below are owned by the goroutine that calls Open and Step.
	fs          fsys
	root        *os.Root
	lock        *Lock
	m           *machine
	batch       uint64                  // last batch committed
	synced      uint64                  // last batch whose results are fsynced
	syncAt      time.Time               // when results were last fsynced
	logf        fileHandle              // newest commit log segment, O_APPEND
	logBytes    int64                   // commit log written since the last checkpoint
	res         map[string]fileHandle   // open results segment per agent
	dirty       map[string]bool         // results files written since the last sync
	ids         map[string]fileID       // identity of each document file as last seen
	listings    map[string]listing      // each agent's journal segments, as last listed
	touched     map[string]struct{}     // agents to read at the next Step (Touch, or lines left)
	rescan      bool                    // the next Step looks at every agent folder (Rescan)
	folders     int                     // agent folders at the last look at every one
	scanTime    time.Duration           // how long the last look at every agent folder took
	forgets     map[string]*forgetting  // forget requests being carried out, lock held (forget.go)
	stopped     map[string]string       // agents not read until forgotten, and why
	restart     map[string]restarted    // agents whose journal restarted below their position
	forgetB     map[string]forgetRecord // the agents the batch being committed forgets
	agentJSON   map[string]*agentEntry  // each agent's status as last written to versions.json
	agentNames  []string                // the names of agentJSON, in order
	statusDirty bool                    // an agent stopped since versions.json was written
	warned      map[string]string       // last warning logged per key, to log changes only
	// plainRename is set once the file system refused renameat2's flags:
	// documents are then replaced by a plain rename (publishDoc).
	plainRename bool
	lastErr     map[string]string // last rejection per agent, for status
	failed      error             // set after a fatal error
	stale       bool              // a write failed for lack of space: recover before the next batch
	written     int64             // bytes the last batch wrote, for Metrics
	logSync     time.Duration     // the last commit record's fsync, for Metrics
	verErr      string            // last failure to write the versions file, "" once written

	// hook is called at each named point of the commit path; crash tests
	// stop the process there.
	hook func(point string)
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
		MaxBatchBytes:       DefaultMaxBatchBytes,
		MaxDocSize:          DefaultMaxDocSize,
		MaxDepth:            DefaultMaxDepth,
		RetainResults:       DefaultRetainResults,
		ResultSegmentSize:   DefaultResultSegmentSize,
		ResultsSyncInterval: DefaultResultsSyncInterval,
		ResultSegmentsKept:  DefaultResultSegmentsKept,
		ResultRetention:     DefaultResultRetention,
		CheckpointBytes:     DefaultCheckpointBytes,
		DocMode:             DefaultDocMode,
		dir:                 dir,
		logger:              logger,
		forgets:             map[string]*forgetting{},
		stopped:             map[string]string{},
		restart:             map[string]restarted{},
		lastErr:             map[string]string{},
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
//
// An error wrapping ErrNoSpace leaves the Applier holding the lock: call
// Open again once there may be space (or Close). Any other error releases
// everything.
func (a *Applier) Open() error {
	switch {
	case a.MaxLine < 2, a.MaxBatch < 1, a.MaxAgentBatch < 1, a.MaxBatchBytes < 1, a.RetainResults < 1, a.ResultSegmentSize < 1, a.MaxDocSize < 1, a.MaxDepth < 1,
		a.ResultSegmentsKept < 1, a.CheckpointBytes < 1:
		return fmt.Errorf("replay: limits must be positive (max line %d, batch %d, agent batch %d, batch bytes %d, retain %d, result segment %d, doc size %d)",
			a.MaxLine, a.MaxBatch, a.MaxAgentBatch, a.MaxBatchBytes, a.RetainResults, a.ResultSegmentSize, a.MaxDocSize)
	}
	if a.failed != nil {
		return a.failed
	}
	err := a.open()
	if err != nil && !errors.Is(err, ErrNoSpace) {
		a.Close()
	}
	return err
}

// open is Open less the cleanup after a fatal error. Every error of
// recovery goes through fail, which tells lack of space from the rest.
func (a *Applier) open() error {
	if a.fs == nil {
		root, err := os.OpenRoot(a.dir)
		if err != nil {
			return fmt.Errorf("open state directory: %w", err)
		}
		a.root, a.fs = root, rootFS{root}
	}
	a.point("after-open-root")
	// Nothing is written before the folder lock is held, and the lock is
	// on the folder the root was opened on.
	if a.lock == nil {
		root := a.root
		if root == nil { // a file system given by a test: a root just to lock
			r, err := os.OpenRoot(a.dir)
			if err != nil {
				return fmt.Errorf("open state directory: %w", err)
			}
			defer r.Close()
			root = r
		}
		lk, err := lockRoot(root, a.dir)
		if err != nil {
			return err
		}
		a.lock = lk
	}
	if err := a.mkdir(privateDir); err != nil {
		return a.failRecovery(err)
	}
	if err := a.lock.finish(); err != nil {
		if errors.Is(err, ErrLocked) {
			return err
		}
		return a.failRecovery(err)
	}
	for _, rel := range []string{"journal", "results"} {
		if err := a.mkdir(rel); err != nil {
			return a.failRecovery(err)
		}
	}
	return a.recoverAgain()
}

// recoverAgain runs recovery, from scratch, classifying its errors; the
// Applier stays stale until it succeeds.
func (a *Applier) recoverAgain() error {
	a.closeFiles()
	if err := a.recover(); err != nil {
		return a.failRecovery(err)
	}
	if a.stale {
		a.logger.Info("space available again; recovered from the last commit and going on", "commit", a.m.commit)
		a.stale = false
	}
	a.rescan = true
	return nil
}

// failRecovery classifies an error of recovery as fail does, but a fatal
// one keeps its own message (the caller reports that recovery failed) and
// is not logged here.
func (a *Applier) failRecovery(err error) error {
	if a.failed != nil || isNoSpace(err) {
		return a.fail(err)
	}
	a.failed = &fatalError{err}
	return a.failed
}

// fatalError is a fatal error of recovery: it reads as its cause and
// matches ErrFailed.
type fatalError struct{ err error }

func (e *fatalError) Error() string   { return e.err.Error() }
func (e *fatalError) Unwrap() []error { return []error{ErrFailed, e.err} }

// isNoSpace reports whether err is a write that failed for lack of space
// (not an fsync: after a failed fsync, stop).
func isNoSpace(err error) bool {
	var se *syncError
	return errors.Is(err, ErrNoSpace) || !errors.As(err, &se) && (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT))
}

// Close releases the state directory. It does not commit anything: a batch
// is committed whole by Step or not at all.
func (a *Applier) Close() error {
	a.closeFiles()
	for agent := range a.forgets {
		a.releaseForget(agent)
	}
	var err error
	if a.lock != nil {
		err = a.lock.Unlock()
		a.lock = nil
	}
	if a.root != nil {
		a.root.Close()
		a.root, a.fs = nil, nil
	}
	return err
}

// closeFiles closes the files the Applier keeps open between batches.
func (a *Applier) closeFiles() {
	for _, f := range a.res {
		f.Close()
	}
	a.res = map[string]fileHandle{}
	if a.logf != nil {
		a.logf.Close()
		a.logf = nil
	}
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

// mkdir creates a folder (one level) under the state directory, if it is
// not there, and makes its entry durable. Something else in its place is an
// error: the watcher never writes through a symbolic link. It may run in a
// goroutine of parallel: the caller classifies its error (fail).
func (a *Applier) mkdir(rel string) error {
	if fi, err := a.fs.Lstat(rel); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s in %s is not a folder (%s): move it away", rel, a.dir, fi.Mode().Type())
		}
		return nil
	}
	mode := os.FileMode(privateDirMode)
	if rel == "journal" {
		mode = journal.DirMode
	}
	if err := a.fs.Mkdir(rel, mode); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", rel, err)
	}
	if err := syncDir(a.fs, path.Dir(rel)); err != nil {
		return fmt.Errorf("sync folder of %s: %w", rel, err)
	}
	return nil
}

// fail classifies an error of the commit path, of recovery or of a
// checkpoint: every error of theirs goes through it. A write that failed
// for lack of space leaves the Applier stale: the next Step (or Open)
// recovers from disk and tries again; it is logged once per episode, when
// the Applier turns stale. Anything else (a failed fsync above all) is
// fatal.
func (a *Applier) fail(err error) error {
	if a.failed != nil {
		return a.failed
	}
	if errors.Is(err, ErrNoSpace) {
		a.stale = true
		return err // classified already
	}
	var se *syncError
	if !errors.As(err, &se) && (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)) {
		if !a.stale {
			a.logger.Error("out of space; nothing of this batch is acknowledged; retrying from the last commit until there is space", "error", err)
		}
		a.stale = true
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	a.failed = fmt.Errorf("%w: %w", ErrFailed, err)
	a.logger.Error("commit failed; stopping without acknowledging anything that depended on it", "error", err)
	return a.failed
}

// Step processes one batch: it takes in external changes to documents,
// reads what is ready in every journal (each agent's lines in seq order,
// agents interleaved, at most MaxAgentBatch lines each), decides every line,
// and commits. It returns how many journal lines it processed, plus the
// agents it forgot. An error
// wrapping ErrNoSpace is temporary: call Step again later. An error
// wrapping ErrFailed means the Applier must be abandoned: the process
// restarts and recovers.
func (a *Applier) Step(ctx context.Context) (int, error) {
	if a.failed != nil {
		return 0, a.failed
	}
	if a.fs == nil {
		return 0, errors.New("replay: Step before Open")
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	start := time.Now()
	if a.stale {
		// Throw away what the failed batch decided in memory and start
		// again from what is durable, exactly as after a crash. The
		// Applier stays stale until that succeeds.
		if err := a.recoverAgain(); err != nil {
			return 0, err
		}
		a.rescan = true
	}
	m := a.m
	m.adopted = m.adopted[:0]
	a.checkDocs()
	if _, asked := a.touched[forgetTouch]; asked || !a.Hinted || a.rescan || len(a.forgets) > 0 {
		a.takeForgets()
	}
	items, err := a.readJournals()
	if err != nil {
		return 0, err
	}
	forgets := a.readyForgets(items)
	if len(items) == 0 && len(m.adopted) == 0 && len(forgets) == 0 {
		if a.verErr != "" || a.statusDirty {
			// A failed versions write, or an agent stopped: status shows
			// it without waiting for a batch.
			a.statusDirty = false
			a.publishVersions() // advisory: logged
		}
		return 0, nil
	}
	entries := make([]entry, 0, len(items))
	moved := map[string]cursor{}
	prevSeg := map[string]uint64{}
	for _, it := range items {
		e := m.decide(it.agent, it.seg, it.off, it.line, it.err)
		ag := m.agent(it.agent)
		if _, ok := prevSeg[it.agent]; !ok {
			prevSeg[it.agent] = ag.cur.Segment
		}
		ag.cur.Segment, ag.cur.Offset = it.seg, it.end
		moved[it.agent] = ag.cur
		if e.Result.Status == journal.StatusRejected {
			a.noteRejected(it.agent, e.Result)
		}
		entries = append(entries, e)
	}
	a.forgetB = forgets
	m.forgetAgents(&commitRecord{Forget: forgets})
	if err := a.commit(entries, moved, prevSeg); err != nil {
		return 0, err
	}
	a.reportBatch(entries, start)
	return len(items) + len(forgets), nil
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
// on (doc.go): inputs fsynced, commit record (fsync), documents (temp,
// fsync, rename; directory fsync), versions file, results.
func (a *Applier) commit(entries []entry, moved map[string]cursor, prevSeg map[string]uint64) error {
	m := a.m
	// Another watcher must never run beside this one: if the state
	// directory was moved or replaced, a new one could take its path.
	if a.lock != nil {
		if err := a.lock.Check(); err != nil {
			return a.fail(err)
		}
	}
	rec := &commitRecord{
		Batch:    a.batch + 1,
		Commit:   m.commit,
		Adopt:    slices.Clone(m.adopted),
		Entries:  entries,
		Docs:     map[string]docRecord{},
		Journals: moved,
		Synced:   a.synced,
		Retain:   m.retain,

		MaxDocSize: m.maxDocSize,
		MaxDepth:   m.maxDepth,
		Forget:     a.forgetB,
		Engine:     engineVersion,
	}
	a.forgetB = nil
	// Documents: encode each changed one once for the whole batch.
	var write []string
	for name, d := range m.docs {
		if !d.dirty {
			continue
		}
		d.data = d.doc.AppendJSON(d.data[:0:0])
		h := journal.Hash(d.data)
		rec.Docs[name] = docRecord{Version: d.version, Exists: true, SHA256: h, Prev: d.hash}
		d.hash = h
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
	// The commit record waits for its inputs; the documents' temp files,
	// invisible until renamed, are written and fsynced meanwhile.
	temps := make([]string, len(write))
	steps := []func() error{func() error {
		a.point("before-input-sync")
		if err := a.syncInputs(entries); err != nil {
			return err
		}
		a.point("before-commit-write")
		return a.appendLog(rec.Batch, line)
	}}
	for i, name := range write {
		steps = append(steps, func() error {
			tmp, err := prepareDoc(a.fs, name, rec.Batch, m.docs[name].data, a.DocMode, a.point)
			temps[i] = tmp
			if err != nil {
				return fmt.Errorf("write document %s: %w", name, err)
			}
			return nil
		})
	}
	if err := parallel(steps...); err != nil {
		for _, tmp := range temps {
			if tmp != "" {
				a.fs.Remove(tmp)
			}
		}
		return a.fail(err)
	}
	a.batch = rec.Batch
	a.logBytes += int64(len(line))
	a.written = int64(len(line))
	for _, name := range write {
		a.written += int64(len(m.docs[name].data))
	}
	for _, b := range out {
		a.written += int64(len(b))
	}
	kept := map[string]bool{}
	ids := map[string]fileID{}
	for i, name := range write {
		m.docs[name].dirty = false
		id, k, err := a.publishDoc(temps[i], name, a.ids[name], rec.Docs[name].Prev)
		if err != nil {
			return a.fail(fmt.Errorf("write document %s: %w", name, err))
		}
		kept[name], ids[name] = k, id
		a.point("after-doc-rename:" + name)
	}
	if len(write) > 0 {
		if err := syncDir(a.fs, "."); err != nil {
			return a.fail(fmt.Errorf("sync state directory %s: %w", a.dir, err))
		}
		a.point("after-dir-sync")
		for _, name := range write {
			if kept[name] {
				delete(a.ids, name) // an edit put back: the next Step adopts it
				continue
			}
			a.ids[name] = ids[name]
		}
	}
	// A result appears only once versions.json shows its batch.
	if err := a.publishVersions(); err != nil {
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
	if len(rec.Forget) > 0 {
		if err := a.finishForgets(rec.Batch, rec.Forget, false); err != nil {
			return err
		}
	}
	// Compaction (G7): journals behind the cursors, then the commit log
	// behind a checkpoint.
	for ag, cur := range moved {
		if cur.Segment != prevSeg[ag] {
			a.compactJournal(ag)
		}
	}
	if a.logBytes >= a.CheckpointBytes {
		if err := a.checkpoint(); err != nil {
			return a.fail(err)
		}
	}
	return nil
}

// syncInputs fsyncs, concurrently, the journal segments the entries came
// from and the adopted documents, then their directory.
func (a *Applier) syncInputs(entries []entry) error {
	type segKey struct {
		agent string
		seg   uint64
	}
	seen := map[segKey]bool{}
	var syncs []func() error
	for _, e := range entries {
		k := segKey{e.Agent, e.Segment}
		if seen[k] {
			continue
		}
		seen[k] = true
		name := path.Join("journal", e.Agent, journal.SegmentName(e.Segment))
		syncs = append(syncs, func() error {
			if err := a.syncPath(name); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("sync journal segment %s: %w", name, err)
			}
			return nil
		})
	}
	for _, ad := range a.m.adopted {
		if ad.Exists {
			syncs = append(syncs, func() error {
				if err := a.syncPath(ad.File); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("sync adopted document %s: %w", ad.File, err)
				}
				return nil
			})
		}
	}
	if len(syncs) > 0 {
		if err := parallel(syncs...); err != nil {
			return err
		}
	}
	if len(a.m.adopted) > 0 {
		if err := syncDir(a.fs, "."); err != nil {
			return fmt.Errorf("sync state directory %s: %w", a.dir, err)
		}
	}
	return nil
}

// syncPath fsyncs a file through a read-only descriptor: on Linux, fsync
// flushes the file whatever descriptor asks.
func (a *Applier) syncPath(name string) error {
	f, err := a.fs.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return syncFile(f)
}

// resultStart decides where an agent's results of this batch begin: at the
// end of its current results segment, or in a new one past the size limit.
func (a *Applier) resultStart(agent string, first journal.Result) resultPos {
	st := a.m.agent(agent)
	if st.res.Segment == 0 {
		return resultPos{Segment: max(first.Seq, 1)}
	}
	// A new segment is named by its first result's seq (docs/format.md, Result), so rotate
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
		name := path.Join(logDir, journal.SegmentName(batch))
		f, err := a.fs.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, privateFileMode)
		if err != nil {
			return fmt.Errorf("create commit log %s: %w", name, err)
		}
		if err := syncDir(a.fs, logDir); err != nil {
			f.Close()
			return fmt.Errorf("sync commit log folder: %w", err)
		}
		a.logf = f
	}
	if _, err := a.logf.Write(line); err != nil {
		return fmt.Errorf("write commit record %d: %w", batch, err)
	}
	a.point("after-commit-write")
	synced := time.Now()
	if err := syncFile(a.logf); err != nil {
		return fmt.Errorf("sync commit log: %w", err)
	}
	a.logSync = time.Since(synced)
	a.point("after-commit-sync")
	return nil
}

// appendResults writes an agent's result lines at pos.
func (a *Applier) appendResults(agent string, pos resultPos, data []byte) error {
	st := a.m.agent(agent)
	f := a.res[agent]
	if f == nil || st.res.Segment != pos.Segment {
		if f != nil {
			if err := syncFile(f); err != nil { // the old segment is done: make it durable
				return fmt.Errorf("sync results of %s: %w", agent, err)
			}
			f.Close()
		}
		var err error
		if f, err = a.openResults(agent, pos.Segment, os.O_WRONLY|os.O_APPEND); err != nil {
			return err
		}
		a.res[agent] = f
		defer a.pruneResults(agent)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write results of %s: %w", agent, err)
	}
	st.res = resultPos{Segment: pos.Segment, Offset: pos.Offset + int64(len(data))}
	a.dirty[agent] = true
	return nil
}

// openResults opens (creating it and its folder, durably) an agent's
// results segment.
func (a *Applier) openResults(agent string, seg uint64, flag int) (fileHandle, error) {
	folder := path.Join("results", agent)
	if err := a.mkdir(folder); err != nil {
		return nil, err
	}
	name := path.Join(folder, journal.SegmentName(seg))
	_, statErr := a.fs.Lstat(name)
	f, err := a.fs.OpenFile(name, flag|os.O_CREATE, privateFileMode)
	if err != nil {
		return nil, fmt.Errorf("open results %s: %w", name, err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		if err := syncDir(a.fs, folder); err != nil {
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
			if err := syncFile(f); err != nil {
				return fmt.Errorf("sync results of %s: %w", ag, err)
			}
		}
		delete(a.dirty, ag)
	}
	a.synced, a.syncAt = a.batch, time.Now()
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

// publishVersions writes the versions file and returns the error of a
// failure, which it logs once, until the file is written again. The file is
// advisory (readers pair it with the documents through their hashes; the
// watcher decides by its own state), so recovery and an idle Step go on
// without it and try again at the next Step; a commit does not show its
// results before it (commit classifies the error).
func (a *Applier) publishVersions() error {
	err := a.writeVersions()
	switch {
	case err == nil && a.verErr != "":
		a.logger.Info("versions file written again", "commit", a.m.commit)
		a.verErr = ""
	case err != nil && a.verErr == "":
		a.logger.Warn("cannot write the versions file; retrying at the next step", "error", err)
		a.verErr = err.Error()
	}
	return err
}

// writeVersions replaces the versions file. It is not fsynced: recovery
// rewrites it from the commit log. A temp file it could not finish is
// removed.
func (a *Applier) writeVersions() error {
	v := versionsFile{
		Versions: journal.Versions{Commit: a.m.commit, Docs: map[string]journal.DocVersion{}},
		Batch:    a.batch,
	}
	for name, d := range a.m.docs {
		v.Docs[name] = journal.DocVersion{Version: d.version, Exists: d.doc.Exists(), SHA256: d.hash, Broken: d.broken}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode versions: %w", err)
	}
	// Agents is the last field, encoded as null: put the agents there,
	// each encoded once per change rather than all at every batch.
	const tail = `"agents":null}` + "\n"
	if !bytes.HasSuffix(buf.Bytes(), []byte(tail)) {
		return fmt.Errorf("encode versions: no agents field at the end")
	}
	buf.Truncate(buf.Len() - len(tail) + len(`"agents":`))
	a.appendAgents(&buf)
	buf.WriteString("}\n")
	tmp := journal.VersionsPath + ".tmp"
	f, err := createFresh(a.fs, tmp, privateFileMode)
	if err != nil {
		return fmt.Errorf("write versions: %w", err)
	}
	_, err = f.Write(buf.Bytes())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		a.fs.Remove(tmp)
		return fmt.Errorf("write versions: %w", err)
	}
	if err := a.fs.Rename(tmp, journal.VersionsPath); err != nil {
		a.fs.Remove(tmp)
		return fmt.Errorf("replace versions: %w", err)
	}
	return nil
}

var _ io.Closer = (*Applier)(nil)

// agentEntry is an agent's status as last encoded for versions.json.
type agentEntry struct {
	cur     cursor
	lastErr string
	json    []byte // "name":{...}
}

// appendAgents appends the agents' statuses as a JSON object, with names
// in order as encoding/json writes a map. Only the agents whose status
// changed since the last call are encoded again: a batch costs what the
// agents with new lines cost, plus a copy.
func (a *Applier) appendAgents(buf *bytes.Buffer) {
	if a.agentJSON == nil {
		a.agentJSON = map[string]*agentEntry{}
	}
	resort := len(a.agentJSON) != len(a.m.agents)
	size := 2
	for name, st := range a.m.agents {
		e := a.agentJSON[name]
		if e == nil {
			e = &agentEntry{}
			a.agentJSON[name] = e
			resort = true
		} else if e.cur == st.cur && e.lastErr == a.lastErr[name] {
			size += len(e.json) + 1
			continue
		}
		e.cur, e.lastErr = st.cur, a.lastErr[name]
		as := agentStatus{Offset: st.cur.Offset, Seq: st.cur.Seq, LastError: e.lastErr}
		if st.cur.Segment != 0 {
			as.Segment = journal.SegmentName(st.cur.Segment)
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.Encode(name)
		enc.Encode(as)
		e.json = bytes.Replace(bytes.TrimSuffix(b.Bytes(), []byte("\n")), []byte("\n"), []byte(":"), 1)
		size += len(e.json) + 1
	}
	if resort {
		for name := range a.agentJSON {
			if _, ok := a.m.agents[name]; !ok {
				delete(a.agentJSON, name)
			}
		}
		a.agentNames = a.agentNames[:0]
		for name := range a.agentJSON {
			a.agentNames = append(a.agentNames, name)
		}
		slices.Sort(a.agentNames)
	}
	buf.Grow(size)
	buf.WriteByte('{')
	for i, name := range a.agentNames {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(a.agentJSON[name].json)
	}
	buf.WriteByte('}')
}
