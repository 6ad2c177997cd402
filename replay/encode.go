package replay

// This file is the JSON text codec of the in-memory documents: the value tree,
// a parser from JSON text to the tree and the deterministic encoder back.

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth is the deepest nesting of arrays and objects a document or a
// value may have. It is the limit of encoding/json, so that every document
// the engine writes can be read back by it and by encoding/json.
const maxDepth = 10000

// kind is the type of a value.
type kind uint8

const (
	kindAbsent kind = iota // no value: the zero value, never inside a document
	kindNull
	kindFalse
	kindTrue
	kindNumber
	kindString
	kindArray
	kindObject
)

// String returns the JSON name of the kind, for error messages.
func (k kind) String() string {
	switch k {
	case kindNull:
		return "null"
	case kindFalse, kindTrue:
		return "boolean"
	case kindNumber:
		return "number"
	case kindString:
		return "string"
	case kindArray:
		return "array"
	case kindObject:
		return "object"
	}
	return "absent value"
}

// value is one JSON value. Strings and numbers are immutable and shared
// freely; arrays and objects are mutated in place by Apply, so a value that
// is inserted in two places must be copied (deepCopy).
type value struct {
	kind kind
	str  string  // kindString: the text; kindNumber: the literal exactly as written
	arr  *array  // kindArray
	obj  *object // kindObject
}

// array is a JSON array. Apply inserts and removes elements through the
// pointer, so a parent's reference stays valid.
type array struct {
	elems []value
}

// object is a JSON object: its members sorted by key in byte order, without
// duplicates. Sorted members make lookups a binary search, equality a
// pairwise walk, and encoding (which sorts keys, like encoding/json) a walk.
type object struct {
	members []member
}

// member is one key and value of an object.
type member struct {
	key string
	val value
}

// find returns the index of key in o, or where it would be inserted.
func (o *object) find(key string) (int, bool) {
	ms := o.members
	if len(ms) <= 8 {
		for i := range ms {
			if ms[i].key >= key {
				return i, ms[i].key == key
			}
		}
		return len(ms), false
	}
	lo, hi := 0, len(ms)
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if ms[h].key < key {
			lo = h + 1
		} else {
			hi = h
		}
	}
	return lo, lo < len(ms) && ms[lo].key == key
}

// insertAt inserts m at index i of o.
func (o *object) insertAt(i int, m member) {
	o.members = slices.Insert(o.members, i, m)
}

// removeAt removes the member at index i of o and returns it.
func (o *object) removeAt(i int) member {
	m := o.members[i]
	o.members = slices.Delete(o.members, i, i+1)
	return m
}

// insertAt inserts v at index i of a.
func (a *array) insertAt(i int, v value) {
	a.elems = slices.Insert(a.elems, i, v)
}

// removeAt removes the element at index i of a and returns it.
func (a *array) removeAt(i int) value {
	v := a.elems[i]
	a.elems = slices.Delete(a.elems, i, i+1)
	return v
}

// deepCopy returns a copy of v that shares no array or object with it.
func deepCopy(v value) value {
	switch v.kind {
	case kindArray:
		elems := make([]value, len(v.arr.elems))
		for i, e := range v.arr.elems {
			elems[i] = deepCopy(e)
		}
		return value{kind: kindArray, arr: &array{elems: elems}}
	case kindObject:
		ms := make([]member, len(v.obj.members))
		for i, m := range v.obj.members {
			ms[i] = member{key: m.key, val: deepCopy(m.val)}
		}
		return value{kind: kindObject, obj: &object{members: ms}}
	}
	return v
}

// countValues returns the number of values in v, itself included, counting
// no further than limit.
func countValues(v value, limit int) int {
	n := 1
	switch v.kind {
	case kindArray:
		for _, e := range v.arr.elems {
			if n >= limit {
				break
			}
			n += countValues(e, limit-n)
		}
	case kindObject:
		for _, m := range v.obj.members {
			if n >= limit {
				break
			}
			n += countValues(m.val, limit-n)
		}
	}
	return n
}

// detachCopy returns a copy of v that shares no array, object or string
// with it, for a value of a patch that goes into a document: the document
// then does not keep the patch's text alive.
func detachCopy(v value) value {
	switch v.kind {
	case kindNumber, kindString:
		v.str = strings.Clone(v.str)
	case kindArray:
		elems := make([]value, len(v.arr.elems))
		for i, e := range v.arr.elems {
			elems[i] = detachCopy(e)
		}
		return value{kind: kindArray, arr: &array{elems: elems}}
	case kindObject:
		ms := make([]member, len(v.obj.members))
		for i, m := range v.obj.members {
			ms[i] = member{key: strings.Clone(m.key), val: detachCopy(m.val)}
		}
		return value{kind: kindObject, obj: &object{members: ms}}
	}
	return v
}

// encSize returns the bytes appendValue writes for v at nesting level
// level, without writing them.
func encSize(v value, level int) int64 { return sizeOf(v, level, false) }

// sizeOf returns the bytes appendValue writes for v at nesting level level
// or, with dropNulls, for v after dropNulls (null members of objects left
// out, recursively through objects but not arrays).
func sizeOf(v value, level int, dropNulls bool) int64 {
	switch v.kind {
	case kindNull, kindTrue:
		return 4
	case kindFalse:
		return 5
	case kindNumber:
		return int64(len(v.str))
	case kindString:
		return stringSize(v.str)
	case kindArray:
		var items int64
		for _, e := range v.arr.elems {
			items += itemSize("", false, sizeOf(e, level+1, false), level+1)
		}
		return items + containerOverhead(len(v.arr.elems), level)
	case kindObject:
		var items int64
		n := 0
		for _, m := range v.obj.members {
			if dropNulls && m.val.kind == kindNull {
				continue
			}
			items += itemSize(m.key, true, sizeOf(m.val, level+1, dropNulls), level+1)
			n++
		}
		return items + containerOverhead(n, level)
	}
	return 0
}

// itemSize returns the bytes an item of an array or object takes, the
// separating comma aside: a newline, the indentation of level (the item's
// own), for a member the key and ": ", and the value, of vsize bytes.
func itemSize(key string, member bool, vsize int64, level int) int64 {
	n := 1 + 2*int64(level) + vsize
	if member {
		n += stringSize(key) + 2
	}
	return n
}

// containerOverhead returns the bytes of an array or object at nesting
// level level with n items, besides the items: the brackets, the commas
// and the newline and indentation before the closing bracket.
func containerOverhead(n, level int) int64 {
	if n == 0 {
		return 2
	}
	return 3 + 2*int64(level) + int64(n-1)
}

// insertDelta returns the bytes added by inserting an item of itemBytes
// into an array or object at nesting level level that has n items.
func insertDelta(n, level int, itemBytes int64) int64 {
	return containerOverhead(n+1, level) - containerOverhead(n, level) + itemBytes
}

// stringSize returns the bytes appendString writes for s.
func stringSize(s string) int64 {
	n := int64(len(s)) + 2
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !escapeByte[c] {
			continue
		}
		switch {
		case c == 0xE2:
			if i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xA8 || s[i+2] == 0xA9) {
				n += 3 // \u2028 for 3 bytes
				i += 2
			}
		case c == '\\', c == '"', c == '\b', c == '\f', c == '\n', c == '\r', c == '\t':
			n++
		default:
			n += 5 // \u00XX
		}
	}
	return n
}

// depthOf returns the nesting depth of v: 0 for a scalar, 1 for an array or
// object of scalars, and so on.
func depthOf(v value) int {
	d := 0
	switch v.kind {
	case kindArray:
		for _, e := range v.arr.elems {
			d = max(d, depthOf(e))
		}
		return d + 1
	case kindObject:
		for _, m := range v.obj.members {
			d = max(d, depthOf(m.val))
		}
		return d + 1
	}
	return 0
}

// toAny converts v to the values encoding/json decodes into an any with
// UseNumber.
func toAny(v value) any {
	switch v.kind {
	case kindFalse:
		return false
	case kindTrue:
		return true
	case kindNumber:
		return json.Number(v.str)
	case kindString:
		return v.str
	case kindArray:
		out := make([]any, len(v.arr.elems))
		for i, e := range v.arr.elems {
			out[i] = toAny(e)
		}
		return out
	case kindObject:
		out := make(map[string]any, len(v.obj.members))
		for _, m := range v.obj.members {
			out[m.key] = toAny(m.val)
		}
		return out
	}
	return nil
}

// ParseValue parses data, one JSON value, for use as the Value of an Op.
// It accepts what ParseDoc accepts. The value shares no memory with data.
func ParseValue(data []byte) (value, error) {
	return parse(string(data), true)
}

// parse parses s, one JSON value with optional surrounding whitespace. If
// detach is set, the strings of the value are copied out of s, so that a
// small value kept for long does not pin a large input.
func parse(s string, detach bool) (value, error) {
	p := parser{s: s, detach: detach}
	p.skipSpace()
	v, err := p.value()
	if err != nil {
		return value{}, err
	}
	p.skipSpace()
	if p.i < len(p.s) {
		return value{}, p.errorf(p.i, "unexpected %s after top-level value", p.describe(p.i))
	}
	return v, nil
}

// parser is a recursive-descent JSON parser over a string. Unescaped strings
// and numbers are substrings of the input (unless detach is set), so parsing
// a document costs about one allocation per array and object.
type parser struct {
	s      string
	i      int // offset of the next byte to read
	depth  int // arrays and objects open at i
	detach bool

	// Scratch stacks of the arrays and objects being parsed: each array or
	// object pushes its items and copies them to an exact-size slice at
	// its end.
	elems   []value
	members []member
}

// SyntaxError is the error of text that is not one valid JSON value.
// errors.Is matches it with ErrInvalidJSON.
type SyntaxError struct {
	Offset int    // byte offset of the fault in the text
	Msg    string // what is wrong there
}

// Error returns "not valid JSON at offset N: WHAT".
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("not valid JSON at offset %d: %s", e.Offset, e.Msg)
}

// Is reports whether target is ErrInvalidJSON.
func (e *SyntaxError) Is(target error) bool { return target == ErrInvalidJSON }

// errorf returns a *SyntaxError at byte offset off.
func (p *parser) errorf(off int, format string, args ...any) error {
	return &SyntaxError{Offset: off, Msg: fmt.Sprintf(format, args...)}
}

// describe names the byte at offset i for an error message.
func (p *parser) describe(i int) string {
	if i >= len(p.s) {
		return "end of input"
	}
	if c := p.s[i]; c >= 0x20 && c < utf8.RuneSelf {
		return fmt.Sprintf("character %q", rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", p.s[i])
}

func (p *parser) skipSpace() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) value() (value, error) {
	if p.i >= len(p.s) {
		return value{}, p.errorf(p.i, "unexpected end of input, expecting a value")
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		s, err := p.string()
		return value{kind: kindString, str: s}, err
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case c == 't':
		return p.literal("true", kindTrue)
	case c == 'f':
		return p.literal("false", kindFalse)
	case c == 'n':
		return p.literal("null", kindNull)
	}
	return value{}, p.errorf(p.i, "unexpected %s, expecting a value", p.describe(p.i))
}

func (p *parser) literal(lit string, k kind) (value, error) {
	if !strings.HasPrefix(p.s[p.i:], lit) {
		for j := 0; j < len(lit); j++ {
			if p.i+j >= len(p.s) || p.s[p.i+j] != lit[j] {
				return value{}, p.errorf(p.i+j, "unexpected %s in literal %s", p.describe(p.i+j), lit)
			}
		}
	}
	p.i += len(lit)
	return value{kind: k}, nil
}

// enter counts an array or object opening at p.i.
func (p *parser) enter() error {
	p.depth++
	if p.depth > maxDepth {
		return p.errorf(p.i, "exceeded maximum nesting depth %d", maxDepth)
	}
	return nil
}

func (p *parser) array() (value, error) {
	if err := p.enter(); err != nil {
		return value{}, err
	}
	p.i++ // [
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		p.depth--
		return value{kind: kindArray, arr: &array{}}, nil
	}
	base := len(p.elems)
	for {
		v, err := p.value()
		if err != nil {
			return value{}, err
		}
		p.elems = append(p.elems, v)
		p.skipSpace()
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			p.skipSpace()
			continue
		}
		if p.i < len(p.s) && p.s[p.i] == ']' {
			p.i++
			break
		}
		return value{}, p.errorf(p.i, "unexpected %s, expecting ',' or ']'", p.describe(p.i))
	}
	elems := make([]value, len(p.elems)-base)
	copy(elems, p.elems[base:])
	p.elems = p.elems[:base]
	p.depth--
	return value{kind: kindArray, arr: &array{elems: elems}}, nil
}

func (p *parser) object() (value, error) {
	start := p.i
	if err := p.enter(); err != nil {
		return value{}, err
	}
	p.i++ // {
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		p.depth--
		return value{kind: kindObject, obj: &object{}}, nil
	}
	base := len(p.members)
	for {
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			return value{}, p.errorf(p.i, "unexpected %s, expecting a string for an object key", p.describe(p.i))
		}
		key, err := p.string()
		if err != nil {
			return value{}, err
		}
		p.skipSpace()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return value{}, p.errorf(p.i, "unexpected %s, expecting ':' after object key", p.describe(p.i))
		}
		p.i++
		p.skipSpace()
		v, err := p.value()
		if err != nil {
			return value{}, err
		}
		p.members = append(p.members, member{key: key, val: v})
		p.skipSpace()
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			p.skipSpace()
			continue
		}
		if p.i < len(p.s) && p.s[p.i] == '}' {
			p.i++
			break
		}
		return value{}, p.errorf(p.i, "unexpected %s, expecting ',' or '}'", p.describe(p.i))
	}
	ms := make([]member, len(p.members)-base)
	copy(ms, p.members[base:])
	p.members = p.members[:base]
	p.depth--
	if dup, ok := sortMembers(ms); !ok {
		return value{}, p.errorf(start, "duplicate key %q in object", dup)
	}
	return value{kind: kindObject, obj: &object{members: ms}}, nil
}

// sortMembers sorts ms by key. It reports false and the key if a key
// appears twice. Input written by AppendJSON is sorted already, which costs
// one pass.
func sortMembers(ms []member) (string, bool) {
	sorted := true
	for i := 1; i < len(ms); i++ {
		if ms[i-1].key >= ms[i].key {
			sorted = false
			break
		}
	}
	if sorted {
		return "", true
	}
	slices.SortFunc(ms, func(a, b member) int { return strings.Compare(a.key, b.key) })
	for i := 1; i < len(ms); i++ {
		if ms[i-1].key == ms[i].key {
			return ms[i].key, false
		}
	}
	return "", true
}

// plainByte marks the bytes a string can hold without an escape: printable
// ASCII other than '"' and '\\'.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// string parses the string at p.i (at its opening quote) and returns its
// text.
func (p *parser) string() (string, error) {
	s := p.s
	i := p.i + 1
	for i < len(s) {
		c := s[i]
		if plainByte[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			out := s[p.i+1 : i]
			p.i = i + 1
			if p.detach {
				out = strings.Clone(out)
			}
			return out, nil
		case c == '\\':
			return p.escapedString(i)
		case c < 0x20:
			return "", p.errorf(i, "control character 0x%02x in string", c)
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return "", p.errorf(i, "invalid UTF-8 in string")
		}
		i += size
	}
	return "", p.errorf(len(s), "unexpected end of input in string")
}

// escapedString continues string at offset i, the first backslash. It
// decodes escapes as encoding/json does: a \u escape of a lone UTF-16
// surrogate becomes U+FFFD.
func (p *parser) escapedString(i int) (string, error) {
	s := p.s
	buf := make([]byte, 0, i-p.i+16)
	buf = append(buf, s[p.i+1:i]...)
	for i < len(s) {
		c := s[i]
		if plainByte[c] {
			buf = append(buf, c)
			i++
			continue
		}
		switch {
		case c == '"':
			p.i = i + 1
			return string(buf), nil
		case c == '\\':
			if i+1 >= len(s) {
				return "", p.errorf(len(s), "unexpected end of input in string")
			}
			switch e := s[i+1]; e {
			case '"', '\\', '/':
				buf = append(buf, e)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r, ok := hex4(s, i+2)
				if !ok {
					return "", p.errorf(i, "invalid \\u escape in string")
				}
				i += 6
				if utf16.IsSurrogate(r) {
					r2, ok := rune(-1), false
					if i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
						r2, ok = hex4(s, i+2)
					}
					if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
						r = dec
						i += 6
					} else {
						r = utf8.RuneError
					}
				}
				buf = utf8.AppendRune(buf, r)
				continue
			default:
				return "", p.errorf(i, "invalid escape %q in string", s[i:i+2])
			}
			i += 2
		case c < 0x20:
			return "", p.errorf(i, "control character 0x%02x in string", c)
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				return "", p.errorf(i, "invalid UTF-8 in string")
			}
			buf = append(buf, s[i:i+size]...)
			i += size
		}
	}
	return "", p.errorf(len(s), "unexpected end of input in string")
}

// hex4 decodes the four hex digits at s[i:].
func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

func (p *parser) number() (value, error) {
	s := p.s
	start, i := p.i, p.i
	if s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		i = skipDigits(s, i+1)
	default:
		return value{}, p.errorf(i, "unexpected %s in number, expecting a digit", p.describe(i))
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			return value{}, p.errorf(i, "unexpected %s after decimal point, expecting a digit", p.describe(i))
		}
		i = skipDigits(s, i)
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			return value{}, p.errorf(i, "unexpected %s in exponent, expecting a digit", p.describe(i))
		}
		i = skipDigits(s, i)
	}
	p.i = i
	text := s[start:i]
	if p.detach {
		text = strings.Clone(text)
	}
	return value{kind: kindNumber, str: text}, nil
}

func skipDigits(s string, i int) int {
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// AppendJSON appends the deterministic encoding of the document to dst and
// returns the extended slice: the text json.MarshalIndent(d.Data(), "", "  ")
// writes with HTML escaping off, then "\n". Object keys are sorted in byte
// order and numbers are written exactly as they were parsed or computed. A
// document that does not exist appends nothing.
func (d *Doc) AppendJSON(dst []byte) []byte {
	if !d.exists {
		return dst
	}
	dst = appendValue(dst, d.root, 0)
	return append(dst, '\n')
}

// spaces is indentation for newline.
const spaces = "                                                                "

// newline appends a newline and the indentation of level.
func newline(dst []byte, level int) []byte {
	dst = append(dst, '\n')
	for n := 2 * level; n > 0; {
		k := min(n, len(spaces))
		dst = append(dst, spaces[:k]...)
		n -= k
	}
	return dst
}

func appendValue(dst []byte, v value, level int) []byte {
	switch v.kind {
	case kindNull:
		return append(dst, "null"...)
	case kindFalse:
		return append(dst, "false"...)
	case kindTrue:
		return append(dst, "true"...)
	case kindNumber:
		return append(dst, v.str...)
	case kindString:
		return appendString(dst, v.str)
	case kindArray:
		if len(v.arr.elems) == 0 {
			return append(dst, "[]"...)
		}
		dst = append(dst, '[')
		for i, e := range v.arr.elems {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = newline(dst, level+1)
			dst = appendValue(dst, e, level+1)
		}
		dst = newline(dst, level)
		return append(dst, ']')
	case kindObject:
		if len(v.obj.members) == 0 {
			return append(dst, "{}"...)
		}
		dst = append(dst, '{')
		for i, m := range v.obj.members {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = newline(dst, level+1)
			dst = appendString(dst, m.key)
			dst = append(dst, ':', ' ')
			dst = appendValue(dst, m.val, level+1)
		}
		dst = newline(dst, level)
		return append(dst, '}')
	}
	return dst
}

// escapeByte marks the bytes appendString must look at: those that need an
// escape, and 0xE2, the first byte of U+2028 and U+2029.
var escapeByte = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'] = true
	t['\\'] = true
	t[0xE2] = true
	return t
}()

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaped as encoding/json escapes
// it with HTML escaping off. s is valid UTF-8 (the parser guarantees it).
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !escapeByte[c] {
			continue
		}
		if c == 0xE2 {
			// U+2028 and U+2029 are E2 80 A8 and E2 80 A9.
			if i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xA8 || s[i+2] == 0xA9) {
				dst = append(dst, s[start:i]...)
				dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[s[i+2]&0xF])
				i += 2
				start = i + 1
			}
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '\\', '"':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
