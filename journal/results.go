package journal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Poll intervals of Results.Wait: with fsnotify events the poll is only a
// safety net; without them (inotify unavailable, NFS) it is the only signal.
const (
	DefaultSafetyPoll   = time.Second
	DefaultFallbackPoll = 20 * time.Millisecond
)

// DefaultMaxBuffered is how many results a Results keeps read ahead of the
// seq it waits for, for the Waits to come: enough for an agent that
// pipelines thousands of intents, a few hundred KiB of memory at most.
const DefaultMaxBuffered = 4096

// ErrResultGone is returned by Results.Wait for a result that was written
// but has since been deleted under the watcher's retention policy.
var ErrResultGone = errors.New("journal: result no longer retained")

// Results follows one agent's results folder, results/<agent>/ under a state
// directory, and hands out results by seq. It is not safe for concurrent use.
//
// Results read while waiting for one seq are kept for later Waits, at most
// MaxBuffered of them: an agent that never waits for some of its results
// (fire and forget), or waits for them out of order, costs bounded memory.
// Past the bound, the results below the seq waited for go first, then the
// ones above it; a later Wait for a result that was let go reads the files
// again from the segment that holds it.
type Results struct {
	MaxBuffered int // results kept read ahead at most, >= 1; set by OpenResults

	dir, agent, path string

	w      *fsnotify.Watcher // nil when inotify is unavailable
	poll   time.Duration
	seg    uint64 // current segment (first seq), 0 before the first scan
	off    int64  // offset in it of the next unread line
	floor  uint64 // lowest seq kept; results below it are dropped
	want   uint64 // the seq the current Wait is for
	above  uint64 // highest seq let go above a Wait's seq, 0 if none
	found  map[uint64]Result
	f      *os.File // segment seg, kept open between scans
	oldest uint64   // first seq of the oldest results segment at the last scan
	inited bool
}

// OpenResults returns a follower of agent's results in the state directory
// dir. The folder need not exist yet: the watcher creates it.
func OpenResults(dir, agent string) (*Results, error) {
	if err := CheckAgentName(agent); err != nil {
		return nil, err
	}
	r := &Results{
		dir:   dir,
		agent: agent,
		path:  filepath.Join(dir, "results", agent),
		found: make(map[uint64]Result),
		poll:  DefaultFallbackPoll,

		MaxBuffered: DefaultMaxBuffered,
	}
	if w, err := fsnotify.NewWatcher(); err == nil {
		r.w = w
		r.poll = DefaultSafetyPoll
		r.addWatch()
	}
	return r, nil
}

// addWatch watches the results folder, or its parent until it exists.
func (r *Results) addWatch() {
	if r.w == nil || r.inited {
		return
	}
	if err := r.w.Add(r.path); err == nil {
		r.inited = true
		return
	}
	_ = r.w.Add(filepath.Join(r.dir, "results")) // may not exist yet either: then we poll
}

// Close stops following.
func (r *Results) Close() error {
	r.closeSegment()
	if r.w != nil {
		return r.w.Close()
	}
	return nil
}

func (r *Results) closeSegment() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// Wait returns the result for seq, waiting for it until ctx is done. It
// returns the first result written for seq (the original, not a copy answering
// a retry).
func (r *Results) Wait(ctx context.Context, seq uint64) (Result, error) {
	if seq == 0 {
		return Result{}, fmt.Errorf("%w: seq must be >= 1", ErrBadRecord)
	}
	if r.MaxBuffered < 1 {
		return Result{}, fmt.Errorf("journal: MaxBuffered must be >= 1, got %d", r.MaxBuffered)
	}
	if _, ok := r.found[seq]; !ok && (r.seg == 0 || seq < r.floor || seq <= r.above) {
		// Not read yet, or read and let go: read again from the segment
		// that holds it.
		r.closeSegment()
		r.seg, r.off, r.floor, r.above = 0, 0, seq, 0
		clear(r.found)
	}
	r.want = seq
	tick := time.NewTicker(r.poll)
	defer tick.Stop()
	var events <-chan fsnotify.Event
	var errs <-chan error
	if r.w != nil {
		events, errs = r.w.Events, r.w.Errors
	}
	for {
		// First read on in the open segment, the common case; list the
		// folder (a new segment? a deleted one?) only if that did not do.
		if r.f != nil {
			if _, err := r.readSegment(); err != nil {
				return Result{}, err
			}
		}
		if _, ok := r.found[seq]; !ok {
			if err := r.scan(); err != nil {
				return Result{}, err
			}
		}
		if res, ok := r.found[seq]; ok {
			delete(r.found, seq)
			return res, nil
		}
		if r.oldest > seq {
			// Results are written in seq order and a segment is named by
			// its first: seq's result was in a segment since deleted.
			return Result{}, fmt.Errorf("%w: seq %d (the oldest results segment starts at %d)", ErrResultGone, seq, r.oldest)
		}
		select {
		case <-ctx.Done():
			return Result{}, fmt.Errorf("wait for result of seq %d: %w", seq, ctx.Err())
		case <-events:
			r.addWatch()
		case <-errs: // an overflow or error: the next scan reads the files anyway
		case <-tick.C:
			r.addWatch()
		case <-r.notYet():
		}
	}
}

// notYet fires soon while no watch is on the results folder yet (it does
// not exist): until then, events may not tell about it.
func (r *Results) notYet() <-chan time.Time {
	if r.w == nil || r.inited {
		return nil
	}
	return time.After(DefaultFallbackPoll)
}

// scan reads every complete result line past the current position.
func (r *Results) scan() error {
	segs, err := ListSegments(r.path)
	if err != nil || len(segs) == 0 {
		return err
	}
	r.oldest = segs[0]
	if r.seg == 0 {
		// Start at the newest segment that begins at or before floor, and
		// whose first line is an original result: one that begins with a
		// retry copy (or a result without seq) is named by that line (docs/format.md, Result),
		// which may be lower than originals in the segments before it.
		i := 0
		for j, s := range segs {
			if s <= r.floor {
				i = j
			}
		}
		for i > 0 && !r.startsWithOriginal(segs[i]) {
			i--
		}
		r.seg, r.off = segs[i], 0
	}
	for i, s := range segs {
		if s < r.seg {
			continue
		}
		if s > r.seg {
			r.closeSegment()
			r.seg, r.off = s, 0
		}
		full, err := r.readSegment()
		if err != nil || full {
			return err
		}
		if i == len(segs)-1 {
			break
		}
	}
	return nil
}

// startsWithOriginal reports whether the first line of segment seg is a
// complete result with a seq that does not answer a retry.
func (r *Results) startsWithOriginal(seg uint64) bool {
	f, err := os.Open(filepath.Join(r.path, SegmentName(seg)))
	if err != nil {
		return false
	}
	defer f.Close()
	rd := NewReader(f, 0)
	rec, err := rd.Next()
	if err != nil {
		return false
	}
	res, err := ParseResult(rec.Line)
	return err == nil && res.Seq > 0 && !res.Retry
}

// readSegment reads the complete result lines of segment r.seg past r.off.
// It stops early, and reports full, once it holds the result waited for and
// MaxBuffered others.
func (r *Results) readSegment() (full bool, err error) {
	p := filepath.Join(r.path, SegmentName(r.seg))
	if r.f == nil {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			return false, nil // compacted away under us: the next listing moves on
		}
		if err != nil {
			return false, fmt.Errorf("open results %s: %w", p, err)
		}
		r.f = f
	}
	fi, err := r.f.Stat()
	if err != nil {
		return false, fmt.Errorf("stat results %s: %w", p, err)
	}
	if fi.Size() <= r.off {
		return false, nil
	}
	rd := NewReader(io.NewSectionReader(r.f, r.off, fi.Size()-r.off), r.off)
	rd.MaxLine = 1<<63 - 1
	for {
		rec, err := rd.Next()
		if err != nil {
			r.off = rd.Offset()
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return false, nil
			}
			return false, fmt.Errorf("read results %s: %w", p, err)
		}
		res, err := ParseResult(rec.Line)
		if err != nil || res.Seq < r.floor {
			continue
		}
		if _, dup := r.found[res.Seq]; dup {
			continue
		}
		if res.Seq != r.want && len(r.found) >= r.MaxBuffered {
			if _, ok := r.found[r.want]; ok {
				// Enough read ahead: this line and the rest wait in the file.
				r.off = rec.Offset
				return true, nil
			}
			// Make room: let go of the results below the one waited for (a
			// later Wait for one reads the files again, its seq being below
			// the floor), then of this one (a later Wait for it reads again,
			// its seq being at or below above).
			if r.floor < r.want {
				for s := range r.found {
					if s < r.want {
						delete(r.found, s)
					}
				}
				r.floor = r.want
			}
			if res.Seq < r.floor {
				continue
			}
			if len(r.found) >= r.MaxBuffered {
				r.above = max(r.above, res.Seq)
				continue
			}
		}
		r.found[res.Seq] = res
	}
}

// WaitResult waits for the result of seq in agent's results under dir. For
// many waits, keep one Results open instead.
func WaitResult(ctx context.Context, dir, agent string, seq uint64) (Result, error) {
	r, err := OpenResults(dir, agent)
	if err != nil {
		return Result{}, err
	}
	defer r.Close()
	return r.Wait(ctx, seq)
}
