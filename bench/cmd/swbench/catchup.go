package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/stateward/stateward/journal"
)

// catchupResult is what one catch-up run measured: a watcher started on
// journals that already hold Intents inc intents, timed from its start
// until every result is written.
type catchupResult struct {
	Run        int     `json:"run"`
	Size       string  `json:"size"`
	Tasks      int     `json:"tasks"`
	DocBytes   int64   `json:"doc_bytes"`
	Agents     int     `json:"agents"`
	Intents    int     `json:"intents"`
	Profile    bool    `json:"profile,omitempty"`
	Elapsed    float64 `json:"elapsed_s"`
	PerSec     float64 `json:"intents_per_s"`
	WatcherCPU float64 `json:"watcher_cpu_s"`
	WatcherRSS int64   `json:"watcher_rss_bytes"`
	Batches    uint64  `json:"batches"`
	Check      string  `json:"check"`
	Error      string  `json:"error,omitempty"`
}

// runCatchup writes the backlog, then starts the watcher and times it.
func (r *runner) runCatchup(run int, size docSize, agents, intents int, profile bool) (res catchupResult) {
	res = catchupResult{Run: run, Size: size.Label, Tasks: size.Tasks, Agents: agents, Intents: intents, Profile: profile}
	dir, err := os.MkdirTemp(r.base, "catchup-")
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer func() {
		if res.Error == "" && !r.opt.Keep {
			os.RemoveAll(dir)
		} else if res.Error != "" {
			res.Error += " (kept " + dir + ")"
		}
	}()
	if err := r.catchup(dir, &res, profile); err != nil {
		res.Error = err.Error()
	}
	return res
}

func (r *runner) catchup(dir string, res *catchupResult, profile bool) error {
	b := r.board(res.Tasks)
	res.DocBytes = int64(len(b))
	if err := os.WriteFile(filepath.Join(dir, docName), b, 0o644); err != nil {
		return err
	}
	// A first watcher adopts the board, then stops: the backlog is written
	// while no watcher runs.
	w, err := startWatcher(r.swBin, dir)
	if err != nil {
		return err
	}
	if err := w.waitReady(dir); err != nil {
		w.stop()
		return err
	}
	if err := adopt(dir); err != nil {
		w.stop()
		return fmt.Errorf("adopt the board: %w", err)
	}
	if err := w.stop(); err != nil {
		return err
	}

	// The backlog: intents inc intents spread over the agents, appended in
	// chunks (one write and one fsync per chunk).
	per := make([]int, res.Agents)
	for i := range res.Intents {
		per[i%res.Agents]++
	}
	for i, n := range per {
		jw, err := journal.OpenWriter(dir, agentName(i))
		if err != nil {
			return err
		}
		patch := patchFor(op{kind: opInc}, agentName(i))
		const chunk = 8192
		for done := 0; done < n; {
			m := min(chunk, n-done)
			ins := make([]journal.Intent, m)
			for j := range ins {
				ins[j] = journal.Intent{File: docName, Patch: patch}
			}
			if _, err := jw.AppendBatch(ins); err != nil {
				jw.Close()
				return err
			}
			done += m
		}
		jw.Close()
	}
	v, err := journal.ReadVersions(dir)
	if err != nil {
		return err
	}
	target := v.Commit + uint64(res.Intents)
	_, batch0 := watcherCounters(dir)

	// The timed part: start, recover, apply everything, write every result.
	bin, extra := r.swBin, []string(nil)
	if profile {
		bin, extra = []string{r.self}, []string{"--cpuprofile", r.profilePath("catchup"), "--trace", r.tracePath("catchup"), "--memprofile", r.memPath("catchup")}
	}
	start := time.Now()
	w, err = startWatcher(bin, dir, extra...)
	if err != nil {
		return err
	}
	defer func() {
		if w != nil {
			w.cmd.Process.Kill()
			<-w.exited
		}
	}()
	limit := time.Now().Add(30 * time.Minute)
	for {
		if time.Now().After(limit) {
			return fmt.Errorf("catch-up not done after 30m: %s", w.tail())
		}
		select {
		case err := <-w.exited:
			w.exited <- err
			return fmt.Errorf("watcher exited (%v): %s", err, w.tail())
		case <-time.After(2 * time.Millisecond):
		}
		v, err := journal.ReadVersions(dir)
		if err != nil || v.Commit < target {
			continue
		}
		if allResults(dir, per) {
			break
		}
	}
	res.Elapsed = time.Since(start).Seconds()
	res.PerSec = float64(res.Intents) / res.Elapsed
	cpu, _ := procCPU(w.pid())
	res.WatcherCPU = cpu.Seconds()
	res.WatcherRSS, _ = procHWM(w.pid())
	_, batch1 := watcherCounters(dir)
	res.Batches = batch1 - batch0
	err = w.stop()
	w = nil
	if err != nil {
		return err
	}
	counters, err := readCounters("stateward", dir)
	if err != nil {
		return err
	}
	res.Check = "ok"
	for i, n := range per {
		if got := counters[agentName(i)]; got != n {
			res.Check = fmt.Sprintf("%s counter %d, want %d", agentName(i), got, n)
		}
	}
	return nil
}

// allResults reports whether each agent's last result (seq per[i]) is
// written: the newest results segment ends with it.
func allResults(dir string, per []int) bool {
	for i, n := range per {
		if n == 0 {
			continue
		}
		folder := filepath.Join(dir, "results", agentName(i))
		segs, err := journal.ListSegments(folder)
		if err != nil || len(segs) == 0 {
			return false
		}
		f, err := os.Open(filepath.Join(folder, journal.SegmentName(segs[len(segs)-1])))
		if err != nil {
			return false
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return false
		}
		off := max(0, fi.Size()-512)
		buf := make([]byte, fi.Size()-off)
		_, err = f.ReadAt(buf, off)
		f.Close()
		if err != nil || !bytes.HasSuffix(buf, []byte("\n")) {
			return false
		}
		lines := bytes.Split(bytes.TrimSuffix(buf, []byte("\n")), []byte("\n"))
		last, err := journal.ParseResult(lines[len(lines)-1])
		if err != nil || last.Seq != uint64(n) {
			return false
		}
	}
	return true
}
