package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/stateward/stateward/journal"
	"github.com/stateward/stateward/replay"
)

func (m *Main) submit(ctx context.Context, args []string) int {
	fs := m.flagSet("submit", "submit --dir DIR --agent NAME --file DOC [--if-version N] [--id ID] [--merge] [--wait] [--timeout DURATION] [PATCH]")
	dir := fs.String("dir", "", "state directory (or STATEWARD_DIR)")
	agent := fs.String("agent", "", "agent name (journal/NAME/)")
	file := fs.String("file", "", "document name, e.g. tasks.json")
	var ifVersion optUint
	fs.Var(&ifVersion, "if-version", "apply only if the document is at this version (0: must not exist yet)")
	id := fs.String("id", "", "idempotency key, echoed in the result")
	merge := fs.Bool("merge", false, "PATCH is an RFC 7396 merge patch, not an RFC 6902 patch")
	wait := fs.Bool("wait", false, "wait for the result and print it instead of the record")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the journal lock and, with --wait, for the result")
	pos, err := parse(fs, args)
	if err != nil {
		return usageExit(err)
	}
	d, err := m.stateDir(*dir)
	if err != nil {
		return m.usageErr("submit", "%v", err)
	}
	switch {
	case *agent == "":
		return m.usageErr("submit", "--agent is required")
	case *file == "":
		return m.usageErr("submit", "--file is required")
	case len(pos) > 1:
		return m.usageErr("submit", "one PATCH argument at most, got %d (quote the JSON)", len(pos))
	case *timeout <= 0:
		return m.usageErr("submit", "--timeout must be > 0")
	}
	if err := journal.CheckAgentName(*agent); err != nil {
		return m.usageErr("submit", "%v", err)
	}
	if err := journal.CheckDocName(*file); err != nil {
		return m.usageErr("submit", "%v", err)
	}
	var text []byte
	if len(pos) == 0 || pos[0] == "-" {
		if text, err = io.ReadAll(m.Stdin); err != nil {
			return m.fail("submit", fmt.Errorf("read PATCH from standard input: %w", err))
		}
	} else {
		text = []byte(pos[0])
	}
	text = bytes.TrimSpace(text)
	if !json.Valid(text) {
		return m.usageErr("submit", "PATCH is not valid JSON: %.60s", text)
	}
	in := journal.Intent{File: *file, ID: *id, Time: time.Now().UTC().Format(time.RFC3339Nano)}
	if *merge {
		in.Merge = text
	} else {
		if text[0] != '[' {
			return m.usageErr("submit", "PATCH must be a JSON array of RFC 6902 operations (or use --merge for a merge patch)")
		}
		in.Patch = text
	}
	if ifVersion.set {
		v := ifVersion.v
		in.IfVersion = &v
	}
	probe := in
	probe.Seq = 1 // Append assigns the real one
	if err := probe.Validate(); err != nil {
		return m.usageErr("submit", "%v", err)
	}

	w := journal.NewWriter(d, *agent)
	w.LockTimeout = *timeout
	if err := w.Open(); err != nil {
		return m.fail("submit", err)
	}
	rec, err := w.Append(in)
	if cerr := w.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return m.fail("submit", err)
	}
	if !*wait {
		line, _ := rec.MarshalLine()
		m.Stdout.Write(line)
		return exitOK
	}
	wctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := journal.WaitResult(wctx, d, *agent, rec.Seq)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			fmt.Fprintf(m.Stderr, "stateward submit: seq %d appended to the journal of %s, but no result within %s; the watcher will still decide it.\n%s", rec.Seq, *agent, *timeout, whyNoResult(d, *agent, *file))
			return exitTimeout
		}
		return m.fail("submit", err)
	}
	m.Stdout.Write(res.AppendLine(nil))
	return resultExit(res)
}

// resultExit maps a result to submit's exit code.
func resultExit(r journal.Result) int {
	switch r.Status {
	case journal.StatusApplied:
		return exitOK
	case journal.StatusConflict:
		return exitConflict
	case journal.StatusRejected:
		return exitRejected
	}
	return exitError
}

// whyNoResult says what is known about a state directory whose watcher did
// not answer in time: whether a watcher holds its lock (found without
// taking the lock), the last commit, the document's state and the agent's
// backlog. Each line starts with two spaces and ends with a newline.
func whyNoResult(dir, agent, file string) string {
	st, err := replay.ReadStatus(dir)
	if err != nil {
		return fmt.Sprintf("  cannot read the state of %s: %v\n", dir, err)
	}
	var b strings.Builder
	running := st.Watcher != "stopped"
	if running {
		fmt.Fprintf(&b, "  watcher %s holds the lock of %s; last commit %d (batch %d)\n", strings.TrimPrefix(st.Watcher, "running "), dir, st.Commit, st.Batch)
	} else {
		fmt.Fprintf(&b, "  no watcher holds the lock of %s (last commit %d): start one with: stateward watch --dir %s\n", dir, st.Commit, dir)
	}
	for _, ds := range st.Docs {
		if ds.File == file && ds.State != "ok" {
			fmt.Fprintf(&b, "  %s: %s\n", file, ds.State)
		}
	}
	for _, as := range st.Agents {
		if as.Agent != agent {
			continue
		}
		fmt.Fprintf(&b, "  agent %s: %d intents not processed yet (last processed seq %d)", agent, as.Backlog, as.Seq)
		if as.State != "ok" {
			fmt.Fprintf(&b, "; %s", as.State)
		}
		if as.LastError != "" {
			fmt.Fprintf(&b, "; last error: %s", as.LastError)
		}
		b.WriteString("\n")
		if running && as.Backlog > 0 {
			b.WriteString("  the watcher runs but has not reached this intent: it may be busy, or unable to commit (a full disk, a failed fsync): see its log\n")
		}
	}
	return b.String()
}
