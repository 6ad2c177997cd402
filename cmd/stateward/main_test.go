package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stateward/stateward/cmd/stateward/earlysig"
	"github.com/stateward/stateward/journal"
)

// childEnv, set to 1, makes the test binary run Main with its arguments
// instead of the tests: tests start watchers and agents as real processes
// by re-executing themselves (as cmd/go/internal/lockedfile's tests do).
const childEnv = "STATEWARD_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		ctx, stop := signalContext(os.Args[1:])
		prog := &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Self: selfCommand, Hangup: earlysig.Hangup}
		code := prog.Run(ctx, os.Args[1:])
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// selfCommand returns a command that runs the test binary as the stateward
// program with args. The child's environment is the test's, minus every
// STATEWARD_ variable, so that a developer's settings do not leak in.
func selfCommand(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STATEWARD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, childEnv+"=1")
	return cmd
}

// selfCmd is selfCommand for a test.
func selfCmd(tb testing.TB, args ...string) *exec.Cmd {
	tb.Helper()
	return selfCommand(args...)
}

// testTimeout bounds each in-process run of Main and each wait on a child.
const testTimeout = 60 * time.Second

// cliResult is what one run of Main left.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runMain runs Main in-process with args, an empty environment and stdin
// as standard input.
func runMain(tb testing.TB, stdin string, args ...string) cliResult {
	tb.Helper()
	return runMainEnv(tb, nil, stdin, args...)
}

// runMainEnv is runMain with the environment env.
func runMainEnv(tb testing.TB, env map[string]string, stdin string, args ...string) cliResult {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), testTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	m := &Main{
		Stdin:  strings.NewReader(stdin),
		Stdout: &stdout,
		Stderr: &stderr,
		Getenv: func(k string) string { return env[k] },
		Self:   selfCommand,
	}
	code := m.Run(ctx, args)
	if ctx.Err() != nil {
		tb.Fatalf("stateward %s: still running after %s\nstderr:\n%s", strings.Join(args, " "), testTimeout, stderr.String())
	}
	return cliResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// mustRun runs Main and fails the test unless it exits with want.
func mustRun(tb testing.TB, want int, stdin string, args ...string) cliResult {
	tb.Helper()
	r := runMain(tb, stdin, args...)
	if r.code != want {
		tb.Fatalf("stateward %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
	return r
}

// logBuffer collects a child's output and closes ready once a line
// containing marker has appeared. It is written by the goroutine of
// os/exec that copies the child's output and read by the test.
type logBuffer struct {
	marker []byte
	ready  chan struct{}

	mu   sync.Mutex // guards buf and seen
	buf  bytes.Buffer
	seen bool
}

func newLogBuffer(marker string) *logBuffer {
	return &logBuffer{marker: []byte(marker), ready: make(chan struct{})}
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if !b.seen && bytes.Contains(b.buf.Bytes(), b.marker) {
		b.seen = true
		close(b.ready)
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// watchProc is a `stateward watch` child process.
type watchProc struct {
	cmd  *exec.Cmd
	log  *logBuffer
	done chan struct{} // closed when the child has exited and err is set
	err  error         // from cmd.Wait; read after done

	stopped bool // stop was called; owned by the test goroutine
}

// startWatcher starts `stateward watch --dir dir args...` as a child process
// and waits until it has recovered and logged that it is ready. The
// watcher is stopped with SIGTERM when the test ends, and must then exit 0.
func startWatcher(tb testing.TB, dir string, args ...string) *watchProc {
	tb.Helper()
	w := &watchProc{
		cmd:  selfCmd(tb, append([]string{"watch", "--dir", dir}, args...)...),
		log:  newLogBuffer("stateward: ready"),
		done: make(chan struct{}),
	}
	w.cmd.Stdout, w.cmd.Stderr = w.log, w.log
	if err := w.cmd.Start(); err != nil {
		tb.Fatalf("start watcher: %v", err)
	}
	go func() {
		w.err = w.cmd.Wait()
		close(w.done)
	}()
	tb.Cleanup(func() { w.stop(tb) })
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	select {
	case <-w.log.ready:
		return w
	case <-w.done:
		w.stopped = true
		tb.Fatalf("watcher exited before it was ready: %v\nlog:\n%s", w.err, w.log)
	case <-timer.C:
		tb.Fatalf("watcher not ready after %s\nlog:\n%s", testTimeout, w.log)
	}
	return nil
}

// Pid returns the process ID of the watcher.
func (w *watchProc) Pid() int { return w.cmd.Process.Pid }

// stop sends SIGTERM and waits for the watcher to exit, which it must do
// with code 0 (docs/operations.md, Stop: it drains and exits 0). Calling it again does nothing.
func (w *watchProc) stop(tb testing.TB) {
	tb.Helper()
	if w.stopped {
		return
	}
	w.stopped = true
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		tb.Errorf("signal watcher: %v", err)
	}
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	select {
	case <-w.done:
	case <-timer.C:
		w.cmd.Process.Kill()
		<-w.done
		tb.Errorf("watcher did not stop within %s of SIGTERM\nlog:\n%s", testTimeout, w.log)
		return
	}
	if w.err != nil {
		tb.Errorf("watcher exited with %v after SIGTERM, want exit 0\nlog:\n%s", w.err, w.log)
	}
}

// waitFor polls cond until it returns true, failing the test if that takes
// longer than timeout. It waits on a condition, not for a fixed time.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

// readResults reads every result line of agent under dir, in segment
// order, and checks that each is a complete line.
func readResults(tb testing.TB, dir, agent string) []journal.Result {
	tb.Helper()
	folder := filepath.Join(dir, "results", agent)
	segs, err := journal.ListSegments(folder)
	if err != nil {
		tb.Fatal(err)
	}
	var out []journal.Result
	for _, s := range segs {
		p := filepath.Join(folder, journal.SegmentName(s))
		data, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		if len(data) > 0 && data[len(data)-1] != '\n' {
			tb.Errorf("%s: ends in a partial line", p)
		}
		for line := range bytes.Lines(data) {
			r, err := journal.ParseResult(line)
			if err != nil {
				tb.Fatalf("%s: %v: %q", p, err, line)
			}
			out = append(out, r)
		}
	}
	return out
}
