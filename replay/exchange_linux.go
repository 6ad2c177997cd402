package replay

import (
	"errors"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Exchange swaps the files at two names of the state directory's top
// folder atomically (renameat2 with RENAME_EXCHANGE): both must exist.
func (r rootFS) Exchange(a, b string) error { return r.renameat2(a, b, unix.RENAME_EXCHANGE) }

// RenameNoReplace renames oldname to newname unless newname exists, in
// which case it fails with an error matching os.ErrExist.
func (r rootFS) RenameNoReplace(oldname, newname string) error {
	return r.renameat2(oldname, newname, unix.RENAME_NOREPLACE)
}

// renameat2 runs renameat2(2) on two names of the top folder, through a
// descriptor of the folder opened inside the root. A file system that
// lacks the flag gives an error matching errNoRenameFlags.
func (r rootFS) renameat2(oldname, newname string, flags uint) error {
	if strings.ContainsRune(oldname, '/') || strings.ContainsRune(newname, '/') {
		return &os.LinkError{Op: "renameat2", Old: oldname, New: newname, Err: errors.New("not a name in the top folder")}
	}
	d, err := r.root.OpenFile(".", os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	rc, err := d.SyscallConn()
	if err != nil {
		return err
	}
	var rerr error
	if err := rc.Control(func(fd uintptr) {
		rerr = unix.Renameat2(int(fd), oldname, int(fd), newname, flags)
	}); err != nil {
		return err
	}
	switch {
	case rerr == nil:
		return nil
	case errors.Is(rerr, unix.EINVAL), errors.Is(rerr, unix.ENOSYS), errors.Is(rerr, unix.EOPNOTSUPP):
		return &os.LinkError{Op: "renameat2", Old: oldname, New: newname, Err: errNoRenameFlags}
	}
	return &os.LinkError{Op: "renameat2", Old: oldname, New: newname, Err: rerr}
}
