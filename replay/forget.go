package replay

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/stateward/stateward/journal"
)

// Forgetting an agent (`stateward forget`, docs/format.md "Forgetting an
// agent"). A request is a file DIR/journal/.forget/<agent>.<nonce>.req; the
// watcher answers it with <agent>.<nonce>.done. For each request it:
//
//  1. takes the agent's writer lock (journal.LockAgent), or answers
//     "refused" if a writer holds it;
//  2. holding it, processes what is left in the agent's journal, as usual;
//  3. once nothing is left, commits a batch whose record lists the agent
//     under "forget": from that record on, replay, recovery and checkpoints
//     know the agent no more (no position, no retained results);
//  4. deletes the agent's result segments, then its journal segments (up to
//     the newest, whose size the record holds), fsyncing both folders;
//  5. writes the answer (fsynced), deletes the request and releases the
//     lock.
//
// A crash after 3 is finished by recovery: the results of the last record's
// forgotten agents are deleted again (no later result can exist), and the
// journal segments too while the request is there and not yet answered,
// under the writer lock, and only if the journal is as the record says.
// Otherwise the agent is stopped with an error.
//
// An agent whose journal restarted below what was processed (its folder
// deleted and created again by hand) is stopped: nothing of it is read, and
// the log and status say to forget it. Its forget keeps the journal, whose
// lines are then read from the start as the new incarnation's.

// forgetDir is the folder of forget requests and answers, under journal/
// because agents (and operators in their group) may write there; no agent
// name starts with a dot.
const forgetDir = "journal/.forget"

// forgetRecord is what a commit record says of a forgotten agent.
type forgetRecord struct {
	// Request is the name of the request file in journal/.forget.
	Request string `json:"request"`
	// Segment and Size are the agent's newest journal segment and its size
	// when it was forgotten: what recovery may still delete. Segment 0:
	// the journal is kept (an agent stopped because its journal restarted).
	Segment uint64 `json:"segment,omitempty"`
	Size    int64  `json:"size,omitempty"`
}

// forgetAnswer is the line of an answer file.
type forgetAnswer struct {
	Agent  string `json:"agent"`
	Status string `json:"status"` // "forgotten" or "refused"
	Batch  uint64 `json:"batch,omitempty"`
	Error  string `json:"error,omitempty"`
}

// forgetting is a request being carried out: the agent's lock is held.
type forgetting struct {
	request string
	lock    *journal.AgentLock // nil if the agent has no journal folder
}

// ForgetRequest returns the request file name for agent with nonce, and
// the name of its answer, relative to the state directory.
func ForgetRequest(agent, nonce string) (request, answer string) {
	base := path.Join(forgetDir, agent+"."+nonce)
	return base + ".req", base + ".done"
}

// parseRequest returns the agent of a request file name.
func parseRequest(name string) (string, bool) {
	base, ok := strings.CutSuffix(name, ".req")
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(base, '.')
	if i < 0 {
		return "", false
	}
	agent := base[:i]
	return agent, journal.ValidAgentName(agent)
}

// takeForgets looks for new forget requests, takes each agent's lock or
// refuses the request, and marks the agents to be read.
func (a *Applier) takeForgets() {
	ents, err := a.fs.ReadDir(forgetDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		agent, ok := parseRequest(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if f := a.forgets[agent]; f != nil {
			if f.request != e.Name() {
				// A second request for the same agent: it is answered with
				// the first (once the agent is forgotten, it is new).
				continue
			}
			a.Touch(agent)
			continue
		}
		lk, err := journal.LockAgent(a.dir, agent)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			a.logger.Warn("forget refused", "agent", agent, "error", err)
			a.answerForget(e.Name(), forgetAnswer{Agent: agent, Status: "refused", Error: err.Error()})
			continue
		}
		a.logger.Info("forgetting agent: processing what is left of its journal first", "agent", agent, "request", e.Name())
		a.forgets[agent] = &forgetting{request: e.Name(), lock: lk}
		a.Touch(agent)
	}
}

// readyForgets returns the agents whose forget can be decided in this
// batch: those with no line in it (the lock keeps writers out, so nothing
// more will come).
func (a *Applier) readyForgets(items []item) map[string]forgetRecord {
	if len(a.forgets) == 0 {
		return nil
	}
	busy := map[string]bool{}
	for _, it := range items {
		busy[it.agent] = true
	}
	out := map[string]forgetRecord{}
	for agent, f := range a.forgets {
		if busy[agent] {
			continue
		}
		fr := forgetRecord{Request: f.request}
		if _, ok := a.restart[agent]; !ok {
			segs, _ := listSegments(a.fs, path.Join("journal", agent))
			if n := len(segs); n > 0 {
				fr.Segment = segs[n-1]
				if fi, err := a.fs.Lstat(path.Join("journal", agent, journal.SegmentName(fr.Segment))); err == nil {
					fr.Size = fi.Size()
				}
			}
		}
		out[agent] = fr
	}
	return out
}

// forgetAgents drops what the machine knows of the agents a record
// forgets: replay, recovery and the live loop all call it.
func (m *machine) forgetAgents(rec *commitRecord) {
	for agent := range rec.Forget {
		delete(m.agents, agent)
	}
}

// finishForgets deletes what the forgotten agents of a committed batch
// left, answers the requests and releases the locks. With redo (recovery),
// the journal is deleted only while the request is there unanswered, and
// under the agent's lock.
func (a *Applier) finishForgets(batch uint64, fr map[string]forgetRecord, redo bool) error {
	agents := make([]string, 0, len(fr))
	for agent := range fr {
		agents = append(agents, agent)
	}
	slices.Sort(agents)
	for _, agent := range agents {
		rec := fr[agent]
		if f := a.res[agent]; f != nil {
			f.Close()
			delete(a.res, agent)
		}
		delete(a.dirty, agent)
		if err := a.deleteSegments(path.Join("results", agent), 0, -1); err != nil {
			return err
		}
		a.point("forget-results-deleted:" + agent)
		reqPath := path.Join(forgetDir, rec.Request)
		ansPath := strings.TrimSuffix(reqPath, ".req") + ".done"
		f := a.forgets[agent]
		if redo {
			if _, err := a.fs.Lstat(reqPath); err != nil {
				continue // answered and finished before the crash
			}
			if _, err := a.fs.Lstat(ansPath); err == nil {
				a.fs.Remove(reqPath)
				continue
			}
			lk, err := journal.LockAgent(a.dir, agent)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				a.stop(agent, fmt.Sprintf("the forget of agent %s was interrupted by a crash, and a writer opened its journal before it was finished (%v): its journal is not read; stop the writer, then run `stateward forget --agent %s` again", agent, err, agent))
				continue
			}
			f = &forgetting{request: rec.Request, lock: lk}
			a.forgets[agent] = f
		}
		if rec.Segment != 0 {
			if err := a.deleteSegments(path.Join("journal", agent), rec.Segment, rec.Size); err != nil {
				if errors.Is(err, errJournalMoved) {
					a.stop(agent, fmt.Sprintf("the forget of agent %s was interrupted by a crash, and its journal was written to before it was finished (%v): its journal is not read; move the agent's journal folder away and run `stateward forget --agent %s` again", agent, err, agent))
					a.releaseForget(agent)
					continue
				}
				return err
			}
			a.point("forget-journal-deleted:" + agent)
		}
		a.answerForget(rec.Request, forgetAnswer{Agent: agent, Status: "forgotten", Batch: batch})
		a.releaseForget(agent)
		delete(a.listings, agent)
		delete(a.stopped, agent)
		delete(a.restart, agent)
		delete(a.lastErr, agent)
		for k := range a.warned {
			if strings.HasSuffix(k, ":"+agent) {
				delete(a.warned, k)
			}
		}
		a.Touch(agent) // a new incarnation may already be writing
		a.logger.Info("agent forgotten: its name starts afresh", "agent", agent, "batch", batch)
	}
	return nil
}

// releaseForget releases the lock of a forget and forgets the request.
func (a *Applier) releaseForget(agent string) {
	if f := a.forgets[agent]; f != nil {
		if f.lock != nil {
			f.lock.Close()
		}
		delete(a.forgets, agent)
	}
}

// errJournalMoved is returned by deleteSegments when a journal holds more
// than a forget record says.
var errJournalMoved = errors.New("journal holds lines written after the forget")

// deleteSegments deletes the segments of a folder up to segment upTo (all,
// if 0) and fsyncs the folder. With size >= 0, a segment after upTo, or
// upTo longer than size, is errJournalMoved and nothing is deleted.
func (a *Applier) deleteSegments(folder string, upTo uint64, size int64) error {
	segs, err := listSegments(a.fs, folder)
	if err != nil {
		return a.fail(err)
	}
	if size >= 0 && len(segs) > 0 {
		last := segs[len(segs)-1]
		if last > upTo {
			return fmt.Errorf("%w: segment %s", errJournalMoved, journal.SegmentName(last))
		}
		if fi, err := a.fs.Lstat(path.Join(folder, journal.SegmentName(upTo))); err == nil && fi.Size() > size {
			return fmt.Errorf("%w: segment %s is %d bytes, was %d", errJournalMoved, journal.SegmentName(upTo), fi.Size(), size)
		}
	}
	n := 0
	for _, s := range segs {
		if upTo != 0 && s > upTo {
			break
		}
		name := path.Join(folder, journal.SegmentName(s))
		if err := a.fs.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			return a.fail(fmt.Errorf("delete %s of a forgotten agent: %w", name, err))
		}
		n++
	}
	if n > 0 {
		if err := syncDir(a.fs, folder); err != nil {
			return a.fail(fmt.Errorf("sync %s: %w", folder, err))
		}
	}
	return nil
}

// answerForget writes the answer to a request (fsynced) and deletes the
// request. A failure is logged: the requester times out.
func (a *Applier) answerForget(request string, ans forgetAnswer) {
	reqPath := path.Join(forgetDir, request)
	ansPath := strings.TrimSuffix(reqPath, ".req") + ".done"
	line, _ := json.Marshal(ans)
	err := func() error {
		f, err := createFresh(a.fs, ansPath+".tmp", privateFileMode)
		if err != nil {
			return err
		}
		_, err = f.Write(append(line, '\n'))
		if err == nil {
			err = syncFile(f)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = a.fs.Rename(ansPath+".tmp", ansPath)
		}
		if err == nil {
			a.point("forget-answered")
		}
		if err == nil {
			err = a.fs.Remove(reqPath)
		}
		if err == nil {
			err = syncDir(a.fs, forgetDir)
		}
		return err
	}()
	if err != nil {
		a.logger.Error("cannot answer a forget request", "request", filepath.Join(a.dir, reqPath), "error", err)
	}
}

// stop stops reading an agent's journal, with an error in the log and in
// status, until the agent is forgotten.
func (a *Applier) stop(agent, why string) {
	if a.stopped[agent] == why {
		return
	}
	a.stopped[agent] = why
	a.lastErr[agent] = why
	a.statusDirty = true
	a.logger.Error("agent stopped", "agent", agent, "error", why)
}
