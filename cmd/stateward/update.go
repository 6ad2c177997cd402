package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/stateward/stateward/journal"
)

// updateSynopsis is the usage line of update.
const updateSynopsis = "update --dir DIR --agent NAME --file DOC [--retries N] [--merge] [--skip-if-version] [--timeout DURATION] -- COMMAND [ARG...]"

// update runs an optimistic read-modify-write of one document: COMMAND
// gets the document on standard input and prints the patch; on a conflict
// it is run again on the new document, after a backoff (journal.Updater).
func (m *Main) update(ctx context.Context, args []string) int {
	fs := m.flagSet("update", updateSynopsis)
	dir := fs.String("dir", "", "state directory (or STATEWARD_DIR)")
	agent := fs.String("agent", "", "agent name (journal/NAME/)")
	file := fs.String("file", "", "document name, e.g. tasks.json")
	retries := fs.Int("retries", journal.DefaultMaxAttempts-1, "attempts after the first one, on conflicts")
	merge := fs.Bool("merge", false, "COMMAND prints an RFC 7396 merge patch, not an RFC 6902 patch")
	skip := fs.Bool("skip-if-version", false, "submit without if_version: only for patches of test and inc ops, and replace, remove, move, copy each after a test of its path")
	timeout := fs.Duration("timeout", 30*time.Second, "bound on the whole update: lock, reads, COMMAND runs, backoffs and waits")
	// Flags stop at "--" or at the first argument that is not a flag:
	// everything after is COMMAND and its arguments.
	if err := fs.Parse(args); err != nil {
		return usageExit(err)
	}
	command := fs.Args()
	d, err := m.stateDir(*dir)
	if err != nil {
		return m.usageErr("update", "%v", err)
	}
	switch {
	case *agent == "":
		return m.usageErr("update", "--agent is required")
	case *file == "":
		return m.usageErr("update", "--file is required")
	case len(command) == 0:
		return m.usageErr("update", "give the COMMAND that prints the patch, after --")
	case *retries < 0:
		return m.usageErr("update", "--retries must be >= 0")
	case *timeout <= 0:
		return m.usageErr("update", "--timeout must be > 0")
	case *merge && *skip:
		return m.usageErr("update", "--skip-if-version cannot go with --merge: a merge patch overwrites what it names")
	}
	if err := journal.CheckAgentName(*agent); err != nil {
		return m.usageErr("update", "%v", err)
	}
	if err := journal.CheckDocName(*file); err != nil {
		return m.usageErr("update", "%v", err)
	}

	uctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	w := journal.NewWriter(d, *agent)
	w.LockTimeout = *timeout
	if err := w.Open(); err != nil {
		return m.fail("update", err)
	}
	defer w.Close()
	r, err := journal.OpenResults(d, *agent)
	if err != nil {
		return m.fail("update", err)
	}
	defer r.Close()
	u := journal.NewUpdater(w, r)
	u.MaxAttempts = *retries + 1
	u.SkipIfVersion = *skip

	attempt := 0
	res, attempts, err := u.Update(uctx, *file, func(doc journal.Document) (journal.Intent, error) {
		attempt++
		return m.runPatchCommand(uctx, command, doc, attempt, *merge)
	})
	switch {
	case err == nil:
		m.printUpdate(res, attempts)
		return exitOK
	case errors.Is(err, journal.ErrNoChange):
		return exitOK // COMMAND printed nothing: nothing to do, nothing printed
	case errors.Is(err, journal.ErrConflict):
		m.printUpdate(res, attempts)
		fmt.Fprintf(m.Stderr, "stateward update: %s\n", humanError(err))
		return exitConflict
	case errors.Is(err, journal.ErrRejected):
		m.printUpdate(res, attempts)
		fmt.Fprintf(m.Stderr, "stateward update: %s\n", humanError(err))
		return exitRejected
	case errors.Is(uctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		if res.Seq != 0 {
			fmt.Fprintf(m.Stderr, "stateward update: seq %d appended, but no result within %s; the watcher will still decide it.\n%s", res.Seq, *timeout, whyNoResult(d, *agent, *file))
		} else {
			fmt.Fprintf(m.Stderr, "stateward update: not done within %s after %d attempts: %s\n", *timeout, attempts, humanError(err))
		}
		return exitTimeout
	}
	return m.fail("update", err)
}

// runPatchCommand runs COMMAND with doc's data on its standard input and
// returns the intent made of what it prints. Empty output means there is
// nothing to do.
func (m *Main) runPatchCommand(ctx context.Context, command []string, doc journal.Document, attempt int, merge bool) (journal.Intent, error) {
	cmd := exec.CommandContext(ctx, command[0], command[1:]...)
	cmd.Stdin = bytes.NewReader(append(bytes.Clone(doc.Data), '\n'))
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = m.Stderr
	cmd.Env = append(os.Environ(),
		"STATEWARD_FILE="+doc.File,
		"STATEWARD_VERSION="+strconv.FormatUint(doc.Version, 10),
		"STATEWARD_ATTEMPT="+strconv.Itoa(attempt),
	)
	cmd.WaitDelay = time.Second // a background child holding stdout must not hang us
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return journal.Intent{}, ctx.Err()
		}
		return journal.Intent{}, fmt.Errorf("COMMAND %s: %w", strings.Join(command, " "), err)
	}
	text := bytes.TrimSpace(out.Bytes())
	if len(text) == 0 {
		return journal.Intent{}, fmt.Errorf("%w: COMMAND printed no patch", journal.ErrNoChange)
	}
	if !json.Valid(text) {
		return journal.Intent{}, fmt.Errorf("COMMAND printed a patch that is not valid JSON: %.60s", text)
	}
	if merge {
		return journal.Intent{Merge: text}, nil
	}
	if text[0] != '[' {
		return journal.Intent{}, fmt.Errorf("COMMAND printed %.60s: a patch must be a JSON array of RFC 6902 operations (or use --merge)", text)
	}
	return journal.Intent{Patch: text}, nil
}

// printUpdate prints the result as one JSON line, with the number of
// intents the update took.
func (m *Main) printUpdate(res journal.Result, attempts int) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(struct {
		journal.Result
		Attempts int `json:"attempts"`
	}{res, attempts}) // strings and integers: cannot fail
	m.Stdout.Write(buf.Bytes())
}
