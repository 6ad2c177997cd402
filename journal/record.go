package journal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Statuses of a Result (docs/format.md, Result).
const (
	StatusApplied  = "applied"
	StatusConflict = "conflict"
	StatusRejected = "rejected"
)

// DefaultMaxLine is the longest intent line, newline included, that the
// watcher accepts (docs/format.md, Intent). Longer lines are rejected.
const DefaultMaxLine = 1 << 20

// MaxIDLen is the longest idempotency key, in bytes (docs/format.md, Intent).
const MaxIDLen = 128

var (
	// ErrBadName is returned for an agent or document name that docs/format.md (Names) forbids.
	ErrBadName = errors.New("journal: bad name")
	// ErrBadRecord is returned for an intent line that does not follow docs/format.md (Intent).
	ErrBadRecord = errors.New("journal: bad record")
)

var (
	docNameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.json$`)
	agentNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
)

// ValidDocName reports whether name is a document name allowed by docs/format.md (Names).
func ValidDocName(name string) bool {
	base, ok := strings.CutSuffix(name, ".json")
	return ok && validName(base, 128) && !strings.Contains(name, "..") // docNameRE, without a regexp on the hot path
}

// ValidAgentName reports whether name is an agent name allowed by docs/format.md (Names).
func ValidAgentName(name string) bool {
	return validName(name, 64) // agentNameRE
}

// validName reports whether s matches ^[A-Za-z0-9][A-Za-z0-9._-]{0,max-1}$
// and contains no "..".
func validName(s string, max int) bool {
	if len(s) == 0 || len(s) > max || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || (c != '.' && c != '_' && c != '-')) {
			return false
		}
	}
	return true
}

// CheckDocName returns an error wrapping ErrBadName if name is not a valid
// document name.
func CheckDocName(name string) error {
	if !ValidDocName(name) {
		return fmt.Errorf("%w: document %q must match %s and contain no \"..\"", ErrBadName, name, docNameRE)
	}
	return nil
}

// CheckAgentName returns an error wrapping ErrBadName if name is not a valid
// agent name.
func CheckAgentName(name string) error {
	if !ValidAgentName(name) {
		return fmt.Errorf("%w: agent %q must match %s and contain no \"..\"", ErrBadName, name, agentNameRE)
	}
	return nil
}

// Intent is one record of an agent's journal (docs/format.md, Intent, format v1).
//
// Exactly one of Patch and Merge is set. A merge patch of JSON null is kept
// as the four bytes "null", so that it is told apart from an absent field.
type Intent struct {
	Seq       uint64          `json:"seq"`
	File      string          `json:"file"`
	Patch     json.RawMessage `json:"patch,omitempty"`
	Merge     json.RawMessage `json:"merge,omitempty"`
	IfVersion *uint64         `json:"if_version,omitempty"`
	ID        string          `json:"id,omitempty"`
	Time      string          `json:"time,omitempty"`
}

// MarshalLine returns the intent as one journal line, ending in "\n".
// It validates the intent first: a line the watcher would reject is never
// written by this package.
func (in Intent) MarshalLine() ([]byte, error) {
	if err := in.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(in); err != nil { // Encode compacts raw fields and adds "\n"
		return nil, fmt.Errorf("%w: encode: %v", ErrBadRecord, err)
	}
	return buf.Bytes(), nil
}

// Validate checks the fields of an intent against docs/format.md (Intent).
func (in Intent) Validate() error { return in.validate(true) }

// validate is Validate; checkJSON false skips the syntax check of patch and
// merge, for callers that have already scanned them.
func (in Intent) validate(checkJSON bool) error {
	if in.Seq < 1 {
		return fmt.Errorf("%w: seq must be an integer >= 1", ErrBadRecord)
	}
	if err := CheckDocName(in.File); err != nil {
		return fmt.Errorf("%w: file: %w", ErrBadRecord, err)
	}
	if (len(in.Patch) == 0) == (len(in.Merge) == 0) {
		return fmt.Errorf("%w: exactly one of patch and merge is required", ErrBadRecord)
	}
	if len(in.Patch) > 0 {
		if p := bytes.TrimSpace(in.Patch); len(p) == 0 || p[0] != '[' {
			return fmt.Errorf("%w: patch must be a JSON array of operations", ErrBadRecord)
		}
		if checkJSON && !json.Valid(in.Patch) {
			return fmt.Errorf("%w: patch is not valid JSON", ErrBadRecord)
		}
	}
	if checkJSON && len(in.Merge) > 0 && !json.Valid(in.Merge) {
		return fmt.Errorf("%w: merge is not valid JSON", ErrBadRecord)
	}
	if len(in.ID) > MaxIDLen {
		return fmt.Errorf("%w: id is %d bytes, longer than %d", ErrBadRecord, len(in.ID), MaxIDLen)
	}
	if !utf8.ValidString(in.ID) {
		// It would be written with U+FFFD in place of each bad byte: another
		// id, possibly longer than MaxIDLen.
		return fmt.Errorf("%w: id is not valid UTF-8", ErrBadRecord)
	}
	if in.Time != "" {
		if _, err := time.Parse(time.RFC3339Nano, in.Time); err != nil {
			return fmt.Errorf("%w: time %q is not RFC 3339", ErrBadRecord, in.Time)
		}
	}
	return nil
}

// rawIntent is the loose shape of a line, decoded field by field so that each
// error can name its field.
type rawIntent struct {
	Seq       json.RawMessage `json:"seq"`
	File      json.RawMessage `json:"file"`
	Patch     json.RawMessage `json:"patch"`
	Merge     json.RawMessage `json:"merge"`
	IfVersion json.RawMessage `json:"if_version"`
	ID        json.RawMessage `json:"id"`
	Time      json.RawMessage `json:"time"`
}

// ParseIntent decodes one journal line (with or without its "\n").
//
// The returned seq is the record's seq whenever it could be read, even when
// err is not nil, so that a rejection can still be addressed to it; it is 0
// when the line has no readable seq. Errors wrap ErrBadRecord and name the
// field at fault.
func ParseIntent(line []byte) (in Intent, seq uint64, err error) {
	line = bytes.TrimRight(line, "\n")
	line = bytes.TrimSuffix(line, []byte("\r"))
	if in, seq, err, ok := parseIntentFast(line); ok {
		return in, seq, err
	}
	return parseIntentSlow(line)
}

// parseIntentSlow is ParseIntent through encoding/json: the reference for
// the fast path, and the one that words syntax errors.
func parseIntentSlow(line []byte) (in Intent, seq uint64, err error) {
	// Decode into a map, not a struct: encoding/json matches struct fields
	// case-insensitively, and the format's names are exact ("Seq" is an unknown field,
	// to be ignored).
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return Intent{}, 0, fmt.Errorf("%w: a record must be a JSON object", ErrBadRecord)
		}
		return Intent{}, 0, fmt.Errorf("%w: not valid JSON: %v", ErrBadRecord, err)
	}
	// An optional field given as null is taken as absent, as many JSON
	// encoders write unset fields that way. (A merge patch of null is not
	// optional: it is kept.)
	opt := func(k string) json.RawMessage {
		if v := fields[k]; string(bytes.TrimSpace(v)) != "null" {
			return v
		}
		return nil
	}
	raw := rawIntent{
		Seq: fields["seq"], File: fields["file"], Patch: fields["patch"], Merge: fields["merge"],
		IfVersion: opt("if_version"), ID: opt("id"), Time: opt("time"),
	}
	if raw.Seq == nil {
		return Intent{}, 0, fmt.Errorf("%w: missing seq", ErrBadRecord)
	}
	s, err := parseUint("seq", raw.Seq)
	if err != nil {
		return Intent{}, 0, err
	}
	if s < 1 {
		return Intent{}, 0, fmt.Errorf("%w: seq must be >= 1", ErrBadRecord)
	}
	in.Seq = s
	if raw.File == nil {
		return in, s, fmt.Errorf("%w: missing file", ErrBadRecord)
	}
	if err := json.Unmarshal(raw.File, &in.File); err != nil {
		return in, s, fmt.Errorf("%w: file must be a string", ErrBadRecord)
	}
	if raw.ID != nil {
		if err := json.Unmarshal(raw.ID, &in.ID); err != nil {
			return in, s, fmt.Errorf("%w: id must be a string", ErrBadRecord)
		}
		if !utf8.Valid(raw.ID) {
			// encoding/json has put U+FFFD in place of each bad byte:
			// reject it, as Validate does for an id built in Go.
			return in, s, fmt.Errorf("%w: id is not valid UTF-8", ErrBadRecord)
		}
	}
	if raw.Time != nil {
		if err := json.Unmarshal(raw.Time, &in.Time); err != nil {
			return in, s, fmt.Errorf("%w: time must be a string", ErrBadRecord)
		}
	}
	if raw.IfVersion != nil {
		v, err := parseUint("if_version", raw.IfVersion)
		if err != nil {
			return in, s, err
		}
		in.IfVersion = &v
	}
	in.Patch, in.Merge = raw.Patch, raw.Merge
	if err := in.Validate(); err != nil {
		return in, s, err
	}
	return in, s, nil
}

// parseUint reads a JSON integer >= 0 written without fraction or exponent.
func parseUint(field string, raw json.RawMessage) (uint64, error) {
	v, err := strconv.ParseUint(string(bytes.TrimSpace(raw)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s must be an integer >= 0, got %.40s", ErrBadRecord, field, raw)
	}
	return v, nil
}

// Result is one record of an agent's results (docs/format.md, Result).
//
// Seq is 0 (and omitted) only for a rejected line that had no readable seq;
// such a result carries Segment and Offset instead.
type Result struct {
	Seq     uint64 `json:"seq,omitempty"`
	ID      string `json:"id,omitempty"`
	File    string `json:"file,omitempty"`
	Status  string `json:"status"`
	Version uint64 `json:"version"`
	Commit  uint64 `json:"commit"`
	Claimed string `json:"claimed,omitempty"` // pointer of the task a claim_next took
	Error   string `json:"error,omitempty"`
	Retry   bool   `json:"retry,omitempty"`
	Segment string `json:"segment,omitempty"`
	Offset  *int64 `json:"offset,omitempty"`
}

// AppendLine appends r as one JSON line ending in "\n". The encoding is
// deterministic, and byte for byte what encoding/json writes for r with
// HTML escaping off (TestResult_AppendLine checks it): recovery relies on
// the same Result always giving the same bytes to finish a results file
// without writing a line twice.
func (r Result) AppendLine(dst []byte) []byte {
	dst = append(dst, '{')
	sep := func() {
		if dst[len(dst)-1] != '{' {
			dst = append(dst, ',')
		}
	}
	if r.Seq != 0 {
		dst = strconv.AppendUint(append(dst, `"seq":`...), r.Seq, 10)
	}
	if r.ID != "" {
		sep()
		dst = appendJSONString(append(dst, `"id":`...), r.ID)
	}
	if r.File != "" {
		sep()
		dst = appendJSONString(append(dst, `"file":`...), r.File)
	}
	sep()
	dst = appendJSONString(append(dst, `"status":`...), r.Status)
	dst = strconv.AppendUint(append(dst, `,"version":`...), r.Version, 10)
	dst = strconv.AppendUint(append(dst, `,"commit":`...), r.Commit, 10)
	if r.Claimed != "" {
		dst = appendJSONString(append(dst, `,"claimed":`...), r.Claimed)
	}
	if r.Error != "" {
		dst = appendJSONString(append(dst, `,"error":`...), r.Error)
	}
	if r.Retry {
		dst = append(dst, `,"retry":true`...)
	}
	if r.Segment != "" {
		dst = appendJSONString(append(dst, `,"segment":`...), r.Segment)
	}
	if r.Offset != nil {
		dst = strconv.AppendInt(append(dst, `,"offset":`...), *r.Offset, 10)
	}
	return append(dst, '}', '\n')
}

// appendJSONString appends s as a JSON string, as encoding/json does with
// HTML escaping off.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.Encode(s) // a string: cannot fail
			return append(dst, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// ParseResult decodes one results line.
func ParseResult(line []byte) (Result, error) {
	var r Result
	if err := json.Unmarshal(line, &r); err != nil {
		return Result{}, fmt.Errorf("%w: result: %v", ErrBadRecord, err)
	}
	if r.Status == "" {
		return Result{}, fmt.Errorf("%w: result without status", ErrBadRecord)
	}
	return r, nil
}

// SegmentName returns the file name of a segment whose first record has seq
// (docs/format.md): 20 decimal digits and ".jsonl".
func SegmentName(seq uint64) string {
	return fmt.Sprintf("%020d.jsonl", seq)
}

// ParseSegmentName returns the first seq of a segment file name, and false
// if name is not a segment name.
func ParseSegmentName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, ".jsonl")
	if !ok || len(digits) != 20 {
		return 0, false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}
