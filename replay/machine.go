package replay

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"unicode/utf8"

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

	hbuf []byte // hashIntent's buffer
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
	cur cursor
	res resultPos
	win window // results kept to answer retries
}

func newMachine(retain int) *machine {
	return &machine{docs: map[string]*docState{}, agents: map[string]*agentState{}, retain: retain}
}

func (m *machine) agent(name string) *agentState {
	a := m.agents[name]
	if a == nil {
		a = &agentState{}
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
		e.Result.Error = capError(msg)
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
	// Echo only what is valid: an invalid id or file may be a megabyte.
	if validID(in.ID) {
		e.Result.ID = in.ID
	}
	if journal.ValidDocName(in.File) {
		e.Result.File = in.File
	}
	if seq <= a.cur.Seq {
		// The seq names the record: a repeat is answered as the record
		// was, whatever it says now (a journal line rewritten, damaged).
		if k, ok := a.win.find(seq); ok {
			return m.retry(e, seq, k)
		}
		return reject(seq, a.win.backwards(seq, a.cur.Seq))
	}
	a.cur.Seq = seq
	id, h := m.idOf(in, perr)
	k, known := a.win.byIDFind(id)
	switch {
	case perr != nil:
		e = reject(seq, ResultError(perr))
	case known && !k.Intent.matches(h):
		e = reject(seq, fmt.Sprintf("id %q was used by seq %d for a different intent: an id names one intent; give a new change a new id", id, k.Seq))
	case known:
		e = m.retry(e, seq, k)
	default:
		m.commit++
		e.Result = m.apply(in)
		e.Result.Commit = m.commit
		e.Result.Error = capError(e.Result.Error)
	}
	a.win.keep(keptOf(e.Result, a.win.registers(id, h), h), m.retain)
	return e
}

// keepLogged retains a logged entry of agent a as decide retained it when
// it decided the entry: recovery's way of rebuilding the retry window from
// the commit log. The window must be as it was then (the entries before
// this one kept in order), which fold ensures.
func (m *machine) keepLogged(a *agentState, e entry) {
	in, _, perr := journal.ParseIntent(e.Intent)
	id, h := m.idOf(in, perr)
	a.win.keep(keptOf(e.Result, a.win.registers(id, h), h), m.retain)
}

// retry answers a record that repeats an earlier one with a copy of the
// original result, addressed to the repeating record.
func (m *machine) retry(e entry, seq uint64, k kept) entry {
	e.Result = journal.Result{
		Seq: seq, ID: e.Result.ID, File: e.Result.File,
		Status: k.Status.String(), Version: k.Version, Commit: k.Commit, Error: k.Error,
		Claimed: k.Claimed, Retry: true,
	}
	return e
}

// idOf returns the id of a record and the hash of its intent: "" and 0
// when the record has no id or did not parse (its id means nothing then).
func (m *machine) idOf(in journal.Intent, perr error) (string, intentHash) {
	if perr != nil || in.ID == "" {
		return "", 0
	}
	return in.ID, m.hashIntent(in)
}

// hashIntent returns the hash that tells whether two records with the same
// id are the same intent: of the file, the patch or merge (compacted:
// whitespace between tokens does not count) and if_version. The seq, id and
// time do not count.
func (m *machine) hashIntent(in journal.Intent) intentHash {
	b := append(m.hbuf[:0], "file\x00"...)
	b = append(b, in.File...)
	body, kind := in.Merge, "\x00merge\x00"
	if len(in.Patch) > 0 {
		body, kind = in.Patch, "\x00patch\x00"
	}
	b = append(b, kind...)
	n := len(b)
	buf := bytes.NewBuffer(b)
	if err := json.Compact(buf, body); err != nil {
		buf.Truncate(n)
		buf.Write(body)
	}
	b = append(buf.Bytes(), "\x00if_version\x00"...)
	if in.IfVersion != nil {
		b = strconv.AppendUint(b, *in.IfVersion, 10)
	}
	sum := sha256.Sum256(b)
	if cap(b) <= 64<<10 {
		m.hbuf = b
	}
	h := intentHash(binary.BigEndian.Uint64(sum[:8]))
	if h == 0 { // 0 is "unknown"
		h = 1
	}
	return h
}

// validID reports whether id is an id the format allows (and so may be
// echoed in a result).
func validID(id string) bool {
	return len(id) <= journal.MaxIDLen && utf8.ValidString(id)
}

// MaxErrorLen is the longest error text of a result, in bytes. A longer
// one loses its middle, at character boundaries, and says how long it was.
const MaxErrorLen = 1024

// capError returns msg cut to at most MaxErrorLen bytes, keeping its start
// (what was wrong, where) and its end (often why). It is idempotent: replay
// --verify caps a capped text again and must get the same.
func capError(msg string) string {
	if len(msg) <= MaxErrorLen {
		return msg
	}
	mid := fmt.Sprintf(" … (%d bytes cut) … ", len(msg)-MaxErrorLen)
	room := MaxErrorLen - len(mid) - 8 // 8: room for the cut count to shrink the head
	head, tail := room*2/3, room-room*2/3
	for head > 0 && !utf8.RuneStart(msg[head]) {
		head--
	}
	t := len(msg) - tail
	for t < len(msg) && !utf8.RuneStart(msg[t]) {
		t++
	}
	mid = fmt.Sprintf(" … (%d bytes cut) … ", t-head)
	return msg[:head] + mid + msg[t:] // a new string: it does not pin msg
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
			r.Claimed = d.doc.Claimed()
		}
	} else {
		err = d.doc.Merge(in.Merge)
	}
	switch {
	case errors.Is(err, ErrTestFailed), errors.Is(err, ErrNoReadyTask):
		return fail(journal.StatusConflict, ResultError(err))
	case err != nil:
		return fail(journal.StatusRejected, ResultError(err))
	}
	d.version++
	d.dirty = true
	r.Status, r.Version = journal.StatusApplied, d.version
	return r
}

// window is an agent's retry window: its last results with a seq, in
// ascending seq, and an index of the ids they carry. The index is a function
// of the entries alone (an id maps to the newest entry that registers it),
// so a window rebuilt from its entries, as restore does from a checkpoint, is
// the window that was saved, and live and restored machines decide alike.
type window struct {
	ents []kept            // from head on
	head int               // entries before it are dropped
	byID map[string]uint64 // id -> seq of the newest entry registering it
}

// kept is one result of the retry window: what a retry copy needs. It is
// also its form in a checkpoint. Its size is bounded: ID has at most
// journal.MaxIDLen bytes and Error at most MaxErrorLen.
type kept struct {
	Seq     uint64     `json:"seq"`
	ID      string     `json:"id,omitempty"` // the id this entry registers: "" if the record had none, did not parse, or reused another intent's id
	Status  status     `json:"status"`
	Version uint64     `json:"version"`
	Commit  uint64     `json:"commit"`
	Error   string     `json:"error,omitempty"`
	Claimed string     `json:"claimed,omitempty"` // the task a claim_next took, for retry copies
	Intent  intentHash `json:"intent,omitempty"`  // 0: unknown (a checkpoint of format 1), matches any intent
}

// keptOf returns the window entry of a decided result, registering id.
func keptOf(r journal.Result, id string, h intentHash) kept {
	return kept{Seq: r.Seq, ID: id, Status: statusOf(r.Status), Version: r.Version, Commit: r.Commit, Error: r.Error, Claimed: r.Claimed, Intent: h}
}

// find returns the retained entry for seq.
func (w *window) find(seq uint64) (kept, bool) {
	ents := w.ents[w.head:]
	i := sort.Search(len(ents), func(i int) bool { return ents[i].Seq >= seq })
	if i < len(ents) && ents[i].Seq == seq {
		return ents[i], true
	}
	return kept{}, false
}

// byIDFind returns the newest retained entry registering id.
func (w *window) byIDFind(id string) (kept, bool) {
	if id == "" {
		return kept{}, false
	}
	seq, ok := w.byID[id]
	if !ok {
		return kept{}, false
	}
	return w.find(seq)
}

// registers returns the id that a new entry of an intent with hash h and
// id registers: id, unless another intent holds it.
func (w *window) registers(id string, h intentHash) string {
	if k, ok := w.byIDFind(id); ok && !k.Intent.matches(h) {
		return ""
	}
	return id
}

// keep retains an entry for retries, dropping the oldest past the limit:
// exactly the last limit entries are kept, whatever came before.
func (w *window) keep(k kept, limit int) {
	if w.byID == nil {
		w.byID = map[string]uint64{}
	}
	w.ents = append(w.ents, k)
	if k.ID != "" {
		w.byID[k.ID] = k.Seq
	}
	for len(w.ents)-w.head > limit {
		old := w.ents[w.head]
		if old.ID != "" && w.byID[old.ID] == old.Seq {
			delete(w.byID, old.ID) // no newer entry registers it
		}
		w.ents[w.head] = kept{}
		w.head++
	}
	if w.head > 1024 && w.head > len(w.ents)/2 { // amortised O(1)
		w.ents = append([]kept(nil), w.ents[w.head:]...)
		w.head = 0
	}
}

// backwards explains why seq, at or below last (the agent's last processed
// seq), has no retained result. The window holds a contiguous run of the
// newest results, so a seq above its oldest entry was never processed (a
// gap the writer skipped); of one below it the window cannot tell.
func (w *window) backwards(seq, last uint64) string {
	if ents := w.entries(); len(ents) > 0 && ents[0].Seq < seq {
		return fmt.Sprintf("seq %d was never used by this agent, and seqs only go up: the last processed seq is %d; append with a seq above it", seq, last)
	}
	return fmt.Sprintf("seq %d is not above the last processed seq %d, and no result of it is retained: it was never used, or its result has left the retry window (only the newest results are kept); append with a seq above %d", seq, last, last)
}

// entries returns the retained entries, oldest first.
func (w *window) entries() []kept { return w.ents[w.head:] }

// intentHash identifies an intent (machine.hashIntent): the first 64 bits of
// a SHA-256, written as 16 hex digits.
type intentHash uint64

// matches reports whether a retained intent with hash h is the intent with
// hash o. An unknown hash matches any.
func (h intentHash) matches(o intentHash) bool { return h == 0 || h == o }

func (h intentHash) MarshalText() ([]byte, error) {
	return fmt.Appendf(nil, "%016x", uint64(h)), nil
}

func (h *intentHash) UnmarshalText(b []byte) error {
	v, err := strconv.ParseUint(string(b), 16, 64)
	if err != nil || len(b) != 16 {
		return fmt.Errorf("intent hash %q is not 16 hex digits", b)
	}
	*h = intentHash(v)
	return nil
}

// status is a result's status in one byte.
type status uint8

var statusNames = [...]string{"", journal.StatusApplied, journal.StatusConflict, journal.StatusRejected}

func statusOf(s string) status {
	for i, n := range statusNames {
		if n == s {
			return status(i)
		}
	}
	return 0
}

func (s status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return ""
}

func (s status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s *status) UnmarshalText(b []byte) error {
	v := statusOf(string(b))
	if v == 0 {
		return fmt.Errorf("unknown status %q", b)
	}
	*s = v
	return nil
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
