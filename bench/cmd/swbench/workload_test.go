package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/stateward/stateward/replay"
)

func TestBoardJSON(t *testing.T) {
	for _, d := range knownSizes[:3] {
		data := boardJSON(d.Tasks)
		var doc struct {
			Counters map[string]int            `json:"counters"`
			Tasks    map[string]map[string]any `json:"tasks"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v", d.Label, err)
		}
		if got, want := len(doc.Tasks), d.Tasks; got != want {
			t.Fatalf("%s: %d tasks, want %d", d.Label, got, want)
		}
		per := float64(len(data)) / float64(d.Tasks)
		if per < 130 || per > 170 {
			t.Errorf("%s: %.0f bytes per task, want about 150", d.Label, per)
		}
		// The same bytes as encoding/json's indented encoding of the
		// parsed document: sorted keys, two-space indentation.
		var generic map[string]any
		json.Unmarshal(data, &generic)
		again, _ := json.MarshalIndent(generic, "", "  ")
		if string(append(again, '\n')) != string(data) {
			t.Errorf("%s: board is not in canonical indented form", d.Label)
		}
	}
}

func TestOpFor(t *testing.T) {
	// Every agent's tasks are its own, and claims and releases alternate.
	const n, tasks = 16, 100
	owner := map[int]int{}
	for i := range n {
		claimed := -1
		for j := range 200 {
			o := opFor(i, n, tasks, j)
			switch o.kind {
			case opClaim:
				if claimed != -1 {
					t.Fatalf("agent %d op %d: claims %d while holding %d", i, j, o.task, claimed)
				}
				if prev, ok := owner[o.task]; ok && prev != i {
					t.Fatalf("task %d used by agents %d and %d", o.task, prev, i)
				}
				owner[o.task] = i
				claimed = o.task
			case opRelease:
				if o.task != claimed {
					t.Fatalf("agent %d op %d: releases %d, holds %d", i, j, o.task, claimed)
				}
				claimed = -1
			}
			if o.task < 0 || o.task >= tasks {
				t.Fatalf("task %d out of range", o.task)
			}
		}
	}
}

// TestBoardSizes checks that each size of the sweep is what its label
// says (within 5%) and that the board is already in the watcher's encoding, so the first write does
// not reformat it and the measured bytes are the written bytes.
func TestBoardSizes(t *testing.T) {
	for _, d := range knownSizes {
		t.Run(d.Label, func(t *testing.T) {
			if testing.Short() && d.Tasks > 10000 {
				t.Skip("-short: 15MB board skipped")
			}
			b := boardJSON(d.Tasks)
			want, err := labelBytes(d.Label)
			if err != nil {
				t.Fatal(err)
			}
			if got := float64(len(b)); got < 0.95*want || got > 1.05*want {
				t.Errorf("board of %d tasks is %d bytes, want %s (%.0f bytes) within 5%%", d.Tasks, len(b), d.Label, want)
			}
			doc, err := replay.ParseDoc(b)
			if err != nil {
				t.Fatalf("ParseDoc: %v", err)
			}
			if got := doc.AppendJSON(nil); !bytes.Equal(got, b) {
				t.Errorf("board is not in the watcher's encoding: %d bytes written for %d", len(got), len(b))
			}
		})
	}
}

// labelBytes returns the bytes a size label such as "1.5MB" names
// (decimal units).
func labelBytes(label string) (float64, error) {
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"MB", 1e6}, {"KB", 1e3}} {
		if num, ok := strings.CutSuffix(label, u.suffix); ok {
			f, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("size label %q: %w", label, err)
			}
			return f * u.mult, nil
		}
	}
	return 0, fmt.Errorf("size label %q: want a KB or MB suffix", label)
}
