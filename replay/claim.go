package replay

// This file is the claim_next operation (docs/format.md, claim_next): pick
// the first ready task of a board, apply a merge patch to it, and let the
// later operations of the patch name it as $claimed.

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

const opClaimNext = "claim_next"

// claimedRef is the prefix of a path or from that names the task claimed
// by the last claim_next before it in the same patch.
const claimedRef = "$claimed"

// ErrNoReadyTask is wrapped by the error of a claim_next that found no
// ready task: a conflict, as a failed test is. Nothing was applied.
var ErrNoReadyTask = errors.New("replay: no ready task")

// defaultDone is the done of a claim_next that gives none.
var defaultDone = func() value {
	v, err := parse(`{"status":"done"}`, true)
	if err != nil {
		panic(err)
	}
	return v
}()

// claimSpec is what a claim_next operation says besides its path.
type claimSpec struct {
	match    value // an object, or kindAbsent: every task is a candidate
	done     value // an object
	set      value // a merge patch, or kindAbsent: the task is not changed
	deps     string
	order    string
	setDepth int
}

// decodeClaim decodes the members of a claim_next operation object.
func decodeClaim(o *object) (*claimSpec, error) {
	c := &claimSpec{done: defaultDone}
	get := func(name string) (value, bool) {
		i, ok := o.find(name)
		if !ok {
			return value{}, false
		}
		return o.members[i].val, true
	}
	obj := func(name string, dst *value) error {
		if v, ok := get(name); ok {
			if v.kind != kindObject {
				return fmt.Errorf("%q of claim_next is %s, want an object", name, article(v.kind))
			}
			*dst = v
		}
		return nil
	}
	str := func(name string, dst *string) error {
		if v, ok := get(name); ok {
			if v.kind != kindString || v.str == "" {
				return fmt.Errorf("%q of claim_next is %s, want a member name", name, article(v.kind))
			}
			*dst = strings.Clone(v.str)
		}
		return nil
	}
	if err := obj("match", &c.match); err != nil {
		return nil, err
	}
	if err := obj("done", &c.done); err != nil {
		return nil, err
	}
	if err := str("deps", &c.deps); err != nil {
		return nil, err
	}
	if err := str("order", &c.order); err != nil {
		return nil, err
	}
	if v, ok := get("set"); ok {
		c.set = v
		c.setDepth = depthOf(v)
	}
	return c, nil
}

// board is the tasks of a claim_next's path, by position: the members of
// an object in key byte order, or the elements of an array.
type board struct {
	ptr   string // the board's JSON Pointer
	isArr bool
	keys  []string // of an object board
	tasks []value
}

func newBoard(ptr string, v value) (*board, *opError) {
	b := &board{ptr: ptr}
	switch v.kind {
	case kindObject:
		for _, m := range v.obj.members {
			b.keys = append(b.keys, m.key)
			b.tasks = append(b.tasks, m.val)
		}
	case kindArray:
		b.isArr = true
		b.tasks = v.arr.elems
	default:
		return nil, failf("%s is %s, want an object or an array of tasks", describePtr(ptr), article(v.kind))
	}
	return b, nil
}

// token returns the reference token of the task at position i.
func (b *board) token(i int) string {
	if b.isArr {
		return strconv.Itoa(i)
	}
	return b.keys[i]
}

// pointer returns the JSON Pointer of the task at position i.
func (b *board) pointer(i int) string {
	return b.ptr + "/" + escapeToken(b.token(i))
}

// lookup returns the position of the task a dependency names, and false
// if there is none.
func (b *board) lookup(dep value) (int, bool) {
	if b.isArr {
		if dep.kind != kindNumber {
			return 0, false
		}
		i, ok := arrayIndex(dep.str)
		return i, ok && i < len(b.tasks)
	}
	if dep.kind != kindString {
		return 0, false
	}
	i, ok := slices.BinarySearch(b.keys, dep.str)
	return i, ok
}

// matches reports whether task is an object with every member of want (an
// object) equal to the given value.
func matches(task, want value) bool {
	if want.kind == kindAbsent {
		return true
	}
	if task.kind != kindObject {
		return false
	}
	for _, m := range want.obj.members {
		i, ok := task.obj.find(m.key)
		if !ok || !equal(task.obj.members[i].val, m.val) {
			return false
		}
	}
	return true
}

// memberOf returns the member name of task, or kindAbsent.
func memberOf(task value, name string) value {
	if task.kind != kindObject {
		return value{}
	}
	if i, ok := task.obj.find(name); ok {
		return task.obj.members[i].val
	}
	return value{}
}

// plan is what a board says of its candidates: the ready ones in the order
// claim_next takes them, and the blocked ones with what blocks each.
type plan struct {
	ready   []int
	blocked []blockedTask
}

type blockedTask struct {
	pos        int
	waitingFor []string
}

// decide computes the plan of b under c. With wantBlocked false it does not
// word what blocks each task.
func decide(b *board, c *claimSpec, wantBlocked bool) plan {
	n := len(b.tasks)
	var p plan
	// The dependency edges, by position; bad[i] is the dependencies of i
	// that name no task.
	var edges [][]int
	var bad [][]string
	if c.deps != "" {
		edges, bad = make([][]int, n), make([][]string, n)
		for i, t := range b.tasks {
			d := memberOf(t, c.deps)
			switch d.kind {
			case kindAbsent, kindNull:
			case kindArray:
				for _, e := range d.arr.elems {
					if j, ok := b.lookup(e); ok {
						edges[i] = append(edges[i], j)
					} else {
						bad[i] = append(bad[i], missingDep(b, e))
					}
				}
			default:
				bad[i] = append(bad[i], fmt.Sprintf("%q is %s, not an array (invalid)", c.deps, article(d.kind)))
			}
		}
	}
	comp := cycles(edges, n)
	for i, t := range b.tasks {
		if !matches(t, c.match) {
			continue
		}
		ready := true
		var waiting []string
		if edges != nil {
			if len(bad[i]) > 0 {
				ready = false
				waiting = append(waiting, bad[i]...)
			}
			for _, j := range edges[i] {
				cyc := comp[i] >= 0 && comp[i] == comp[j]
				if cyc || !matches(b.tasks[j], c.done) {
					ready = false
					if wantBlocked {
						w := b.pointer(j)
						if cyc {
							w += " (cycle)"
						}
						waiting = append(waiting, w)
					}
				}
			}
		}
		if ready {
			p.ready = append(p.ready, i)
		} else if wantBlocked {
			p.blocked = append(p.blocked, blockedTask{pos: i, waitingFor: waiting})
		}
	}
	if c.order != "" {
		slices.SortStableFunc(p.ready, func(i, j int) int {
			return compareOrder(memberOf(b.tasks[i], c.order), memberOf(b.tasks[j], c.order))
		})
	}
	return p
}

// missingDep words a dependency that names no task.
func missingDep(b *board, dep value) string {
	if (b.isArr && dep.kind == kindNumber) || (!b.isArr && dep.kind == kindString) {
		return b.ptr + "/" + escapeToken(dep.str) + " (missing)"
	}
	return fmt.Sprintf("%s %s (invalid)", article(dep.kind), string(appendValue(nil, dep, 0)))
}

// cycles returns, for each position, the number of its strongly connected
// component if it lies on a cycle (a component of two tasks or more, or a
// task that depends on itself), and -1 otherwise (Tarjan's algorithm).
func cycles(edges [][]int, n int) []int {
	comp := make([]int, n)
	for i := range comp {
		comp[i] = -1
	}
	if edges == nil {
		return comp
	}
	index := make([]int, n)
	low := make([]int, n)
	on := make([]bool, n)
	var stack []int
	next, ncomp := 1, 0
	var visit func(v int)
	visit = func(v int) {
		index[v], low[v] = next, next
		next++
		stack = append(stack, v)
		on[v] = true
		for _, w := range edges[v] {
			if index[w] == 0 {
				visit(w)
				low[v] = min(low[v], low[w])
			} else if on[w] {
				low[v] = min(low[v], index[w])
			}
		}
		if low[v] != index[v] {
			return
		}
		top := len(stack) - 1
		for stack[top] != v {
			top--
		}
		members := stack[top:]
		stack = stack[:top]
		cyclic := len(members) > 1 || slices.Contains(edges[v], v)
		for _, w := range members {
			on[w] = false
			if cyclic {
				comp[w] = ncomp
			}
		}
		ncomp++
	}
	for v := range n {
		if index[v] == 0 {
			visit(v)
		}
	}
	return comp
}

// orderRank sorts numbers before strings before the rest (absent, and
// values of other kinds).
func orderRank(v value) int {
	switch v.kind {
	case kindNumber:
		return 0
	case kindString:
		return 1
	}
	return 2
}

// compareOrder compares two values of the order member.
func compareOrder(a, b value) int {
	ra, rb := orderRank(a), orderRank(b)
	if ra != rb {
		return ra - rb
	}
	switch ra {
	case 0:
		return compareNumbers(a.str, b.str)
	case 1:
		return strings.Compare(a.str, b.str)
	}
	return 0
}

// compareNumbers compares the JSON number literals a and b by value,
// exactly.
func compareNumbers(a, b string) int {
	na, da, ea, ha := decimalForm(a)
	nb, db, eb, hb := decimalForm(b)
	sign := func(neg bool, digits string) int {
		switch {
		case digits == "":
			return 0
		case neg:
			return -1
		}
		return 1
	}
	sa, sb := sign(na, da), sign(nb, db)
	if sa != sb || sa == 0 {
		return cmpInt(int64(sa), int64(sb))
	}
	// Same sign, both non-zero: ±0.digits × 10^e.
	var c int
	if ha == nil && hb == nil {
		c = cmpInt(ea, eb)
	} else {
		c = exponent(ea, ha).Cmp(exponent(eb, hb))
	}
	if c == 0 {
		c = strings.Compare(da, db) // no trailing zeros: a prefix is smaller
	}
	return c * sa
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// escapeToken escapes a reference token for a JSON Pointer.
func escapeToken(tok string) string {
	if !strings.ContainsAny(tok, "~/") {
		return tok
	}
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1")
}

// formatPointer returns the JSON Pointer of the reference tokens toks.
func formatPointer(toks []string) string {
	var b strings.Builder
	for _, t := range toks {
		b.WriteByte('/')
		b.WriteString(escapeToken(t))
	}
	return b.String()
}

// describePtr returns a pointer as messages quote it.
func describePtr(p string) string {
	if p == "" {
		return `the document ""`
	}
	return p
}

// claimNext applies a claim_next operation whose path is toks.
func (d *Doc) claimNext(toks []string, c *claimSpec) *opError {
	v, e := d.get(toks)
	if e != nil {
		return e
	}
	ptr := formatPointer(toks)
	b, e := newBoard(ptr, v)
	if e != nil {
		return e
	}
	p := decide(b, c, false)
	if len(p.ready) == 0 {
		return &opError{code: CodeNoReadyTask, msg: "no ready task under " + ptr}
	}
	pos := p.ready[0]
	task := append(slices.Clip(toks), b.token(pos))
	if c.set.kind != kindAbsent {
		merged := mergeValue(deepCopy(b.tasks[pos]), detachCopy(c.set))
		if len(task)+depthOf(merged) > d.depthLimit() {
			return d.tooDeep()
		}
		if e := d.replace(task, merged); e != nil {
			return e
		}
	}
	d.claim = task
	return nil
}

// mergeValue returns the RFC 7396 merge of patch into target; both are
// owned by the caller, and may be reused in the result.
func mergeValue(target, patch value) value {
	if patch.kind != kindObject {
		return patch
	}
	if target.kind != kindObject {
		target = value{kind: kindObject, obj: &object{}}
	}
	mergeObject(target.obj, patch.obj)
	return target
}

// resolveClaimed returns op with a path or from that starts with $claimed
// made absolute, or op itself.
func (d *Doc) resolveClaimed(op *Op) (*Op, *opError) {
	if !op.pathClaimed && !op.fromClaimed {
		return op, nil
	}
	if d.claim == nil {
		return nil, failf("%s names no task: no claim_next before it in the patch claimed one", claimedRef)
	}
	c := *op
	if op.pathClaimed {
		c.path = append(slices.Clip(d.claim), op.path...)
	}
	if op.fromClaimed {
		c.from = append(slices.Clip(d.claim), op.from...)
	}
	return &c, nil
}

// Claimed returns the JSON Pointer of the task that the last claim_next of
// the last successful Apply claimed, or "" if it had none.
func (d *Doc) Claimed() string { return d.claimed }

// ReadyTask is a task that claim_next would take, as Ready lists it.
type ReadyTask struct {
	Pointer string          `json:"pointer"`
	Task    json.RawMessage `json:"task"`
}

// BlockedTask is a task that matches but is not ready, with what it waits
// for: the pointer of each dependency not yet done, with " (missing)" for
// one that names no task, " (cycle)" for one on a cycle with it, and
// " (invalid)" for a dependency list or item of the wrong type.
type BlockedTask struct {
	Pointer    string   `json:"pointer"`
	WaitingFor []string `json:"waiting_for"`
}

// Ready returns the tasks that op, a claim_next operation from DecodePatch
// whose path does not start with $claimed, would take from the document,
// in the order it would take them, and the tasks that match but are
// blocked. The document is not changed.
func (d *Doc) Ready(op Op) ([]ReadyTask, []BlockedTask, error) {
	if op.Kind != opClaimNext || op.claim == nil || op.pathClaimed {
		return nil, nil, errors.New("replay: Ready needs a decoded claim_next op")
	}
	if !d.exists {
		return nil, nil, errors.New(errNoDoc.msg)
	}
	v, e := d.get(op.path)
	if e != nil {
		return nil, nil, fmt.Errorf("%s: %s", describePtr(op.Path), e.msg)
	}
	b, e := newBoard(formatPointer(op.path), v)
	if e != nil {
		return nil, nil, errors.New(e.msg)
	}
	p := decide(b, op.claim, true)
	ready := make([]ReadyTask, 0, len(p.ready))
	for _, i := range p.ready {
		task, err := json.Marshal(toAny(b.tasks[i]))
		if err != nil {
			return nil, nil, err
		}
		ready = append(ready, ReadyTask{Pointer: b.pointer(i), Task: task})
	}
	blocked := make([]BlockedTask, 0, len(p.blocked))
	for _, bt := range p.blocked {
		w := bt.waitingFor
		if w == nil {
			w = []string{}
		}
		blocked = append(blocked, BlockedTask{Pointer: b.pointer(bt.pos), WaitingFor: w})
	}
	return ready, blocked, nil
}
