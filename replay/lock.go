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

// Lock is the lock of a state directory (G6). It is two flocks, both
// held for as long as the watcher runs, each taken with LOCK_NB:
//
//   - DIR/.stateward/lock, the only lock earlier releases take, so that a
//     watcher of an earlier release is refused beside this one and this
//     one beside it; the file also holds the holder's pid;
//   - the state directory itself, which no one can delete or replace under
//     a running watcher without it noticing, unlike a lock file.
//
// The file is taken first when it exists (nothing is written before the
// folder lock is held); if it does not, it is created and taken right
// after the folder lock, once the private folder exists. A watcher that
// cannot take either is refused.
type Lock struct {
	dir    string
	f      *os.File // the state directory, flocked
	id     folderID // its identity
	legacy *os.File // DIR/.stateward/lock, flocked; nil until taken
	legID  folderID // its identity
}

// folderID identifies a folder or file: device and inode number.
type folderID struct{ dev, ino uint64 }

// TryLock takes the lock of a state directory without waiting, and writes
// the process ID to DIR/.stateward/lock. If another process holds it, the
// error wraps ErrLocked and names that process. The private folder must
// exist.
//
// Neither the private folder nor the pid file may be a symbolic link (or,
// for the pid file, anything but a regular file): neither is ever read or
// written through one (G5).
func TryLock(dir string) (*Lock, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	defer root.Close()
	l, err := lockRoot(root, dir)
	if err != nil {
		return nil, err
	}
	if err := l.finish(); err != nil {
		l.Unlock()
		return nil, err
	}
	return l, nil
}

// lockRoot takes the lock file if it exists, then the flock on the folder
// root was opened on (its own descriptor, not a new lookup of dir), and
// checks that dir still names that folder. It writes nothing: finish
// completes the lock once the private folder exists.
func lockRoot(root *os.Root, dir string) (*Lock, error) {
	f, err := root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	l := &Lock{dir: dir, f: f}
	fi, err := f.Stat()
	if err != nil {
		l.Unlock()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	l.id = idOf(fi)
	if l.moved() {
		l.Unlock()
		return nil, fmt.Errorf("%w: %s was replaced while the watcher was opening it; start again", ErrLockLost, dir)
	}
	if err := l.takeLegacy(false); err != nil {
		l.Unlock()
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		l.Unlock() // the lock file too, so that the probe finds the holder, not us
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, lockedError(dir, dir)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return l, nil
}

// lockedError is the refusal of a lock held by another process.
func lockedError(dir, what string) error {
	holder := "another process"
	if pid := probeWatcher(dir); pid != "" {
		holder = "process " + pid
	}
	return fmt.Errorf("%w: %s holds %s", ErrLocked, holder, what)
}

// finish takes the lock file, creating it, if lockRoot found none, and
// writes the process ID to it. The private folder must exist.
func (l *Lock) finish() error {
	if l.legacy == nil {
		if err := l.takeLegacy(true); err != nil {
			return err
		}
	}
	return l.writePid()
}

// takeLegacy opens DIR/.stateward/lock through the locked folder's
// descriptor, following no link, and flocks it. Without create, a missing
// private folder or file is no error and leaves l.legacy nil.
func (l *Lock) takeLegacy(create bool) error {
	p := filepath.Join(l.dir, lockName)
	pd, err := unix.Openat(int(l.f.Fd()), privateDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) && !create {
			return nil
		}
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("lock: %s in %s is not a folder: move it away", privateDir, l.dir)
		}
		return fmt.Errorf("lock: open %s in %s: %w", privateDir, l.dir, err)
	}
	defer unix.Close(pd)
	flags := unix.O_RDWR | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	if create {
		flags |= unix.O_CREAT
	}
	fd, err := unix.Openat(pd, filepath.Base(lockName), flags, 0o644)
	if err != nil {
		if errors.Is(err, unix.ENOENT) && !create {
			return nil
		}
		if errors.Is(err, unix.ELOOP) {
			err = errNotRegular
		}
		return fmt.Errorf("lock %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = errNotRegular
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("lock %s: %w", p, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return lockedError(l.dir, p)
		}
		return fmt.Errorf("lock %s: %w", p, err)
	}
	if l.legacy != nil {
		unix.Flock(int(l.legacy.Fd()), unix.LOCK_UN)
		l.legacy.Close()
	}
	l.legacy, l.legID = f, idOf(fi)
	return nil
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

// writePid writes the process ID to the lock file, replacing what is
// there.
func (l *Lock) writePid() error {
	err := l.legacy.Truncate(0)
	if err == nil {
		_, err = l.legacy.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		return fmt.Errorf("write pid to %s: %w", filepath.Join(l.dir, lockName), err)
	}
	return nil
}

// Check returns an error wrapping ErrLockLost if the state directory's
// path no longer names the locked folder. A lock file that someone
// deleted or replaced is created (if need be) and taken again, and the pid
// written to it: only the folder lock keeps a watcher of this release out,
// the file keeps out earlier releases and tells people the pid. If another
// process holds the new file, it is tried again at the next commit.
func (l *Lock) Check() error {
	if l.moved() {
		return fmt.Errorf("%w: %s was moved or replaced while this watcher held it; stopping (start a watcher on the folder now at that path if it is the right one)", ErrLockLost, l.dir)
	}
	if fi, err := os.Lstat(filepath.Join(l.dir, lockName)); l.legacy == nil || err != nil || idOf(fi) != l.legID {
		if l.takeLegacy(true) == nil {
			l.writePid() // only for people and status: its failure changes nothing
		}
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
	if l.legacy != nil {
		if uerr := unix.Flock(int(l.legacy.Fd()), unix.LOCK_UN); err == nil {
			err = uerr
		}
		if cerr := l.legacy.Close(); err == nil {
			err = cerr
		}
		l.legacy = nil
	}
	return err
}
