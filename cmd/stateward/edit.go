package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"time"

	"github.com/stateward/stateward/journal"
	"github.com/stateward/stateward/replay"
)

// editSynopsis is the usage line of edit.
const editSynopsis = "edit --dir DIR --file DOC [--agent NAME] [--timeout DURATION]"

// edit lets a person change a document by hand without undoing anyone's
// work: it opens $VISUAL, else $EDITOR, else vi, on the current document,
// and submits what was saved as a replacement of the whole document guarded
// by if_version. If the document changed meanwhile the watcher answers
// conflict, and edit says so and opens the editor again on the new version
// (as kubectl edit does). An unchanged save, an empty file or invalid JSON
// submits nothing.
func (m *Main) edit(ctx context.Context, args []string) int {
	fs := m.flagSet("edit", editSynopsis)
	dir := fs.String("dir", "", "state directory (or STATEWARD_DIR)")
	file := fs.String("file", "", "document name, e.g. tasks.json")
	agent := fs.String("agent", "", `agent name for the edit's journal (default "edit-" and the user name)`)
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the journal lock and for each result")
	pos, err := parse(fs, args)
	if err != nil {
		return usageExit(err)
	}
	d, err := m.stateDir(*dir)
	if err != nil {
		return m.usageErr("edit", "%v", err)
	}
	switch {
	case len(pos) > 0:
		return m.usageErr("edit", "unexpected argument %q (give the document as --file)", pos[0])
	case *file == "":
		return m.usageErr("edit", "--file is required")
	case *timeout <= 0:
		return m.usageErr("edit", "--timeout must be > 0")
	}
	if *agent == "" {
		*agent = m.editAgent()
	}
	if err := journal.CheckAgentName(*agent); err != nil {
		return m.usageErr("edit", "%v (give --agent NAME)", err)
	}
	if err := journal.CheckDocName(*file); err != nil {
		return m.usageErr("edit", "%v", err)
	}
	editor := m.Getenv("VISUAL")
	if editor == "" {
		editor = m.Getenv("EDITOR")
	}
	if editor == "" {
		editor = "vi"
	}

	for {
		doc, err := journal.ReadDocument(ctx, d, *file)
		if err != nil {
			return m.fail("edit", err)
		}
		tmp, err := writeEditFile(*file, doc.Data)
		if err != nil {
			return m.fail("edit", err)
		}
		if err := m.runEditor(ctx, editor, tmp); err != nil {
			os.Remove(tmp)
			return m.fail("edit", fmt.Errorf("%w; nothing submitted", err))
		}
		saved, err := os.ReadFile(tmp)
		if err != nil {
			return m.fail("edit", err)
		}
		saved = bytes.TrimSpace(saved)
		if len(saved) == 0 {
			os.Remove(tmp)
			fmt.Fprintf(m.Stderr, "stateward edit: the file was saved empty: edit cancelled, nothing submitted\n")
			return exitOK
		}
		parsed, err := replay.ParseDoc(saved)
		if err != nil {
			fmt.Fprintf(m.Stderr, "stateward edit: what was saved is not valid JSON (%v): nothing submitted; your text is kept in %s\n", err, tmp)
			return exitUsage
		}
		if before, err := replay.ParseDoc(doc.Data); err == nil && bytes.Equal(parsed.AppendJSON(nil), before.AppendJSON(nil)) {
			os.Remove(tmp)
			fmt.Fprintf(m.Stderr, "stateward edit: no changes to %s (version %d): nothing submitted\n", *file, doc.Version)
			return exitOK
		}
		res, code, err := m.submitEdit(ctx, d, *agent, *file, doc.Version, saved, *timeout)
		if err != nil {
			fmt.Fprintf(m.Stderr, "stateward edit: %v; your text is kept in %s\n", err, tmp)
			return code
		}
		if res.Status == journal.StatusConflict {
			fmt.Fprintf(m.Stderr, "stateward edit: %s changed while you edited it (you started from version %d, it is now at version %d): nothing was applied; your text is kept in %s; reopening the editor on the new version\n", *file, doc.Version, res.Version, tmp)
			continue
		}
		m.Stdout.Write(res.AppendLine(nil))
		if res.Status != journal.StatusApplied {
			fmt.Fprintf(m.Stderr, "stateward edit: %s: %s; your text is kept in %s\n", res.Status, res.Error, tmp)
			return resultExit(res)
		}
		os.Remove(tmp)
		return exitOK
	}
}

// editAgent returns the default agent name of edit: "edit-" and the user
// name ($USER, else the account's), with characters an agent name cannot
// hold replaced by "-".
func (m *Main) editAgent() string {
	name := m.Getenv("USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	if name == "" {
		name = "unknown"
	}
	b := []byte("edit-" + name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	return string(b[:min(len(b), 64)])
}

// writeEditFile writes a document's data to a new temporary file for the
// editor, named after the document so that editors pick JSON highlighting.
func writeEditFile(doc string, data []byte) (string, error) {
	f, err := os.CreateTemp("", "stateward-edit-*-"+filepath.Base(doc))
	if err != nil {
		return "", fmt.Errorf("create the file to edit: %w", err)
	}
	data = bytes.TrimRight(data, "\n")
	_, err = f.Write(append(bytes.Clone(data), '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("write the file to edit: %w", err)
	}
	return f.Name(), nil
}

// runEditor runs the editor command on path, through sh so that an editor
// given with arguments ("code --wait") works, on the program's own
// terminal streams.
func (m *Main) runEditor(ctx context.Context, editor, path string) error {
	cmd := exec.CommandContext(ctx, "sh", "-c", editor+` "$1"`, "sh", path)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = m.Stdin, m.Stdout, m.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("editor %q: %w", editor, err)
	}
	return nil
}

// submitEdit appends the replacement of document file by data, guarded by
// if_version, and waits for its result. On an error it also returns the
// exit code, as submit's.
func (m *Main) submitEdit(ctx context.Context, dir, agent, file string, version uint64, data []byte, timeout time.Duration) (journal.Result, int, error) {
	patch, err := json.Marshal([]struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}{{"add", "", data}})
	if err != nil {
		return journal.Result{}, exitError, err
	}
	in := journal.Intent{File: file, Patch: patch, IfVersion: &version, Time: time.Now().UTC().Format(time.RFC3339Nano)}
	// The journal is held only to append: an editor left open does not
	// lock out another edit as the same agent.
	w := journal.NewWriter(dir, agent)
	w.LockTimeout = timeout
	if err := w.Open(); err != nil {
		return journal.Result{}, exitError, err
	}
	rec, err := w.Append(in)
	if cerr := w.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return journal.Result{}, exitError, err
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := journal.WaitResult(wctx, dir, agent, rec.Seq)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return res, exitTimeout, fmt.Errorf("seq %d appended as agent %s, but no result within %s (is a watcher running on %s?); the watcher will still decide it", rec.Seq, agent, timeout, dir)
	}
	if err != nil {
		return res, exitError, err
	}
	return res, exitOK, nil
}
