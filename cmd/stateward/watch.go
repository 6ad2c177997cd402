package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hashicorp/go-hclog"

	"github.com/stateward/stateward/journal"
	"github.com/stateward/stateward/observe"
	"github.com/stateward/stateward/replay"
	"github.com/stateward/stateward/watcher"
)

// How watch talks to systemd (docs/operations.md).
const (
	// extendEvery is how often a recovery that is still running asks
	// systemd for more start-up time, and extendBy how much it asks for
	// each time, so that TimeoutStartSec= does not kill a long recovery.
	extendEvery = 10 * time.Second
	extendBy    = 30 * time.Second
	// statusEvery is the shortest time between two STATUS= lines sent while
	// commits go by.
	statusEvery = time.Second
)

var logLevels = []string{"trace", "debug", "info", "warn", "error"}

// checkLevel returns an error unless level is one of logLevels (in any
// case): hclog.LevelFromString would turn a typo into Info silently.
func checkLevel(level string) error {
	for _, l := range logLevels {
		if strings.EqualFold(level, l) {
			return nil
		}
	}
	return fmt.Errorf("unknown log level %q: use one of %s", level, strings.Join(logLevels, ", "))
}

// levelSource is where watch takes its log level from, at start and again
// on every SIGHUP: the file given by --log-level-file while it exists and
// holds a level, else --log-level, else STATEWARD_LOG_LEVEL, else info.
// Under systemd the environment and the command line are fixed for the
// life of the process; the file is what an operator can change.
type levelSource struct {
	file     string // --log-level-file, or ""
	fallback string // --log-level, STATEWARD_LOG_LEVEL or "info"; checked
}

// level reads the level to run at.
func (s levelSource) level() (string, error) {
	if s.file == "" {
		return s.fallback, nil
	}
	data, err := os.ReadFile(s.file)
	if errors.Is(err, os.ErrNotExist) {
		return s.fallback, nil
	}
	if err != nil {
		return "", fmt.Errorf("read log level file: %w", err)
	}
	word := strings.TrimSpace(string(data))
	if word == "" {
		return s.fallback, nil
	}
	if err := checkLevel(word); err != nil {
		return "", fmt.Errorf("log level file %s: %w", s.file, err)
	}
	return strings.ToLower(word), nil
}

// logLevelSource returns the levelSource of the flags --log-level and
// --log-level-file.
func (m *Main) logLevelSource(flagLevel, file string) (levelSource, error) {
	level := flagLevel
	if level == "" {
		level = m.Getenv("STATEWARD_LOG_LEVEL")
	}
	if level == "" {
		level = "info"
	}
	if err := checkLevel(level); err != nil {
		return levelSource{}, err
	}
	return levelSource{file: file, fallback: strings.ToLower(level)}, nil
}

// newLogger builds the root logger. Under journald (JOURNAL_STREAM set) it
// leaves timestamps to the journal.
func (m *Main) newLogger(level, format string) (hclog.Logger, error) {
	if err := checkLevel(level); err != nil {
		return nil, err
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

// point calls the test hook, if any.
func (m *Main) point(name string) {
	if m.hook != nil {
		m.hook(name)
	}
}

func (m *Main) watch(ctx context.Context, args []string) int {
	// SIGHUP's default action ends the process: take it over before
	// anything else (package earlysig has held it since the process
	// started). One that comes during recovery waits for the loop.
	hup := m.Hangup
	if hup == nil {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGHUP)
		defer signal.Stop(c)
		hup = c
	}
	fs := m.flagSet("watch", "watch --dir DIR [--log-level LEVEL] [--log-level-file FILE] [--log-format text|json] [--http ADDR [--http-allow-remote]]")
	dir := fs.String("dir", "", "state directory (or STATEWARD_DIR)")
	level := fs.String("log-level", "", "trace, debug, info, warn or error (or STATEWARD_LOG_LEVEL; default info)")
	levelFile := fs.String("log-level-file", "", "file holding a log level that wins over --log-level while it exists; re-read on SIGHUP")
	format := fs.String("log-format", "text", "text, or json for log shippers")
	maxLine := fs.Int("max-line", journal.DefaultMaxLine, "longest accepted intent line in bytes")
	maxBatch := fs.Int("max-batch", replay.DefaultMaxBatch, "most journal lines per batch")
	maxAgent := fs.Int("max-agent-batch", replay.DefaultMaxAgentBatch, "most lines one agent contributes to a batch")
	retain := fs.Int("retain-results", replay.DefaultRetainResults, "results kept per agent to answer retries")
	rescan := fs.Duration("rescan", watcher.DefaultRescanInterval, "periodic rescan of every journal")
	batchBytes := fs.Int64("max-batch-bytes", replay.DefaultMaxBatchBytes, "most bytes of journal lines one batch holds in memory (shared evenly by the agents)")
	docSize := fs.Int64("max-doc-size", replay.DefaultMaxDocSize, "largest document, in bytes, the watcher reads (a larger one is reported unusable) or writes (an intent that would make one larger is rejected)")
	checkpoint := fs.Int64("checkpoint-bytes", replay.DefaultCheckpointBytes, "commit log size after which a checkpoint is written and the log behind it deleted")
	resSeg := fs.Int64("result-segment-size", replay.DefaultResultSegmentSize, "size past which an agent's results continue in a new segment")
	resKept := fs.Int("result-segments-kept", replay.DefaultResultSegmentsKept, "result segments always kept per agent")
	resAge := fs.Duration("result-retention", replay.DefaultResultRetention, "older result segments beyond --result-segments-kept are deleted after this long")
	httpAddr := fs.String("http", "", "serve /metrics, /healthz, /api/status and a status page, read only, on this address, such as 127.0.0.1:9440 (off by default)")
	httpRemote := fs.Bool("http-allow-remote", false, "allow --http on an address that is not the loopback: the endpoints have no authentication (docs/operations.md)")
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
	switch {
	case *rescan <= 0:
		return m.usageErr("watch", "--rescan must be > 0")
	case *maxLine < 2:
		return m.usageErr("watch", "--max-line must be >= 2")
	case *maxBatch < 1:
		return m.usageErr("watch", "--max-batch must be >= 1")
	case *maxAgent < 1:
		return m.usageErr("watch", "--max-agent-batch must be >= 1")
	case *retain < 1:
		return m.usageErr("watch", "--retain-results must be >= 1")
	case *batchBytes < 1, *docSize < 1, *checkpoint < 1, *resSeg < 1:
		return m.usageErr("watch", "--max-batch-bytes, --max-doc-size, --checkpoint-bytes and --result-segment-size must be >= 1")
	case *resKept < 1 || *resAge < 0:
		return m.usageErr("watch", "--result-segments-kept must be >= 1 and --result-retention >= 0")
	case *httpRemote && *httpAddr == "":
		return m.usageErr("watch", "--http-allow-remote needs --http")
	}
	if *httpAddr != "" {
		if err := observe.CheckAddr(*httpAddr, *httpRemote); err != nil {
			return m.usageErr("watch", "--http: %v (give --http-allow-remote to serve other interfaces: there is no authentication)", err)
		}
	}
	src, err := m.logLevelSource(*level, *levelFile)
	if err != nil {
		return m.usageErr("watch", "%v", err)
	}
	lvl, err := src.level()
	if err != nil {
		return m.usageErr("watch", "%v", err)
	}
	logger, err := m.newLogger(lvl, *format)
	if err != nil {
		return m.usageErr("watch", "%v", err)
	}
	n := &notifier{logger: logger}

	obs, stopHTTP, err := startHTTP(*httpAddr, *httpRemote, d, logger.Named("http"))
	if err != nil {
		fmt.Fprintf(m.Stderr, "stateward watch: --http: %s\n", humanError(err))
		return exitError
	}
	defer stopHTTP()
	a := replay.NewApplier(d, logger.Named("replay"))
	if obs != nil {
		a.Metrics = obs
	}
	a.MaxLine, a.MaxBatch, a.MaxAgentBatch, a.RetainResults = *maxLine, *maxBatch, *maxAgent, *retain
	a.MaxBatchBytes, a.MaxDocSize, a.CheckpointBytes = *batchBytes, *docSize, *checkpoint
	a.ResultSegmentSize, a.ResultSegmentsKept, a.ResultRetention = *resSeg, *resKept, *resAge
	recovering := "recovering " + d + ": replaying the commit log"
	if v, err := journal.ReadVersions(d); err == nil && v.Commit > 0 {
		recovering += fmt.Sprintf(" (last known commit %d)", v.Commit)
	}
	n.send("STATUS=" + recovering)
	logger.Info("recovering", "dir", d)
	start := time.Now()
	stopExtending := m.extendWhileRecovering(n, recovering, start)
	m.point("recovery")
	err = m.openWaitingForSpace(ctx, a, n, logger, recovering)
	stopExtending()
	if errors.Is(err, context.Canceled) {
		// Stopped while waiting for space: nothing was started.
		a.Close()
		n.send("STOPPING=1", "STATUS=stopped while waiting for space")
		logger.Info("stopped while waiting for space to recover")
		return exitOK
	}
	if err != nil {
		if errors.Is(err, replay.ErrLocked) {
			n.send("STATUS=not started: " + statusText(err))
			fmt.Fprintf(m.Stderr, "stateward watch: %v\nOnly one watcher may run per state directory; stop the other one first.\n", err)
			return exitError
		}
		n.send("STATUS=recovery failed: " + statusText(err))
		logger.Error("recovery failed", "error", err)
		return exitError
	}
	defer a.Close()
	defer stopHTTP() // before the lock goes: the server stops reading the files first
	took := time.Since(start).Round(time.Millisecond)
	if obs != nil {
		obs.Recovered(time.Since(start), a.Commit())
	}
	logger.Info("ready", "commit", a.Commit(), "agents", a.Agents(), "recovery", took)
	n.send("READY=1", fmt.Sprintf("STATUS=recovered to commit %d in %s; watching %d agents", a.Commit(), took, a.Agents()))

	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		logger.Warn("watchdog disabled: cannot read WATCHDOG_USEC", "error", err)
	}
	hb := &heartbeat{applier: a, notify: n, watchdog: wd, point: m.point, lastCommit: a.Commit(), observe: obs}
	stopping := false
	for {
		// One apply loop per pass: SIGHUP ends the current one after its
		// batch and starts a new one, which sets up its file watches
		// afresh and rescans every journal at once.
		w := watcher.New(a, logger.Named("watcher"))
		w.RescanInterval = *rescan
		if wd > 0 {
			w.HeartbeatInterval = min(w.HeartbeatInterval, wd/4)
		}
		w.Heartbeat = hb.beat
		runCtx, stopRun := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(runCtx) }()
		reload := false
		select {
		case err = <-done:
		case <-ctx.Done():
			stopping = true
			n.send("STOPPING=1", "STATUS=stopping: finishing the batch in progress")
			logger.Info("stopping: finishing the batch in progress")
			err = <-done
		case <-hup:
			reload = true
			n.send("RELOADING=1", strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"))
			lvl = reloadLevel(logger, src, lvl)
			stopRun()
			err = <-done
		}
		stopRun()
		if err != nil || !reload || ctx.Err() != nil {
			break
		}
		logger.Info("reloaded; rescanning every journal", "level", lvl)
		n.send("READY=1", fmt.Sprintf("STATUS=reloaded; watching %d agents, last commit %d", a.Agents(), a.Commit()))
	}
	if err != nil {
		n.send("STOPPING=1", "STATUS=stopped: "+statusText(err))
		logger.Error("stopped", "error", err)
		return exitError
	}
	if !stopping {
		n.send("STOPPING=1")
	}
	logger.Info("stopped", "commit", a.Commit())
	return exitOK
}

// openWaitingForSpace opens a (recovery) and, while that fails for lack of
// space, tries again at a bounded pace (the lock stays held) until it
// succeeds, fails otherwise, or ctx is done (then it returns ctx's error).
// The Applier logs the episode once; systemd's status line says it waits.
func (m *Main) openWaitingForSpace(ctx context.Context, a *replay.Applier, n *notifier, logger hclog.Logger, status string) error {
	open := a.Open
	if m.open != nil {
		open = func() error { return m.open(a) }
	}
	backoff := watcher.MinNoSpaceBackoff
	for {
		err := open()
		if !errors.Is(err, replay.ErrNoSpace) {
			return err
		}
		n.send("STATUS=" + status + ": no space left in the state directory; waiting for space")
		logger.Debug("no space left to recover; retrying", "in", backoff, "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, watcher.MaxNoSpaceBackoff)
	}
}

// extendWhileRecovering asks systemd for more start-up time every
// extendEvery while recovery runs, and says for how long it has run; the
// returned func stops it and returns once nothing more will be sent.
func (m *Main) extendWhileRecovering(n *notifier, status string, start time.Time) (stop func()) {
	every := extendEvery
	if m.extendEvery > 0 {
		every = m.extendEvery
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				n.send(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", extendBy.Microseconds()),
					fmt.Sprintf("STATUS=%s, %s so far", status, time.Since(start).Round(time.Second)))
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// reloadLevel re-reads the log level from src and sets it on logger (and
// so on every logger named from it), logging the change at the more
// verbose of the two levels. It returns the level now in force.
func reloadLevel(logger hclog.Logger, src levelSource, cur string) string {
	next, err := src.level()
	if err != nil {
		logger.Error("log level not changed", "level", cur, "error", err)
		return cur
	}
	if next == cur {
		logger.Info("log level unchanged", "level", cur)
		return cur
	}
	to := hclog.LevelFromString(next)
	if to < hclog.LevelFromString(cur) {
		logger.SetLevel(to)
		logger.Info("log level changed", "from", cur, "to", next)
	} else {
		logger.Info("log level changed", "from", cur, "to", next)
		logger.SetLevel(to)
	}
	return next
}

// heartbeat is the apply loop's Heartbeat: it pings systemd's watchdog at
// half its interval and refreshes STATUS= when the commit moves. Its fields
// are owned by the goroutine running the apply loop (one at a time).
type heartbeat struct {
	applier  *replay.Applier
	notify   *notifier
	watchdog time.Duration   // WATCHDOG_USEC; 0 when systemd wants no pings
	point    func(string)    // test hook
	observe  *observe.Server // --http, or nil

	lastPing   time.Time
	lastStatus time.Time
	lastCommit uint64 // commit shown by the last STATUS= line
}

func (h *heartbeat) beat() {
	h.point("heartbeat") // tests wedge the apply loop here
	if h.observe != nil {
		h.observe.Beat()
	}
	now := time.Now()
	if h.watchdog > 0 && now.Sub(h.lastPing) >= h.watchdog/2 {
		h.notify.send("WATCHDOG=1")
		h.lastPing = now
	}
	if c := h.applier.Commit(); c != h.lastCommit && now.Sub(h.lastStatus) >= statusEvery {
		h.notify.send(fmt.Sprintf("STATUS=watching %d agents, last commit %d", h.applier.Agents(), c))
		h.lastCommit, h.lastStatus = c, now
	}
}

// notifier sends sd_notify messages; without NOTIFY_SOCKET it sends
// nothing. It logs a failure once, and again only when the error changes.
// It is safe for concurrent use.
type notifier struct {
	logger hclog.Logger

	mu      sync.Mutex // guards lastErr
	lastErr string
}

// send sends the lines as one message.
func (n *notifier) send(lines ...string) {
	_, err := daemon.SdNotify(false, strings.Join(lines, "\n"))
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	n.mu.Lock()
	changed := msg != n.lastErr
	n.lastErr = msg
	n.mu.Unlock()
	if err != nil && changed {
		n.logger.Warn("cannot notify systemd", "error", err)
	}
}

// statusText makes an error fit on a STATUS= line.
func statusText(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " ")
}
