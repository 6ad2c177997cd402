package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/stateward/stateward/replay"
)

func (m *Main) replay(ctx context.Context, args []string) int {
	fs := m.flagSet("replay", "replay --dir DIR (--verify | --out DIR2)")
	dir := fs.String("dir", "", "state directory (or STATEWARD_DIR); its watcher must be stopped")
	verify := fs.Bool("verify", false, "rebuild every document and compare it with the one on disk")
	out := fs.String("out", "", "rebuild every document into this directory: a new or empty folder outside DIR")
	pos, err := parse(fs, args)
	if err != nil {
		return usageExit(err)
	}
	d, err := m.stateDir(*dir)
	if err != nil {
		return m.usageErr("replay", "%v", err)
	}
	switch {
	case len(pos) > 0:
		return m.usageErr("replay", "unexpected argument %q", pos[0])
	case *verify == (*out != ""):
		return m.usageErr("replay", "give exactly one of --verify and --out DIR2")
	}
	rep, err := replay.Verify(d, *out)
	if err != nil {
		if errors.Is(err, replay.ErrBadOut) {
			return m.usageErr("replay", "%v", err)
		}
		if errors.Is(err, replay.ErrLocked) {
			fmt.Fprintf(m.Stderr, "stateward replay: a watcher is running: %s\nStop it first (replay reads a directory nobody writes).\n", humanError(err))
			return exitError
		}
		return m.fail("replay", err)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(m.Stderr, "stateward replay: %s\n", p)
	}
	fmt.Fprintf(m.Stdout, "replayed %d batches, %d intents, %d journal lines checked, %d documents\n", rep.Batches, rep.Intents, rep.Checked, len(rep.Docs))
	if *out != "" {
		fmt.Fprintf(m.Stdout, "rebuilt documents written to %s\n", *out)
		return exitOK
	}
	if len(rep.Problems) > 0 {
		fmt.Fprintf(m.Stdout, "verify: %d differences\n", len(rep.Problems))
		return exitError
	}
	fmt.Fprintln(m.Stdout, "verify: ok, every document matches its replay byte for byte")
	return exitOK
}
