package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/stateward/stateward/replay"
)

func (m *Main) status(ctx context.Context, args []string) int {
	fs := m.flagSet("status", "status --dir DIR [--json]")
	dir := fs.String("dir", "", "state directory (or STATEWARD_DIR)")
	asJSON := fs.Bool("json", false, "print one JSON object, for scripts")
	pos, err := parse(fs, args)
	if err != nil {
		return usageExit(err)
	}
	d, err := m.stateDir(*dir)
	if err != nil {
		return m.usageErr("status", "%v", err)
	}
	if len(pos) > 0 {
		return m.usageErr("status", "unexpected argument %q", pos[0])
	}
	st, err := replay.ReadStatus(d)
	if err != nil {
		return m.fail("status", err)
	}
	if *asJSON {
		out, err := json.Marshal(st)
		if err != nil {
			return m.fail("status", err)
		}
		fmt.Fprintf(m.Stdout, "%s\n", out)
		return exitOK
	}
	fmt.Fprintf(m.Stdout, "state directory %s\nwatcher %s, last commit %d (batch %d)\n\n", st.Dir, st.Watcher, st.Commit, st.Batch)
	tw := tabwriter.NewWriter(m.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DOCUMENT\tVERSION\tSIZE\tSTATE")
	for _, ds := range st.Docs {
		size := "-" // no file at its name
		if ds.OnDisk {
			size = fmt.Sprint(ds.Size)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", ds.File, ds.Version, size, ds.State)
	}
	tw.Flush()
	fmt.Fprintln(m.Stdout)
	tw = tabwriter.NewWriter(m.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tLAST SEQ\tBACKLOG\tTORN TAIL\tSTATE\tLAST ERROR")
	for _, as := range st.Agents {
		torn := "-"
		if as.TornTail > 0 {
			torn = fmt.Sprintf("%d bytes", as.TornTail)
		}
		last := as.LastError
		if last == "" {
			last = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\n", as.Agent, as.Seq, as.Backlog, torn, as.State, last)
	}
	tw.Flush()
	use := st.Disk
	fmt.Fprintf(m.Stdout, "\ndisk: documents %s, journals %s, results %s, commit log %s, checkpoints %s\n",
		humanBytes(use.Documents), humanBytes(use.Journals), humanBytes(use.Results), humanBytes(use.CommitLog), humanBytes(use.Checkpoints))
	return exitOK
}

// humanBytes formats a byte count for people.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
