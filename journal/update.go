package journal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Defaults of an Updater's knobs. A round trip through the watcher (append,
// commit, result) takes about ten milliseconds on a local disk, so the first
// backoff is of that order, and the ceiling stops growing at a fraction of
// a second: under contention from tens of agents, the retries of one
// agent then spread over a window wide enough for the others to commit
// (docs/recipes.md has the figures).
const (
	// DefaultInitialDelay is the ceiling of the backoff after the first
	// conflict.
	DefaultInitialDelay = 5 * time.Millisecond
	// DefaultBackoffFactor multiplies the ceiling after each further
	// conflict.
	DefaultBackoffFactor = 2.0
	// DefaultMaxDelay caps the ceiling.
	DefaultMaxDelay = 500 * time.Millisecond
	// DefaultMaxAttempts is how many intents Update submits for one update
	// before it gives up on conflicts. It guards against a change that can
	// never apply (a test that always fails) rather than against
	// contention, which the context bounds: with 32 agents updating one
	// document back to back, an update takes 3 attempts on average but
	// some take over 40.
	DefaultMaxAttempts = 50
)

var (
	// ErrNoChange is returned by an UpdateFunc that finds nothing to do (the
	// task is already claimed by someone else, the value is already set).
	// Update then returns it without submitting anything. Wrap it to say
	// why: fmt.Errorf("%w: %s is taken by %s", journal.ErrNoChange, id, who).
	ErrNoChange = errors.New("journal: no change")
	// ErrConflict is returned by Update when every attempt it was allowed
	// ended in a conflict.
	ErrConflict = errors.New("journal: conflict")
	// ErrRejected is returned by Update when the watcher rejected the
	// intent as invalid (bad path, unknown op, ...): retrying cannot help.
	ErrRejected = errors.New("journal: rejected")
	// ErrUnsafePatch is returned by Update with SkipIfVersion set when a
	// change could lose an update without if_version.
	ErrUnsafePatch = errors.New("journal: patch is not safe without if_version")
)

// An UpdateFunc returns the change to make to a document, given the
// document as it is now: its data ("null" if it does not exist yet) and its
// version, read together. It returns an Intent with Patch or Merge set;
// Update fills in Seq, File and IfVersion. It may set ID, which must then
// differ on every call: the watcher answers a reused id with a copy of the
// first result if the intent is the same, and rejects it otherwise. It returns ErrNoChange (or an error wrapping it) when
// there is nothing to do.
//
// The function is called again, with the document as it is then, after
// each conflict, so it must compute the change from doc alone, without
// side effects that cannot be repeated.
type UpdateFunc func(doc Document) (Intent, error)

// Updater makes read-modify-write updates of documents safe under
// contention (optimistic concurrency): it reads a document with its
// version, has an UpdateFunc build the change, submits it with if_version
// set to the version read, waits for the result and, on a conflict, backs
// off and starts again from a fresh read.
//
// The backoff before attempt n+1 is a random duration in [0, c] (full
// jitter), where the ceiling c is InitialDelay·BackoffFactor^(n-1), capped at
// MaxDelay. At most MaxAttempts intents are submitted; the context given to
// Update bounds the whole, backoffs and waits included.
//
// Usage: record a new best score unless a better one is already there. The
// value written depends on the value read, so an "inc" cannot do it, and a
// blind write could replace a better score another agent just wrote:
//
//	w, err := journal.OpenWriter(dir, "agent-1")
//	r, err := journal.OpenResults(dir, "agent-1")
//	u := journal.NewUpdater(w, r)
//	mine := 97 // this agent's score
//	res, attempts, err := u.Update(ctx, "scores.json", func(doc journal.Document) (journal.Intent, error) {
//		var s struct{ Best *int `json:"best"` }
//		if err := json.Unmarshal(doc.Data, &s); err != nil {
//			return journal.Intent{}, err
//		}
//		if s.Best == nil {
//			return journal.Intent{}, errors.New("scores.json has no /best yet")
//		}
//		if *s.Best >= mine {
//			return journal.Intent{}, fmt.Errorf("%w: best is %d", journal.ErrNoChange, *s.Best)
//		}
//		patch := fmt.Sprintf(`[{"op":"replace","path":"/best","value":%d}]`, mine)
//		return journal.Intent{Patch: json.RawMessage(patch)}, nil
//	})
//	switch {
//	case errors.Is(err, journal.ErrNoChange): // a better score is there
//	case errors.Is(err, journal.ErrConflict): // still contended after MaxAttempts
//	case err != nil:
//	default: // applied, as version res.Version, after attempts intents
//	}
//
// An Updater uses its Writer and Results from the calling goroutine and is
// not safe for concurrent use (Results is not).
type Updater struct {
	InitialDelay  time.Duration // ceiling of the first backoff; set by NewUpdater
	BackoffFactor float64       // growth of the ceiling per conflict, >= 1; set by NewUpdater
	MaxDelay      time.Duration // cap of the ceiling, >= InitialDelay; set by NewUpdater
	MaxAttempts   int           // intents submitted per Update at most, >= 1; set by NewUpdater

	// SkipIfVersion submits changes without if_version. It is for patches
	// that cannot lose an update, which Update checks (else ErrUnsafePatch):
	// test and inc operations, and replace, remove, move and copy whose
	// path (the target, for move and copy) a test of the same path, or of
	// a path above it, checks earlier in the patch (a compare-and-set).
	// Such a patch then conflicts only when its own tests fail, not
	// whenever anything else in the document changed.
	SkipIfVersion bool

	w *Writer
	r *Results

	// Overridable in tests: read the document, submit an intent and wait
	// for its result, draw the jitter in [0, ceiling], and sleep.
	read   func(ctx context.Context, dir, name string) (Document, error)
	submit func(ctx context.Context, in Intent) (Result, error)
	jitter func(ceiling time.Duration) time.Duration
	sleep  func(ctx context.Context, d time.Duration) error
}

// NewUpdater returns an Updater that appends to w and waits on r, which
// must belong to the same agent and state directory.
func NewUpdater(w *Writer, r *Results) *Updater {
	u := &Updater{
		InitialDelay:  DefaultInitialDelay,
		BackoffFactor: DefaultBackoffFactor,
		MaxDelay:      DefaultMaxDelay,
		MaxAttempts:   DefaultMaxAttempts,
		w:             w,
		r:             r,
		read:          ReadDocument,
		jitter:        fullJitter,
		sleep:         sleepContext,
	}
	u.submit = u.appendAndWait
	return u
}

// validate checks the knobs and the Writer and Results.
func (u *Updater) validate() error {
	switch {
	case u.w == nil || u.r == nil:
		return errors.New("journal: an Updater needs a Writer and a Results")
	case filepath.Clean(u.w.dir) != filepath.Clean(u.r.dir) || u.w.agent != u.r.agent:
		return fmt.Errorf("journal: Writer of agent %q in %s and Results of agent %q in %s do not match", u.w.agent, u.w.dir, u.r.agent, u.r.dir)
	case u.MaxAttempts < 1:
		return fmt.Errorf("journal: MaxAttempts must be >= 1, got %d", u.MaxAttempts)
	case u.InitialDelay < 0:
		return fmt.Errorf("journal: InitialDelay must be >= 0, got %s", u.InitialDelay)
	case u.MaxDelay < u.InitialDelay:
		return fmt.Errorf("journal: MaxDelay %s must be >= InitialDelay %s", u.MaxDelay, u.InitialDelay)
	case !(u.BackoffFactor >= 1) || math.IsInf(u.BackoffFactor, 0):
		return fmt.Errorf("journal: BackoffFactor must be a number >= 1, got %v", u.BackoffFactor)
	}
	return nil
}

// Update changes document name with fn, retrying on conflicts (see
// Updater). It returns the last result, the number of intents it submitted,
// and:
//
//   - nil when the change was applied;
//   - the error of fn as it is, ErrNoChange included, when fn returns one
//     (nothing is submitted for that attempt);
//   - an error wrapping ErrConflict, with the last conflict result, when
//     MaxAttempts attempts all conflicted;
//   - an error wrapping ErrRejected, with the result, when the watcher
//     rejected the intent;
//   - the context's error when ctx ends. If it ends while Update waits for
//     a result, the Result carries the intent's Seq (and no Status): the
//     intent is durable and the watcher will still decide it, so the
//     change may yet be applied. Results.Wait tells.
func (u *Updater) Update(ctx context.Context, name string, fn UpdateFunc) (Result, int, error) {
	if err := u.validate(); err != nil {
		return Result{}, 0, err
	}
	if err := CheckDocName(name); err != nil {
		return Result{}, 0, err
	}
	ids := map[string]bool{}
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return Result{}, attempt - 1, fmt.Errorf("update %s: %w", name, err)
		}
		doc, err := u.read(ctx, u.w.dir, name)
		if err != nil {
			return Result{}, attempt - 1, fmt.Errorf("update %s: %w", name, err)
		}
		in, err := fn(doc)
		if err != nil {
			return Result{}, attempt - 1, err
		}
		in.Seq, in.File, in.IfVersion = 0, name, nil
		if u.SkipIfVersion {
			if err := checkSafe(in); err != nil {
				return Result{}, attempt - 1, fmt.Errorf("update %s: %w", name, err)
			}
		} else {
			v := doc.Version
			in.IfVersion = &v
		}
		if in.ID != "" {
			if ids[in.ID] {
				return Result{}, attempt - 1, fmt.Errorf("update %s: %w: id %q used by an earlier attempt (the watcher would answer with its result)", name, ErrBadRecord, in.ID)
			}
			ids[in.ID] = true
		}
		if in.Time == "" {
			in.Time = time.Now().UTC().Format(time.RFC3339Nano)
		}
		res, err := u.submit(ctx, in)
		if err != nil {
			return res, attempt, err
		}
		switch res.Status {
		case StatusApplied:
			return res, attempt, nil
		case StatusRejected:
			return res, attempt, fmt.Errorf("%w: %s seq %d: %s", ErrRejected, name, res.Seq, res.Error)
		case StatusConflict:
		default:
			return res, attempt, fmt.Errorf("update %s: result of seq %d has unknown status %q", name, res.Seq, res.Status)
		}
		if attempt >= u.MaxAttempts {
			return res, attempt, fmt.Errorf("%w: %s: %d attempts, the last: %s", ErrConflict, name, attempt, res.Error)
		}
		if err := u.sleep(ctx, u.jitter(u.ceiling(attempt))); err != nil {
			return res, attempt, fmt.Errorf("update %s: back off after conflict %d: %w", name, attempt, err)
		}
	}
}

// ceiling returns the upper bound of the backoff after n conflicts (n >= 1):
// InitialDelay·BackoffFactor^(n-1), capped at MaxDelay.
func (u *Updater) ceiling(n int) time.Duration {
	c := float64(u.InitialDelay) * math.Pow(u.BackoffFactor, float64(n-1))
	if c >= float64(u.MaxDelay) || math.IsNaN(c) {
		return u.MaxDelay
	}
	return time.Duration(c)
}

// appendAndWait appends in and waits for its result.
func (u *Updater) appendAndWait(ctx context.Context, in Intent) (Result, error) {
	rec, err := u.w.Append(in)
	if err != nil {
		return Result{}, fmt.Errorf("update %s: %w", in.File, err)
	}
	res, err := u.r.Wait(ctx, rec.Seq)
	if err != nil {
		return Result{Seq: rec.Seq, File: in.File}, fmt.Errorf("update %s: %w", in.File, err)
	}
	return res, nil
}

// checkSafe reports whether in is a change that cannot lose an update
// without if_version: a patch of test, inc, replace, remove, move and copy
// operations in which every operation that overwrites or deletes a value
// (replace, remove, and the target of move and copy) comes after a test of
// the same path or of a path above it. The patch then applies only where
// what it overwrites is what its author saw.
func checkSafe(in Intent) error {
	if len(in.Merge) > 0 {
		return fmt.Errorf("%w: a merge patch overwrites what it names", ErrUnsafePatch)
	}
	var ops []struct {
		Op   string `json:"op"`
		Path string `json:"path"`
	}
	if err := json.Unmarshal(in.Patch, &ops); err != nil {
		return fmt.Errorf("%w: patch must be a JSON array of operations: %v", ErrBadRecord, err)
	}
	var tested []string
	for i, op := range ops {
		switch op.Op {
		case "test":
			tested = append(tested, op.Path)
		case "inc":
		case "replace", "remove", "move", "copy":
			if !slices.ContainsFunc(tested, func(t string) bool { return covers(t, op.Path) }) {
				what := "path"
				if op.Op == "move" || op.Op == "copy" {
					what = "target"
				}
				return fmt.Errorf("%w: op %d (%s %s) overwrites blindly: a test of its %s %q, or of a path above it, must come before it", ErrUnsafePatch, i, op.Op, op.Path, what, op.Path)
			}
		default:
			return fmt.Errorf("%w: op %d is %q: only test, inc, and replace, remove, move and copy after a test of their path may go without if_version", ErrUnsafePatch, i, op.Op)
		}
	}
	return nil
}

// covers reports whether a test of the JSON pointer t covers the value at
// p: p is t or below it.
func covers(t, p string) bool {
	return t == p || t == "" || strings.HasPrefix(p, t+"/")
}

// fullJitter returns a uniformly random duration in [0, ceiling].
func fullJitter(ceiling time.Duration) time.Duration {
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling + 1)
}

// sleepContext waits for d, or until ctx is done.
func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
