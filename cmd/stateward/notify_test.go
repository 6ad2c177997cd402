package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stateward/stateward/replay"
)

// testWatchdog is the WATCHDOG_USEC the tests give the watcher: short, so
// that pings come often.
const testWatchdog = 200 * time.Millisecond

// markMsg is a datagram the test sends to its own notify socket: every
// message the watcher sent before it was sent is read before it.
const markMsg = "X_TEST_MARK=1"

// notifySocket stands in for systemd's NOTIFY_SOCKET: a unixgram socket
// whose datagrams a goroutine hands to the test in the order they came.
type notifySocket struct {
	path string
	conn *net.UnixConn
	msgs chan string // one datagram each; closed when the socket is

	log []string // every datagram read so far; owned by the test goroutine
}

// listenNotify opens a notify socket, closed when the test ends.
func listenNotify(tb testing.TB) *notifySocket {
	tb.Helper()
	// Not under t.TempDir(): a socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "swnotify")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	ns := &notifySocket{path: filepath.Join(dir, "notify"), msgs: make(chan string, 1024)}
	ns.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns.path, Net: "unixgram"})
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(ns.msgs)
		buf := make([]byte, 64<<10)
		for {
			n, err := ns.conn.Read(buf)
			if err != nil {
				return
			}
			select {
			case ns.msgs <- string(buf[:n]):
			case <-done:
				return
			}
		}
	}()
	tb.Cleanup(func() {
		close(done)
		ns.conn.Close()
	})
	return ns
}

// hasLine reports whether the message msg has the line line.
func hasLine(msg, line string) bool {
	return slices.Contains(strings.Split(msg, "\n"), line)
}

// lineWith returns the first line of msg that starts with prefix.
func lineWith(msg, prefix string) (string, bool) {
	for l := range strings.SplitSeq(msg, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l, true
		}
	}
	return "", false
}

// until reads messages until one satisfies cond, and returns it with the
// messages read before it. It fails the test after timeout.
func (ns *notifySocket) until(tb testing.TB, timeout time.Duration, what string, cond func(string) bool) (string, []string) {
	tb.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var before []string
	for {
		select {
		case msg, ok := <-ns.msgs:
			if !ok {
				tb.Fatalf("notify socket closed while waiting for %s; messages:\n%s", what, ns)
			}
			ns.log = append(ns.log, msg)
			if cond(msg) {
				return msg, before
			}
			before = append(before, msg)
		case <-timer.C:
			tb.Fatalf("no %s after %s; messages:\n%s", what, timeout, ns)
		}
	}
}

// untilLine reads messages until one has the line line.
func (ns *notifySocket) untilLine(tb testing.TB, line string) (string, []string) {
	tb.Helper()
	return ns.until(tb, testTimeout, line, func(msg string) bool { return hasLine(msg, line) })
}

// mark sends markMsg and returns every message read before it comes back:
// all that was sent to the socket before mark was called.
func (ns *notifySocket) mark(tb testing.TB) []string {
	tb.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: ns.path, Net: "unixgram"})
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(markMsg)); err != nil {
		tb.Fatal(err)
	}
	_, before := ns.untilLine(tb, markMsg)
	return before
}

// String returns every message read so far, one per line, with newlines
// inside a message shown as " | ".
func (ns *notifySocket) String() string {
	var b strings.Builder
	for _, m := range ns.log {
		fmt.Fprintf(&b, "  %s\n", strings.ReplaceAll(m, "\n", " | "))
	}
	return b.String()
}

// count returns how many of msgs have the line line.
func count(msgs []string, line string) int {
	n := 0
	for _, m := range msgs {
		if hasLine(m, line) {
			n++
		}
	}
	return n
}

// startNotified starts `stateward args...` as a child process that talks
// to ns as its NOTIFY_SOCKET, with a watchdog of testWatchdog. The child is
// killed when the test ends if it is still running.
func startNotified(t *testing.T, ns *notifySocket, args ...string) *watchProc {
	t.Helper()
	w := &watchProc{cmd: selfCmd(t, args...), log: newLogBuffer("stateward: ready"), done: make(chan struct{})}
	w.cmd.Env = append(w.cmd.Env,
		"NOTIFY_SOCKET="+ns.path,
		"WATCHDOG_USEC="+strconv.FormatInt(testWatchdog.Microseconds(), 10))
	w.cmd.Stdout, w.cmd.Stderr = w.log, w.log
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		w.err = w.cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() {
		select {
		case <-w.done:
		default:
			w.cmd.Process.Kill()
			<-w.done
		}
	})
	return w
}

// exitCode waits for the child to exit and returns its exit code.
func (w *watchProc) exitCode(tb testing.TB) int {
	tb.Helper()
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	select {
	case <-w.done:
	case <-timer.C:
		tb.Fatalf("still running after %s\nlog:\n%s", testTimeout, w.log)
	}
	var ee *exec.ExitError
	switch {
	case w.err == nil:
		return 0
	case errors.As(w.err, &ee) && ee.Exited():
		return ee.ExitCode()
	default:
		tb.Fatalf("child: %v\nlog:\n%s", w.err, w.log)
		return -1
	}
}

// signal sends sig to the child.
func (w *watchProc) signal(tb testing.TB, sig os.Signal) {
	tb.Helper()
	if err := w.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("send %v: %v", sig, err)
	}
}

// TestNotify_Lifecycle runs `stateward watch` as systemd would and checks
// what it tells systemd, in order: STATUS while it recovers, READY=1 only
// once recovery has finished an interrupted batch, watchdog pings, a
// STATUS with the commit of the backlog processed after READY, and
// STOPPING=1 on SIGTERM followed by exit 0.
func TestNotify_Lifecycle(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "tasks.json")

	// Two batches, each changing tasks.json. Then put the document back at
	// its bytes before the second one, as a watcher killed between the
	// second commit record and its rename leaves it (crash window 3):
	// recovery must rebuild it before READY.
	w := startWatcher(t, dir)
	mustRun(t, exitOK, "", "submit", "--wait", "--dir", dir, "--agent", "alice", "--file", "tasks.json", "--if-version", "0",
		`[{"op":"add","path":"","value":{"t1":"open"}}]`)
	before, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	mustRun(t, exitOK, "", "submit", "--wait", "--dir", dir, "--agent", "alice", "--file", "tasks.json",
		`[{"op":"replace","path":"/t1","value":"claimed"}]`)
	after, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	w.stop(t)
	if err := os.WriteFile(doc, before, 0o644); err != nil {
		t.Fatal(err)
	}
	// A backlog for after READY.
	mustRun(t, exitOK, "", "submit", "--dir", dir, "--agent", "bob", "--file", "tasks.json",
		`[{"op":"add","path":"/t2","value":"open"}]`)

	ns := listenNotify(t)
	p := startNotified(t, ns, "watch", "--dir", dir)

	first, _ := ns.until(t, testTimeout, "a first message", func(string) bool { return true })
	if want := "STATUS=recovering " + dir + ": replaying the commit log (last known commit 2)"; !hasLine(first, want) {
		t.Errorf("first message %q, want %q", first, want)
	}
	ready, pre := ns.untilLine(t, "READY=1")
	// What READY promises: the interrupted batch is finished on disk. The
	// backlog may already be applied on top of it by the time we look (the
	// loop starts right after READY), so the document is the recovered one,
	// or the recovered one plus bob's t2, never the one before the batch.
	if got, err := os.ReadFile(doc); err != nil {
		t.Errorf("at READY: %v", err)
	} else if withBacklog := []byte("{\n  \"t1\": \"claimed\",\n  \"t2\": \"open\"\n}\n"); !bytes.Equal(got, after) && !bytes.Equal(got, withBacklog) {
		t.Errorf("at READY tasks.json is %q, want the recovered %q (or it plus the backlog, %q)", got, after, withBacklog)
	}
	if st, _ := lineWith(ready, "STATUS="); !strings.HasPrefix(st, "STATUS=recovered to commit 2 in ") {
		t.Errorf("READY came with %q, want STATUS=recovered to commit 2 in ...", st)
	}
	for _, m := range pre {
		if !strings.HasPrefix(m, "STATUS=") && !strings.HasPrefix(m, "EXTEND_TIMEOUT_USEC=") {
			t.Errorf("before READY: %q, want only STATUS and EXTEND_TIMEOUT_USEC", m)
		}
	}

	// The backlog is processed after READY, and STATUS says so.
	ns.untilLine(t, "STATUS=watching 2 agents, last commit 3")
	// The watchdog is pinged, again and again.
	for range 3 {
		ns.untilLine(t, "WATCHDOG=1")
	}

	p.signal(t, syscall.SIGTERM)
	ns.untilLine(t, "STOPPING=1")
	if n := count(ns.log, "READY=1"); n != 1 {
		t.Errorf("READY=1 sent %d times, want once; messages:\n%s", n, ns)
	}
	if code := p.exitCode(t); code != exitOK {
		t.Fatalf("exit %d after SIGTERM, want 0\nlog:\n%s", code, p.log)
	}
	for _, m := range ns.mark(t) {
		if !strings.HasPrefix(m, "STATUS=") {
			t.Errorf("after STOPPING=1: %q", m)
		}
	}
	if got := readResults(t, dir, "bob"); len(got) != 1 || got[0].Commit != 3 {
		t.Errorf("bob's results %+v, want one, commit 3", got)
	}
}

// TestNotify_NoReadyWhenRecoveryFails checks that a watcher whose recovery
// fails never says READY=1, says why in STATUS, and exits 1.
func TestNotify_NoReadyWhenRecoveryFails(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T) string // returns the state directory
		status string                    // in the last STATUS line
	}{
		{"CorruptCommitLog", func(t *testing.T) string {
			dir := t.TempDir()
			w := startWatcher(t, dir)
			for i := range 2 {
				mustRun(t, exitOK, "", "submit", "--wait", "--merge", "--dir", dir, "--agent", "a", "--file", "n.json",
					fmt.Sprintf(`{"n":%d}`, i))
			}
			w.stop(t)
			// Damage the first record; the second stays intact, so this is
			// no torn tail but a log recovery must not trust.
			logs, err := filepath.Glob(filepath.Join(dir, ".stateward", "commits", "*"))
			if err != nil || len(logs) != 1 {
				t.Fatalf("commit log segments %v (%v), want one", logs, err)
			}
			data, err := os.ReadFile(logs[0])
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Count(data, []byte("\n")) < 2 {
				t.Fatalf("commit log has fewer than two records:\n%s", data)
			}
			copy(data[12:], "garbage")
			if err := os.WriteFile(logs[0], data, 0o644); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "STATUS=recovery failed: replay: commit log is corrupt"},
		{"StateDirIsAFile", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "state")
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}, "STATUS=recovery failed: open state directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.setup(t)
			ns := listenNotify(t)
			p := startNotified(t, ns, "watch", "--dir", dir)
			if code := p.exitCode(t); code != exitError {
				t.Errorf("exit %d, want %d\nlog:\n%s", code, exitError, p.log)
			}
			msgs := ns.mark(t)
			if n := count(msgs, "READY=1"); n != 0 {
				t.Errorf("READY=1 sent %d times by a watcher whose recovery failed; messages:\n%s", n, ns)
			}
			if len(msgs) == 0 || !strings.HasPrefix(msgs[len(msgs)-1], tc.status) {
				t.Errorf("messages:\n%s want the last one to start with %q", ns, tc.status)
			}
			if !strings.Contains(p.log.String(), "recovery failed") {
				t.Errorf("log does not say recovery failed:\n%s", p.log)
			}
		})
	}
}

// TestNotify_SecondInstance checks G6 through systemd's eyes: a second
// watcher on a directory exits 1 at once, naming the process that holds
// it, and never says READY=1.
func TestNotify_SecondInstance(t *testing.T) {
	dir := t.TempDir()
	first := startWatcher(t, dir)
	ns := listenNotify(t)
	p := startNotified(t, ns, "watch", "--dir", dir)
	if code := p.exitCode(t); code != exitError {
		t.Errorf("second watcher: exit %d, want %d\nlog:\n%s", code, exitError, p.log)
	}
	msgs := ns.mark(t)
	if n := count(msgs, "READY=1"); n != 0 {
		t.Errorf("second watcher sent READY=1; messages:\n%s", ns)
	}
	pid := "process " + strconv.Itoa(first.Pid())
	if len(msgs) == 0 || !strings.HasPrefix(msgs[len(msgs)-1], "STATUS=not started: ") || !strings.Contains(msgs[len(msgs)-1], pid) {
		t.Errorf("messages:\n%s want the last to be STATUS=not started: ... naming %s", ns, pid)
	}
	if !strings.Contains(p.log.String(), pid) {
		t.Errorf("stderr %q does not name %s", p.log, pid)
	}
}

// TestSignal_Interrupt checks that SIGINT drains like SIGTERM: STOPPING=1,
// exit 0, and a directory that replays to the documents on disk.
func TestSignal_Interrupt(t *testing.T) {
	dir := t.TempDir()
	ns := listenNotify(t)
	p := startNotified(t, ns, "watch", "--dir", dir)
	ns.untilLine(t, "READY=1")
	mustRun(t, exitOK, "", "submit", "--wait", "--dir", dir, "--agent", "a", "--file", "d.json", `{"k":1}`, "--merge")
	p.signal(t, syscall.SIGINT)
	ns.untilLine(t, "STOPPING=1")
	if code := p.exitCode(t); code != exitOK {
		t.Fatalf("exit %d after SIGINT, want 0\nlog:\n%s", code, p.log)
	}
	mustRun(t, exitOK, "", "replay", "--verify", "--dir", dir)
}

// TestSignal_HupReloadsLogLevel checks SIGHUP: it re-reads the level from
// --log-level-file (an unknown word keeps the level in force; no file
// falls back to --log-level), tells systemd RELOADING=1 then READY=1, and
// the new level shows in what the watcher logs. A rejected intent is
// logged at debug level only, by the replay logger: it shows whether a
// named logger follows the root's level.
func TestSignal_HupReloadsLogLevel(t *testing.T) {
	dir := t.TempDir()
	levelFile := filepath.Join(t.TempDir(), "log-level")
	if err := os.WriteFile(levelFile, []byte("info\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ns := listenNotify(t)
	p := startNotified(t, ns, "watch", "--dir", dir, "--log-level", "warn", "--log-level-file", levelFile)
	ns.untilLine(t, "READY=1")
	reject := func() {
		t.Helper()
		mustRun(t, exitRejected, "", "submit", "--wait", "--dir", dir, "--agent", "a", "--file", "d.json", `[{"op":"frobnicate","path":""}]`)
	}
	// hup sends SIGHUP and waits for the log line that answers it and for
	// RELOADING=1 then READY=1; it returns the log up to that line.
	hup := func(answer string) string {
		t.Helper()
		p.signal(t, syscall.SIGHUP)
		waitFor(t, testTimeout, "log line "+answer, func() bool { return strings.Contains(p.log.String(), answer) })
		reloading, _ := ns.untilLine(t, "RELOADING=1")
		if _, ok := lineWith(reloading, "MONOTONIC_USEC="); !ok {
			t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", reloading)
		}
		ready, pre := ns.untilLine(t, "READY=1")
		if st, _ := lineWith(ready, "STATUS="); !strings.HasPrefix(st, "STATUS=reloaded; watching") {
			t.Errorf("READY=1 after reload came with %q", st)
		}
		for _, m := range pre {
			if !hasLine(m, "WATCHDOG=1") && !strings.HasPrefix(m, "STATUS=") {
				t.Errorf("between RELOADING=1 and READY=1: %q", m)
			}
		}
		log := p.log.String()
		return log[:strings.Index(log, answer)]
	}

	reject() // at info: not logged
	if err := os.WriteFile(levelFile, []byte("debug\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	log := hup("log level changed: from=info to=debug")
	if strings.Contains(log, "intent rejected") {
		t.Errorf("a rejection was logged at level info:\n%s", log)
	}
	reject() // at debug: logged
	waitFor(t, testTimeout, "the rejection logged at debug level", func() bool {
		return strings.Contains(p.log.String(), "[DEBUG] stateward.replay: intent rejected")
	})

	// An unknown word is an error, not a silent default: debug stays.
	if err := os.WriteFile(levelFile, []byte("loud\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hup(`log level not changed: level=debug error="log level file`)
	// No file: back to --log-level.
	if err := os.Remove(levelFile); err != nil {
		t.Fatal(err)
	}
	hup("log level changed: from=debug to=warn")
	log = p.log.String()
	reject() // at warn: not logged, and neither is the next reload
	hup("")  // the empty string is in every log: this only waits for READY
	p.signal(t, syscall.SIGTERM)
	ns.untilLine(t, "STOPPING=1")
	if code := p.exitCode(t); code != exitOK {
		t.Fatalf("exit %d after SIGTERM, want 0\nlog:\n%s", code, p.log)
	}
	if tail := strings.TrimPrefix(p.log.String(), log); strings.Contains(tail, "intent rejected") || strings.Contains(tail, "[INFO]") {
		t.Errorf("at level warn the watcher logged:\n%s", tail)
	}
}

// inProcess runs `stateward watch` in-process with the notify socket ns
// and the watchdog testWatchdog in the environment (go-systemd reads the
// process environment), and seams set on m. It returns a func that cancels
// the watcher's context and returns its exit code.
func inProcess(t *testing.T, ns *notifySocket, m *Main, dir string) (stop func() int) {
	t.Helper()
	t.Setenv("NOTIFY_SOCKET", ns.path)
	t.Setenv("WATCHDOG_USEC", strconv.FormatInt(testWatchdog.Microseconds(), 10))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	log := newLogBuffer("stateward: ready")
	m.Stdin, m.Stdout, m.Stderr = strings.NewReader(""), log, log
	m.Getenv = func(string) string { return "" }
	ctx, cancel := context.WithCancel(t.Context())
	code := make(chan int, 1)
	go func() { code <- m.Run(ctx, []string{"watch", "--dir", dir}) }()
	stopped := false
	stop = func() int {
		t.Helper()
		if stopped {
			return -1
		}
		stopped = true
		cancel()
		timer := time.NewTimer(testTimeout)
		defer timer.Stop()
		select {
		case c := <-code:
			return c
		case <-timer.C:
			t.Fatalf("watch still running %s after its context ended\nlog:\n%s", testTimeout, log)
			return -1
		}
	}
	t.Cleanup(func() { stop() })
	return stop
}

// TestWatchdog_WedgedLoop wedges the apply loop (a heartbeat that blocks)
// and checks that the watchdog pings stop while it is wedged and resume
// once it is not, so that systemd restarts a watcher that hangs.
func TestWatchdog_WedgedLoop(t *testing.T) {
	dir := t.TempDir()
	ns := listenNotify(t)
	var (
		wedged  atomic.Bool
		once    sync.Once
		blocked = make(chan struct{}) // closed once the loop is stuck
		release = make(chan struct{})
	)
	m := &Main{hook: func(point string) {
		if point == "heartbeat" && wedged.Load() {
			once.Do(func() { close(blocked) })
			<-release
		}
	}}
	stop := inProcess(t, ns, m, dir)
	t.Cleanup(func() { // before stop: a wedged loop could not stop
		wedged.Store(false)
		select {
		case <-release:
		default:
			close(release)
		}
	})

	ns.untilLine(t, "READY=1")
	for range 2 {
		ns.untilLine(t, "WATCHDOG=1")
	}
	wedged.Store(true)
	select {
	case <-blocked:
	case <-time.After(testTimeout):
		t.Fatalf("the apply loop did not reach its heartbeat within %s", testTimeout)
	}
	ns.mark(t) // what was sent before the loop stuck

	// Watch for pings over several watchdog intervals: systemd would have
	// killed the watcher long before the end of this window.
	window := time.NewTimer(5 * testWatchdog)
	defer window.Stop()
watch:
	for {
		select {
		case msg := <-ns.msgs:
			ns.log = append(ns.log, msg)
			if hasLine(msg, "WATCHDOG=1") {
				t.Fatalf("WATCHDOG=1 from a wedged apply loop; messages:\n%s", ns)
			}
		case <-window.C:
			break watch
		}
	}

	wedged.Store(false)
	close(release)
	ns.untilLine(t, "WATCHDOG=1")
	if code := stop(); code != exitOK {
		t.Errorf("exit %d, want 0", code)
	}
	ns.untilLine(t, "STOPPING=1")
}

// TestNotify_ExtendTimeout holds recovery up and checks that systemd is
// asked for more start-up time while it runs, with a STATUS saying for how
// long, and never once READY=1 is sent.
func TestNotify_ExtendTimeout(t *testing.T) {
	dir := t.TempDir()
	ns := listenNotify(t)
	release := make(chan struct{})
	m := &Main{extendEvery: 10 * time.Millisecond, hook: func(point string) {
		if point == "recovery" {
			<-release
		}
	}}
	stop := inProcess(t, ns, m, dir)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	want := fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", extendBy.Microseconds())
	for range 3 {
		msg, _ := ns.untilLine(t, want)
		if st, _ := lineWith(msg, "STATUS="); !strings.HasPrefix(st, "STATUS=recovering "+dir+": replaying the commit log, ") || !strings.HasSuffix(st, " so far") {
			t.Errorf("%s came with %q, want STATUS=recovering ... so far", want, st)
		}
	}
	close(release)
	ns.untilLine(t, "READY=1")
	if code := stop(); code != exitOK {
		t.Errorf("exit %d, want 0", code)
	}
	_, pre := ns.untilLine(t, "STOPPING=1")
	if n := count(pre, want); n != 0 {
		t.Errorf("%d %s after READY=1; messages:\n%s", n, want, ns)
	}
}

// TestNotify_LogsUnderJournald checks the log under journald (JOURNAL_STREAM
// set): no timestamps of its own, in text and in JSON.
func TestNotify_LogsUnderJournald(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			log := newLogBuffer("ready")
			m := &Main{
				Stdin:  strings.NewReader(""),
				Stdout: log,
				Stderr: log,
				Getenv: func(k string) string { return map[string]string{"JOURNAL_STREAM": "8:123456"}[k] },
			}
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			code := make(chan int, 1)
			go func() { code <- m.Run(ctx, []string{"watch", "--dir", dir, "--log-format", format}) }()
			select {
			case <-log.ready:
			case c := <-code:
				t.Fatalf("watch exited with %d before it was ready\nlog:\n%s", c, log)
			case <-ctx.Done():
				t.Fatalf("watch not ready after %s\nlog:\n%s", testTimeout, log)
			}
			cancel()
			if c := <-code; c != exitOK {
				t.Fatalf("exit %d, want 0\nlog:\n%s", c, log)
			}
			lines := strings.Split(strings.TrimSuffix(log.String(), "\n"), "\n")
			if len(lines) < 3 { // recovering, ready, stopped
				t.Fatalf("log has %d lines, want at least 3:\n%s", len(lines), log)
			}
			for _, l := range lines {
				var ok bool
				if format == "json" {
					var v map[string]any
					ok = json.Unmarshal([]byte(l), &v) == nil && v["@message"] != nil
					_, stamped := v["@timestamp"]
					ok = ok && !stamped
				} else {
					ok = strings.HasPrefix(l, "[INFO]  stateward")
				}
				if !ok {
					t.Errorf("log line %q: want no timestamp (%s)", l, format)
				}
			}
		})
	}
}

// TestSignal_TermWhileStarting sends SIGTERM to watchers that have only
// just started, at staggered moments from the runtime being up (from then
// on package earlysig holds SIGTERM) through recovery: each must stop with
// exit 0 or, when the signal came before the Go runtime had started, die
// by it; none may exit otherwise. And SIGHUP, which only watch takes over,
// still ends another command.
func TestSignal_TermWhileStarting(t *testing.T) {
	clean, early := 0, 0
	for i := range 8 {
		dir := t.TempDir()
		cmd := selfCmd(t, "watch", "--dir", dir)
		log := newLogBuffer("stateward: recovering")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			select { // at the start of recovery
			case <-log.ready:
			case <-time.After(testTimeout):
				t.Fatalf("child %d never started recovery:\n%s", i, log)
			}
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		ee, _ := errors.AsType[*exec.ExitError](err)
		switch {
		case err == nil:
			clean++
		case ee != nil && ee.ProcessState.Sys().(syscall.WaitStatus).Signal() == syscall.SIGTERM && i%2 == 0:
			early++ // before the runtime ran any of our code
		default:
			t.Fatalf("child %d: %v after SIGTERM while starting, want exit 0\nlog:\n%s", i, err, log)
		}
	}
	t.Logf("%d clean exits, %d killed before the runtime was up", clean, early)
	if clean < 4 {
		t.Fatalf("only %d clean exits, want at least the 4 signalled during recovery", clean)
	}

	cmd := selfCmd(t, "submit", "--wait", "--timeout", "1m", "--dir", t.TempDir(), "--agent", "a", "--file", "d.json", "--merge", `{"k":1}`)
	log := newLogBuffer("")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(testTimeout)
	for {
		err := cmd.Process.Signal(syscall.SIGHUP)
		if err != nil {
			break // gone
		}
		if time.Now().After(deadline) {
			t.Fatal("submit --wait survives SIGHUP")
		}
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid)); strings.Contains(string(st), ") Z ") {
			break
		}
		runtime.Gosched()
	}
	err := cmd.Wait()
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGHUP {
		t.Fatalf("submit --wait after SIGHUP: %v, want killed by SIGHUP\n%s", err, log)
	}
}

// TestWatch_DeletedLockFile runs the sequence of issue 21.1: start a
// watcher, delete DIR/.stateward/lock, start a second watcher on the same
// DIR. The second must exit 1 naming the first; every intent is applied
// once, the first watcher's pid is back in the lock file, and the
// directory verifies.
func TestWatch_DeletedLockFile(t *testing.T) {
	dir := t.TempDir()
	first := startWatcher(t, dir)
	if err := os.Remove(filepath.Join(dir, ".stateward", "lock")); err != nil {
		t.Fatal(err)
	}
	second := selfCmd(t, "watch", "--dir", dir)
	log := newLogBuffer("")
	second.Stdout, second.Stderr = log, log
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- second.Wait() }()
	for seq := 1; seq <= 5; seq++ {
		mustRun(t, exitOK, "", "submit", "--wait", "--dir", dir, "--agent", "a", "--file", "d.json", "--merge", fmt.Sprintf(`{"k%d":%d}`, seq, seq))
	}
	select {
	case err := <-exited:
		ee, ok := errors.AsType[*exec.ExitError](err)
		if !ok || ee.ExitCode() != exitError || !strings.Contains(log.String(), "locked") || !strings.Contains(log.String(), strconv.Itoa(first.Pid())) {
			t.Fatalf("second watcher: %v, want exit 1 saying the directory is locked by %d\nlog:\n%s", err, first.Pid(), log)
		}
	case <-time.After(testTimeout):
		second.Process.Kill()
		t.Fatalf("a second watcher runs beside the first\nlog:\n%s", log)
	}
	originals := map[uint64]int{}
	for _, r := range readResults(t, dir, "a") {
		if !r.Retry {
			originals[r.Seq]++
		}
	}
	for seq := uint64(1); seq <= 5; seq++ {
		if originals[seq] != 1 {
			t.Errorf("seq %d: %d original results, want 1", seq, originals[seq])
		}
	}
	r := mustRun(t, exitOK, "", "status", "--dir", dir)
	if want := fmt.Sprintf("running (pid %d)", first.Pid()); !strings.Contains(r.stdout, want) {
		t.Errorf("status:\n%s\nwant %q", r.stdout, want)
	}
	first.stop(t)
	mustRun(t, exitOK, "", "replay", "--verify", "--dir", dir)
}

// TestWatch_WaitsForSpaceAtStart makes recovery fail for lack of space:
// the watcher must wait (status says so, no READY=1, no exit) and go on
// once there is space; stopped while it waits, it exits 0.
func TestWatch_WaitsForSpaceAtStart(t *testing.T) {
	full := func(fails *atomic.Int32) func(*replay.Applier) error {
		return func(a *replay.Applier) error {
			if fails.Add(-1) >= 0 {
				return fmt.Errorf("%w: %w", replay.ErrNoSpace, syscall.ENOSPC)
			}
			return a.Open()
		}
	}
	t.Run("SpaceReturns", func(t *testing.T) {
		dir := t.TempDir()
		ns := listenNotify(t)
		var fails atomic.Int32
		fails.Store(3)
		stop := inProcess(t, ns, &Main{open: full(&fails)}, dir)
		_, pre := ns.untilLine(t, "READY=1")
		waiting := 0
		for _, msg := range pre {
			if st, ok := lineWith(msg, "STATUS="); ok && strings.HasSuffix(st, "waiting for space") {
				waiting++
			}
		}
		if waiting != 3 {
			t.Errorf("%d status lines say it waits for space, want 3; messages:\n%s", waiting, ns)
		}
		mustRun(t, exitOK, "", "submit", "--wait", "--dir", dir, "--agent", "a", "--file", "d.json", "--merge", `{"k":1}`)
		if code := stop(); code != exitOK {
			t.Errorf("exit %d, want 0", code)
		}
		mustRun(t, exitOK, "", "replay", "--verify", "--dir", dir)
	})
	t.Run("StoppedWhileWaiting", func(t *testing.T) {
		dir := t.TempDir()
		ns := listenNotify(t)
		var fails atomic.Int32
		fails.Store(1 << 30)
		stop := inProcess(t, ns, &Main{open: full(&fails)}, dir)
		ns.until(t, testTimeout, "a status line saying it waits", func(msg string) bool {
			st, _ := lineWith(msg, "STATUS=")
			return strings.HasSuffix(st, "waiting for space")
		})
		if code := stop(); code != exitOK {
			t.Errorf("exit %d after a stop while waiting for space, want 0", code)
		}
		if n := count(ns.mark(t), "READY=1"); n != 0 {
			t.Errorf("READY=1 sent %d times while waiting for space", n)
		}
	})
}
