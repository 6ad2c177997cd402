package replay

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/stateward/stateward/journal"
)

// fsys is the state directory as the Applier sees it: every name is
// relative to the directory, and nothing it names can lead outside it. The
// real one is an os.Root (rootFS); tests use one that simulates a power
// loss by throwing away what was not fsynced (crashfs_test.go).
type fsys interface {
	OpenFile(name string, flag int, perm os.FileMode) (fileHandle, error)
	Lstat(name string) (os.FileInfo, error)
	ReadDir(name string) ([]os.DirEntry, error)
	Mkdir(name string, perm os.FileMode) error
	Rename(oldname, newname string) error
	// Exchange swaps the files at two names atomically; both must exist.
	// RenameNoReplace renames unless newname exists (os.ErrExist). Both
	// fail with errNoRenameFlags where the file system lacks them.
	Exchange(a, b string) error
	RenameNoReplace(oldname, newname string) error
	Remove(name string) error
	// SyncDir fsyncs a directory, making its entries durable.
	SyncDir(name string) error
}

// fileHandle is an open file of an fsys.
type fileHandle interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.WriterAt
	io.Seeker
	Sync() error
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
	Close() error
}

// rootFS is an fsys on an os.Root: names with "..", absolute names and
// symbolic links that lead outside the directory all fail (issue: G5).
// Files are opened with O_NOFOLLOW, so a symbolic link planted where the
// watcher expects a file is refused, never followed, even inside DIR; and
// with O_NONBLOCK, so that a named pipe planted there (even between a
// check and the open) does not block the watcher: OpenFile opens regular
// files only, and refuses anything else with errNotRegular.
type rootFS struct{ root *os.Root }

// errNotRegular is the error of OpenFile on a name that is not a regular
// file (a named pipe, a device, a socket, a folder).
var errNotRegular = errors.New("not a regular file")

// errNoRenameFlags is the error of Exchange and RenameNoReplace on a file
// system without renameat2's RENAME_EXCHANGE or RENAME_NOREPLACE.
var errNoRenameFlags = errors.New("renameat2 flags not supported by the file system")

func (r rootFS) OpenFile(name string, flag int, perm os.FileMode) (fileHandle, error) {
	f, err := r.root.OpenFile(name, flag|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, perm)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = &os.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w (%s)", errNotRegular, fi.Mode().Type())}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (r rootFS) Lstat(name string) (os.FileInfo, error) { return r.root.Lstat(name) }
func (r rootFS) Mkdir(name string, perm os.FileMode) error {
	return r.root.Mkdir(name, perm)
}
func (r rootFS) Rename(oldname, newname string) error { return r.root.Rename(oldname, newname) }
func (r rootFS) Remove(name string) error             { return r.root.Remove(name) }

func (r rootFS) ReadDir(name string) ([]os.DirEntry, error) {
	f, err := r.root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	slices.SortFunc(ents, func(a, b os.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return ents, err
}

func (r rootFS) SyncDir(name string) error {
	f, err := r.root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncError marks a failed fsync: after one, the process must stop (docs/guarantees.md, Durability recipe),
// unlike after a failed write, which may be retried from scratch.
type syncError struct{ err error }

func (e *syncError) Error() string { return "fsync: " + e.err.Error() }
func (e *syncError) Unwrap() error { return e.err }

// syncFile fsyncs f, marking a failure as a syncError.
func syncFile(f fileHandle) error {
	if err := f.Sync(); err != nil {
		return &syncError{err}
	}
	return nil
}

// syncDir fsyncs a directory of fs, marking a failure as a syncError.
func syncDir(fs fsys, name string) error {
	if err := fs.SyncDir(name); err != nil {
		return &syncError{err}
	}
	return nil
}

// readFile reads a whole regular file of fs.
func readFile(fs fsys, name string) ([]byte, error) {
	f, err := fs.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// listSegments returns the first seqs of the segments in a folder of fs, in
// order; other files, and anything that is not a regular file, are ignored.
func listSegments(fs fsys, folder string) ([]uint64, error) {
	ents, err := fs.ReadDir(folder)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list segments in %s: %w", folder, err)
	}
	return journal.Segments(ents), nil
}

// tempPrefix starts the names of the temporary files of document writes,
// and swapPrefix their names once the commit record that needs them is
// durable, just before they are exchanged with the document: after the
// exchange, that name holds the file the document had. No document name
// starts with a dot (docs/format.md, Names), so they never collide.
const (
	tempPrefix = ".tmp-"
	swapPrefix = ".swap-"
	// displacedPrefix starts the name under which recovery keeps a file
	// found under a swap name that it may not put back (adoptSwaps). The
	// watcher never deletes such a file.
	displacedPrefix = ".displaced-"
)

// isTemp reports whether name is a temporary file of a document write.
func isTemp(name string) bool { return strings.HasPrefix(name, tempPrefix) }

// prepareDoc writes and fsyncs the temp file that will replace document
// name, and returns its name. Nothing is visible yet.
// batch is the commit record's batch: it is part of the name
// (".tmp-<name>-<batch>.<random>"), so that recovery can tell a swap file
// of the last batch from one an earlier batch left (adoptSwaps).
func prepareDoc(fs fsys, name string, batch uint64, data []byte, perm os.FileMode, point func(string)) (string, error) {
	if fi, err := fs.Lstat(name); err == nil && fi.Mode().IsRegular() {
		perm = fi.Mode().Perm()
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	tmp := tempPrefix + name + "-" + strconv.FormatUint(batch, 10) + "." + hex.EncodeToString(rnd[:])
	// The same random part is used for the swap name (publishDoc).
	point("before-doc-write:" + name)
	f, err := fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return "", fmt.Errorf("create temp file for %s: %w", name, err)
	}
	_, err = f.Write(data)
	if err == nil {
		point("after-doc-temp-write:" + name)
		err = syncFile(f)
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		fs.Remove(tmp)
		return "", fmt.Errorf("write temp file for %s: %w", name, err)
	}
	point("after-doc-temp-sync:" + name)
	return tmp, nil
}

// createFresh creates a new file for writing. Something already at name
// (left by a crash, or planted: a link, a pipe) is removed first, never
// what it points to.
func createFresh(fs fsys, name string, perm os.FileMode) (fileHandle, error) {
	f, err := fs.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, os.ErrExist) {
		if err := fs.Remove(name); err != nil {
			return nil, fmt.Errorf("remove stale %s: %w", name, err)
		}
		f, err = fs.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	}
	return f, err
}

// maxParallel bounds the goroutines of parallel: each blocks an OS thread
// in its fsync, and a batch may touch thousands of journal segments, while
// Go allows 10,000 threads in all.
const maxParallel = 32

// parallel runs fns concurrently, at most maxParallel at a time, and
// returns their errors joined. A panic in one (a crash test's simulated
// crash) is raised again in the caller once all have returned.
func parallel(fns ...func() error) error {
	if len(fns) == 1 {
		return fns[0]()
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		panicked any
		next     int // index of the next fn to run; guarded by mu
	)
	errs := make([]error, len(fns))
	run := func(i int) {
		defer func() {
			if r := recover(); r != nil {
				mu.Lock()
				if panicked == nil {
					panicked = r
				}
				mu.Unlock()
			}
		}()
		errs[i] = fns[i]()
	}
	for range min(len(fns), maxParallel) {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(fns) {
					return
				}
				run(i)
			}
		})
	}
	wg.Wait()
	if panicked != nil {
		panic(panicked)
	}
	return errors.Join(errs...)
}
