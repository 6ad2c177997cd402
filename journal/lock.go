package journal

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/gofrs/flock"
)

// SunPathLen is the size of sun_path in Linux's sockaddr_un: a writer's
// abstract socket name is padded with NUL bytes to fill it (docs/format.md,
// "Writers").
const SunPathLen = 108

// WriterAddress returns the abstract Unix socket name that a writer of the
// agent whose journal folder is folder binds while it is open, in Go's form:
// "@stateward-writer/<st_dev>/<st_ino>" padded with NUL bytes to SunPathLen
// bytes (the leading "@" stands for the NUL byte of an abstract name). Every
// client binds the same bytes: Node binds the whole sun_path whatever name it
// is given, so the others pad theirs to match.
func WriterAddress(folder string) (string, error) {
	fi, err := os.Stat(folder)
	if err != nil {
		return "", fmt.Errorf("stat journal folder: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("stat journal folder %s: no device and inode numbers on this system", folder)
	}
	name := fmt.Sprintf("@stateward-writer/%d/%d", uint64(st.Dev), uint64(st.Ino))
	return name + strings.Repeat("\x00", SunPathLen-len(name)), nil
}

// writerLock holds an agent's journal: an abstract Unix socket named after
// the journal folder, which the kernel releases when the process dies, and
// flock on the folder's .lock file, which excludes writers that use flock(1)
// and writers in other network namespaces.
type writerLock struct {
	ln *net.UnixListener
	fl *flock.Flock
}

// errBusy is returned by lockWriter when another writer holds either lock.
var errBusy = errors.New("busy")

// lockWriter takes both locks of the journal folder, or neither. It returns
// errBusy when another writer holds one of them.
func lockWriter(folder string) (*writerLock, error) {
	lockPath := filepath.Join(folder, LockName)
	f, err := os.OpenFile(lockPath, os.O_RDONLY|os.O_CREATE, FileMode)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", lockPath, err)
	}
	f.Close()
	addr, err := WriterAddress(folder)
	if err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, errBusy
	}
	if err != nil {
		return nil, fmt.Errorf("bind writer socket of %s: %w", folder, err)
	}
	fl := flock.New(lockPath, flock.SetPermissions(FileMode))
	ok, err := fl.TryLock()
	if err != nil || !ok {
		ln.Close()
		if err != nil {
			return nil, fmt.Errorf("flock %s: %w", lockPath, err)
		}
		return nil, errBusy
	}
	return &writerLock{ln: ln, fl: fl}, nil
}

// unlock releases both locks.
func (l *writerLock) unlock() error {
	err := l.fl.Unlock()
	if cerr := l.ln.Close(); err == nil {
		err = cerr
	}
	return err
}

// AgentLock is an agent's writer lock held by something that is not a
// Writer: `stateward forget` and the watcher hold it while they forget the
// agent, so that no writer appends meanwhile.
type AgentLock struct{ l *writerLock }

// LockAgent takes the writer lock of agent in the state directory dir,
// both parts, as a Writer does, without waiting and without touching the
// journal's segments. It returns an error wrapping ErrLocked if a writer
// holds the agent, and one wrapping os.ErrNotExist if the agent has no
// journal folder. The folder must be a real folder and .lock, if present, a
// regular file: neither is followed through a symbolic link.
func LockAgent(dir, agent string) (*AgentLock, error) {
	if !ValidAgentName(agent) {
		return nil, fmt.Errorf("lock agent: %w: %q", ErrBadName, agent)
	}
	folder := filepath.Join(dir, "journal", agent)
	fi, err := os.Lstat(folder)
	if err != nil {
		return nil, fmt.Errorf("lock agent %s: %w", agent, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("lock agent %s: %s is not a folder (%s)", agent, folder, fi.Mode().Type())
	}
	if fi, err := os.Lstat(filepath.Join(folder, LockName)); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("lock agent %s: %s is not a regular file (%s)", agent, filepath.Join(folder, LockName), fi.Mode().Type())
	}
	l, err := lockWriter(folder)
	if errors.Is(err, errBusy) {
		return nil, fmt.Errorf("%w: agent %q, folder %s (a writer of agent %q is open)", ErrLocked, agent, folder, agent)
	}
	if err != nil {
		return nil, err
	}
	return &AgentLock{l: l}, nil
}

// Close releases the lock.
func (l *AgentLock) Close() error { return l.l.unlock() }
