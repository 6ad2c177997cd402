package replay

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/stateward/stateward/journal"
)

// fileID identifies a file's content cheaply: if it has not changed, the
// file has not been replaced or written since it was last looked at.
type fileID struct {
	size  int64
	mtime int64
	ino   uint64
}

// statID returns the identity of a document file, or the zero fileID.
func (a *Applier) statID(name string) fileID {
	fi, err := a.fs.Lstat(name)
	if err != nil {
		return fileID{}
	}
	return fileIDOf(fi)
}

// fileIDOf returns the identity of the file fi describes.
func fileIDOf(fi os.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino = st.Ino
	}
	return id
}

// readDocFile reads a document file as it is on disk. A name that is not a
// regular file (a folder, a symbolic link) is an error: the watcher never
// reads or writes through it. id is the identity of the file that was
// read, taken from its open descriptor (zero if none was read): a stat of
// the name after the read could see an edit that replaced it meanwhile.
func (a *Applier) readDocFile(name string) (data []byte, exists bool, id fileID, err error) {
	fi, err := a.fs.Lstat(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, fileID{}, nil
	}
	if err != nil {
		return nil, true, fileID{}, err
	}
	if !fi.Mode().IsRegular() {
		return nil, true, fileIDOf(fi), fmt.Errorf("%s is not a regular file (%s)", name, fi.Mode().Type())
	}
	if a.MaxDocSize > 0 && fi.Size() > a.MaxDocSize {
		return nil, true, fileIDOf(fi), fmt.Errorf("%s is %d bytes, larger than the limit of %d", name, fi.Size(), a.MaxDocSize)
	}
	f, err := a.fs.OpenFile(name, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, fileID{}, nil
	}
	if err != nil {
		return nil, true, fileIDOf(fi), err
	}
	defer f.Close()
	ofi, err := f.Stat()
	if err != nil {
		return nil, true, fileIDOf(fi), err
	}
	a.point("after-doc-open:" + name)
	data, err = io.ReadAll(f)
	return data, true, fileIDOf(ofi), err
}

// adoptionFor looks at a document on disk and returns the adoption that
// takes it in, given the machine's current state of it (nil: never seen).
// ok is false when the file is what the machine already has. id is the
// identity of the file that was read (readDocFile).
func (a *Applier) adoptionFor(name string, d *docState) (ad adoption, id fileID, ok bool) {
	data, exists, id, err := a.readDocFile(name)
	ad.File = name
	switch {
	case err != nil:
		ad.Broken = err.Error()
	case !exists:
		// The committed hash says whether the document exists: after a
		// restart, a document recovery found gone has no tree in memory,
		// yet it existed, and its deletion is a change.
		if d == nil || (d.hash == "" && !d.doc.Exists() && d.broken == "") {
			return ad, id, false
		}
		ad.Version = d.version + 1
	default:
		if d != nil && d.broken == "" && d.doc.Exists() && journal.Hash(data) == d.hash {
			return ad, id, false
		}
		if _, perr := ParseDoc(data); perr != nil {
			ad.Broken = perr.Error()
		} else {
			ad.Exists, ad.Data = true, data
			ad.Version = 1
			if d != nil {
				ad.Version = d.version + 1
			}
		}
	}
	if ad.Broken != "" && d != nil && d.broken == ad.Broken {
		return ad, id, false
	}
	return ad, id, true
}

// checkDocs takes in documents changed on disk by someone else since the
// watcher last wrote or read them.
func (a *Applier) checkDocs() {
	names := make([]string, 0, len(a.m.docs))
	for name := range a.m.docs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		id := a.statID(name)
		d := a.m.docs[name]
		// Unchanged since the watcher last looked; but a missing file
		// (the zero identity) that the committed state says exists was
		// deleted while the watcher was stopped, and is a change.
		if old, ok := a.ids[name]; ok && old == id && (id != fileID{} || d.hash == "") {
			continue
		}
		ad, _, changed := a.adoptionFor(name, d)
		a.ids[name] = id // taken before the read: a later edit is seen next time
		if !changed {
			continue
		}
		a.logAdoption(ad, d.version)
		if err := a.m.adopt(ad); err != nil {
			a.logger.Error("adopt document", "file", name, "error", err)
			continue
		}
		a.m.adopted = append(a.m.adopted, ad)
	}
}

func (a *Applier) logAdoption(ad adoption, replaced uint64) {
	// Every adoption names the version it replaced: an edit made from a
	// stale copy undoes what was applied since, and the log must show it.
	switch {
	case ad.Broken != "":
		a.logger.Error("document on disk is unusable; its intents are rejected until it is repaired", "file", ad.File, "replaced", replaced, "error", ad.Broken)
	case !ad.Exists:
		a.logger.Warn("document deleted outside stateward; adopted as a new version", "file", ad.File, "replaced", replaced, "version", ad.Version)
	default:
		a.logger.Warn("document changed outside stateward; adopted as a new version", "file", ad.File, "replaced", replaced, "version", ad.Version)
	}
}

// loadDoc is the machine's loader: a document seen for the first time is
// taken in from disk if it is there.
//
// The identity recorded is that of the file read (its descriptor's), not
// a stat of the name afterwards: an edit that replaced the file between
// the two would otherwise pass for the watcher's own file, and the next
// write would delete it as the watcher's previous version.
func (a *Applier) loadDoc(name string) (adoption, bool) {
	ad, id, ok := a.adoptionFor(name, nil)
	a.ids[name] = id
	if ok {
		a.logAdoption(ad, 0)
	}
	return ad, ok
}

// publishDoc puts the prepared temp file tmp in place of document name.
// prev is the identity of the file the watcher last wrote, adopted or
// checked at that name, and prevHash its hash ("" if none).
//
// Someone may have replaced the document since the watcher last looked
// (a hand edit: write a temp file, rename it over the document). A plain
// rename would destroy that edit without a trace, so the new version is
// exchanged with whatever the document holds (renameat2 RENAME_EXCHANGE):
// the displaced file comes back under the swap name, and if it is not the
// watcher's previous version it is a foreign edit, which is put back at
// the document's name. It then reads exactly as if it had landed just
// after the watcher's write, and the next Step adopts it. kept reports
// that case. id is the identity of the watcher's new version, taken before
// it became visible (a stat after could see an edit made since).
//
// The temp file is first renamed to its swap name (the commit record is
// durable by then), so that recovery can tell a file displaced by an
// exchange, which may be a foreign edit to adopt, from a temp file of a
// batch that never committed (adoptSwaps). Where the file system lacks
// renameat2's flags, the document is replaced by a plain rename, and an
// edit that lands in that moment is lost (docs/operations.md).
func (a *Applier) publishDoc(tmp, name string, prev fileID, prevHash string) (id fileID, kept bool, err error) {
	swap := swapPrefix + strings.TrimPrefix(tmp, tempPrefix)
	if err := a.fs.Rename(tmp, swap); err != nil {
		a.fs.Remove(tmp)
		return fileID{}, false, fmt.Errorf("rename temp file of %s: %w", name, err)
	}
	ours := a.statID(swap)
	a.point("before-doc-exchange:" + name)
	// Create a new document without replacing one that appears meanwhile,
	// or exchange with the one there is.
	err = a.fs.Exchange(swap, name)
	if errors.Is(err, os.ErrNotExist) {
		if err = a.fs.RenameNoReplace(swap, name); err == nil {
			return ours, false, nil
		}
		if errors.Is(err, os.ErrExist) {
			err = a.fs.Exchange(swap, name)
		}
	}
	plain := false // this call fell back to a plain rename
	if errors.Is(err, errNoRenameFlags) {
		if !a.plainRename {
			a.plainRename = true
			a.logger.Warn("the file system cannot exchange files (renameat2); documents are replaced by a plain rename, and a hand edit made at that moment is lost", "error", err)
		}
		plain = true
		err = a.fs.Rename(swap, name)
	}
	if err != nil {
		a.fs.Remove(swap)
		return fileID{}, false, fmt.Errorf("rename temp file over %s: %w", name, err)
	}
	if plain {
		return ours, false, nil
	}
	a.point("after-doc-exchange:" + name)
	got := a.statID(swap)
	if got != prev && !a.sameFile(swap, got, prev, prevHash) {
		// A foreign file: put it back, and drop what it displaces (our new
		// version, or an older foreign file a newer one replaced).
		expect, moving := ours, got
		done := false
		for range maxPutBack {
			a.point("before-doc-putback:" + name)
			if err := a.fs.Exchange(swap, name); err != nil {
				return ours, true, fmt.Errorf("put back an edit of %s made while it was replaced: %w", name, err)
			}
			back := a.statID(swap)
			if back.ino == expect.ino {
				done = true
				break
			}
			expect, moving = moving, back
		}
		if !done {
			// The swap name holds an edit that is newer than the one at
			// the document's name: never delete it. Recovery keeps it
			// (adoptSwaps).
			return ours, true, fmt.Errorf("put back an edit of %s: edits kept replacing it (%d exchanges); the newest is kept as %s", name, maxPutBack, swap)
		}
		kept = true
		a.logger.Warn("document changed outside stateward while the watcher replaced it; the edit is kept and adopted as the next version", "file", name)
		a.point("after-doc-putback:" + name)
	}
	if err := a.fs.Remove(swap); err != nil {
		return ours, kept, fmt.Errorf("remove the previous version of %s: %w", name, err)
	}
	return ours, kept, nil
}

// maxPutBack bounds the exchanges publishDoc makes to put back edits that
// keep landing while it does: each one only happens if yet another edit
// landed within microseconds.
const maxPutBack = 8

// sameFile reports whether the file at name, with identity id, is the file
// prev with at most its times changed: the same inode and the same bytes.
func (a *Applier) sameFile(name string, id, prev fileID, prevHash string) bool {
	if prev.ino == 0 || id.ino != prev.ino || prevHash == "" {
		return false
	}
	data, err := readFile(a.fs, name)
	return err == nil && journal.Hash(data) == prevHash
}

// adoptSwaps looks at the files that interrupted document replacements
// left under their swap names (".swap-<name>-<batch>.<random>"). Each
// holds one of: the new version of the batch that wrote the document (its
// rename was undone or not done), the previous version it displaced, or a
// foreign edit that it displaced and had not put back yet.
//
//   - Bytes equal to the document's committed version, or to the new or
//     previous version of the last commit record when the swap is of the
//     last batch: the watcher's own, removed. (An edit whose bytes equal
//     one of those cannot be told from them; it changed nothing.)
//   - Any other file of the last batch is an edit. It is put back at the
//     document's name only if that name still holds the watcher's
//     committed version; the first Step adopts it.
//   - Otherwise (the name holds a newer edit made while the watcher was
//     down, or nothing because the document was deleted meanwhile, or the
//     swap is of an earlier batch and cannot be judged against this
//     record) the file at the name stays, and the swap's file is kept as
//     ".displaced-<name>-<batch>.<random>", logged, never deleted.
func (a *Applier) adoptSwaps(last *commitRecord) error {
	ents, err := a.fs.ReadDir(".")
	if err != nil {
		return a.fail(fmt.Errorf("list state directory %s for interrupted document writes: %w", a.dir, err))
	}
	changed := false
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), swapPrefix) {
			continue
		}
		swap := e.Name()
		name := swapDocName(swap)
		if !journal.ValidDocName(name) {
			continue
		}
		data, err := readFile(a.fs, swap)
		if err != nil {
			// Left in place: at a later start it is of an earlier batch,
			// kept aside, never put back.
			a.logger.Error("cannot read a document version left by an interrupted write; left in place", "file", swap, "error", err)
			continue
		}
		h := journal.Hash(data)
		d := a.m.docs[name]
		batch, ok := swapBatch(swap)
		ofLast := ok && last != nil && batch == last.Batch
		known := d != nil && d.hash != "" && d.hash == h
		if dr, ok := last.docRecord(name); ofLast && ok && (dr.SHA256 == h || dr.Prev == h) {
			known = true
		}
		if known {
			if err := a.fs.Remove(swap); err != nil {
				return a.fail(fmt.Errorf("remove %s, left by an interrupted write of %s: %w", swap, name, err))
			}
			a.logger.Debug("removed a document version left by an interrupted write", "file", swap)
			changed = true
			continue
		}
		if !ofLast {
			if err := a.displace(swap, name, "it was left by an earlier batch than the last commit record"); err != nil {
				return err
			}
			changed = true
			continue
		}
		// Put the edit back only over the watcher's own committed version.
		cur, exists, id, err := a.readDocFile(name)
		if err != nil || !exists || d == nil || d.hash == "" || journal.Hash(cur) != d.hash {
			why := "the document was changed or deleted while the watcher was down; that change is kept"
			if err != nil {
				why = "the document cannot be read: " + err.Error()
			}
			if err := a.displace(swap, name, why); err != nil {
				return err
			}
			changed = true
			continue
		}
		if err := a.fs.Exchange(swap, name); err != nil {
			return a.fail(fmt.Errorf("put back an edit of %s found after a crash: %w", name, err))
		}
		changed = true
		if back := a.statID(swap); back.ino != id.ino {
			// Yet another edit replaced the document meanwhile: it is
			// newer. Put it back, and keep the older one displaced.
			if err := a.fs.Exchange(swap, name); err != nil {
				return a.fail(fmt.Errorf("put back an edit of %s found after a crash: %w", name, err))
			}
			if err := a.displace(swap, name, "the document was changed while the watcher recovered; that change is kept"); err != nil {
				return err
			}
			continue
		}
		if err := a.fs.Remove(swap); err != nil {
			return a.fail(fmt.Errorf("remove the previous version of %s: %w", name, err))
		}
		delete(a.ids, name)
		a.logger.Warn("found an edit made while the watcher replaced the document before a crash; it is kept and adopted as the next version", "file", name)
	}
	if changed {
		if err := syncDir(a.fs, "."); err != nil {
			return a.fail(fmt.Errorf("sync state directory %s: %w", a.dir, err))
		}
	}
	return nil
}

// displace keeps the file at swap, which recovery may not put back at
// document name, under a ".displaced-" name, and logs it.
func (a *Applier) displace(swap, name, why string) error {
	kept := displacedPrefix + strings.TrimPrefix(swap, swapPrefix)
	if err := a.fs.RenameNoReplace(swap, kept); errors.Is(err, errNoRenameFlags) {
		if _, serr := a.fs.Lstat(kept); serr == nil {
			return a.fail(fmt.Errorf("keep %s: %s already exists", swap, kept))
		}
		err = a.fs.Rename(swap, kept)
		if err != nil {
			return a.fail(fmt.Errorf("keep %s as %s: %w", swap, kept, err))
		}
	} else if err != nil {
		return a.fail(fmt.Errorf("keep %s as %s: %w", swap, kept, err))
	}
	a.logger.Warn("found a version of the document displaced by a write interrupted by a crash; it is not put back and is kept aside", "file", name, "kept_as", kept, "reason", why)
	return nil
}

// swapBatch returns the batch in a swap file's name, if it has one.
func swapBatch(swap string) (uint64, bool) {
	s := strings.TrimPrefix(swap, swapPrefix)
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return 0, false
	}
	b, _, ok := strings.Cut(s[i+1:], ".")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(b, 10, 64)
	return n, err == nil
}

// swapDocName returns the document name in a swap file's name
// (".swap-<name>-<random>"), or "" if it has none.
func swapDocName(swap string) string {
	s := strings.TrimPrefix(swap, swapPrefix)
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return ""
	}
	return s[:i]
}
