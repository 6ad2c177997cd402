package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports.
const clockTicks = 100

// procCPU returns the CPU time (user + system) a live process has used,
// from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields from the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("bad /proc stat")
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bad utime/stime")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// procHWM returns a live process's peak resident set size (VmHWM), in
// bytes.
func procHWM(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			fs := strings.Fields(rest)
			if len(fs) >= 1 {
				kb, err := strconv.ParseInt(fs[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, errors.New("no VmHWM")
}

// watcherCounters reads the commit and batch counters of the watcher's
// versions file (the batch field is not part of the public journal API, so
// a missing one reads as 0).
func watcherCounters(dir string) (commit, batch uint64) {
	data, err := os.ReadFile(filepath.Join(dir, ".stateward", "versions.json"))
	if err != nil {
		return 0, 0
	}
	var v struct {
		Commit uint64 `json:"commit"`
		Batch  uint64 `json:"batch"`
	}
	if json.Unmarshal(data, &v) != nil {
		return 0, 0
	}
	return v.Commit, v.Batch
}

// loadAvg returns the 1-minute load average.
func loadAvg() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// rusageCPU returns the CPU time of an exited child.
func rusageCPU(ps *os.ProcessState) time.Duration {
	if ps == nil {
		return 0
	}
	return ps.UserTime() + ps.SystemTime()
}

// watcherProc is a running `stateward watch`.
type watcherProc struct {
	cmd    *exec.Cmd
	exited chan error
	log    string
}

// startWatcher runs the watcher (argv[0] and its leading arguments in bin)
// on dir, logging to dir/watch.log.
func startWatcher(bin []string, dir string, extra ...string) (*watcherProc, error) {
	logName := filepath.Join(dir, "watch.log")
	logf, err := os.Create(logName)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append(append(bin[1:len(bin):len(bin)], "watch", "--dir", dir, "--log-level", "warn"), extra...)
	cmd := exec.Command(bin[0], args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start watcher: %w", err)
	}
	w := &watcherProc{cmd: cmd, exited: make(chan error, 1), log: logName}
	go func() { w.exited <- cmd.Wait() }()
	return w, nil
}

// waitReady waits until the watcher has written its versions file.
func (w *watcherProc) waitReady(dir string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(dir, ".stateward", "versions.json")); err == nil {
			return nil
		}
		select {
		case err := <-w.exited:
			w.exited <- err
			return fmt.Errorf("watcher exited (%v): %s", err, w.tail())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return fmt.Errorf("watcher not ready after 60s: %s", w.tail())
}

func (w *watcherProc) pid() int { return w.cmd.Process.Pid }

// stop sends SIGTERM and waits for a clean exit.
func (w *watcherProc) stop() error {
	w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-w.exited:
		if err != nil {
			return fmt.Errorf("watcher: %v: %s", err, w.tail())
		}
		return nil
	case <-time.After(2 * time.Minute):
		w.cmd.Process.Kill()
		<-w.exited
		return fmt.Errorf("watcher did not stop within 2m of SIGTERM: %s", w.tail())
	}
}

// tail returns the end of the watcher's log.
func (w *watcherProc) tail() string {
	data, _ := os.ReadFile(w.log)
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return strings.TrimSpace(string(data))
}
