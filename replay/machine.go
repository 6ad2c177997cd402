package replay

import (
	"errors"
	"fmt"
	"sort"

	"github.com/stateward/stateward/journal"
)

// DefaultRetainResults is how many results per agent the watcher keeps in
// memory to answer retries (docs/format.md, Intent): a retry of an older seq or id is beyond the
// retention window.
const DefaultRetainResults = 10_000

// machine is the deterministic state machine behind every path that decides:
// the live loop, recovery and replay --verify. Given the same records in the
// same order, with the same adoptions, it makes the same decisions and the
// same documents. It does no I/O.
type machine struct {
	docs   map[string]*docState
	agents map[string]*agentState
	commit uint64 // last commit number used
	retain int    // results kept per agent for retries

	// The limits intents are decided with (Doc.MaxSize, Doc.MaxDepth); 0
	// is no size limit and the parser's depth limit. Each commit record
	// holds them, so that replay decides as the batch was decided.
	maxDocSize int64
	maxDepth   int

	// load, if set, is asked about a document the machine has not seen. It
	// returns the adoption that takes in what is on disk, if anything is.
	// Adoptions made this way are appended to adopted.
	load    func(name string) (adoption, bool)
	adopted []adoption
}

// docState is a document as the machine sees it.
type docState struct {
	doc     *Doc
	version uint64
	broken  string // non-empty while the file on disk is unusable: why
	dirty   bool   // changed in memory by the current batch
	hash    string // SHA-256 of the committed bytes ("" if it does not exist)
	data    []byte // the committed bytes, encoded once per batch
}

// agentState is an agent's position and its recent results.
type agentState struct {
	cur      cursor
	res      resultPos
	retained []journal.Result // results with a seq, ascending seq, from head on
	head     int
	byID     map[string]journal.Result
}

func newMachine(retain int) *machine {
	return &machine{docs: map[string]*docState{}, agents: map[string]*agentState{}, retain: retain}
}

func (m *machine) agent(name string) *agentState {
	a := m.agents[name]
	if a == nil {
		a = &agentState{byID: map[string]journal.Result{}}
		m.agents[name] = a
	}
	return a
}

// doc returns the state of a document, creating the state of one that was
// never seen (version 0, does not exist).
func (m *machine) doc(name string) *docState {
	d := m.docs[name]
	if d == nil {
		d = &docState{doc: &Doc{}}
		m.docs[name] = d
		if m.load != nil {
			if ad, ok := m.load(name); ok {
				if err := m.adopt(ad); err != nil {
					ad = adoption{File: name, Broken: err.Error()}
					d.broken = ad.Broken
				}
				m.adopted = append(m.adopted, ad)
			}
		}
	}
	return d
}

// adopt takes in an external change of a document.
func (m *machine) adopt(ad adoption) error {
	d := m.doc(ad.File)
	if ad.Broken != "" {
		d.broken = ad.Broken
		return nil
	}
	d.broken = ""
	d.version = ad.Version
	if !ad.Exists {
		d.doc, d.hash, d.data = &Doc{}, "", nil
		return nil
	}
	doc, err := ParseDoc(ad.Data)
	if err != nil {
		return fmt.Errorf("adopt %s: %w", ad.File, err)
	}
	d.doc, d.hash, d.data = doc, journal.Hash(ad.Data), ad.Data
	return nil
}

// decide processes one journal line of agent and returns its entry. line is
// nil when the line could not be read (lineErr says why). It mutates the
// documents in memory; the caller makes the batch durable.
func (m *machine) decide(agent string, seg uint64, off int64, line []byte, lineErr error) entry {
	a := m.agent(agent)
	e := entry{Agent: agent, Segment: seg, Offset: off}
	reject := func(seq uint64, msg string) entry {
		m.commit++
		e.Result.Seq = seq
		e.Result.Status = journal.StatusRejected
		e.Result.Commit = m.commit
		e.Result.Error = msg
		if seq == 0 {
			o := off
			e.Result.Segment, e.Result.Offset = journal.SegmentName(seg), &o
		}
		return e
	}
	if lineErr != nil {
		return reject(0, ResultError(lineErr))
	}
	in, seq, perr := journal.ParseIntent(line)
	if perr == nil || seq > 0 {
		e.Intent = trimLine(line)
	}
	if seq == 0 {
		return reject(0, ResultError(perr))
	}
	e.Result.ID, e.Result.File = in.ID, in.File
	if seq <= a.cur.Seq {
		if orig, ok := a.find(seq); ok {
			return m.retry(e, orig, seq, in)
		}
		r := reject(seq, fmt.Sprintf("seq %d is not greater than the last processed seq %d, and its result is no longer retained", seq, a.cur.Seq))
		return r
	}
	a.cur.Seq = seq
	if perr != nil {
		r := reject(seq, ResultError(perr))
		a.keep(r.Result, m.retain)
		return r
	}
	if in.ID != "" {
		if orig, ok := a.byID[in.ID]; ok {
			r := m.retry(e, orig, seq, in)
			a.keep(r.Result, m.retain)
			return r
		}
	}
	m.commit++
	e.Result = m.apply(in)
	e.Result.Commit = m.commit
	a.keep(e.Result, m.retain)
	return e
}

// retry answers a record that repeats an earlier one with a copy of the
// original result.
func (m *machine) retry(e entry, orig journal.Result, seq uint64, in journal.Intent) entry {
	r := orig
	r.Seq, r.ID, r.File, r.Retry = seq, in.ID, in.File, true
	r.Segment, r.Offset = "", nil
	e.Result = r
	return e
}

// apply decides an intent against its document.
func (m *machine) apply(in journal.Intent) journal.Result {
	r := journal.Result{Seq: in.Seq, ID: in.ID, File: in.File}
	d := m.doc(in.File)
	r.Version = d.version
	fail := func(status, msg string) journal.Result {
		r.Status, r.Error = status, msg
		return r
	}
	if d.broken != "" {
		return fail(journal.StatusRejected, fmt.Sprintf("document %s on disk is unusable (%s): repair or remove the file, then resubmit", in.File, d.broken))
	}
	if in.IfVersion != nil && *in.IfVersion != d.version {
		return fail(journal.StatusConflict, fmt.Sprintf("if_version %d: %s is at version %d", *in.IfVersion, in.File, d.version))
	}
	d.doc.MaxSize, d.doc.MaxDepth = m.maxDocSize, m.maxDepth
	var err error
	if len(in.Patch) > 0 {
		var ops []Op
		ops, err = DecodePatch(in.Patch)
		switch {
		case err == nil && len(ops) == 0 && !d.doc.Exists():
			// It would apply and leave nothing to write: a version
			// without a document (and once, an empty file on disk).
			err = &PatchError{Code: CodeInvalidPatch, Op: -1, Msg: fmt.Sprintf("empty patch on %s, which does not exist: create it with add at the path \"\"", in.File)}
		case err == nil:
			err = d.doc.Apply(ops)
		}
	} else {
		err = d.doc.Merge(in.Merge)
	}
	switch {
	case errors.Is(err, ErrTestFailed):
		return fail(journal.StatusConflict, ResultError(err))
	case err != nil:
		return fail(journal.StatusRejected, ResultError(err))
	}
	d.version++
	d.dirty = true
	r.Status, r.Version = journal.StatusApplied, d.version
	return r
}

// find returns the retained result for seq.
func (a *agentState) find(seq uint64) (journal.Result, bool) {
	kept := a.retained[a.head:]
	i := sort.Search(len(kept), func(i int) bool { return kept[i].Seq >= seq })
	if i < len(kept) && kept[i].Seq == seq {
		return kept[i], true
	}
	return journal.Result{}, false
}

// keep retains a result for retries, dropping the oldest past the limit:
// exactly the last limit results are kept, whatever came before.
func (a *agentState) keep(r journal.Result, limit int) {
	a.retained = append(a.retained, r)
	if r.ID != "" {
		if _, dup := a.byID[r.ID]; !dup {
			a.byID[r.ID] = r
		}
	}
	for len(a.retained)-a.head > limit {
		old := a.retained[a.head]
		if old.ID != "" && a.byID[old.ID].Seq == old.Seq {
			delete(a.byID, old.ID)
		}
		a.retained[a.head] = journal.Result{}
		a.head++
	}
	if a.head > 1024 && a.head > len(a.retained)/2 { // amortised O(1)
		a.retained = append([]journal.Result(nil), a.retained[a.head:]...)
		a.head = 0
	}
}

// trimLine drops the line's "\n" (and a "\r" before it).
func trimLine(line []byte) []byte {
	n := len(line)
	if n > 0 && line[n-1] == '\n' {
		n--
	}
	if n > 0 && line[n-1] == '\r' {
		n--
	}
	return line[:n]
}
