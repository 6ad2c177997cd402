package observe

import (
	"time"

	"github.com/stateward/stateward/journal"
	"github.com/stateward/stateward/replay"
)

// What the page can show of the past, kept in memory.
const (
	// historySeconds is how far back the throughput and latency plots go,
	// one point per second.
	historySeconds = 600
	// recentChanges is how many processed intents /api/live lists.
	recentChanges = 100
)

// Live is the body of /api/live: what the watcher did lately, kept in
// memory since it started. Times are in UTC with milliseconds.
type Live struct {
	Now       time.Time `json:"now"`
	Started   time.Time `json:"started"`
	Healthy   bool      `json:"healthy"`
	Health    string    `json:"health"` // "ok", or why not
	Recovered bool      `json:"recovered"`
	// RecoverySeconds is how long the last recovery took.
	RecoverySeconds float64 `json:"recovery_seconds"`
	Commit          uint64  `json:"commit"`  // last commit number
	Batches         uint64  `json:"batches"` // batches committed since start
	// Intents counts processed intents since start by status, and
	// "retry" for retries answered with a copy.
	Intents map[string]uint64 `json:"intents"`
	// Series has one point per second with activity (at least one batch),
	// oldest first, over the last ten minutes.
	Series  []Point              `json:"series"`
	Changes []ChangeView         `json:"changes"` // newest first
	Docs    map[string]DocSeen   `json:"docs"`    // last change of each document
	Agents  map[string]AgentSeen `json:"agents"`  // when each agent was last seen
}

// Point is one second of activity.
type Point struct {
	T        int64   `json:"t"` // Unix seconds
	Applied  int     `json:"applied"`
	Conflict int     `json:"conflict"`
	Rejected int     `json:"rejected"`
	Retry    int     `json:"retry"`
	Batches  int     `json:"batches"`
	TookSum  float64 `json:"took_ms_sum"` // batch durations, milliseconds
	TookMax  float64 `json:"took_ms_max"`
	SyncMax  float64 `json:"fsync_ms_max"`
}

// ChangeView is one processed intent as the page lists it.
type ChangeView struct {
	Time    time.Time `json:"time"`
	Agent   string    `json:"agent"`
	Seq     uint64    `json:"seq"`
	File    string    `json:"file"`
	Status  string    `json:"status"`
	Version uint64    `json:"version"`
	Commit  uint64    `json:"commit"`
	Retry   bool      `json:"retry,omitempty"`
	Error   string    `json:"error,omitempty"`
}

// DocSeen is a document's last change: by an agent's intent, or (By "")
// from outside stateward or before the watcher started, when Time is the
// file's modification time.
type DocSeen struct {
	Time   time.Time `json:"time"`
	By     string    `json:"by"`
	Commit uint64    `json:"commit,omitempty"`
}

// AgentSeen is when an agent was last seen: its last processed intent, or
// before any since the watcher started, the modification time of its
// newest journal segment.
type AgentSeen struct {
	Time time.Time `json:"time"`
}

// history is what the watcher did lately. It is guarded by Server.mu.
type history struct {
	points  [historySeconds]Point // ring, indexed by Unix second mod historySeconds
	changes [recentChanges]ChangeView
	next    int // index in changes of the next change
	n       int // changes held
	docs    map[string]DocSeen
	agents  map[string]time.Time
}

func newHistory() *history {
	return &history{docs: map[string]DocSeen{}, agents: map[string]time.Time{}}
}

// point returns the point of the second of t, emptied if it held an older
// second.
func (h *history) point(t time.Time) *Point {
	sec := t.Unix()
	p := &h.points[sec%historySeconds]
	if p.T != sec {
		*p = Point{T: sec}
	}
	return p
}

// add records a batch committed at now.
func (h *history) add(now time.Time, b replay.BatchStats) {
	p := h.point(now)
	p.Batches++
	took := float64(b.Took) / float64(time.Millisecond)
	p.TookSum += took
	p.TookMax = max(p.TookMax, took)
	p.SyncMax = max(p.SyncMax, float64(b.LogSync)/float64(time.Millisecond))
	for _, name := range b.Adopted {
		h.docs[name] = DocSeen{Time: now, Commit: b.Commit}
	}
	for _, c := range b.Changes {
		r := c.Result
		switch {
		case r.Retry:
			p.Retry++
		case r.Status == journal.StatusApplied:
			p.Applied++
		case r.Status == journal.StatusConflict:
			p.Conflict++
		default:
			p.Rejected++
		}
		h.agents[c.Agent] = now
		if r.Status == journal.StatusApplied && !r.Retry {
			h.docs[r.File] = DocSeen{Time: now, By: c.Agent, Commit: r.Commit}
		}
	}
	// The page lists the last recentChanges: skip what would be overwritten.
	changes := b.Changes[max(0, len(b.Changes)-recentChanges):]
	for _, c := range changes {
		r := c.Result
		h.changes[h.next] = ChangeView{Time: now, Agent: c.Agent, Seq: r.Seq, File: r.File, Status: r.Status,
			Version: r.Version, Commit: r.Commit, Retry: r.Retry, Error: r.Error}
		h.next = (h.next + 1) % recentChanges
		h.n = min(h.n+1, recentChanges)
	}
}

// series returns the points with activity in the last historySeconds
// before now, oldest first.
func (h *history) series(now time.Time) []Point {
	out := []Point{}
	end := now.Unix()
	for sec := end - historySeconds + 1; sec <= end; sec++ {
		if p := h.points[sec%historySeconds]; p.T == sec && p.Batches > 0 {
			out = append(out, p)
		}
	}
	return out
}

// recent returns the changes held, newest first.
func (h *history) recent() []ChangeView {
	out := make([]ChangeView, 0, h.n)
	for i := 1; i <= h.n; i++ {
		out = append(out, h.changes[(h.next-i+recentChanges)%recentChanges])
	}
	return out
}
