package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stateward/stateward/journal"
	"github.com/stateward/stateward/replay"
)

// ready lists the tasks of a board that claim_next would take, in its
// order, and the blocked ones with what blocks each (docs/format.md,
// claim_next).
func (m *Main) ready(ctx context.Context, args []string) int {
	fs := m.flagSet("ready", "ready --dir DIR --file DOC --path POINTER [--match JSON] [--deps NAME] [--done JSON] [--order NAME] [--json]")
	dir := fs.String("dir", "", "state directory (or STATEWARD_DIR)")
	file := fs.String("file", "", "document name, e.g. tasks.json")
	path := fs.String("path", "", "JSON Pointer of the board: an object of tasks by key, or an array of tasks")
	match := fs.String("match", "", `JSON object a task must match to be a candidate, e.g. {"status":"open"}`)
	deps := fs.String("deps", "", "member of a task holding the keys (or indexes) of the tasks it waits for")
	done := fs.String("done", "", `JSON object a dependency must match to be done (default {"status":"done"})`)
	order := fs.String("order", "", "member by which ready tasks are taken, ascending")
	asJSON := fs.Bool("json", false, "print one JSON object")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to retry while a commit replaces the document")
	pos, err := parse(fs, args)
	if err != nil {
		return usageExit(err)
	}
	d, err := m.stateDir(*dir)
	if err != nil {
		return m.usageErr("ready", "%v", err)
	}
	switch {
	case *file == "":
		return m.usageErr("ready", "--file is required")
	case len(pos) > 0:
		return m.usageErr("ready", "no positional arguments, got %q", pos[0])
	}
	if err := journal.CheckDocName(*file); err != nil {
		return m.usageErr("ready", "%v", err)
	}
	// The same operation claim_next decodes, so that both decide alike.
	opj := map[string]any{"op": "claim_next", "path": *path}
	for name, text := range map[string]string{"match": *match, "done": *done} {
		if text == "" {
			continue
		}
		if !json.Valid([]byte(text)) {
			return m.usageErr("ready", "--%s is not valid JSON: %s", name, text)
		}
		opj[name] = json.RawMessage(text)
	}
	if *deps != "" {
		opj["deps"] = *deps
	}
	if *order != "" {
		opj["order"] = *order
	}
	patch, err := json.Marshal([]any{opj})
	if err != nil {
		return m.fail("ready", err)
	}
	ops, err := replay.DecodePatch(patch)
	if err != nil {
		msg := err.Error()
		if pe := (*replay.PatchError)(nil); errors.As(err, &pe) {
			msg = pe.Msg
		}
		return m.usageErr("ready", "%s", msg)
	}
	if strings.HasPrefix(*path, "$") {
		return m.usageErr("ready", "--path must be a JSON Pointer, e.g. /tasks")
	}
	rctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	doc, err := journal.ReadDocument(rctx, d, *file)
	if err != nil {
		return m.fail("ready", err)
	}
	if string(doc.Data) == "null" {
		return m.fail("ready", fmt.Errorf("%s does not exist (version %d)", *file, doc.Version))
	}
	pd, err := replay.ParseDoc(doc.Data)
	if err != nil {
		return m.fail("ready", fmt.Errorf("read %s: %w", *file, err))
	}
	ready, blocked, err := pd.Ready(ops[0])
	if err != nil {
		return m.fail("ready", fmt.Errorf("%s: %w", *file, err))
	}
	if *asJSON {
		out, err := json.Marshal(struct {
			Version uint64               `json:"version"`
			Ready   []replay.ReadyTask   `json:"ready"`
			Blocked []replay.BlockedTask `json:"blocked"`
		}{doc.Version, ready, blocked})
		if err != nil {
			return m.fail("ready", err)
		}
		fmt.Fprintf(m.Stdout, "%s\n", out)
		return exitOK
	}
	fmt.Fprintf(m.Stdout, "%s at version %d: %d ready, %d blocked\n", *file, doc.Version, len(ready), len(blocked))
	for _, r := range ready {
		fmt.Fprintf(m.Stdout, "ready    %s %s\n", r.Pointer, r.Task)
	}
	for _, b := range blocked {
		fmt.Fprintf(m.Stdout, "blocked  %s waiting for %s\n", b.Pointer, strings.Join(b.WaitingFor, ", "))
	}
	return exitOK
}
