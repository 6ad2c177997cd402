package replay

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"slices"

	"github.com/stateward/stateward/journal"
)

// DefaultCheckpointBytes is how much commit log may accumulate before the
// watcher writes a checkpoint and deletes the log behind it (G7).
const DefaultCheckpointBytes = 64 << 20

// checkpointDir holds the newest checkpoint, named by its batch.
const checkpointDir = ".stateward/checkpoints"

// checkpoint is everything recovery and Verify need from the batches up to
// Batch: a snapshot of each document's bytes, versions, every agent's
// position and retained results. With it, the commit log up to Batch is
// not needed any more.
type checkpoint struct {
	Format int                        `json:"format,omitempty"` // checkpointFormat; absent in format 1
	Batch  uint64                     `json:"batch"`
	Commit uint64                     `json:"commit"`
	Retain int                        `json:"retain"`
	Docs   map[string]checkpointDoc   `json:"docs"`
	Agents map[string]checkpointAgent `json:"agents"`
}

// checkpointDoc is a document in a checkpoint. Data are its exact bytes.
type checkpointDoc struct {
	Version uint64 `json:"version"`
	Exists  bool   `json:"exists"`
	Broken  string `json:"broken,omitempty"`
	Data    []byte `json:"data,omitempty"`
}

// checkpointFormat is the format of the checkpoints this version writes.
// Format 1 (no "format" field) kept whole results in "retained"; they read
// as window entries whose intent is unknown. A newer format is refused.
const checkpointFormat = 2

// checkpointAgent is an agent in a checkpoint. Retained is its retry window
// exactly as the machine holds it.
type checkpointAgent struct {
	Cursor   cursor    `json:"cursor"`
	Results  resultPos `json:"results"`
	Retained []kept    `json:"retained,omitempty"`
}

// newCheckpoint captures the machine after batch.
func newCheckpoint(m *machine, batch uint64) *checkpoint {
	cp := &checkpoint{Format: checkpointFormat, Batch: batch, Commit: m.commit, Retain: m.retain,
		Docs: map[string]checkpointDoc{}, Agents: map[string]checkpointAgent{}}
	for name, d := range m.docs {
		cd := checkpointDoc{Version: d.version, Exists: d.doc.Exists(), Broken: d.broken}
		if cd.Exists && d.broken == "" {
			cd.Data = d.data
		}
		cp.Docs[name] = cd
	}
	for name, a := range m.agents {
		cp.Agents[name] = checkpointAgent{Cursor: a.cur, Results: a.res, Retained: a.win.entries()}
	}
	return cp
}

// restore builds a machine from a checkpoint, with documents parsed from
// their snapshots and every retry window as saved. retain is the window
// the machine keeps from its next result on.
func (cp *checkpoint) restore(retain int) (*machine, error) {
	m := newMachine(retain)
	m.commit = cp.Commit
	for name, cd := range cp.Docs {
		d := m.doc(name)
		d.version, d.broken = cd.Version, cd.Broken
		if cd.Exists && cd.Broken == "" {
			doc, err := ParseDoc(cd.Data)
			if err != nil {
				return nil, fmt.Errorf("checkpoint %d: document %s: %w", cp.Batch, name, err)
			}
			d.doc, d.data, d.hash = doc, cd.Data, journal.Hash(cd.Data)
		}
	}
	for name, ca := range cp.Agents {
		a := m.agent(name)
		a.cur, a.res = ca.Cursor, ca.Results
		// The window exactly as it was held, not trimmed to retain: a
		// watcher started with a lower --retain-results holds its longer
		// windows until each agent's next result, and so does the machine
		// restored from its checkpoint.
		for _, k := range ca.Retained {
			a.win.keep(k, math.MaxInt)
		}
	}
	return m, nil
}

// readCheckpoint returns the newest checkpoint, or nil if there is none.
func readCheckpoint(fs fsys) (*checkpoint, error) {
	ents, err := fs.ReadDir(checkpointDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	var names []string
	for _, e := range ents {
		if _, ok := parseCheckpointName(e.Name()); ok && e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	slices.Sort(names)
	name := path.Join(checkpointDir, names[len(names)-1])
	data, err := readFile(fs, name)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint %s: %w", name, err)
	}
	cp := new(checkpoint)
	if err := json.Unmarshal(data, cp); err != nil {
		// Written to a temp file, fsynced and renamed: it cannot be torn.
		return nil, fmt.Errorf("%w: checkpoint %s: %v", ErrCorruptLog, name, err)
	}
	if cp.Format > checkpointFormat {
		return nil, fmt.Errorf("checkpoint %s has format %d, newer than this stateward reads (%d): run the stateward that wrote it, or a newer one", name, cp.Format, checkpointFormat)
	}
	return cp, nil
}

func checkpointName(batch uint64) string { return fmt.Sprintf("%020d.json", batch) }

func parseCheckpointName(name string) (uint64, bool) {
	var b uint64
	if len(name) != 25 {
		return 0, false
	}
	if _, err := fmt.Sscanf(name, "%020d.json", &b); err != nil {
		return 0, false
	}
	return b, checkpointName(b) == name
}

// checkpoint writes a checkpoint of the last batch and deletes the commit
// log and the checkpoints behind it. Each step is crash-safe: the new
// checkpoint is durable (temp, fsync, rename, folder fsync) before anything
// it replaces is deleted, and recovery skips log records it already covers.
func (a *Applier) checkpoint() error {
	if err := a.syncResults(); err != nil { // the log behind the checkpoint re-derives nothing after it
		return err
	}
	if err := a.mkdir(checkpointDir); err != nil {
		return err
	}
	data, err := json.Marshal(newCheckpoint(a.m, a.batch))
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	name := path.Join(checkpointDir, checkpointName(a.batch))
	tmp := name + ".tmp"
	f, err := createFresh(a.fs, tmp, privateFileMode)
	if err != nil {
		return fmt.Errorf("create checkpoint: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = syncFile(f)
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		a.fs.Remove(tmp) // it may hold as much space as every document
		return fmt.Errorf("write checkpoint %s: %w", name, err)
	}
	a.point("after-checkpoint-write")
	if err := a.fs.Rename(tmp, name); err != nil {
		a.fs.Remove(tmp)
		return fmt.Errorf("rename checkpoint %s: %w", name, err)
	}
	if err := syncDir(a.fs, checkpointDir); err != nil {
		return fmt.Errorf("sync checkpoints folder: %w", err)
	}
	a.point("after-checkpoint-rename")
	// The next record starts a new log segment; everything before is
	// covered by the checkpoint.
	if a.logf != nil {
		a.logf.Close()
		a.logf = nil
	}
	a.logBytes = 0
	segs, err := listSegments(a.fs, logDir)
	if err != nil {
		return err
	}
	for _, s := range segs {
		if s <= a.batch {
			if err := a.fs.Remove(path.Join(logDir, journal.SegmentName(s))); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("delete compacted commit log: %w", err)
			}
			a.point("after-log-delete")
		}
	}
	ents, err := a.fs.ReadDir(checkpointDir)
	if err != nil {
		return fmt.Errorf("list checkpoints: %w", err)
	}
	for _, e := range ents {
		if b, ok := parseCheckpointName(e.Name()); (ok && b < a.batch) || isTempName(e.Name()) {
			if err := a.fs.Remove(path.Join(checkpointDir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("delete old checkpoint: %w", err)
			}
		}
	}
	a.logger.Debug("checkpoint written; commit log compacted", "batch", a.batch, "bytes", len(data))
	return nil
}

// isTempName reports whether a name in the watcher's folders is a leftover
// temp file.
func isTempName(name string) bool {
	return len(name) > 4 && name[len(name)-4:] == ".tmp"
}
