package replay

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrLockLost is returned (wrapped in ErrFailed) by Step when the state
// directory's path no longer names the folder whose lock the Applier holds
// (it was moved or replaced): another watcher could take the new one.
var ErrLockLost = errors.New("replay: the state directory's path no longer names the locked folder")

// Lock is the lock of a state directory (G6): an flock on the state
// directory itself, which no one can delete or replace under a running
// watcher without it noticing, unlike a lock file. DIR/.stateward/lock
// only holds the holder's pid, for people and status.
type Lock struct {
	dir string
	f   *os.File // the state directory, flocked
	id  folderID // its identity
}

// folderID identifies a folder: device and inode number.
type folderID struct{ dev, ino uint64 }

// TryLock takes the lock of a state directory without waiting, and writes
// the process ID to DIR/.stateward/lock. If another process holds it, the
// error wraps ErrLocked and names that process.
//
// Neither the private folder nor the pid file may be a symbolic link (or,
// for the pid file, anything but a regular file): neither is ever read or
// written through one (G5).
func TryLock(dir string) (*Lock, error) {
	if fi, err := os.Lstat(filepath.Join(dir, privateDir)); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("lock: %s in %s is not a folder (%s): move it away", privateDir, dir, fi.Mode().Type())
	}
	for range 10 {
		f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				holder := "another process"
				if pid := probeWatcher(dir); pid != "" {
					holder = "process " + pid
				}
				return nil, fmt.Errorf("%w: %s holds %s", ErrLocked, holder, dir)
			}
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		l := &Lock{dir: dir, f: f, id: idOf(fi)}
		if l.moved() {
			f.Close() // replaced between the open and the lock: start over
			continue
		}
		if err := l.writePid(); err != nil {
			l.Unlock()
			return nil, err
		}
		return l, nil
	}
	return nil, fmt.Errorf("lock %s: the folder keeps being replaced", dir)
}

// idOf returns the identity of a folder.
func idOf(fi os.FileInfo) folderID {
	st := fi.Sys().(*syscall.Stat_t)
	return folderID{dev: uint64(st.Dev), ino: st.Ino}
}

// moved reports whether the path no longer names the locked folder.
func (l *Lock) moved() bool {
	fi, err := os.Stat(l.dir)
	return err != nil || idOf(fi) != l.id
}

// writePid writes the process ID to the pid file, replacing what is there.
func (l *Lock) writePid() error {
	p := filepath.Join(l.dir, lockName)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o644)
	if err == nil {
		if fi, serr := f.Stat(); serr != nil || !fi.Mode().IsRegular() {
			err = errNotRegular
		}
		if err == nil {
			err = f.Truncate(0)
		}
		if err == nil {
			_, err = f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("write pid to %s: %w", p, err)
	}
	return nil
}

// Check returns an error wrapping ErrLockLost if the state directory's
// path no longer names the locked folder. A pid file that someone deleted
// is written again.
func (l *Lock) Check() error {
	if l.moved() {
		return fmt.Errorf("%w: %s was moved or replaced while this watcher held it; stopping (start a watcher on the folder now at that path if it is the right one)", ErrLockLost, l.dir)
	}
	if _, err := os.Lstat(filepath.Join(l.dir, lockName)); errors.Is(err, os.ErrNotExist) {
		l.writePid() // only for people and status: its failure changes nothing
	}
	return nil
}

// Unlock releases the lock. The pid file stays: it names the last holder.
func (l *Lock) Unlock() error {
	if l.f == nil {
		return nil
	}
	// Unlock explicitly: a child forked at this moment shares the open
	// file, and closing ours alone would leave the lock held until the
	// child's exec closes its copy.
	err := unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}
