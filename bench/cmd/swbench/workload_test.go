package main

import (
	"encoding/json"
	"testing"
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

func TestBoardSizes(t *testing.T) {
	for _, d := range knownSizes {
		t.Logf("%s: %d bytes", d.Label, len(boardJSON(d.Tasks)))
	}
}
