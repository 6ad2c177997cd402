package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hashicorp/go-hclog"

	"github.com/stateward/stateward/journal"
	"github.com/stateward/stateward/replay"
	"github.com/stateward/stateward/watcher"
)

var logLevels = []string{"trace", "debug", "info", "warn", "error"}

// newLogger builds the root logger. Under journald (JOURNAL_STREAM set) it
// leaves timestamps to the journal.
func (m *Main) newLogger(level, format string) (hclog.Logger, error) {
	if level == "" {
		level = m.Getenv("STATEWARD_LOG_LEVEL")
	}
	if level == "" {
		level = "info"
	}
	known := false
	for _, l := range logLevels {
		known = known || strings.EqualFold(level, l)
	}
	if !known {
		return nil, fmt.Errorf("unknown log level %q: use one of %s", level, strings.Join(logLevels, ", "))
	}
	if format != "text" && format != "json" {
		return nil, fmt.Errorf("unknown log format %q: use text or json", format)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:        "stateward",
		Level:       hclog.LevelFromString(level),
		Output:      m.Stderr,
		JSONFormat:  format == "json",
		DisableTime: m.Getenv("JOURNAL_STREAM") != "",
	}), nil
}

func (m *Main) watch(ctx context.Context, args []string) int {
	fs := m.flagSet("watch", "watch --dir DIR [--log-level LEVEL] [--log-format text|json]")
	dir := fs.String("dir", "", "state directory (or STATEWARD_DIR)")
	level := fs.String("log-level", "", "trace, debug, info, warn or error (or STATEWARD_LOG_LEVEL; default info)")
	format := fs.String("log-format", "text", "text, or json for log shippers")
	maxLine := fs.Int("max-line", journal.DefaultMaxLine, "longest accepted intent line in bytes")
	maxBatch := fs.Int("max-batch", replay.DefaultMaxBatch, "most journal lines per batch")
	maxAgent := fs.Int("max-agent-batch", replay.DefaultMaxAgentBatch, "most lines one agent contributes to a batch")
	retain := fs.Int("retain-results", replay.DefaultRetainResults, "results kept per agent to answer retries")
	rescan := fs.Duration("rescan", watcher.DefaultRescanInterval, "periodic rescan of every journal")
	pos, err := parse(fs, args)
	if err != nil {
		return usageExit(err)
	}
	if len(pos) > 0 {
		return m.usageErr("watch", "unexpected argument %q", pos[0])
	}
	d, err := m.stateDir(*dir)
	if err != nil {
		return m.usageErr("watch", "%v", err)
	}
	logger, err := m.newLogger(*level, *format)
	if err != nil {
		return m.usageErr("watch", "%v", err)
	}
	notify := func(state string) {
		if _, err := daemon.SdNotify(false, state); err != nil {
			logger.Warn("sd_notify", "error", err)
		}
	}

	a := replay.NewApplier(d, logger.Named("replay"))
	a.MaxLine, a.MaxBatch, a.MaxAgentBatch, a.RetainResults = *maxLine, *maxBatch, *maxAgent, *retain
	notify("STATUS=recovering " + d)
	logger.Info("recovering", "dir", d)
	start := time.Now()
	if err := a.Open(); err != nil {
		if errors.Is(err, replay.ErrLocked) {
			fmt.Fprintf(m.Stderr, "stateward watch: %v\nOnly one watcher may run per state directory; stop the other one first.\n", err)
			return exitError
		}
		logger.Error("recovery failed", "error", err)
		return exitError
	}
	defer a.Close()
	logger.Info("ready", "commit", a.Commit(), "agents", a.Agents(), "recovery", time.Since(start).Round(time.Millisecond))
	notify("READY=1")

	w := watcher.New(a, logger.Named("watcher"))
	w.RescanInterval = *rescan
	var lastBeat, lastStatus time.Time
	wd, _ := daemon.SdWatchdogEnabled(false)
	if wd > 0 {
		w.HeartbeatInterval = min(w.HeartbeatInterval, wd/4)
	}
	var lastCommit uint64 = ^uint64(0)
	w.Heartbeat = func() {
		now := time.Now()
		if wd > 0 && now.Sub(lastBeat) >= wd/2 {
			notify("WATCHDOG=1")
			lastBeat = now
		}
		if c := a.Commit(); c != lastCommit && now.Sub(lastStatus) >= time.Second {
			notify(fmt.Sprintf("STATUS=watching %d agents, last commit %d", a.Agents(), c))
			lastCommit, lastStatus = c, now
		}
	}
	err = w.Run(ctx)
	notify("STOPPING=1")
	if err != nil {
		logger.Error("stopped", "error", err)
		return exitError
	}
	logger.Info("stopped", "commit", a.Commit())
	return exitOK
}
