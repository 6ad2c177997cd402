//go:build !linux

package replay

import "os"

// Exchange is not available outside Linux: documents are replaced by a
// plain rename, and an edit made at that moment can be lost.
func (r rootFS) Exchange(a, b string) error {
	return &os.LinkError{Op: "renameat2", Old: a, New: b, Err: errNoRenameFlags}
}

// RenameNoReplace is not available outside Linux.
func (r rootFS) RenameNoReplace(oldname, newname string) error {
	return &os.LinkError{Op: "renameat2", Old: oldname, New: newname, Err: errNoRenameFlags}
}
