package replay

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
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
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino = st.Ino
	}
	return id
}

// readDocFile reads a document file as it is on disk. A name that is not a
// regular file (a folder, a symbolic link) is an error: the watcher never
// reads or writes through it.
func (a *Applier) readDocFile(name string) (data []byte, exists bool, err error) {
	fi, err := a.fs.Lstat(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, true, err
	}
	if !fi.Mode().IsRegular() {
		return nil, true, fmt.Errorf("%s is not a regular file (%s)", name, fi.Mode().Type())
	}
	if a.MaxDocSize > 0 && fi.Size() > a.MaxDocSize {
		return nil, true, fmt.Errorf("%s is %d bytes, larger than the limit of %d", name, fi.Size(), a.MaxDocSize)
	}
	f, err := a.fs.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, true, err
	}
	defer f.Close()
	data, err = io.ReadAll(f)
	return data, true, err
}

// adoptionFor looks at a document on disk and returns the adoption that
// takes it in, given the machine's current state of it (nil: never seen).
// ok is false when the file is what the machine already has.
func (a *Applier) adoptionFor(name string, d *docState) (ad adoption, ok bool) {
	data, exists, err := a.readDocFile(name)
	ad.File = name
	switch {
	case err != nil:
		ad.Broken = err.Error()
	case !exists:
		if d == nil || (!d.doc.Exists() && d.broken == "") {
			return ad, false
		}
		ad.Version = d.version + 1
	default:
		if d != nil && d.broken == "" && d.doc.Exists() && journal.Hash(data) == d.hash {
			return ad, false
		}
		if _, perr := ParseDoc(data); perr != nil {
			ad.Broken = "not valid JSON: " + perr.Error()
		} else {
			ad.Exists, ad.Data = true, data
			ad.Version = 1
			if d != nil {
				ad.Version = d.version + 1
			}
		}
	}
	if ad.Broken != "" && d != nil && d.broken == ad.Broken {
		return ad, false
	}
	return ad, true
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
		if old, ok := a.ids[name]; ok && old == id {
			continue
		}
		d := a.m.docs[name]
		ad, changed := a.adoptionFor(name, d)
		a.ids[name] = id
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

func (a *Applier) logAdoption(ad adoption, from uint64) {
	switch {
	case ad.Broken != "":
		a.logger.Error("document on disk is unusable; its intents are rejected until it is repaired", "file", ad.File, "error", ad.Broken)
	case !ad.Exists:
		a.logger.Warn("document deleted outside stateward; adopted as a new version", "file", ad.File, "version", ad.Version)
	default:
		a.logger.Warn("document changed outside stateward; adopted as a new version", "file", ad.File, "from", from, "version", ad.Version)
	}
}

// loadDoc is the machine's loader: a document seen for the first time is
// taken in from disk if it is there.
func (a *Applier) loadDoc(name string) (adoption, bool) {
	ad, ok := a.adoptionFor(name, nil)
	a.ids[name] = a.statID(name)
	if ok {
		a.logAdoption(ad, 0)
	}
	return ad, ok
}
