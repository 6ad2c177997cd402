package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// profile is a CPU profile and a syscall-blocking profile of the watcher
// during one run.
type profile struct {
	Name    string `json:"name"`
	File    string `json:"file"`
	Result  string `json:"result"`
	Flat    string `json:"flat"`    // go tool pprof -top
	Cum     string `json:"cum"`     // go tool pprof -top -cum
	Syscall string `json:"syscall"` // blocking in syscalls, from the trace, -top -cum
	Heap    string `json:"heap"`    // heap in use when the watcher stopped, -top
}

// profiles runs the closed-loop cells of opt.ProfileCells, and a catch-up,
// under the bench's own copy of the watch loop with --cpuprofile and
// --trace, and keeps pprof's top lists.
func (r *runner) profiles(opt options) []profile {
	var out []profile
	for _, pc := range opt.ProfileCells {
		size, n, err := parseProfileCell(pc)
		if err != nil {
			fmt.Fprintf(os.Stderr, "profile %s: %v\n", pc, err)
			continue
		}
		s := cellSpec{Run: 0, Mode: "closed", Contender: "stateward", Size: size.Label, Tasks: size.Tasks, Agents: n,
			Duration: max(opt.Duration, 5*time.Second).Seconds(), Profile: true}
		cr := r.runCell(s)
		fmt.Fprintf(os.Stderr, "profile %s %s\n", s, cr.line())
		out = append(out, r.topOf(fmt.Sprintf("Closed loop, N=%d, %s", n, size.Label), s.profileKind(), "Result of the profiled run: "+cr.line()))
	}
	n := min(opt.CatchupIntents, 200_000)
	cu := r.runCatchup(0, docSize{"150KB", 1000}, opt.CatchupAgents, n, true)
	fmt.Fprintf(os.Stderr, "profile catchup %d intents: %s\n", n, cu.line())
	out = append(out, r.topOf(fmt.Sprintf("Catch-up, %s inc intents, 150KB", commas(int64(n))), "catchup", "Result of the profiled run: "+cu.line()))
	return out
}

// parseProfileCell reads "SIZE/N".
func parseProfileCell(s string) (docSize, int, error) {
	sz, ns, ok := strings.Cut(s, "/")
	if !ok {
		return docSize{}, 0, fmt.Errorf("want SIZE/N, like 150KB/16")
	}
	size, err := parseSize(sz)
	if err != nil {
		return docSize{}, 0, err
	}
	n, err := strconv.Atoi(ns)
	if err != nil || n < 1 || n > 64 {
		return docSize{}, 0, fmt.Errorf("bad agent count %q", ns)
	}
	return size, n, nil
}

func (r *runner) topOf(name, kind, result string) profile {
	file := r.profilePath(kind)
	p := profile{Name: name, File: file, Result: result}
	run := func(args ...string) string {
		out, err := exec.Command("go", append([]string{"tool", "pprof"}, args...)...).Output()
		if err != nil {
			return fmt.Sprintf("go tool pprof: %v", err)
		}
		return trimPprof(string(out))
	}
	p.Flat = run("-top", "-nodecount=25", file)
	p.Cum = run("-top", "-cum", "-nodecount=30", file)
	sys := strings.TrimSuffix(r.tracePath(kind), ".trace") + "-syscall.pprof"
	out, err := exec.Command("go", "tool", "trace", "-pprof=syscall", r.tracePath(kind)).Output()
	if err == nil {
		err = os.WriteFile(sys, out, 0o644)
	}
	if err != nil {
		p.Syscall = fmt.Sprintf("go tool trace: %v", err)
	} else {
		p.Syscall = run("-top", "-cum", "-nodecount=30", sys)
	}
	if _, err := os.Stat(r.memPath(kind)); err == nil {
		p.Heap = run("-top", "-sample_index=inuse_space", "-nodecount=15", r.memPath(kind))
	}
	return p
}

// trimPprof drops pprof's header lines before the table, but keeps the
// sample totals.
func trimPprof(s string) string {
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}
