package replay

import (
	"errors"
	"os"
	"path"
	"time"

	"github.com/stateward/stateward/journal"
)

// Defaults of result retention (G7).
const (
	// DefaultResultSegmentsKept is how many result segments per agent are
	// always kept, the newest included.
	DefaultResultSegmentsKept = 4
	// DefaultResultRetention is how long a result segment is kept after
	// its last write, whatever the count.
	DefaultResultRetention = 7 * 24 * time.Hour
)

// compactJournal deletes the segments of an agent's journal that lie
// wholly before its cursor: every line in them is processed, and the
// commit record that says so is durable. The newest segment is never
// deleted (its writer may append to it), and neither is the cursor's.
func (a *Applier) compactJournal(agent string) {
	folder := path.Join("journal", agent)
	segs, err := listSegments(a.fs, folder)
	if err != nil || len(segs) < 2 {
		return
	}
	cur := a.m.agent(agent).cur.Segment
	for _, s := range segs[:len(segs)-1] {
		if s >= cur {
			break
		}
		name := path.Join(folder, journal.SegmentName(s))
		if err := a.fs.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.warnOnce("compact:"+agent, "cannot delete a processed journal segment (does the watcher have write access to the agent's folder?)", "segment", name, "error", err)
			return
		}
		delete(a.listings, agent)
		a.point("after-journal-delete:" + agent)
		a.logger.Debug("deleted processed journal segment", "segment", name)
	}
}

// pruneResults deletes an agent's oldest result segments beyond
// ResultSegmentsKept that have not been written for ResultRetention. Only
// segments before the current one are candidates, and they were fsynced
// when the agent's results moved on from them.
func (a *Applier) pruneResults(agent string) {
	folder := path.Join("results", agent)
	segs, err := listSegments(a.fs, folder)
	if err != nil || len(segs) <= a.ResultSegmentsKept {
		return
	}
	cur := a.m.agent(agent).res.Segment
	for _, s := range segs[:len(segs)-a.ResultSegmentsKept] {
		if s >= cur {
			break
		}
		name := path.Join(folder, journal.SegmentName(s))
		fi, err := a.fs.Lstat(name)
		if err != nil || time.Since(fi.ModTime()) < a.ResultRetention {
			continue
		}
		if err := a.fs.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.warnOnce("prune:"+agent, "cannot delete an old results segment", "segment", name, "error", err)
			return
		}
		a.point("after-results-delete:" + agent)
	}
}
