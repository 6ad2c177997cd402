package replay

// This file is the patch engine: documents held in memory, RFC 6902 JSON
// Patch with the inc extension (docs/format.md, Intent), RFC 7396 merge patches, and the
// undo log that makes each Apply atomic without copying the document.

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/stateward/stateward/journal"
)

// ErrInvalidJSON is wrapped by the errors of text that is not one valid JSON
// value (or that has a duplicate object key or invalid UTF-8).
var ErrInvalidJSON = errors.New("replay: invalid JSON")

// ErrInvalidPatch is wrapped by the errors of a patch that is malformed or
// cannot be applied to the document (other than a failed test).
var ErrInvalidPatch = errors.New("replay: invalid patch")

// ErrTestFailed is wrapped by the error of a patch whose test operation
// failed: the value differs or the path does not exist.
var ErrTestFailed = errors.New("replay: test failed")

// ErrLimit is wrapped, with ErrInvalidPatch, by the error of a change that
// would pass a limit: the document's size as written (Doc.MaxSize), its
// nesting depth (Doc.MaxDepth), or the bytes the copy ops of one patch
// copy.
var ErrLimit = errors.New("replay: over a limit")

// Code is the stable category of a failed patch. The text of a result's
// error is made from it and the failure's details, never from a chain of Go
// errors, so it carries no package prefix.
type Code uint8

// The categories of a failed patch.
const (
	CodeInvalidPatch Code = iota + 1 // malformed, or does not apply to the document
	CodeTestFailed                   // a test op failed: a conflict
	CodeTooLarge                     // the document would pass Doc.MaxSize
	CodeTooDeep                      // the document would pass Doc.MaxDepth
	CodeTooMuchCopy                  // the copy ops would copy more than the limit
	CodeNoReadyTask                  // a claim_next found no ready task: a conflict
)

// String returns the category as error texts begin with it.
func (c Code) String() string {
	switch c {
	case CodeTestFailed:
		return "test failed"
	case CodeTooLarge:
		return "document too large"
	case CodeTooDeep:
		return "document too deep"
	case CodeTooMuchCopy:
		return "patch copies too much"
	case CodeNoReadyTask:
		return "no ready task"
	}
	return "invalid patch"
}

// hint says what the author of a failed intent can do.
func (c Code) hint() string {
	switch c {
	case CodeTestFailed:
		return "read the document again, then decide and resubmit"
	case CodeTooLarge:
		return "make the change smaller, or remove data from the document first"
	case CodeTooDeep:
		return "nest the value less deeply"
	case CodeTooMuchCopy:
		return "copy less in one intent"
	case CodeNoReadyTask:
		return "read the board again; retry when a task is ready"
	}
	return "fix the patch and submit it with a new seq"
}

// PatchError is the error of a patch or merge patch that failed: nothing of
// it was applied. errors.Is matches it with ErrTestFailed (CodeTestFailed)
// or ErrInvalidPatch (every other code), and with ErrLimit for the limits.
type PatchError struct {
	Code Code
	Op   int    // index of the failing operation; -1 for the patch as a whole
	Desc string // the operation, as "replace /tasks/7/status"; may be empty
	Msg  string // what was wrong
	Err  error  // the underlying error, such as a *SyntaxError; may be nil
}

// Error returns "CATEGORY: op N (OPERATION): WHAT", without a package
// prefix, e.g. "test failed: op 0 (test /tasks/t1/status): value differs";
// for CodeNoReadyTask, only WHAT: "no ready task under /tasks".
func (e *PatchError) Error() string {
	if e.Code == CodeNoReadyTask {
		return e.Msg
	}
	var b strings.Builder
	b.WriteString(e.Code.String())
	if e.Op >= 0 {
		fmt.Fprintf(&b, ": op %d", e.Op)
		if e.Desc != "" {
			fmt.Fprintf(&b, " (%s)", e.Desc)
		}
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Is reports whether target is the sentinel of the error's code.
func (e *PatchError) Is(target error) bool {
	switch target {
	case ErrTestFailed:
		return e.Code == CodeTestFailed
	case ErrInvalidPatch:
		return e.Code != CodeTestFailed && e.Code != CodeNoReadyTask
	case ErrNoReadyTask:
		return e.Code == CodeNoReadyTask
	case ErrLimit:
		return e.Code == CodeTooLarge || e.Code == CodeTooDeep || e.Code == CodeTooMuchCopy
	}
	return false
}

// Unwrap returns the underlying error.
func (e *PatchError) Unwrap() error { return e.Err }

// lineErrors are the categories of the journal's errors about a line, by
// sentinel: a result names the category, not the Go package, and says what
// to do.
var lineErrors = []struct {
	sentinel   error
	name, hint string
}{
	{journal.ErrBadName, "bad name", ""},
	{journal.ErrLineTooLong, "line too long", "split the change over several intents, each with its own seq"},
	{journal.ErrBadRecord, "bad record", "fix the record and write it again with a new seq"},
}

// ResultError returns the error text of a result for err: an error of
// Apply, Merge or DecodePatch, or of the journal about a line. It says what
// was wrong, where, and what to do, without Go package prefixes.
func ResultError(err error) string {
	var pe *PatchError
	if errors.As(err, &pe) {
		if pe.Code == CodeNoReadyTask {
			return pe.Error() // exactly "no ready task under PATH" (docs/format.md, claim_next)
		}
		return pe.Error() + "; " + pe.Code.hint()
	}
	msg, hint := err.Error(), ""
	for _, le := range lineErrors {
		if errors.Is(err, le.sentinel) {
			msg = strings.ReplaceAll(msg, le.sentinel.Error(), le.name)
			if hint == "" {
				hint = le.hint
			}
		}
	}
	if hint != "" {
		msg += "; " + hint
	}
	return msg
}

// Doc is a parsed JSON document held in memory. The zero Doc is a document
// that does not exist. A Doc is not safe for concurrent use.
type Doc struct {
	root   value
	exists bool

	// MaxSize, if positive, is the largest the document may be as written
	// (AppendJSON, final newline included): an Apply or Merge that would
	// make it larger fails with CodeTooLarge, checked after each operation,
	// and changes nothing. The bytes the copy ops of one patch copy are
	// bounded by MaxCopyBytes, or by MaxSize if it is smaller
	// (CodeTooMuchCopy).
	MaxSize int64
	// MaxDepth, if positive, is the deepest nesting of arrays and objects a
	// change may create (CodeTooDeep); without it, 10,000 (encoding/json's
	// limit, which also bounds what ParseDoc reads).
	MaxDepth int

	// followLog lifts the copy bound: the document replays intents a
	// commit log says were applied, perhaps by an engine with another
	// bound, and the logged hash checks the outcome.
	followLog bool

	// size is the document's exact size as written, when sized is set. It
	// is computed once, when a limit first needs it, then kept up to date
	// by each change.
	size  int64
	sized bool

	// undo is the undo log of the Apply in progress, kept between calls to
	// reuse its memory; it is empty outside Apply.
	undo []undoEntry
	// copied counts the bytes (as written at their new place) the copy ops
	// of the Apply in progress have copied.
	copied int64
	// claim is the task the last claim_next of the Apply in progress
	// claimed, for $claimed; claimed is its pointer once Apply succeeded.
	claim   []string
	claimed string
}

// MaxCopyBytes bounds the bytes (as written at their new place) that the
// copy operations of one patch may copy, or Doc.MaxSize if that is
// smaller. Without a bound, a patch that copies the document into itself n
// times would grow it 2^n-fold; with it, the values one patch adds cost at
// most its own size plus this bound. Replay decides with the same bound:
// changing it changes decisions.
const MaxCopyBytes = 16 << 20

// utf8BOM is the UTF-8 encoding of U+FEFF, the byte order mark.
const utf8BOM = "\xef\xbb\xbf"

// ParseDoc parses data, one JSON value with optional surrounding whitespace
// and an optional UTF-8 byte order mark before it.
// Numbers are kept exactly as written. Text that is not valid JSON, and
// objects with a duplicate key or strings with invalid UTF-8, give an error
// wrapping ErrInvalidJSON with the byte offset. As in encoding/json, a \u
// escape of a lone UTF-16 surrogate reads as U+FFFD.
//
// The document's strings are substrings of one copy of data, so parsing
// costs about one allocation per array and object.
func ParseDoc(data []byte) (*Doc, error) {
	// RFC 8259 lets a parser ignore a byte order mark, which some editors
	// write; AppendJSON never writes one.
	bom := 0
	if len(data) >= len(utf8BOM) && string(data[:len(utf8BOM)]) == utf8BOM {
		bom = len(utf8BOM)
	}
	v, err := parse(string(data[bom:]), false)
	if err != nil {
		var se *SyntaxError
		if errors.As(err, &se) {
			se.Offset += bom
		}
		return nil, err
	}
	return &Doc{root: v, exists: true}, nil
}

// Exists reports whether the document exists.
func (d *Doc) Exists() bool { return d.exists }

// Clone returns a deep copy of d.
func (d *Doc) Clone() *Doc {
	return &Doc{root: deepCopy(d.root), exists: d.exists, MaxSize: d.MaxSize, MaxDepth: d.MaxDepth, size: d.size, sized: d.sized}
}

// Size returns the bytes AppendJSON writes for the document, without
// encoding it.
func (d *Doc) Size() int64 {
	d.measure()
	return d.size
}

// measure computes the document's size, if it is not known.
func (d *Doc) measure() {
	if d.sized {
		return
	}
	d.size = 0
	if d.exists {
		d.size = encSize(d.root, 0) + 1
	}
	d.sized = true
}

// depthLimit returns the nesting depth a change may create.
func (d *Doc) depthLimit() int {
	if d.MaxDepth > 0 {
		return min(d.MaxDepth, maxDepth)
	}
	return maxDepth
}

// copyLimit returns the bytes the copy ops of one patch may copy.
func (d *Doc) copyLimit() int64 {
	if d.followLog {
		return math.MaxInt64
	}
	if d.MaxSize > 0 {
		return min(d.MaxSize, MaxCopyBytes)
	}
	return MaxCopyBytes
}

// grow adds delta to the document's size, if it is tracked, unless that
// passes MaxSize.
func (d *Doc) grow(delta int64) *opError {
	if !d.sized {
		return nil
	}
	if d.MaxSize > 0 && delta > 0 && d.size+delta > d.MaxSize {
		return tooLarge(d.size+delta, d.MaxSize)
	}
	d.size += delta
	return nil
}

func tooLarge(size, limit int64) *opError {
	return &opError{code: CodeTooLarge, msg: fmt.Sprintf("the document would be %d bytes as written, over the limit of %d bytes (the watcher's --max-doc-size)", size, limit)}
}

// Data returns the document as the values encoding/json decodes into an any
// with UseNumber: map[string]any, []any, json.Number, string, bool and nil.
// A document that does not exist returns nil.
func (d *Doc) Data() any {
	if !d.exists {
		return nil
	}
	return toAny(d.root)
}

// The operations of a patch.
const (
	opAdd     = "add"
	opRemove  = "remove"
	opReplace = "replace"
	opMove    = "move"
	opCopy    = "copy"
	opTest    = "test"
	opInc     = "inc"
	// opClaimNext, in claim.go
)

// Op is one decoded patch operation. DecodePatch returns valid ones; an Op
// built by hand is validated by Apply.
type Op struct {
	Kind  string // add, remove, replace, move, copy, test or inc
	Path  string // JSON Pointer (RFC 6901)
	From  string // JSON Pointer, for move and copy
	Value value  // for add, replace, test and inc (a number); see ParseValue

	// Set by DecodePatch, so that Apply need not parse them again.
	decoded    bool
	path, from []string // reference tokens of Path and From
	depth      int      // nesting depth of Value

	// claim is the rest of a claim_next op, set by DecodePatch only.
	claim *claimSpec
	// pathClaimed and fromClaimed say that Path or From starts with
	// $claimed: path or from holds the tokens after it.
	pathClaimed, fromClaimed bool
}

// DecodePatch decodes raw, an RFC 6902 JSON Patch: an array of operations,
// each an object with "op" and its members. Besides the six operations of
// RFC 6902 it accepts {"op":"inc","path":P,"value":N}, which adds the number
// N to the number at P, or creates P as N if P is missing from an object.
// Members an operation does not use are ignored. Errors wrap ErrInvalidPatch
// and name the operation's index and the member at fault.
func DecodePatch(raw []byte) ([]Op, error) {
	// The ops' strings are substrings of one copy of raw; Apply copies what
	// it puts into the document (detachCopy), so the document never pins it.
	v, err := parse(string(raw), false)
	if err != nil {
		return nil, &PatchError{Code: CodeInvalidPatch, Op: -1, Msg: err.Error(), Err: err}
	}
	if v.kind != kindArray {
		return nil, &PatchError{Code: CodeInvalidPatch, Op: -1, Msg: fmt.Sprintf("patch is %s, want an array of operations", article(v.kind))}
	}
	ops := make([]Op, len(v.arr.elems))
	for i, e := range v.arr.elems {
		if e.kind != kindObject {
			return nil, &PatchError{Code: CodeInvalidPatch, Op: i, Msg: fmt.Sprintf("operation is %s, want an object", article(e.kind))}
		}
		op, err := decodeOp(e.obj)
		if err != nil {
			return nil, &PatchError{Code: CodeInvalidPatch, Op: i, Msg: err.Error()}
		}
		ops[i] = op
	}
	return ops, nil
}

// decodeOp decodes one operation object.
func decodeOp(o *object) (Op, error) {
	str := func(name string) (string, bool, error) {
		i, ok := o.find(name)
		if !ok {
			return "", false, nil
		}
		if v := o.members[i].val; v.kind != kindString {
			return "", true, fmt.Errorf("%q is %s, want a string", name, article(v.kind))
		}
		return o.members[i].val.str, true, nil
	}
	var op Op
	kind, ok, err := str("op")
	if err != nil {
		return Op{}, err
	}
	if !ok {
		return Op{}, errors.New(`missing "op"`)
	}
	if op.Kind, ok = knownOp(kind); !ok {
		return Op{}, fmt.Errorf("unknown op %q", kind)
	}
	if op.Path, ok, err = str("path"); err != nil {
		return Op{}, err
	} else if !ok {
		return Op{}, errors.New(`missing "path"`)
	}
	if kind == opMove || kind == opCopy {
		if op.From, ok, err = str("from"); err != nil {
			return Op{}, err
		} else if !ok {
			return Op{}, errors.New(`missing "from"`)
		}
	}
	if kind == opClaimNext {
		if op.claim, err = decodeClaim(o); err != nil {
			return Op{}, err
		}
	}
	if usesValue(kind) {
		i, ok := o.find("value")
		if !ok {
			return Op{}, errors.New(`missing "value"`)
		}
		op.Value = o.members[i].val
	}
	if err := op.prepare(); err != nil {
		return Op{}, err
	}
	return op, nil
}

// opNames are the operations of a patch.
var opNames = [...]string{opAdd, opRemove, opReplace, opMove, opCopy, opTest, opInc, opClaimNext}

// knownOp returns the operation named kind, as a constant (which does not
// keep a patch's text alive), and whether there is one.
func knownOp(kind string) (string, bool) {
	for _, k := range opNames {
		if kind == k {
			return k, true
		}
	}
	return "", false
}

func usesValue(kind string) bool {
	return kind == opAdd || kind == opReplace || kind == opTest || kind == opInc
}

// prepare validates op and parses its pointers.
func (op *Op) prepare() error {
	if _, ok := knownOp(op.Kind); !ok {
		return fmt.Errorf("unknown op %q", op.Kind)
	}
	if op.Kind == opClaimNext && op.claim == nil {
		return errors.New("a claim_next op must come from DecodePatch")
	}
	var err error
	if op.path, op.pathClaimed, err = parseOpPointer(op.Path); err != nil {
		return fmt.Errorf(`invalid "path" %q: %w`, op.Path, err)
	}
	if op.Kind == opMove || op.Kind == opCopy {
		if op.from, op.fromClaimed, err = parseOpPointer(op.From); err != nil {
			return fmt.Errorf(`invalid "from" %q: %w`, op.From, err)
		}
	}
	if usesValue(op.Kind) {
		if op.Value.kind == kindAbsent {
			return errors.New(`missing "value"`)
		}
		if op.Kind == opInc && op.Value.kind != kindNumber {
			return fmt.Errorf(`"value" of inc is %s, want a number`, article(op.Value.kind))
		}
		op.depth = depthOf(op.Value)
	}
	op.decoded = true
	return nil
}

// article returns the kind's name with an indefinite article.
func article(k kind) string {
	switch k {
	case kindArray, kindObject, kindAbsent:
		return "an " + k.String()
	case kindNull:
		return "null"
	}
	return "a " + k.String()
}

// parseOpPointer parses the path or from of an op: a JSON Pointer, or
// $claimed followed by one (the claimed task, then the pointer's tokens).
func parseOpPointer(s string) (toks []string, claimed bool, err error) {
	if rest, ok := strings.CutPrefix(s, claimedRef); ok {
		toks, err = parsePointer(rest)
		return toks, true, err
	}
	toks, err = parsePointer(s)
	return toks, false, err
}

// parsePointer parses an RFC 6901 JSON Pointer into its reference tokens,
// unescaped. The empty pointer (the whole document) has no tokens.
func parsePointer(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	if s[0] != '/' {
		return nil, errors.New("does not start with /")
	}
	toks := make([]string, 0, strings.Count(s, "/"))
	rest := s[1:]
	for {
		tok, next, more := strings.Cut(rest, "/")
		if strings.IndexByte(tok, '~') >= 0 {
			var err error
			if tok, err = unescapeToken(tok); err != nil {
				return nil, err
			}
		}
		toks = append(toks, tok)
		if !more {
			return toks, nil
		}
		rest = next
	}
}

// unescapeToken decodes ~0 and ~1 in a reference token.
func unescapeToken(tok string) (string, error) {
	var b strings.Builder
	b.Grow(len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c != '~' {
			b.WriteByte(c)
			continue
		}
		if i+1 >= len(tok) || (tok[i+1] != '0' && tok[i+1] != '1') {
			return "", fmt.Errorf("invalid escape in token %q: ~ must be followed by 0 or 1", tok)
		}
		if tok[i+1] == '0' {
			b.WriteByte('~')
		} else {
			b.WriteByte('/')
		}
		i++
	}
	return b.String(), nil
}

// arrayIndex parses an array index token: canonical decimal, without sign
// or leading zeros. An index too large for any array is returned as
// math.MaxInt.
func arrayIndex(tok string) (int, bool) {
	if tok == "" || (tok[0] == '0' && len(tok) > 1) {
		return 0, false
	}
	n := 0
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (math.MaxInt-9)/10 {
			n = math.MaxInt
			continue
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// undoKind says how an undoEntry reverts a change to an array or object.
type undoKind uint8

const (
	undoObjectSet    undoKind = iota // restore obj.members[idx].val to old
	undoObjectInsert                 // remove obj.members[idx]
	undoObjectRemove                 // insert {key, old} at obj.members[idx]
	undoArraySet                     // restore arr.elems[idx] to old
	undoArrayInsert                  // remove arr.elems[idx]
	undoArrayRemove                  // insert old at arr.elems[idx]
)

// undoEntry reverts one change. Entries are undone in reverse order, so the
// indexes they hold are valid when they are undone.
type undoEntry struct {
	kind undoKind
	obj  *object
	arr  *array
	idx  int
	key  string
	old  value
}

// rollback undoes the changes in the undo log, newest first.
func (d *Doc) rollback() {
	for i := len(d.undo) - 1; i >= 0; i-- {
		u := &d.undo[i]
		switch u.kind {
		case undoObjectSet:
			u.obj.members[u.idx].val = u.old
		case undoObjectInsert:
			u.obj.removeAt(u.idx)
		case undoObjectRemove:
			u.obj.insertAt(u.idx, member{key: u.key, val: u.old})
		case undoArraySet:
			u.arr.elems[u.idx] = u.old
		case undoArrayInsert:
			u.arr.removeAt(u.idx)
		case undoArrayRemove:
			u.arr.insertAt(u.idx, u.old)
		}
	}
}

// Apply applies ops to the document atomically: all of them or, on error,
// none, leaving the document exactly as it was. Errors are *PatchError. A
// test operation that fails (the value differs or the path does not exist)
// gives an error wrapping ErrTestFailed. Every other failure wraps
// ErrInvalidPatch and names the operation, e.g. "invalid patch: op 2
// (replace /tasks/7/status): path not found"; one that passes a limit
// (MaxSize, MaxDepth, the copy bound) also wraps ErrLimit.
//
// On a document that does not exist, only add at the path "" (which creates
// it) and test (which fails) apply. Remove at "" is an error: a patch does
// not delete a document.
//
// Apply changes the document in place and logs how to undo each change, so
// its cost is that of the operations, not of the document. Values are
// copied from the ops, which can be applied again.
func (d *Doc) Apply(ops []Op) error {
	if d.MaxSize > 0 {
		d.measure()
	}
	root, exists, size := d.root, d.exists, d.size
	d.copied = 0
	d.claim, d.claimed = nil, ""
	for i := range ops {
		if err := d.apply(&ops[i], i); err != nil {
			d.rollback()
			d.root, d.exists, d.size = root, exists, size
			clear(d.undo)
			d.undo = d.undo[:0]
			d.claim = nil
			return err
		}
	}
	clear(d.undo) // drop references to replaced values
	d.undo = d.undo[:0]
	if d.claim != nil {
		d.claimed = formatPointer(d.claim)
		d.claim = nil
	}
	return nil
}

// opError is the failure of an operation.
type opError struct {
	code Code   // CodeInvalidPatch unless set
	msg  string // what went wrong
}

func failf(format string, args ...any) *opError {
	return &opError{code: CodeInvalidPatch, msg: fmt.Sprintf(format, args...)}
}

var (
	errNotFound  = &opError{code: CodeInvalidPatch, msg: "path not found"}
	errNoDoc     = &opError{code: CodeInvalidPatch, msg: "document does not exist: create it with add at the path \"\""}
	errTestValue = &opError{code: CodeTestFailed, msg: "value differs"}
)

func (d *Doc) tooDeep() *opError {
	return &opError{code: CodeTooDeep, msg: fmt.Sprintf("the document would be nested deeper than %d levels, the limit", d.depthLimit())}
}

// maxDescribed is the longest pointer an error message quotes whole.
const maxDescribed = 200

// describe returns the operation as error messages name it.
func (op *Op) describe() string {
	p := func(s string) string {
		if s == "" {
			return `""`
		}
		// A result names the op, not a megabyte of path.
		if n := maxDescribed; len(s) > n {
			for n > 0 && !utf8.RuneStart(s[n]) {
				n--
			}
			return fmt.Sprintf("%s... (%d bytes)", s[:n], len(s))
		}
		return s
	}
	if op.Kind == opMove || op.Kind == opCopy {
		return fmt.Sprintf("%s %s from %s", op.Kind, p(op.Path), p(op.From))
	}
	return op.Kind + " " + p(op.Path)
}

// apply applies op, the i-th of its patch.
func (d *Doc) apply(op *Op, i int) error {
	if !op.decoded {
		// Built by hand: validate a copy, leaving the caller's Op as it is.
		c := *op
		if err := c.prepare(); err != nil {
			return &PatchError{Code: CodeInvalidPatch, Op: i, Desc: op.describe(), Msg: err.Error()}
		}
		op = &c
	}
	rop, e := d.resolveClaimed(op)
	if e == nil {
		e = d.applyOp(rop)
	}
	if e != nil {
		code := e.code
		if op.Kind == opTest {
			// A test whose path does not resolve is a failed test.
			code = CodeTestFailed
		}
		return &PatchError{Code: code, Op: i, Desc: op.describe(), Msg: e.msg}
	}
	return nil
}

func (d *Doc) applyOp(op *Op) *opError {
	if !d.exists && !(op.Kind == opAdd && len(op.path) == 0) {
		return errNoDoc
	}
	switch op.Kind {
	case opAdd:
		if len(op.path)+op.depth > d.depthLimit() {
			return d.tooDeep()
		}
		return d.add(op.path, detachCopy(op.Value), -1)
	case opRemove:
		_, e := d.remove(op.path)
		return e
	case opReplace:
		if len(op.path)+op.depth > d.depthLimit() {
			return d.tooDeep()
		}
		return d.replace(op.path, detachCopy(op.Value))
	case opMove:
		return d.move(op.from, op.path)
	case opCopy:
		v, e := d.get(op.from)
		if e != nil {
			return e
		}
		if len(op.path) > len(op.from) && len(op.path)+depthOf(v) > d.depthLimit() {
			return d.tooDeep()
		}
		// Count and check before copying: the copy is the memory.
		n := encSize(v, len(op.path))
		if d.copied += n; d.copied > d.copyLimit() {
			return &opError{code: CodeTooMuchCopy, msg: fmt.Sprintf("the copy ops of the patch would copy more than %d bytes (as written), the limit", d.copyLimit())}
		}
		if d.sized && d.MaxSize > 0 && len(op.path) > 0 {
			// A copy onto an existing member replaces it: the document grows
			// by exactly n less the old value, as setMember counts. Elsewhere
			// it grows by at least n (the value alone, without its key or
			// separators).
			if old, ok := d.member(op.path); ok {
				if delta := n - encSize(old, len(op.path)); delta > 0 && d.size+delta > d.MaxSize {
					return tooLarge(d.size+delta, d.MaxSize)
				}
			} else if d.size+n > d.MaxSize {
				e := tooLarge(d.size+n, d.MaxSize)
				e.msg = strings.Replace(e.msg, "would be ", "would be at least ", 1)
				return e
			}
		}
		return d.add(op.path, deepCopy(v), n)
	case opTest:
		v, e := d.get(op.path)
		if e != nil {
			return e
		}
		if !equal(v, op.Value) {
			return errTestValue
		}
		return nil
	case opInc:
		return d.inc(op.path, op.Value)
	case opClaimNext:
		return d.claimNext(op.path, op.claim)
	}
	return failf("unknown op %q", op.Kind)
}

// get returns the value at the pointer toks.
func (d *Doc) get(toks []string) (value, *opError) {
	v := d.root
	for _, tok := range toks {
		var e *opError
		if v, e = child(v, tok); e != nil {
			return value{}, e
		}
	}
	return v, nil
}

// member returns the existing object member at toks, which has at least
// one token. It reports false if toks is not a member of an object (an
// array element, or a path that does not resolve).
func (d *Doc) member(toks []string) (value, bool) {
	p, e := d.parent(toks)
	if e != nil || p.kind != kindObject {
		return value{}, false
	}
	i, found := p.obj.find(toks[len(toks)-1])
	if !found {
		return value{}, false
	}
	return p.obj.members[i].val, true
}

// child returns the member or element tok of v.
func child(v value, tok string) (value, *opError) {
	switch v.kind {
	case kindObject:
		if i, ok := v.obj.find(tok); ok {
			return v.obj.members[i].val, nil
		}
	case kindArray:
		i, ok := arrayIndex(tok)
		if !ok && tok != "-" {
			return value{}, failf("invalid array index %q", tok)
		}
		if ok && i < len(v.arr.elems) {
			return v.arr.elems[i], nil
		}
	}
	return value{}, errNotFound
}

// parent returns the array or object that holds the value at toks, which
// has at least one token.
func (d *Doc) parent(toks []string) (value, *opError) {
	p, e := d.get(toks[:len(toks)-1])
	if e != nil {
		return value{}, e
	}
	if p.kind != kindArray && p.kind != kindObject {
		return value{}, errNotFound
	}
	return p, nil
}

// index returns the index tok of array a for an operation that needs an
// existing element.
func index(a *array, tok string) (int, *opError) {
	i, ok := arrayIndex(tok)
	if !ok && tok != "-" {
		return 0, failf("invalid array index %q", tok)
	}
	if !ok || i >= len(a.elems) {
		return 0, errNotFound
	}
	return i, nil
}

// add adds v at toks (RFC 6902 section 4.1): it sets an object member,
// inserts an array element, or replaces the whole document. vsize is v's
// size as written at its new place, or -1 if the caller has not measured
// it.
func (d *Doc) add(toks []string, v value, vsize int64) *opError {
	if len(toks) == 0 {
		if d.sized {
			if e := d.grow(encSize(v, 0) + 1 - d.size); e != nil {
				return e
			}
		}
		d.root, d.exists = v, true
		return nil
	}
	p, e := d.parent(toks)
	if e != nil {
		return e
	}
	tok := toks[len(toks)-1]
	if p.kind == kindObject {
		return d.setMember(p.obj, len(toks)-1, tok, v, vsize)
	}
	a := p.arr
	i := len(a.elems)
	if tok != "-" {
		var ok bool
		if i, ok = arrayIndex(tok); !ok {
			return failf("invalid array index %q", tok)
		}
		if i > len(a.elems) {
			return failf("index %s out of range (array length %d)", tok, len(a.elems))
		}
	}
	if d.sized {
		if vsize < 0 {
			vsize = encSize(v, len(toks))
		}
		if e := d.grow(insertDelta(len(a.elems), len(toks)-1, itemSize("", false, vsize, len(toks)))); e != nil {
			return e
		}
	}
	a.insertAt(i, v)
	d.undo = append(d.undo, undoEntry{kind: undoArrayInsert, arr: a, idx: i})
	return nil
}

// setMember sets member key of o, an object at nesting level level, to v,
// inserting it if it is missing. vsize is v's size as written, or -1.
func (d *Doc) setMember(o *object, level int, key string, v value, vsize int64) *opError {
	i, found := o.find(key)
	if d.sized {
		if vsize < 0 {
			vsize = encSize(v, level+1)
		}
		delta := insertDelta(len(o.members), level, itemSize(key, true, vsize, level+1))
		if found {
			delta = vsize - encSize(o.members[i].val, level+1)
		}
		if e := d.grow(delta); e != nil {
			return e
		}
	}
	if found {
		d.undo = append(d.undo, undoEntry{kind: undoObjectSet, obj: o, idx: i, old: o.members[i].val})
		o.members[i].val = v
		return nil
	}
	// The key is a token of an op's path: copy it out of the patch.
	o.insertAt(i, member{key: strings.Clone(key), val: v})
	d.undo = append(d.undo, undoEntry{kind: undoObjectInsert, obj: o, idx: i})
	return nil
}

// remove removes the value at toks and returns it.
func (d *Doc) remove(toks []string) (value, *opError) {
	if len(toks) == 0 {
		return value{}, failf("cannot remove the whole document")
	}
	p, e := d.parent(toks)
	if e != nil {
		return value{}, e
	}
	tok := toks[len(toks)-1]
	level := len(toks) - 1
	if p.kind == kindObject {
		o := p.obj
		i, found := o.find(tok)
		if !found {
			return value{}, errNotFound
		}
		if d.sized {
			d.size -= insertDelta(len(o.members)-1, level, itemSize(o.members[i].key, true, encSize(o.members[i].val, level+1), level+1))
		}
		m := o.removeAt(i)
		d.undo = append(d.undo, undoEntry{kind: undoObjectRemove, obj: o, idx: i, key: m.key, old: m.val})
		return m.val, nil
	}
	a := p.arr
	i, e := index(a, tok)
	if e != nil {
		return value{}, e
	}
	if d.sized {
		d.size -= insertDelta(len(a.elems)-1, level, itemSize("", false, encSize(a.elems[i], level+1), level+1))
	}
	old := a.removeAt(i)
	d.undo = append(d.undo, undoEntry{kind: undoArrayRemove, arr: a, idx: i, old: old})
	return old, nil
}

// replace replaces the existing value at toks with v.
func (d *Doc) replace(toks []string, v value) *opError {
	if len(toks) == 0 {
		if d.sized {
			if e := d.grow(encSize(v, 0) + 1 - d.size); e != nil {
				return e
			}
		}
		d.root = v
		return nil
	}
	p, e := d.parent(toks)
	if e != nil {
		return e
	}
	tok := toks[len(toks)-1]
	if p.kind == kindObject {
		o := p.obj
		i, found := o.find(tok)
		if !found {
			return errNotFound
		}
		if e := d.resize(o.members[i].val, v, len(toks)); e != nil {
			return e
		}
		d.undo = append(d.undo, undoEntry{kind: undoObjectSet, obj: o, idx: i, old: o.members[i].val})
		o.members[i].val = v
		return nil
	}
	a := p.arr
	i, e := index(a, tok)
	if e != nil {
		return e
	}
	if e := d.resize(a.elems[i], v, len(toks)); e != nil {
		return e
	}
	d.undo = append(d.undo, undoEntry{kind: undoArraySet, arr: a, idx: i, old: a.elems[i]})
	a.elems[i] = v
	return nil
}

// resize accounts for old, a value at nesting level level, being replaced
// by v.
func (d *Doc) resize(old, v value, level int) *opError {
	if !d.sized {
		return nil
	}
	return d.grow(encSize(v, level) - encSize(old, level))
}

// move moves the value at from to path: a remove, then an add.
func (d *Doc) move(from, path []string) *opError {
	if isPrefix(from, path) {
		if _, e := d.get(from); e != nil {
			return e
		}
		if len(from) == len(path) {
			return nil // onto itself
		}
		return failf("cannot move a value into its own child")
	}
	v, e := d.remove(from)
	if e != nil {
		return e
	}
	// The value was at depth len(from) in a document within the limit; it
	// can only exceed it if it moves deeper.
	if len(path) > len(from) && len(path)+depthOf(v) > d.depthLimit() {
		return d.tooDeep()
	}
	return d.add(path, v, -1)
}

// isPrefix reports whether the pointer a is a prefix of b, or equal to it.
func isPrefix(a, b []string) bool {
	if len(a) > len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// inc adds the number n to the number at toks, or creates it as n if toks
// is a missing member of an existing object.
func (d *Doc) inc(toks []string, n value) *opError {
	if len(toks) == 0 {
		sum, e := addNumbers(d.root, n)
		if e != nil {
			return e
		}
		if e := d.resize(d.root, sum, 0); e != nil {
			return e
		}
		d.root = sum
		return nil
	}
	p, e := d.parent(toks)
	if e != nil {
		return e
	}
	tok := toks[len(toks)-1]
	if p.kind == kindObject {
		o := p.obj
		i, found := o.find(tok)
		if !found {
			return d.setMember(o, len(toks)-1, tok, detachCopy(n), -1)
		}
		sum, e := addNumbers(o.members[i].val, n)
		if e != nil {
			return e
		}
		if e := d.resize(o.members[i].val, sum, len(toks)); e != nil {
			return e
		}
		d.undo = append(d.undo, undoEntry{kind: undoObjectSet, obj: o, idx: i, old: o.members[i].val})
		o.members[i].val = sum
		return nil
	}
	a := p.arr
	i, e := index(a, tok)
	if e != nil {
		return e
	}
	sum, e := addNumbers(a.elems[i], n)
	if e != nil {
		return e
	}
	if e := d.resize(a.elems[i], sum, len(toks)); e != nil {
		return e
	}
	d.undo = append(d.undo, undoEntry{kind: undoArraySet, arr: a, idx: i, old: a.elems[i]})
	a.elems[i] = sum
	return nil
}

// addNumbers returns a+b. Two integers (no fraction or exponent) whose sum
// fits in an int64 add exactly; anything else adds as float64 and is
// written as encoding/json writes a float64.
func addNumbers(a, b value) (value, *opError) {
	if a.kind != kindNumber {
		return value{}, failf("cannot inc %s", article(a.kind))
	}
	if isInteger(a.str) && isInteger(b.str) {
		x, errX := strconv.ParseInt(a.str, 10, 64)
		y, errY := strconv.ParseInt(b.str, 10, 64)
		if errX == nil && errY == nil {
			if s := x + y; (s > x) == (y > 0) {
				return value{kind: kindNumber, str: strconv.FormatInt(s, 10)}, nil
			}
		}
	}
	x, _ := strconv.ParseFloat(a.str, 64) // a and b are valid JSON numbers:
	y, _ := strconv.ParseFloat(b.str, 64) // the only error is out of range
	s := x + y
	if math.IsInf(s, 0) || math.IsNaN(s) {
		return value{}, failf("number overflow: %s + %s is out of the float64 range", a.str, b.str)
	}
	return value{kind: kindNumber, str: string(appendFloat(nil, s))}, nil
}

// isInteger reports whether the JSON number s has no fraction or exponent.
func isInteger(s string) bool {
	return strings.IndexAny(s, ".eE") < 0
}

// appendFloat appends f as json.Marshal writes a float64.
func appendFloat(dst []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// Clean up e-09 to e-9.
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// equal reports whether a and b are the same JSON value: objects regardless
// of member order, numbers by numeric value (1 == 1.0 == 1e0), exactly.
func equal(a, b value) bool {
	if a.kind != b.kind {
		return false
	}
	switch a.kind {
	case kindNumber:
		return a.str == b.str || numberEqual(a.str, b.str)
	case kindString:
		return a.str == b.str
	case kindArray:
		if len(a.arr.elems) != len(b.arr.elems) {
			return false
		}
		for i := range a.arr.elems {
			if !equal(a.arr.elems[i], b.arr.elems[i]) {
				return false
			}
		}
		return true
	case kindObject:
		am, bm := a.obj.members, b.obj.members
		if len(am) != len(bm) {
			return false
		}
		for i := range am { // both sorted by key
			if am[i].key != bm[i].key || !equal(am[i].val, bm[i].val) {
				return false
			}
		}
		return true
	}
	return true
}

// numberEqual reports whether the JSON number literals a and b have the
// same value. It compares their decimal forms, so it is exact for any
// literal: 1 == 1.0 == 10e-1 and 0 == -0, while 0.1 != 0.1000000000000000001.
func numberEqual(a, b string) bool {
	na, da, ea, hugeA := decimalForm(a)
	nb, db, eb, hugeB := decimalForm(b)
	if na != nb || da != db {
		return false
	}
	if hugeA == nil && hugeB == nil {
		return ea == eb
	}
	return exponent(ea, hugeA).Cmp(exponent(eb, hugeB)) == 0
}

// decimalForm returns the sign, the significant digits (no leading or
// trailing zeros) and the exponent e of the JSON number s, such that
// s = ±0.digits × 10^e. Zero has no digits, no sign and e = 0. If the
// exponent literal does not fit in an int64, huge is the literal's
// exponent, and e the adjustment to add to it.
func decimalForm(s string) (neg bool, digits string, e int64, huge *big.Int) {
	if s[0] == '-' {
		neg = true
		s = s[1:]
	}
	mant, exp := s, ""
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant, exp = s[:i], s[i+1:]
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	e = int64(len(intPart))
	digits = intPart + frac
	trimmed := strings.TrimLeft(digits, "0")
	e -= int64(len(digits) - len(trimmed))
	digits = strings.TrimRight(trimmed, "0")
	if digits == "" {
		return false, "", 0, nil
	}
	if exp != "" {
		x, err := strconv.ParseInt(exp, 10, 64)
		if err != nil || x > math.MaxInt64/2 || x < math.MinInt64/2 {
			return neg, digits, e, bigExponent(exp)
		}
		e += x
	}
	return neg, digits, e, nil
}

func bigExponent(exp string) *big.Int {
	x, _ := new(big.Int).SetString(strings.TrimPrefix(exp, "+"), 10)
	return x
}

// exponent returns e plus huge, if it is set, as a big.Int.
func exponent(e int64, huge *big.Int) *big.Int {
	x := big.NewInt(e)
	if huge != nil {
		x.Add(x, huge)
	}
	return x
}

// Merge applies patch, an RFC 7396 JSON Merge Patch, to the document
// atomically. On a document that does not exist the target is null, as the
// RFC has it, so an object patch creates an object document. A patch that
// is not valid JSON gives an error wrapping ErrInvalidPatch and
// ErrInvalidJSON; one nested deeper than MaxDepth, or whose result would
// pass MaxSize, an error wrapping ErrInvalidPatch and ErrLimit. A failed
// merge changes nothing.
func (d *Doc) Merge(patch []byte) error {
	d.claimed = ""
	p, err := parse(string(patch), true)
	if err != nil {
		return &PatchError{Code: CodeInvalidPatch, Op: -1, Msg: "merge patch: " + err.Error(), Err: err}
	}
	// The result is nested no deeper than the document or the patch.
	if depthOf(p) > d.depthLimit() {
		return &PatchError{Code: CodeTooDeep, Op: -1, Msg: d.tooDeep().msg}
	}
	if d.MaxSize > 0 {
		d.measure()
	}
	// The size of the result, computed before anything changes.
	var size int64
	switch {
	case !d.sized:
	case p.kind != kindObject:
		size = encSize(p, 0) + 1
	case !d.exists || d.root.kind != kindObject:
		size = 3 + mergeDelta(&object{}, p.obj, 0)
	default:
		size = d.size + mergeDelta(d.root.obj, p.obj, 0)
	}
	if d.sized && d.MaxSize > 0 && size > d.MaxSize && size > d.size {
		e := tooLarge(size, d.MaxSize)
		return &PatchError{Code: e.code, Op: -1, Msg: e.msg}
	}
	d.size = size
	// From here nothing fails, so the document changes in place without an
	// undo log. The patch is freshly parsed and owned: its values go into
	// the document without a copy.
	if p.kind != kindObject {
		d.root, d.exists = p, true
		return nil
	}
	if !d.exists || d.root.kind != kindObject {
		d.root, d.exists = value{kind: kindObject, obj: &object{}}, true
	}
	mergeObject(d.root.obj, p.obj)
	return nil
}

// mergeDelta returns how many bytes merging the patch object p into t, an
// object at nesting level level, adds to the document as written (negative
// if it shrinks), without changing either.
func mergeDelta(t, p *object, level int) int64 {
	n0, n := len(t.members), len(t.members)
	var items int64 // change in the bytes of t's items
	for _, m := range p.members {
		i, found := t.find(m.key)
		switch {
		case m.val.kind == kindNull:
			if found {
				items -= itemSize(m.key, true, encSize(t.members[i].val, level+1), level+1)
				n--
			}
		case m.val.kind == kindObject && found && t.members[i].val.kind == kindObject:
			items += mergeDelta(t.members[i].val.obj, m.val.obj, level+1)
		default:
			vs := sizeOf(m.val, level+1, true)
			if found {
				items += vs - encSize(t.members[i].val, level+1)
			} else {
				items += itemSize(m.key, true, vs, level+1)
				n++
			}
		}
	}
	return items + containerOverhead(n, level) - containerOverhead(n0, level)
}

// mergeObject merges the patch object p into the target object t.
func mergeObject(t, p *object) {
	for _, m := range p.members {
		i, found := t.find(m.key)
		switch {
		case m.val.kind == kindNull:
			if found {
				t.removeAt(i)
			}
		case m.val.kind == kindObject && found && t.members[i].val.kind == kindObject:
			mergeObject(t.members[i].val.obj, m.val.obj)
		default:
			v := m.val
			if v.kind == kindObject {
				// Merged into nothing: the patch's nulls delete nothing
				// and are dropped.
				dropNulls(v.obj)
			}
			if found {
				t.members[i].val = v
			} else {
				t.insertAt(i, member{key: m.key, val: v})
			}
		}
	}
}

// dropNulls removes the null members of o and of the objects in it (not in
// its arrays), as merging o into an absent value does.
func dropNulls(o *object) {
	ms := o.members[:0]
	for _, m := range o.members {
		if m.val.kind == kindNull {
			continue
		}
		if m.val.kind == kindObject {
			dropNulls(m.val.obj)
		}
		ms = append(ms, m)
	}
	clear(o.members[len(ms):])
	o.members = ms
}
