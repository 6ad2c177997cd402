package replay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/stateward/stateward/journal"
)

// Status is what `stateward status` shows: read from the files, without
// taking the lock, so it works while a watcher runs.
type Status struct {
	Dir     string        `json:"dir"`
	Watcher string        `json:"watcher"` // "running (pid N)" or "stopped"
	Commit  uint64        `json:"commit"`
	Batch   uint64        `json:"batch"`
	Docs    []DocStatus   `json:"docs"`
	Agents  []AgentStatus `json:"agents"`
	Disk    DiskUsage     `json:"disk"`
}

// DiskUsage is the bytes each part of the state directory takes (G7).
type DiskUsage struct {
	Documents   int64 `json:"documents"`
	Journals    int64 `json:"journals"`
	Results     int64 `json:"results"`
	CommitLog   int64 `json:"commit_log"`
	Checkpoints int64 `json:"checkpoints"`
}

// du returns the bytes of the regular files under p (not following links).
func du(p string) int64 {
	var n int64
	filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// DocStatus is one document in Status.
type DocStatus struct {
	File    string `json:"file"`
	Version uint64 `json:"version"`
	Exists  bool   `json:"exists"`  // as the watcher last committed or adopted it
	OnDisk  bool   `json:"on_disk"` // a regular file is at its name, usable or not
	Size    int64  `json:"size"`    // bytes of that file
	State   string `json:"state"`   // "ok", or what is wrong
}

// AgentStatus is one agent in Status.
//
// Every entry of DIR/journal is listed, also those the watcher skips (a
// file, a link, a folder whose name is not a valid agent name), and so is
// every agent the watcher has read whose folder is gone: State says why.
type AgentStatus struct {
	Agent     string `json:"agent"`      // the entry's name in DIR/journal
	State     string `json:"state"`      // "ok", or why the watcher skips or cannot read it
	Seq       uint64 `json:"seq"`        // last processed seq
	Backlog   int    `json:"backlog"`    // complete lines not yet processed
	TornTail  int64  `json:"torn_tail"`  // bytes of an unfinished last line
	LastError string `json:"last_error"` // last rejection, since the watcher started
}

// ReadStatus gathers the Status of the state directory dir.
func ReadStatus(dir string) (*Status, error) {
	st := &Status{Dir: dir, Watcher: "stopped", Docs: []DocStatus{}, Agents: []AgentStatus{}}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("state directory %s: not a directory", dir)
	}
	if pid := probeWatcher(dir); pid != "" {
		st.Watcher = fmt.Sprintf("running (pid %s)", pid)
	}
	var vf versionsFile
	data, err := readRegular(filepath.Join(dir, journal.VersionsPath))
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &vf); err != nil {
			return nil, fmt.Errorf("parse %s: %w", journal.VersionsPath, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("read %s: %w", journal.VersionsPath, err)
	}
	st.Commit, st.Batch = vf.Commit, vf.Batch
	for name, dv := range vf.Docs {
		ds := DocStatus{File: name, Version: dv.Version, Exists: dv.Exists, State: "ok"}
		if dv.Broken != "" {
			ds.State = "unusable: " + dv.Broken
		}
		// Only a regular file is read: a document that is a link is not
		// followed (out of DIR, perhaps), and a named pipe would block.
		b, err := readRegular(filepath.Join(dir, name))
		switch {
		case errors.Is(err, errNotRegular) || errors.Is(err, syscall.ELOOP):
			if dv.Broken == "" {
				ds.State = "unusable: not a regular file"
			}
		case err == nil:
			ds.OnDisk, ds.Size = true, int64(len(b))
			if dv.Broken == "" && (!dv.Exists || journal.Hash(b) != dv.SHA256) {
				ds.State = "changed outside stateward (the watcher adopts it as a new version)"
			}
		case errors.Is(err, os.ErrNotExist):
			if dv.Exists {
				ds.State = "deleted outside stateward"
			}
		default:
			ds.State = "unreadable: " + err.Error()
		}
		st.Docs = append(st.Docs, ds)
	}
	slices.SortFunc(st.Docs, func(a, b DocStatus) int { return strings.Compare(a.File, b.File) })

	// A journal folder that is a link is not followed (the watcher
	// refuses to start on one): no agents to show.
	var ents []os.DirEntry
	if fi, err := os.Lstat(filepath.Join(dir, "journal")); err == nil && fi.IsDir() {
		ents, err = os.ReadDir(filepath.Join(dir, "journal"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("list journals: %w", err)
		}
	}
	listed := map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		listed[name] = true
		if name == forgetTouch && e.IsDir() {
			continue // forget requests (forget.go), not an agent
		}
		as := AgentStatus{Agent: name, State: "ok"}
		pos := vf.Agents[name]
		as.Seq, as.LastError = pos.Seq, pos.LastError
		// The watcher's own checks, in its order (read.go).
		switch {
		case !e.IsDir():
			as.State = fmt.Sprintf("skipped: not a folder (%s); agent journals are folders", fileType(e.Type()))
		case !journal.ValidAgentName(name):
			as.State = "skipped: not a valid agent name (letters, digits, '.', '_', '-', at most 64, starting with a letter or digit, no '..'); rename the folder"
		default:
			if fi, err := os.Lstat(filepath.Join(dir, "results", name)); err == nil && !fi.IsDir() {
				as.State = fmt.Sprintf("skipped: results/%s is not a folder (%s); move it away", name, fileType(fi.Mode().Type()))
			}
		}
		if e.IsDir() {
			seg, _ := journal.ParseSegmentName(pos.Segment)
			var err error
			as.Backlog, as.TornTail, err = backlog(filepath.Join(dir, "journal", name), seg, pos.Offset)
			if err != nil && as.State == "ok" {
				as.State = "cannot read the journal: " + err.Error()
			}
		}
		st.Agents = append(st.Agents, as)
	}
	for name, pos := range vf.Agents {
		if !listed[name] && pos.Segment != "" {
			st.Agents = append(st.Agents, AgentStatus{Agent: name, State: "journal folder gone; the watcher resumes where it was if it comes back", Seq: pos.Seq, LastError: pos.LastError})
		}
	}
	slices.SortFunc(st.Agents, func(a, b AgentStatus) int { return strings.Compare(a.Agent, b.Agent) })
	for _, ds := range st.Docs {
		st.Disk.Documents += ds.Size
	}
	st.Disk.Journals = du(filepath.Join(dir, "journal"))
	st.Disk.Results = du(filepath.Join(dir, "results"))
	st.Disk.CommitLog = du(filepath.Join(dir, logDir))
	st.Disk.Checkpoints = du(filepath.Join(dir, checkpointDir))
	return st, nil
}

// fileType names a file type for people.
func fileType(m os.FileMode) string {
	switch {
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a folder"
	case m.IsRegular():
		return "a regular file"
	}
	return "not a regular file"
}

// probeWatcher returns the pid of the process holding the state
// directory's lock, or "" if no one holds it, without taking the lock
// (taking it, even for a moment, could keep a watcher from starting, and
// would rewrite the pid file): it looks in /proc/locks for a write flock on
// DIR/.stateward/lock or on DIR itself. Where /proc/locks cannot be read,
// it trusts the pid file if that process is alive. The pid is that of
// /proc/locks or, if it shows none (another pid namespace), the pid file's.
func probeWatcher(dir string) string {
	pidFile := ""
	if b, err := readRegular(filepath.Join(dir, lockName)); err == nil {
		pidFile = string(bytes.TrimSpace(b))
	}
	var want []string
	for _, p := range []string{filepath.Join(dir, lockName), dir} {
		if fi, err := os.Lstat(p); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				dev := uint64(st.Dev)
				// major and minor as the kernel's new_encode_dev splits them.
				major, minor := (dev>>8)&0xfff, (dev&0xff)|((dev>>12)&0xfff00)
				want = append(want, fmt.Sprintf("%02x:%02x:%d", major, minor, st.Ino))
			}
		}
	}
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		if pid, err := strconv.Atoi(pidFile); err == nil && pid > 0 {
			if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
				return pidFile
			}
		}
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		// 3: FLOCK  ADVISORY  WRITE 12460 fe:00:9986061 0 EOF
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "FLOCK" || f[3] != "WRITE" || !slices.Contains(want, f[5]) {
			continue
		}
		if f[4] != "0" && f[4] != "-1" {
			return f[4]
		}
		if pidFile != "" {
			return pidFile
		}
		return "?"
	}
	return ""
}

// backlog counts the complete lines of a journal after position (seg, off)
// and the bytes of an unfinished last line.
func backlog(folder string, seg uint64, off int64) (int, int64, error) {
	segs, err := journal.ListSegments(folder)
	if err != nil {
		return 0, 0, err
	}
	n, torn := 0, int64(0)
	for _, s := range segs {
		if s < seg {
			continue
		}
		start := int64(0)
		if s == seg {
			start = off
		}
		f, err := openRegular(filepath.Join(folder, journal.SegmentName(s)))
		if errors.Is(err, errNotRegular) || errors.Is(err, syscall.ELOOP) || errors.Is(err, os.ErrNotExist) {
			continue // not a segment (any more): the watcher ignores it too
		}
		if err != nil {
			return 0, 0, fmt.Errorf("open journal segment: %w", err)
		}
		if _, err := f.Seek(start, io.SeekStart); err != nil {
			f.Close()
			return 0, 0, err
		}
		buf := make([]byte, 64<<10)
		var tail int64
		for {
			k, err := f.Read(buf)
			for _, c := range buf[:k] {
				tail++
				if c == '\n' {
					n++
					tail = 0
				}
			}
			if err != nil {
				break
			}
		}
		f.Close()
		torn = tail
	}
	return n, torn, nil
}

// openRegular opens a regular file for reading, without following a
// symbolic link in its last element and without blocking on a named pipe;
// anything but a regular file is refused with errNotRegular.
func openRegular(p string) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = &os.PathError{Op: "open", Path: p, Err: errNotRegular}
		}
		return nil, err
	}
	return f, nil
}

// readRegular reads a whole regular file (see openRegular).
func readRegular(p string) ([]byte, error) {
	f, err := openRegular(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}
