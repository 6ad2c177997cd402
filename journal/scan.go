package journal

import (
	"errors"
	"strconv"
	"unicode/utf8"
)

// This file holds the fast path of ParseIntent: a validating scan of one
// JSON object that finds each top-level member's raw value without building
// anything. It accepts exactly what encoding/json accepts (FuzzParseIntent
// checks it against parseIntentSlow); on anything unusual it gives up and
// the slow path, which also words the errors, takes over.

var errScan = errors.New("journal: scan")

// maxScanDepth is lower than encoding/json's limit, so that the fast path
// never accepts what the slow path would reject: deeper lines go the slow
// way.
const maxScanDepth = 1000

// member is a top-level key and the bytes of its value.
type member struct {
	key   []byte // raw key text without quotes; escapes not allowed (slow path)
	value []byte
}

// scanObject splits a line holding one JSON object into its members. ok is
// false if the line is not a plain object the fast path handles.
func scanObject(b []byte, members []member) ([]member, bool) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return members, skipWS(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return nil, false
		}
		end, plain := scanString(b, i)
		if end < 0 || !plain {
			return nil, false
		}
		key := b[i+1 : end-1]
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i = skipWS(b, i+1)
		vend := skipValue(b, i, 1)
		if vend < 0 {
			return nil, false
		}
		members = append(members, member{key: key, value: b[i:vend]})
		i = skipWS(b, vend)
		if i >= len(b) {
			return nil, false
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return members, skipWS(b, i+1) == len(b)
		default:
			return nil, false
		}
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the index after the string starting at b[i] ('"'),
// or -1 if it is invalid, and whether it is plain: printable ASCII without
// escapes, so that its bytes are its value.
func scanString(b []byte, i int) (int, bool) {
	plain := true
	for i++; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '"':
			return i + 1, plain
		case c < 0x20:
			return -1, false
		case c == '\\':
			plain = false
			i++
			if i >= len(b) {
				return -1, false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) {
					return -1, false
				}
				for _, h := range b[i+1 : i+5] {
					if !isHex(h) {
						return -1, false
					}
				}
				i += 4
			default:
				return -1, false
			}
		case c >= utf8.RuneSelf:
			plain = false
		}
	}
	return -1, false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// skipValue returns the index after the JSON value starting at b[i], or -1.
func skipValue(b []byte, i, depth int) int {
	if i >= len(b) || depth > maxScanDepth {
		return -1
	}
	switch c := b[i]; {
	case c == '"':
		end, _ := scanString(b, i)
		return end
	case c == '{' || c == '[':
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == closer {
			return i + 1
		}
		for {
			if c == '{' {
				if i >= len(b) || b[i] != '"' {
					return -1
				}
				if i, _ = scanString(b, i); i < 0 {
					return -1
				}
				i = skipWS(b, i)
				if i >= len(b) || b[i] != ':' {
					return -1
				}
				i = skipWS(b, i+1)
			}
			if i = skipValue(b, i, depth+1); i < 0 {
				return -1
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return -1
			}
			if b[i] == closer {
				return i + 1
			}
			if b[i] != ',' {
				return -1
			}
			i = skipWS(b, i+1)
		}
	case c == '-' || ('0' <= c && c <= '9'):
		return skipNumber(b, i)
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	}
	return -1
}

func skipLiteral(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// skipNumber follows RFC 8259's number grammar.
func skipNumber(b []byte, i int) int {
	if b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return -1
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return -1
		}
	}
	return i
}

// plainString returns the value of a JSON string token if it is plain
// (see scanString).
func plainString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	end, plain := scanString(v, 0)
	if end != len(v) || !plain {
		return "", false
	}
	return string(v[1 : len(v)-1]), true
}

// parseIntentFast is ParseIntent for lines that scanObject handles and whose
// string fields are plain; ok is false otherwise.
func parseIntentFast(line []byte) (in Intent, seq uint64, err error, ok bool) {
	var buf [8]member
	members, ok := scanObject(line, buf[:0])
	if !ok {
		return Intent{}, 0, nil, false
	}
	var raw rawIntent
	for _, m := range members {
		switch string(m.key) {
		case "seq":
			raw.Seq = m.value
		case "file":
			raw.File = m.value
		case "patch":
			raw.Patch = m.value
		case "merge":
			raw.Merge = m.value
		case "if_version":
			raw.IfVersion = m.value
		case "id":
			raw.ID = m.value
		case "time":
			raw.Time = m.value
		}
	}
	for _, opt := range []*[]byte{(*[]byte)(&raw.IfVersion), (*[]byte)(&raw.ID), (*[]byte)(&raw.Time)} {
		if string(*opt) == "null" {
			*opt = nil
		}
	}
	// Strings must be plain for their bytes to be their value; anything
	// else goes the slow way.
	for _, s := range []struct {
		raw []byte
		dst *string
	}{{raw.File, &in.File}, {raw.ID, &in.ID}, {raw.Time, &in.Time}} {
		if s.raw == nil {
			continue
		}
		v, ok := plainString(s.raw)
		if !ok { // escaped, non-ASCII, or not a string: the slow path decides
			return Intent{}, 0, nil, false
		}
		*s.dst = v
	}
	if raw.Seq == nil {
		return Intent{}, 0, nil, false
	}
	s, perr := strconv.ParseUint(string(raw.Seq), 10, 64)
	if perr != nil || s < 1 || raw.File == nil {
		return Intent{}, 0, nil, false
	}
	in.Seq = s
	if raw.IfVersion != nil {
		v, perr := strconv.ParseUint(string(raw.IfVersion), 10, 64)
		if perr != nil {
			return Intent{}, 0, nil, false
		}
		in.IfVersion = &v
	}
	in.Patch, in.Merge = raw.Patch, raw.Merge
	return in, s, in.validate(false), true
}
