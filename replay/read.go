package replay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stateward/stateward/journal"
)

// item is one journal line read for a batch.
type item struct {
	agent    string
	seg      uint64
	off, end int64
	line     []byte
	err      error // the line could not be read: it is rejected without a seq
}

// readJournals reads the ready lines of the agents that may have some,
// interleaved fairly: the first line of each agent, then the second of
// each, and so on, up to MaxBatch lines, starting with a different agent at
// each batch.
//
// Which agents it reads: every agent folder that changed since it was last
// read (scanAgents: a listing of the journal folder and a stat or two per
// agent, no file opened), at every Step unless Hinted, and otherwise only
// after Rescan; plus the agents named by Touch, and those that still had
// lines at the previous Step. So the cost of a batch follows the agents
// with new lines, not the agents that exist.
func (a *Applier) readJournals() ([]item, error) {
	if !a.Hinted || a.rescan {
		if err := a.scanAgents(); err != nil {
			return nil, err
		}
		a.rescan = false
	}
	if len(a.touched) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(a.touched))
	for name := range a.touched {
		names = append(names, name)
	}
	clear(a.touched)
	slices.Sort(names)
	// Each agent may hold an equal share of the batch's byte budget, and
	// always at least one line.
	budget := a.MaxBatchBytes / int64(max(a.folders, len(names), 1))
	var per [][]item
	for _, name := range names {
		if !journal.ValidAgentName(name) {
			continue
		}
		folder := path.Join("journal", name)
		if fi, err := a.fs.Lstat(folder); err != nil || !fi.IsDir() {
			continue // gone, or not a real folder: scanAgents says so
		}
		// Its results could not be written (the watcher never writes
		// through a link): leave its journal alone rather than commit a
		// batch whose results must fail, which would stop everyone.
		if fi, err := a.fs.Lstat(path.Join("results", name)); err == nil && !fi.IsDir() {
			a.warnOnce("results:"+name, "not processing the journal of an agent whose results folder is not a folder: move it away", "agent", name, "folder", path.Join("results", name), "type", fi.Mode().Type().String())
			continue
		}
		its, err := a.readAgent(name, budget)
		if err != nil {
			a.warnOnce("read:"+name, "cannot read journal", "agent", name, "error", err)
		}
		if len(its) > 0 {
			per = append(per, its)
			a.touched[name] = struct{}{} // it may have more: look again next Step
		}
	}
	// Each round starts at a different agent, so that no agent always wins
	// the ties between intents of one batch on the same version.
	var out []item
	start := 0
	if len(per) > 0 {
		start = int(a.batch % uint64(len(per)))
	}
	for i := 0; len(out) < a.MaxBatch; i++ {
		took := false
		for k := range per {
			its := per[(start+k)%len(per)]
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

// Touch tells the Applier that an agent's journal folder may have changed
// (a file event): with Hinted set, the next Step reads that agent.
func (a *Applier) Touch(agent string) {
	if a.touched == nil {
		a.touched = map[string]struct{}{}
	}
	a.touched[agent] = struct{}{}
}

// Rescan makes the next Step look at every agent folder, and read those
// that changed since they were last read. Without Hinted every Step does.
func (a *Applier) Rescan() { a.rescan = true }

// ScanTime returns how long the last look at every agent folder took
// (without reading the agents that changed).
func (a *Applier) ScanTime() time.Duration { return a.scanTime }

// scanAgents lists the journal folder and marks for reading every agent
// whose folder may hold lines not yet read: a folder listed or changed
// since it was last read, or whose newest segment is not at the size it
// was read to (changed). It opens no journal file.
func (a *Applier) scanAgents() error {
	start := time.Now()
	defer func() { a.scanTime = time.Since(start) }()
	ents, err := a.fs.ReadDir("journal")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list journals: %w", err)
	}
	if a.touched == nil {
		a.touched = map[string]struct{}{}
	}
	stat, done := a.journalStat()
	defer done()
	a.folders = 0
	listed := make(map[string]bool, len(ents))
	for _, e := range ents {
		name := e.Name()
		listed[name] = true
		if !e.IsDir() {
			if e.Type()&os.ModeSymlink != 0 {
				a.warnOnce("link:"+name, "ignoring a symbolic link in the journal folder (agent folders must be real folders)", "name", name)
			}
			continue
		}
		if name == forgetTouch {
			continue
		}
		if !journal.ValidAgentName(name) {
			a.warnOnce("agent:"+name, "ignoring journal folder with an invalid agent name", "folder", path.Join("journal", name))
			continue
		}
		a.folders++
		if a.changed(name, stat) {
			a.touched[name] = struct{}{}
		}
	}
	// A journal folder the watcher has read from and that is gone: say
	// so; reading resumes where it was if the folder comes back.
	for name, st := range a.m.agents {
		if st.cur.Segment != 0 && !listed[name] {
			a.warnOnce("gone:"+name, "journal folder is gone; waiting for it to come back", "agent", name, "folder", path.Join("journal", name))
		}
	}
	return nil
}

// changed reports whether an agent's folder may hold lines the watcher has
// not read: true unless the folder is as it was last listed (and was
// listed long enough after its last change for its timestamp to tell), the
// agent's cursor is in the newest segment, and that segment is at the size
// it was read to.
func (a *Applier) changed(agent string, stat func(rel string) fileID) bool {
	l, ok := a.listings[agent]
	if !ok || !l.settled() {
		return true
	}
	if stat(agent) != l.dir {
		return true
	}
	if len(l.segs) == 0 {
		return false
	}
	newest := l.segs[len(l.segs)-1]
	cur := a.m.agent(agent).cur
	if (cur.Segment != newest && (cur.Segment != 0 || len(l.segs) > 1)) || l.readTo < 0 {
		return true
	}
	id := stat(agent + "/" + journal.SegmentName(newest))
	return id == (fileID{}) || id.size != l.readTo
}

// journalStat returns a function that returns the identity of a name
// under the journal folder (the zero fileID if it cannot), and a function
// that releases it. On the real file system it is one fstatat system call
// relative to the journal folder, opened once, rather than a walk from the
// state directory per name: a rescan makes two per agent. It only looks:
// what it finds is read, if at all, through the state directory's root
// (G5), so a folder swapped for a link between the listing and the stat
// costs a useless read at worst.
func (a *Applier) journalStat() (func(rel string) fileID, func()) {
	slow := func(rel string) fileID { return a.statID(path.Join("journal", rel)) }
	r, ok := a.fs.(rootFS)
	if !ok {
		return slow, func() {}
	}
	f, err := r.root.Open("journal")
	if err != nil {
		return slow, func() {}
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return slow, func() {}
	}
	return func(rel string) fileID {
		var st unix.Stat_t
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.Fstatat(int(fd), rel, &st, unix.AT_SYMLINK_NOFOLLOW)
		}); err != nil || serr != nil {
			return fileID{}
		}
		return fileID{size: st.Size, mtime: st.Mtim.Nano(), ino: st.Ino}
	}, func() { f.Close() }
}

// warnOnce logs a warning unless the same one was the last logged for key.
func (a *Applier) warnOnce(key, msg string, args ...any) {
	text := fmt.Sprint(args...)
	if a.warned[key] == text {
		return
	}
	a.warned[key] = text
	a.logger.Warn(msg, args...)
}

// readAgent reads up to MaxAgentBatch complete lines, and about budget
// bytes, of an agent's journal from its durable position.
func (a *Applier) readAgent(agent string, budget int64) ([]item, error) {
	if a.stopped[agent] != "" {
		return nil, nil
	}
	folder := path.Join("journal", agent)
	st := a.m.agent(agent)
	if r, ok := a.restart[agent]; ok && st.cur.Segment > r.seg {
		delete(a.restart, agent) // it went on in a newer segment
	}
	segs, err := a.agentSegments(agent, folder)
	if err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		if st.cur.Segment != 0 {
			a.warnOnce("gone:"+agent, "journal segment being read is gone; waiting for it or a newer one", "agent", agent, "segment", journal.SegmentName(st.cur.Segment))
		}
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
		if found && i+1 < len(segs) {
			newer = segs[i+1]
		} else if !found && i < len(segs) {
			newer = segs[i]
		}
		if !found {
			if newer == 0 && i > 0 && st.cur.Segment != 0 {
				// Only older segments: a new writer began again from seq 1
				// in a folder made anew.
				a.restarted(agent, seg, fmt.Sprintf("journal segment %s being read is gone and only older ones (%s) are there: the agent's journal restarted (its folder deleted and made anew?); they are not read. To reuse the name, run `stateward forget --agent %s`",
					journal.SegmentName(seg), journal.SegmentName(segs[0]), agent))
				return out, nil
			}
			if newer == 0 {
				a.warnOnce("gone:"+agent, "journal segment being read is gone; waiting for it or a newer one", "agent", agent, "segment", journal.SegmentName(seg))
				return out, nil
			}
			a.warnOnce("gone:"+agent, "journal segment disappeared; continuing with the next one", "agent", agent, "segment", journal.SegmentName(seg), "next", journal.SegmentName(newer))
			seg, off = newer, 0
			continue
		}
		if r, ok := a.restart[agent]; ok && r.seg == seg {
			// Shorter than what was processed: never read again, lest it be
			// read from the middle of a line once it grows.
			if newer == 0 {
				return out, nil
			}
			seg, off = newer, 0
			continue
		}
		its, end, torn, err := a.readSegment(agent, path.Join(folder, journal.SegmentName(seg)), seg, off, a.MaxAgentBatch-len(out), &budget)
		out = append(out, its...)
		if err != nil {
			return out, err
		}
		off = end
		if len(out) >= a.MaxAgentBatch || newer == 0 || budget <= 0 {
			return out, nil
		}
		if torn > 0 {
			// An unfinished line followed by a newer segment will never be
			// finished: reject it so the journal moves on.
			out = append(out, item{agent: agent, seg: seg, off: off, end: off + torn,
				err: fmt.Errorf("%w: unfinished line of %d bytes at the end of segment %s, which is followed by segment %s",
					journal.ErrBadRecord, torn, journal.SegmentName(seg), journal.SegmentName(newer))})
		}
		seg, off = newer, 0 // the cursor moves there with the next line decided
	}
	return out, nil
}

// listingTTL bounds how long a cached listing of an agent's folder is
// trusted while the folder looks unchanged, when the listing was taken soon
// after the folder's last change (its timestamp may be coarser than the
// time between two changes). A listing taken at least listingTTL after the
// folder's timestamp is trusted until the folder changes.
const listingTTL = time.Second

// listing is the cached list of an agent's segments.
type listing struct {
	segs   []uint64
	dir    fileID    // the folder's identity when listed
	at     time.Time // when listed
	readTo int64     // size of the newest segment when last read to its end; -1: not read to its end
}

// settled reports whether the listing can be trusted for as long as the
// folder's identity does not change.
func (l listing) settled() bool {
	return l.dir != (fileID{}) && l.at.UnixNano()-l.dir.mtime >= int64(listingTTL)
}

// agentSegments returns an agent's segments, listing the folder again only
// when it changed (a segment created, deleted or renamed changes the
// folder's timestamp) or the listing is not settled and older than
// listingTTL.
func (a *Applier) agentSegments(agent, folder string) ([]uint64, error) {
	id := a.statID(folder)
	if l, ok := a.listings[agent]; ok && l.dir == id && id != (fileID{}) && (l.settled() || time.Since(l.at) < listingTTL) {
		return l.segs, nil
	}
	segs, err := listSegments(a.fs, folder)
	if err != nil {
		delete(a.listings, agent)
		return nil, err
	}
	a.listings[agent] = listing{segs: segs, dir: id, at: time.Now(), readTo: -1}
	return segs, nil
}

// readSegment reads up to limit complete lines of a segment from off, and
// stops once it has taken *budget bytes (at least one line), which it
// decrements. It returns the end of the last line read and the length of
// an unfinished line after it.
func (a *Applier) readSegment(agent, name string, seg uint64, off int64, limit int, budget *int64) ([]item, int64, int64, error) {
	f, err := a.fs.OpenFile(name, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, off, 0, nil
	}
	if err != nil {
		return nil, off, 0, fmt.Errorf("open %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, off, 0, fmt.Errorf("stat %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, off, 0, fmt.Errorf("%s is not a regular file", name)
	}
	if fi.Size() <= off {
		a.readTo(agent, seg, fi.Size())
	}
	if fi.Size() < off {
		a.restarted(agent, seg, fmt.Sprintf("journal segment is shorter than what was already processed (%s: %d bytes, %d processed): the agent's journal restarted (its folder deleted and made anew?) or was truncated; it is not read again, only newer segments are. To reuse the name, run `stateward forget --agent %s`",
			name, fi.Size(), off, agent))
		return nil, off, 0, nil
	}
	if fi.Size() == off {
		return nil, off, 0, nil
	}
	rd := journal.NewReader(io.NewSectionReader(f, off, fi.Size()-off), off)
	rd.MaxLine = a.MaxLine
	var out []item
	for len(out) < limit && (*budget > 0 || len(out) == 0) {
		rec, err := rd.Next()
		switch {
		case err == nil:
			out = append(out, item{agent: agent, seg: seg, off: rec.Offset, end: rec.End(), line: bytes.Clone(rec.Line)})
			*budget -= int64(len(rec.Line))
		case errors.Is(err, journal.ErrLineTooLong):
			out = append(out, item{agent: agent, seg: seg, off: rec.Offset, end: rd.Offset(), err: err})
		case errors.Is(err, io.EOF):
			a.readTo(agent, seg, fi.Size())
			return out, rd.Offset(), 0, nil
		case errors.Is(err, io.ErrUnexpectedEOF):
			a.readTo(agent, seg, fi.Size())
			return out, rd.Offset(), fi.Size() - rd.Offset(), nil
		default:
			return out, rd.Offset(), 0, fmt.Errorf("read %s: %w", name, err)
		}
	}
	return out, rd.Offset(), 0, nil
}

// readTo notes that an agent's segment seg was read to its end, at size
// bytes: if it is the newest, the agent has nothing more to read until it
// grows (changed).
func (a *Applier) readTo(agent string, seg uint64, size int64) {
	if l, ok := a.listings[agent]; ok && len(l.segs) > 0 && l.segs[len(l.segs)-1] == seg {
		l.readTo = size
		a.listings[agent] = l
	}
}

// restarted is an agent's journal segment that became shorter than the
// agent's position in it (or, gone, left only older ones): the signature of
// a journal deleted and begun again under the same name.
type restarted struct {
	seg uint64
	why string
}

// restarted notes that an agent's journal restarted below its position,
// with an error in the log and in status. The segment is not read again;
// `stateward forget` makes the name start afresh, reading the journal from
// its start.
func (a *Applier) restarted(agent string, seg uint64, why string) {
	if r, ok := a.restart[agent]; ok && r.why == why {
		return
	}
	a.restart[agent] = restarted{seg: seg, why: why}
	a.lastErr[agent] = why
	a.statusDirty = true
	a.logger.Error("agent's journal restarted below the processed position", "agent", agent, "error", why)
}

// forgetTouch is what Touch is given for a change in the folder of forget
// requests.
const forgetTouch = ".forget"
