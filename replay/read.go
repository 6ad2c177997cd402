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

// readJournals reads the ready lines of every agent, interleaved fairly:
// the first line of each agent, then the second of each, and so on, up to
// MaxBatch lines, starting with a different agent at each batch.
func (a *Applier) readJournals() ([]item, error) {
	ents, err := a.fs.ReadDir("journal")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list journals: %w", err)
	}
	// Each agent may hold an equal share of the batch's byte budget, and
	// always at least one line.
	agents := 0
	for _, e := range ents {
		if e.IsDir() {
			agents++
		}
	}
	budget := a.MaxBatchBytes / int64(max(agents, 1))
	var per [][]item
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() {
			if e.Type()&os.ModeSymlink != 0 {
				a.warnOnce("link:"+name, "ignoring a symbolic link in the journal folder (agent folders must be real folders)", "name", name)
			}
			continue
		}
		if !journal.ValidAgentName(name) {
			a.warnOnce("agent:"+name, "ignoring journal folder with an invalid agent name", "folder", path.Join("journal", name))
			continue
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
		}
	}
	// A journal folder the watcher has read from and that is gone: say
	// so; reading resumes where it was if the folder comes back.
	listed := make(map[string]bool, len(ents))
	for _, e := range ents {
		listed[e.Name()] = true
	}
	for name, st := range a.m.agents {
		if st.cur.Segment != 0 && !listed[name] {
			a.warnOnce("gone:"+name, "journal folder is gone; waiting for it to come back", "agent", name, "folder", path.Join("journal", name))
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
	folder := path.Join("journal", agent)
	st := a.m.agent(agent)
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
			if newer == 0 {
				a.warnOnce("gone:"+agent, "journal segment being read is gone; waiting for it or a newer one", "agent", agent, "segment", journal.SegmentName(seg))
				return out, nil
			}
			a.warnOnce("gone:"+agent, "journal segment disappeared; continuing with the next one", "agent", agent, "segment", journal.SegmentName(seg), "next", journal.SegmentName(newer))
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
// trusted while the folder looks unchanged (its timestamp may be coarser
// than the time between two changes).
const listingTTL = time.Second

// listing is the cached list of an agent's segments.
type listing struct {
	segs []uint64
	dir  fileID    // the folder's identity when listed
	at   time.Time // when listed
}

// agentSegments returns an agent's segments, listing the folder again only
// when it changed (a segment created, deleted or renamed changes the
// folder's timestamp) or the listing is older than listingTTL.
func (a *Applier) agentSegments(agent, folder string) ([]uint64, error) {
	id := a.statID(folder)
	if l, ok := a.listings[agent]; ok && l.dir == id && id != (fileID{}) && time.Since(l.at) < listingTTL {
		return l.segs, nil
	}
	segs, err := listSegments(a.fs, folder)
	if err != nil {
		delete(a.listings, agent)
		return nil, err
	}
	a.listings[agent] = listing{segs: segs, dir: id, at: time.Now()}
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
	if fi.Size() < off {
		a.warnOnce("trunc:"+agent, "journal segment is shorter than what was already processed (truncated or replaced under the watcher); waiting for it to grow past the processed position",
			"agent", agent, "segment", name, "size", fi.Size(), "processed", off)
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
			return out, rd.Offset(), 0, nil
		case errors.Is(err, io.ErrUnexpectedEOF):
			return out, rd.Offset(), fi.Size() - rd.Offset(), nil
		default:
			return out, rd.Offset(), 0, fmt.Errorf("read %s: %w", name, err)
		}
	}
	return out, rd.Offset(), 0, nil
}
