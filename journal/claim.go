package journal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// OpClaimNext is the name of the patch operation that claims the first
// ready task of a board (docs/format.md, claim_next).
const OpClaimNext = "claim_next"

// ClaimedRef starts a path or from of an operation that follows a
// claim_next in the same patch: it stands for the claimed task's pointer,
// as in "$claimed/started".
const ClaimedRef = "$claimed"

// ErrNothingReady is returned by ClaimNext when no task of the board was
// ready: the result is a conflict and nothing changed.
var ErrNothingReady = errors.New("journal: no ready task")

// ClaimSpec is a claim_next operation (docs/format.md, claim_next). Path
// is required; the rest is optional.
type ClaimSpec struct {
	Path  string         `json:"path"`            // the board: an object of tasks by key, or an array of tasks
	Match map[string]any `json:"match,omitempty"` // members a candidate must have, with these values
	Deps  string         `json:"deps,omitempty"`  // member holding the keys (or indexes) of the tasks waited for
	Done  map[string]any `json:"done,omitempty"`  // what a dependency must match to be done; default {"status":"done"}
	Order string         `json:"order,omitempty"` // member by which ready tasks are taken, ascending
	Set   any            `json:"set,omitempty"`   // RFC 7396 merge patch applied to the claimed task
}

// Op returns the operation as the JSON object of a patch.
func (s ClaimSpec) Op() (json.RawMessage, error) {
	if s.Path == "" || s.Path[0] != '/' {
		return nil, fmt.Errorf("%w: claim_next path %q must be a JSON Pointer to the board, e.g. /tasks", ErrBadRecord, s.Path)
	}
	op := struct {
		Op string `json:"op"`
		ClaimSpec
	}{OpClaimNext, s}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(op); err != nil {
		return nil, fmt.Errorf("%w: claim_next: %v", ErrBadRecord, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ClaimPatch returns a patch of the claim, then the operations then, which
// may name the claimed task with ClaimedRef. The intent is atomic: if one
// of them fails, nothing is claimed.
func ClaimPatch(s ClaimSpec, then ...json.RawMessage) (json.RawMessage, error) {
	op, err := s.Op()
	if err != nil {
		return nil, err
	}
	ops := append([]json.RawMessage{op}, then...)
	return json.Marshal(ops)
}

// Claim is what ClaimNext took.
type Claim struct {
	Pointer string          // JSON Pointer of the claimed task, e.g. "/tasks/t7"
	Task    json.RawMessage // the task as read back after the claim; see ClaimNext
	Result  Result
}

// ClaimNext claims the first ready task of a board in file: it appends a
// claim_next intent (followed by the operations then) with w, waits for
// its result with r, and returns the claimed pointer and the task. The
// task is read from the document after the result, so a change committed
// after the claim may show in it (Claim.Result.Version is the claim's).
// When nothing was ready it returns ErrNothingReady with the result; a
// conflict or rejection for any other reason is an error naming the
// result's error.
func ClaimNext(ctx context.Context, w *Writer, r *Results, file string, s ClaimSpec, then ...json.RawMessage) (Claim, error) {
	patch, err := ClaimPatch(s, then...)
	if err != nil {
		return Claim{}, err
	}
	rec, err := w.Append(Intent{File: file, Patch: patch})
	if err != nil {
		return Claim{}, fmt.Errorf("claim in %s: %w", file, err)
	}
	res, err := r.Wait(ctx, rec.Seq)
	if err != nil {
		return Claim{Result: Result{Seq: rec.Seq, File: file}}, fmt.Errorf("claim in %s: %w", file, err)
	}
	c := Claim{Pointer: res.Claimed, Result: res}
	switch {
	case res.Status == StatusConflict && strings.HasPrefix(res.Error, "no ready task under "):
		return c, fmt.Errorf("%w under %s in %s", ErrNothingReady, s.Path, file)
	case res.Status != StatusApplied:
		return c, fmt.Errorf("claim in %s: %s: %s", file, res.Status, res.Error)
	}
	doc, err := ReadDocument(ctx, w.dir, file)
	if err != nil {
		return c, fmt.Errorf("claim in %s: read the claimed task: %w", file, err)
	}
	c.Task, err = Pointer(doc.Data, res.Claimed)
	if err != nil {
		return c, fmt.Errorf("claim in %s: %w", file, err)
	}
	return c, nil
}

// Pointer returns the value at the JSON Pointer ptr (RFC 6901) in the
// JSON text data.
func Pointer(data json.RawMessage, ptr string) (json.RawMessage, error) {
	if ptr == "" {
		return data, nil
	}
	if ptr[0] != '/' {
		return nil, fmt.Errorf("pointer %q does not start with /", ptr)
	}
	cur := data
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		t := bytes.TrimSpace(cur)
		switch {
		case len(t) > 0 && t[0] == '{':
			var m map[string]json.RawMessage
			if err := json.Unmarshal(t, &m); err != nil {
				return nil, err
			}
			v, ok := m[tok]
			if !ok {
				return nil, fmt.Errorf("pointer %s: no member %q", ptr, tok)
			}
			cur = v
		case len(t) > 0 && t[0] == '[':
			var a []json.RawMessage
			if err := json.Unmarshal(t, &a); err != nil {
				return nil, err
			}
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(a) {
				return nil, fmt.Errorf("pointer %s: no element %q", ptr, tok)
			}
			cur = a[i]
		default:
			return nil, fmt.Errorf("pointer %s: %q is inside a scalar", ptr, tok)
		}
	}
	return cur, nil
}
