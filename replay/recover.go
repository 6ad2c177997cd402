package replay

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"time"

	"github.com/stateward/stateward/journal"
)

// ErrDiverged is returned when finishing an interrupted batch does not give
// the bytes its commit record promised: the engine is not deterministic, or
// the log does not belong to these files. Recovery stops rather than guess.
var ErrDiverged = errors.New("replay: redo does not match the commit record")

// recover rebuilds the Applier's state from the commit log and the files on
// disk, and finishes whatever the last batch left undone. See doc.go for the
// crash windows it closes.
func (a *Applier) recover() error {
	a.ids = map[string]fileID{}
	a.listings = map[string]listing{}
	a.warned = map[string]string{}
	a.res = map[string]fileHandle{}
	a.dirty = map[string]bool{}
	a.syncAt = time.Now()

	cp, err := readCheckpoint(a.fs)
	if err != nil {
		return err
	}
	recs, seg, end, err := readLog(a.fs)
	if err != nil {
		return err
	}
	if err := a.cutLogTail(seg, end); err != nil {
		return err
	}
	a.logBytes = 0
	if segs, err := listSegments(a.fs, logDir); err == nil {
		for _, s := range segs {
			if fi, err := a.fs.Lstat(path.Join(logDir, journal.SegmentName(s))); err == nil {
				a.logBytes += fi.Size()
			}
		}
	}
	m := newMachine(a.RetainResults)
	a.batch, a.synced = 0, 0
	if cp != nil {
		// Records the checkpoint covers may still be there (a crash between
		// the checkpoint and the log's deletion): skip them.
		if m, err = cp.restore(cp.Retain); err != nil {
			return err
		}
		i := 0
		for i < len(recs) && recs[i].Batch <= cp.Batch {
			i++
		}
		recs = recs[i:]
		if len(recs) > 0 && recs[0].Batch != cp.Batch+1 {
			return fmt.Errorf("%w: checkpoint is at batch %d but the log resumes at batch %d", ErrCorruptLog, cp.Batch, recs[0].Batch)
		}
		a.batch, a.synced = cp.Batch, cp.Batch
	}
	for _, rec := range recs {
		if err := m.fold(rec); err != nil {
			return fmt.Errorf("fold commit record %d: %w", rec.Batch, err)
		}
	}
	m.retain = a.RetainResults
	m.maxDocSize, m.maxDepth = a.MaxDocSize, a.MaxDepth
	a.m = m
	var last *commitRecord
	if n := len(recs); n > 0 {
		last = recs[n-1]
		a.batch, a.synced = last.Batch, last.Synced
	}
	a.logger.Info("commit log read", "checkpoint", cp != nil, "batches", len(recs), "commit", m.commit)
	if err := a.loadDocs(last); err != nil {
		return err
	}
	if err := a.repairResults(recs); err != nil {
		return err
	}
	// Everything recovery wrote is durable now: results too.
	if err := a.syncResults(); err != nil {
		return a.fail(err)
	}
	if err := a.adoptSwaps(last); err != nil {
		return err
	}
	if last != nil && len(last.Forget) > 0 {
		// Finish the forgets of the last batch (forget.go).
		if err := a.finishForgets(last.Batch, last.Forget, true); err != nil {
			return err
		}
	}
	a.removeTemps()
	a.publishVersions() // advisory: never fails recovery (logged)
	for name := range m.agents {
		a.compactJournal(name) // a crash may have come between a commit and its compaction
	}
	m.load = a.loadDoc
	return nil
}

// cutLogTail removes a torn last record, which nobody was told about, and
// fsyncs the log: even an intact last record may not have reached the disk
// before the crash, and it must be durable before recovery acts on it.
func (a *Applier) cutLogTail(seg uint64, end int64) error {
	if seg == 0 {
		return nil
	}
	name := path.Join(logDir, journal.SegmentName(seg))
	f, err := a.fs.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open commit log %s: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat commit log %s: %w", name, err)
	}
	if fi.Size() > end {
		a.logger.Warn("cutting a torn commit record (its batch was never acknowledged)", "log", name, "offset", end, "bytes", fi.Size()-end)
		if err := f.Truncate(end); err != nil {
			f.Close()
			return a.fail(fmt.Errorf("truncate commit log %s: %w", name, err))
		}
	}
	if err := syncFile(f); err != nil {
		f.Close()
		return a.fail(fmt.Errorf("sync commit log %s: %w", name, err))
	}
	a.logf = f
	return nil
}

// fold applies what a commit record says to the machine's bookkeeping:
// agents' positions, retained results, commit counter, document versions.
// It does not touch document contents; loadDocs reads those from disk.
func (m *machine) fold(rec *commitRecord) error {
	if rec.Retain > 0 {
		m.retain = rec.Retain // as the batch was decided, like Verify
	}
	for _, ad := range rec.Adopt {
		d := m.doc(ad.File)
		if ad.Broken != "" {
			d.broken = ad.Broken
			continue
		}
		d.broken, d.version = "", ad.Version
		d.hash = ""
		if ad.Exists {
			d.hash = journal.Hash(ad.Data)
		}
	}
	for _, e := range rec.Entries {
		a := m.agent(e.Agent)
		if e.Result.Seq > a.cur.Seq {
			a.cur.Seq = e.Result.Seq
			m.keepLogged(a, e)
		}
	}
	for name, c := range rec.Journals {
		m.agent(name).cur = c
	}
	for name, dr := range rec.Docs {
		d := m.doc(name)
		d.version, d.hash = dr.Version, dr.SHA256
		if dr.Exists {
			d.broken = ""
		}
	}
	for name, pos := range rec.Results {
		a := m.agent(name)
		n := int64(0)
		for _, e := range rec.Entries {
			if e.Agent == name {
				n += int64(len(e.Result.AppendLine(nil)))
			}
		}
		a.res = resultPos{Segment: pos.Segment, Offset: pos.Offset + n}
	}
	m.commit = rec.Commit
	m.forgetAgents(rec)
	return nil
}

// loadDocs reads every known document from disk. A document that the last
// batch committed but did not finish writing is redone from its previous
// bytes; one that differs otherwise was changed by someone else, and the
// first Step adopts it.
func (a *Applier) loadDocs(last *commitRecord) error {
	names := make([]string, 0, len(a.m.docs))
	for name := range a.m.docs {
		names = append(names, name)
	}
	slices.Sort(names)
	var redone []string
	putBack := map[string]bool{}
	ids := map[string]fileID{}
	for _, name := range names {
		d := a.m.docs[name]
		if d.broken != "" {
			continue
		}
		data, exists, fid, err := a.readDocFile(name)
		if err != nil {
			continue // checkDocs reports it
		}
		h := ""
		if exists {
			h = journal.Hash(data)
		}
		if h == d.hash {
			if exists {
				doc, err := ParseDoc(data)
				if err != nil {
					continue // checkDocs reports it
				}
				d.doc, d.data = doc, data
			}
			a.ids[name] = fid // the file read, not one that replaced it since
			continue
		}
		dr, inLast := docRecord{}, false
		if last != nil {
			dr, inLast = last.Docs[name]
		}
		if !inLast || dr.Prev != h || !dr.Exists {
			continue // an external change: checkDocs adopts it on the first Step
		}
		out, err := redo(last, name, data, exists)
		if err != nil {
			return err
		}
		if got := journal.Hash(out.data); got != dr.SHA256 {
			return fmt.Errorf("%w: %s batch %d gives sha256 %s, record says %s", ErrDiverged, name, last.Batch, got, dr.SHA256)
		}
		prev := fid
		tmp, err := prepareDoc(a.fs, name, last.Batch, out.data, a.DocMode, a.point)
		if err != nil {
			return a.fail(fmt.Errorf("write document %s: %w", name, err))
		}
		id, kept, err := a.publishDoc(tmp, name, prev, h)
		if err != nil {
			return a.fail(fmt.Errorf("write document %s: %w", name, err))
		}
		d.doc, d.data = out.doc, out.data
		if kept {
			putBack[name] = true // the first Step adopts it
		}
		ids[name] = id
		redone = append(redone, name)
	}
	if len(redone) > 0 {
		if err := syncDir(a.fs, "."); err != nil {
			return a.fail(fmt.Errorf("sync state directory %s: %w", a.dir, err))
		}
		for _, name := range redone {
			if !putBack[name] {
				a.ids[name] = ids[name]
			}
		}
		a.logger.Info("finished the documents of the interrupted batch", "batch", last.Batch, "files", redone)
	}
	return nil
}

// redone is a document rebuilt by redo.
type redone struct {
	doc  *Doc
	data []byte
}

// redo applies the applied intents of rec for one document to the bytes the
// document had before the batch. It follows the log and decides nothing, so
// a record of any engine (commitRecord.Engine) is redone alike: the copy
// bound, which another engine drew elsewhere, is lifted (limits only ever
// reject), and the caller checks the outcome against the logged hash.
func redo(rec *commitRecord, name string, before []byte, exists bool) (redone, error) {
	doc := &Doc{}
	if exists {
		var err error
		if doc, err = ParseDoc(before); err != nil {
			return redone{}, fmt.Errorf("%w: %s before batch %d: %w", ErrDiverged, name, rec.Batch, err)
		}
	}
	doc.followLog = true
	for _, e := range rec.Entries {
		if e.Result.File != name || e.Result.Status != journal.StatusApplied || e.Result.Retry {
			continue
		}
		in, _, err := journal.ParseIntent(e.Intent)
		if err == nil {
			err = applyIntent(doc, in)
		}
		if err != nil {
			return redone{}, fmt.Errorf("%w: %s seq %d of %s: %w", ErrDiverged, name, e.Result.Seq, e.Agent, err)
		}
	}
	return redone{doc: doc, data: doc.AppendJSON(nil)}, nil
}

// applyIntent applies an intent's patch or merge patch to doc.
func applyIntent(doc *Doc, in journal.Intent) error {
	if len(in.Patch) > 0 {
		ops, err := DecodePatch(in.Patch)
		if err != nil {
			return err
		}
		return doc.Apply(ops)
	}
	return doc.Merge(in.Merge)
}

// repairResults makes each agent's results files hold exactly the lines the
// commit log says, for every batch whose results may not have been fsynced:
// a line cut short or lost is rewritten from the record, and a line already
// there is never written twice.
func (a *Applier) repairResults(recs []*commitRecord) error {
	if len(recs) == 0 {
		return nil
	}
	synced := recs[len(recs)-1].Synced
	type span struct {
		pos  resultPos
		data []byte
	}
	spans := map[string][]span{}
	for _, rec := range recs {
		if rec.Batch <= synced {
			continue
		}
		for name, pos := range rec.Results {
			var data []byte
			for _, e := range rec.Entries {
				if e.Agent == name {
					data = e.Result.AppendLine(data)
				}
			}
			spans[name] = append(spans[name], span{pos, data})
		}
	}
	agents := make([]string, 0, len(spans))
	for name := range spans {
		agents = append(agents, name)
	}
	slices.Sort(agents)
	for _, name := range agents {
		ss := spans[name]
		for i, s := range ss {
			lastInSeg := i == len(ss)-1 || ss[i+1].pos.Segment != s.pos.Segment
			if err := a.repairSpan(name, s.pos.Segment, s.pos.Offset, s.data, lastInSeg); err != nil {
				return err
			}
		}
	}
	return nil
}

// repairSpan makes bytes [off, off+len(want)) of an agent's results
// segment equal want. If the span is the last one of its segment, anything
// after it (garbage from a lost write) is cut.
func (a *Applier) repairSpan(agent string, seg uint64, off int64, want []byte, last bool) error {
	f, err := a.openResults(agent, seg, os.O_RDWR)
	if err != nil {
		return a.fail(err)
	}
	defer f.Close()
	name := path.Join("results", agent, journal.SegmentName(seg))
	have := make([]byte, len(want))
	n, err := f.ReadAt(have, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read results %s: %w", name, err)
	}
	same := 0
	for same < n && have[same] == want[same] {
		same++
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat results %s: %w", name, err)
	}
	end := off + int64(len(want))
	if same == len(want) && (!last || fi.Size() == end) {
		return nil
	}
	if fi.Size() < off {
		return fmt.Errorf("results %s: %d bytes, but a batch's results start at %d (results lost before the last fsync point?)", name, fi.Size(), off)
	}
	if err := f.Truncate(off + int64(same)); err != nil {
		return a.fail(fmt.Errorf("truncate results %s: %w", name, err))
	}
	if _, err := f.WriteAt(want[same:], off+int64(same)); err != nil {
		return a.fail(fmt.Errorf("rewrite results %s: %w", name, err))
	}
	if err := syncFile(f); err != nil {
		return a.fail(fmt.Errorf("sync results %s: %w", name, err))
	}
	a.logger.Info("restored results lost in a crash", "agent", agent, "file", name, "bytes", len(want)-same)
	return nil
}

// removeTemps deletes temporary files that an interrupted write left: of
// documents in the state directory, of checkpoints in their folder. They
// may hold much space (a checkpoint holds every document).
func (a *Applier) removeTemps() {
	for _, folder := range []string{".", checkpointDir} {
		ents, err := a.fs.ReadDir(folder)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !e.Type().IsRegular() || !(folder == "." && isTemp(e.Name()) || folder == checkpointDir && isTempName(e.Name())) {
				continue
			}
			name := path.Join(folder, e.Name())
			if err := a.fs.Remove(name); err == nil {
				a.logger.Debug("removed temporary file of an interrupted write", "file", name)
			}
		}
	}
}
