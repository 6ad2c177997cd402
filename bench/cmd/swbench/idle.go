package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// idleMain is the "idle" subcommand: what idle agents cost. For each count
// of idle agents (folders holding one processed intent each, and their
// results), it starts `stateward watch`, measures the watcher's CPU while
// nothing happens, then the latency of `stateward submit --wait` run one
// after another by one active agent.
//
//	go run ./cmd/swbench idle -quick                         # smoke: 0 and 100 idle agents, a few seconds
//	go run ./cmd/swbench idle -idle 0,100,1000,10000         # the figures in docs/benchmarks.md
func idleMain(args []string) int {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "smoke: 0 and 100 idle agents, 2 s idle, 10 submits")
	counts := fs.String("idle", "0,100,1000,10000", "idle agent counts")
	idleFor := fs.Duration("idle-for", 10*time.Second, "how long CPU is measured while nothing happens")
	submits := fs.Int("submits", 40, "submit --wait runs per count")
	swBin := fs.String("stateward-bin", "", "a stateward binary to use instead of building one")
	src := fs.String("src", "", "the stateward module to build (default: found above the working directory)")
	tmp := fs.String("tmp", "", "where the state directories go (default $TMPDIR)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["idle"] {
			*counts = "0,100"
		}
		if !set["idle-for"] {
			*idleFor = 2 * time.Second
		}
		if !set["submits"] {
			*submits = 10
		}
	}
	var ns []int
	for _, f := range splitList(*counts) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			fmt.Fprintf(os.Stderr, "idle: bad count %q\n", f)
			return 2
		}
		ns = append(ns, n)
	}
	if *submits < 1 || *idleFor <= 0 {
		fmt.Fprintln(os.Stderr, "idle: -submits and -idle-for must be positive")
		return 2
	}
	base, err := os.MkdirTemp(*tmp, "swbench-idle-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(base)
	bin := *swBin
	if bin == "" {
		mod, err := findModule(*src)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		bin = filepath.Join(base, "stateward")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/stateward")
		cmd.Dir, cmd.Stderr = mod, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build stateward: %v\n", err)
			return 1
		}
	} else if bin, err = filepath.Abs(bin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("| idle agents | submit --wait p50 | p90 | x of 0 idle (p50) | watcher CPU while idle | load |\n|---|---|---|---|---|---|\n")
	var p50zero time.Duration
	for _, n := range ns {
		r, err := idleCell(bin, filepath.Join(base, strconv.Itoa(n)), n, *idleFor, *submits)
		if err != nil {
			fmt.Fprintf(os.Stderr, "idle %d: %v\n", n, err)
			return 1
		}
		if n == 0 {
			p50zero = r.p50
		}
		ratio := "-"
		if p50zero > 0 {
			ratio = fmt.Sprintf("%.2f", float64(r.p50)/float64(p50zero))
		}
		fmt.Printf("| %d | %.1f ms | %.1f ms | %s | %.2f%% of a core | %.1f |\n", n, ms(r.p50), ms(r.p90), ratio, 100*r.cpu, loadAvg())
	}
	return 0
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// idleResult is one count's figures.
type idleResult struct {
	p50, p90 time.Duration
	cpu      float64 // watcher CPU seconds per second while idle
}

// idleCell measures one count of idle agents in a new state directory.
func idleCell(bin, dir string, n int, idleFor time.Duration, submits int) (idleResult, error) {
	var r idleResult
	if err := os.MkdirAll(filepath.Join(dir, "journal"), 0o775); err != nil {
		return r, err
	}
	// Idle agents as a finished writer leaves them: a lock file and one
	// segment with one intent, processed at the watcher's start.
	for i := range n {
		folder := filepath.Join(dir, "journal", fmt.Sprintf("idle-%05d", i))
		if err := os.MkdirAll(folder, 0o775); err != nil {
			return r, err
		}
		if err := os.WriteFile(filepath.Join(folder, ".lock"), nil, 0o664); err != nil {
			return r, err
		}
		line := fmt.Sprintf(`{"seq":1,"file":"idle.json","patch":[{"op":"add","path":"/idle-%05d","value":1}]}`+"\n", i)
		if i == 0 {
			line = `{"seq":1,"file":"idle.json","merge":{"idle-00000":1}}` + "\n"
		}
		if err := os.WriteFile(filepath.Join(folder, "00000000000000000001.jsonl"), []byte(line), 0o664); err != nil {
			return r, err
		}
	}
	w, err := startWatcher([]string{bin}, dir)
	if err != nil {
		return r, err
	}
	defer w.stop()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if c, _ := watcherCounters(dir); c >= uint64(n) {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("the %d idle intents were not processed in 5m: %s", n, w.tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Wait for the start-up work to end (results of the idle intents,
	// written after the commit counter moved): two seconds under 5% of a
	// core. Then let the folders age past the watcher's listing TTL (1 s)
	// and two rescans (2 s each), as long-idle folders are.
	for {
		a, err := procCPU(w.pid())
		if err != nil {
			return r, err
		}
		time.Sleep(2 * time.Second)
		b, err := procCPU(w.pid())
		if err != nil {
			return r, err
		}
		if b-a < 100*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("the watcher never went idle: %s", w.tail())
		}
	}
	time.Sleep(5 * time.Second)
	c0, err := procCPU(w.pid())
	if err != nil {
		return r, err
	}
	t0 := time.Now()
	time.Sleep(idleFor)
	c1, err := procCPU(w.pid())
	if err != nil {
		return r, err
	}
	r.cpu = (c1 - c0).Seconds() / time.Since(t0).Seconds()
	lat := make([]time.Duration, 0, submits)
	for i := range submits {
		t := time.Now()
		cmd := exec.Command(bin, "submit", "--dir", dir, "--agent", "active", "--file", "active.json", "--wait", "--timeout", "30s",
			"--merge", fmt.Sprintf(`{"n":%d}`, i))
		if out, err := cmd.CombinedOutput(); err != nil {
			return r, fmt.Errorf("submit: %v: %s", err, out)
		}
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)
	r.p50, r.p90 = lat[len(lat)/2], lat[len(lat)*9/10]
	return r, nil
}
