package replay

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
)

// crashFS is an fsys over a real directory that knows what an fsync made
// durable, so that a test can ask what the directory would hold after a
// power loss at any moment: every file's content as of its last fsync and
// every folder's entries as of its last folder fsync, the rest thrown away
// (as SQLite's crash tests and Pebble's crashable file system do). It also
// counts the operations that change anything, to crash at the n-th, and
// injects errors.
type crashFS struct {
	rootFS
	dir string

	mu       sync.Mutex
	ops      int                          // changing operations so far
	crashAt  int                          // panic(crashed) when ops reaches it (0: never)
	inject   func(op, name string) error  // returns an error to inject, or nil
	data     map[fileKey][]byte           // durable content by file
	gen      map[uint64]uint64            // generation of each inode number
	entries  map[string]map[string]dirent // durable entries by folder
	isFolder map[uint64]bool
}

// fileKey names a file across inode number reuse: a file deleted whose
// deletion is not durable keeps its content even if a new file gets its
// inode number.
type fileKey struct{ ino, gen uint64 }

type dirent struct {
	file   fileKey
	folder bool
}

func (c *crashFS) key(ino uint64) fileKey { return fileKey{ino, c.gen[ino]} }

// newCrashFS returns a crashFS on dir, taking everything in it as durable.
func newCrashFS(tb testing.TB, dir string) *crashFS {
	tb.Helper()
	root, err := os.OpenRoot(dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { root.Close() })
	c := &crashFS{rootFS: rootFS{root}, dir: dir, data: map[fileKey][]byte{}, gen: map[uint64]uint64{},
		entries: map[string]map[string]dirent{}, isFolder: map[uint64]bool{}}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			c.snapshotDir(rel)
			return nil
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			c.data[c.key(inode(tb, p))] = b
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func inode(tb testing.TB, p string) uint64 {
	fi, err := os.Lstat(p)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// snapshotDir records the current entries of a folder as durable.
func (c *crashFS) snapshotDir(rel string) {
	ents, err := os.ReadDir(filepath.Join(c.dir, rel))
	if err != nil {
		return
	}
	m := map[string]dirent{}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		ino := fi.Sys().(*syscall.Stat_t).Ino
		m[e.Name()] = dirent{file: c.key(ino), folder: e.IsDir()}
		if e.IsDir() {
			c.isFolder[ino] = true
		}
	}
	c.entries[path.Clean(rel)] = m
}

// crashed is the panic value of a simulated crash.
type crashedFS struct{ op int }

// op counts a changing operation: it crashes when the count is reached and
// returns an injected error if there is one.
func (c *crashFS) op(kind, name string) error {
	c.mu.Lock()
	c.ops++
	n, at, inject := c.ops, c.crashAt, c.inject
	c.mu.Unlock()
	if at > 0 && n >= at {
		panic(crashedFS{n})
	}
	if inject != nil {
		return inject(kind, name)
	}
	return nil
}

func (c *crashFS) OpenFile(name string, flag int, perm os.FileMode) (fileHandle, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC) != 0 {
		if err := c.op("open", name); err != nil {
			return nil, err
		}
	}
	_, statErr := c.rootFS.Lstat(name)
	f, err := c.rootFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	if errors.Is(statErr, os.ErrNotExist) {
		// A new file: nothing of it is durable yet (its inode number may
		// be an old file's).
		if fi, err := f.Stat(); err == nil {
			c.mu.Lock()
			ino := fi.Sys().(*syscall.Stat_t).Ino
			c.gen[ino]++
			c.data[c.key(ino)] = nil
			c.mu.Unlock()
		}
	}
	return &crashFile{fileHandle: f, c: c, name: name}, nil
}

func (c *crashFS) Mkdir(name string, perm os.FileMode) error {
	if err := c.op("mkdir", name); err != nil {
		return err
	}
	return c.rootFS.Mkdir(name, perm)
}

func (c *crashFS) Rename(oldname, newname string) error {
	if err := c.op("rename", newname); err != nil {
		return err
	}
	return c.rootFS.Rename(oldname, newname)
}

func (c *crashFS) Exchange(a, b string) error {
	if err := c.op("exchange", b); err != nil {
		return err
	}
	return c.rootFS.Exchange(a, b)
}

func (c *crashFS) RenameNoReplace(oldname, newname string) error {
	if err := c.op("rename", newname); err != nil {
		return err
	}
	return c.rootFS.RenameNoReplace(oldname, newname)
}

func (c *crashFS) Remove(name string) error {
	if err := c.op("remove", name); err != nil {
		return err
	}
	return c.rootFS.Remove(name)
}

func (c *crashFS) SyncDir(name string) error {
	if err := c.op("syncdir", name); err != nil {
		return err
	}
	if err := c.rootFS.SyncDir(name); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.snapshotDir(name)
	return nil
}

// crashFile is an open file of a crashFS.
type crashFile struct {
	fileHandle
	c    *crashFS
	name string
}

func (f *crashFile) Write(p []byte) (int, error) {
	if err := f.c.op("write", f.name); err != nil {
		return 0, err
	}
	return f.fileHandle.Write(p)
}

func (f *crashFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.c.op("write", f.name); err != nil {
		return 0, err
	}
	return f.fileHandle.WriteAt(p, off)
}

func (f *crashFile) Truncate(size int64) error {
	if err := f.c.op("truncate", f.name); err != nil {
		return err
	}
	return f.fileHandle.Truncate(size)
}

func (f *crashFile) Sync() error {
	if err := f.c.op("sync", f.name); err != nil {
		return err
	}
	if err := f.fileHandle.Sync(); err != nil {
		return err
	}
	fi, err := f.fileHandle.Stat()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(f.c.dir, f.name)) // the handle may be write-only
	if err != nil {
		return err
	}
	f.c.mu.Lock()
	f.c.data[f.c.key(fi.Sys().(*syscall.Stat_t).Ino)] = b
	f.c.mu.Unlock()
	return nil
}

// image writes into dst what the directory would hold after a power loss
// now. Data written but never fsynced is lost, except that a file that only
// grew since its last fsync may keep a prefix of what was appended (torn
// appends), chosen by rng.
func (c *crashFS) image(tb testing.TB, dst string, rng *rand.Rand) {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var build func(rel string)
	build = func(rel string) {
		names := make([]string, 0, len(c.entries[rel]))
		for name := range c.entries[rel] {
			names = append(names, name)
		}
		slices.Sort(names) // rng choices in a fixed order: a failing state can be replayed
		for _, name := range names {
			e := c.entries[rel][name]
			src, out := filepath.Join(c.dir, rel, name), filepath.Join(dst, rel, name)
			if e.folder {
				if err := os.MkdirAll(out, 0o755); err != nil {
					tb.Fatal(err)
				}
				build(path.Join(rel, name))
				continue
			}
			content := c.data[e.file]
			if now, err := os.ReadFile(src); err == nil && c.key(inode(tb, src)) == e.file && len(now) > len(content) && string(now[:len(content)]) == string(content) {
				switch rng.IntN(3) {
				case 0: // the appended data is lost
				case 1: // all of it made it
					content = now
				default: // a torn prefix made it
					content = now[:len(content)+rng.IntN(len(now)-len(content)+1)]
				}
			}
			if err := os.WriteFile(out, content, 0o644); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		tb.Fatal(err)
	}
	build(".")
}

func (c *crashFS) String() string { return fmt.Sprintf("crashFS(%s, %d ops)", c.dir, c.ops) }
