package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// soakWatcher is a `stateward watch` child process that a test may SIGKILL
// at any moment (watchProc, by contrast, must exit 0 on SIGTERM). Its
// methods return errors instead of failing the test, so that a goroutine
// other than the test's may drive it.
type soakWatcher struct {
	cmd  *exec.Cmd
	log  *logBuffer
	done chan struct{} // closed once the child has exited and err is set
	err  error         // from cmd.Wait; read after done
}

// startSoakWatcher starts `stateward watch --dir dir` and returns without
// waiting for it to be ready. The child is killed, if still running, when
// the test ends.
func startSoakWatcher(tb testing.TB, dir string) (*soakWatcher, error) {
	w := &soakWatcher{
		cmd:  selfCmd(tb, "watch", "--dir", dir),
		log:  newLogBuffer("stateward: ready"),
		done: make(chan struct{}),
	}
	w.cmd.Stdout, w.cmd.Stderr = w.log, w.log
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start watcher: %w", err)
	}
	go func() {
		w.err = w.cmd.Wait()
		close(w.done)
	}()
	tb.Cleanup(func() {
		w.cmd.Process.Kill()
		<-w.done
	})
	return w, nil
}

// waitReady waits until the watcher has recovered and logged that it is
// ready.
func (w *soakWatcher) waitReady(timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-w.log.ready:
		return nil
	case <-w.done:
		return fmt.Errorf("watcher exited before it was ready: %v\nlog:\n%s", w.err, w.log)
	case <-timer.C:
		return fmt.Errorf("watcher not ready after %s\nlog:\n%s", timeout, w.log)
	}
}

// kill SIGKILLs the watcher and waits until it is gone. A watcher that had
// already exited, or exited otherwise than killed, is an error: it stopped
// on its own.
func (w *soakWatcher) kill() error {
	select {
	case <-w.done:
		return fmt.Errorf("watcher exited on its own before it was killed: %v\nlog:\n%s", w.err, w.log)
	default:
	}
	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill watcher: %w", err)
	}
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	select {
	case <-w.done:
	case <-timer.C:
		return fmt.Errorf("watcher still running %s after SIGKILL", testTimeout)
	}
	if ws, ok := w.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		return fmt.Errorf("watcher exited on its own (%v) before SIGKILL took effect\nlog:\n%s", w.err, w.log)
	}
	return nil
}

// term sends SIGTERM and waits for the watcher to exit, which it must do
// with code 0 (docs/operations.md, Stop: it drains and exits 0).
func (w *soakWatcher) term() error {
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal watcher: %w", err)
	}
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	select {
	case <-w.done:
	case <-timer.C:
		return fmt.Errorf("watcher did not stop within %s of SIGTERM\nlog:\n%s", testTimeout, w.log)
	}
	if w.err != nil {
		return fmt.Errorf("watcher exited with %v after SIGTERM, want exit 0\nlog:\n%s", w.err, w.log)
	}
	return nil
}
