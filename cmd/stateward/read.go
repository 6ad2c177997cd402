package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/stateward/stateward/journal"
)

func (m *Main) read(ctx context.Context, args []string) int {
	fs := m.flagSet("read", "read --dir DIR DOC")
	dir := fs.String("dir", "", "state directory (or STATEWARD_DIR)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to retry while a commit replaces the document")
	pos, err := parse(fs, args)
	if err != nil {
		return usageExit(err)
	}
	d, err := m.stateDir(*dir)
	if err != nil {
		return m.usageErr("read", "%v", err)
	}
	if len(pos) != 1 {
		return m.usageErr("read", "give exactly one DOC, e.g. tasks.json")
	}
	if err := journal.CheckDocName(pos[0]); err != nil {
		return m.usageErr("read", "%v", err)
	}
	rctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	doc, err := journal.ReadDocument(rctx, d, pos[0])
	if err != nil {
		return m.fail("read", err)
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return m.fail("read", err)
	}
	fmt.Fprintf(m.Stdout, "%s\n", out)
	return exitOK
}
