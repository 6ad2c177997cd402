package main

import (
	"os"
	"path/filepath"
	"slices"
	"time"
)

// floorResult is the physical floor on the benchmark's filesystem: what one
// durable replace of a document of a given size costs (temp file, write,
// fsync, rename, directory fsync), and one fsync'd append of an intent
// line. No contender can commit a change to a whole document faster than
// the first, nor acknowledge an op faster than the second.
type floorResult struct {
	Run       int     `json:"run"`
	Size      string  `json:"size"`
	DocBytes  int     `json:"doc_bytes"`
	ReplaceMS float64 `json:"replace_ms"` // median
	AppendMS  float64 `json:"append_ms"`  // median
}

// measureFloor times n durable replaces of data and n fsync'd appends in a
// fresh folder under base.
func measureFloor(base, label string, data []byte, n int) (floorResult, error) {
	res := floorResult{Size: label, DocBytes: len(data)}
	dir, err := os.MkdirTemp(base, "floor-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, docName)
	var reps, apps []time.Duration
	for range n {
		t0 := time.Now()
		if err := writeDurable(p, data); err != nil {
			return res, err
		}
		reps = append(reps, time.Since(t0))
	}
	f, err := os.OpenFile(filepath.Join(dir, "journal.jsonl"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return res, err
	}
	defer f.Close()
	line := append(patchFor(op{kind: opInc}, agentName(1)), '\n')
	for range n {
		t0 := time.Now()
		if _, err := f.Write(line); err != nil {
			return res, err
		}
		if err := f.Sync(); err != nil {
			return res, err
		}
		apps = append(apps, time.Since(t0))
	}
	med := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2]) / 1e6
	}
	res.ReplaceMS, res.AppendMS = med(reps), med(apps)
	return res, nil
}
