package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"
)

// idleMain is the "idle" subcommand: what idle agents cost. For each count
// of idle agents (folders holding one processed intent each, and their
// results) it runs `stateward watch` on its own state directory; all the
// watchers run side by side, so that the load of a shared machine falls on
// every count alike. It measures each watcher's CPU while nothing happens,
// then the latency of `stateward submit --wait` by one active agent per
// directory, the submits taking turns across the directories. With
// -compare-bin, the counts of -compare-idle also run with that binary (an
// older stateward), in the same rounds.
//
//	go run ./cmd/swbench idle -quick                         # smoke: 0 and 100 idle agents, about 30 s
//	go run ./cmd/swbench idle -idle 0,100,1000,10000         # the figures in docs/benchmarks.md
func idleMain(args []string) int {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "smoke: 0 and 100 idle agents, 2 s idle, 10 submits")
	counts := fs.String("idle", "0,100,1000,10000", "idle agent counts")
	idleFor := fs.Duration("idle-for", 10*time.Second, "how long CPU is measured while nothing happens")
	submits := fs.Int("submits", 40, "submit --wait runs per count")
	swBin := fs.String("stateward-bin", "", "a stateward binary to use instead of building one")
	cmpBin := fs.String("compare-bin", "", "another stateward binary (e.g. an older one) to run beside it")
	cmpCounts := fs.String("compare-idle", "0,2000", "idle agent counts for -compare-bin")
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
	parseCounts := func(list string) ([]int, error) {
		var ns []int
		for _, f := range splitList(list) {
			n, err := strconv.Atoi(f)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("bad count %q", f)
			}
			ns = append(ns, n)
		}
		return ns, nil
	}
	ns, err := parseCounts(*counts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "idle: %v\n", err)
		return 2
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
	var cells []*idleCell
	for _, n := range ns {
		cells = append(cells, &idleCell{bin: bin, label: "this", n: n})
	}
	if *cmpBin != "" {
		cb, err := filepath.Abs(*cmpBin)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cns, err := parseCounts(*cmpCounts)
		if err != nil {
			fmt.Fprintf(os.Stderr, "idle: %v\n", err)
			return 2
		}
		for _, n := range cns {
			cells = append(cells, &idleCell{bin: cb, label: "compare", n: n})
		}
	}
	defer func() {
		for _, c := range cells {
			if c.w != nil {
				c.w.stop()
			}
		}
	}()
	for i, c := range cells {
		c.dir = filepath.Join(base, strconv.Itoa(i))
		fmt.Fprintf(os.Stderr, "idle: starting %s with %d idle agents\n", c.label, c.n)
		if err := c.start(); err != nil {
			fmt.Fprintf(os.Stderr, "idle %s %d: %v\n", c.label, c.n, err)
			return 1
		}
	}
	// Folders age past the watcher's listing TTL (1 s) and two rescans
	// (2 s each), as long-idle folders are.
	time.Sleep(5 * time.Second)
	c0 := make([]time.Duration, len(cells))
	for i, c := range cells {
		if c0[i], err = procCPU(c.w.pid()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	t0 := time.Now()
	time.Sleep(*idleFor)
	for i, c := range cells {
		c1, err := procCPU(c.w.pid())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		c.cpu = (c1 - c0[i]).Seconds() / time.Since(t0).Seconds()
	}
	for i := range *submits {
		for _, c := range cells {
			if err := c.submit(i); err != nil {
				fmt.Fprintf(os.Stderr, "idle %s %d: %v\n", c.label, c.n, err)
				return 1
			}
		}
	}
	fmt.Printf("| stateward | idle agents | submit --wait p50 | p90 | p50 / p50 at 0 idle | watcher CPU while idle |\n|---|---|---|---|---|---|\n")
	zero := map[string]time.Duration{}
	for _, c := range cells {
		slices.Sort(c.lat)
		if c.n == 0 {
			zero[c.label] = c.lat[len(c.lat)/2]
		}
	}
	for _, c := range cells {
		p50, p90 := c.lat[len(c.lat)/2], c.lat[len(c.lat)*9/10]
		ratio := "-"
		if z := zero[c.label]; z > 0 {
			ratio = fmt.Sprintf("%.2f", float64(p50)/float64(z))
		}
		fmt.Printf("| %s | %d | %.1f ms | %.1f ms | %s | %.2f%% of a core |\n", c.label, c.n, ms(p50), ms(p90), ratio, 100*c.cpu)
	}
	fmt.Printf("\nload average at the end: %.1f on %d CPUs\n", loadAvg(), runtime.NumCPU())
	return 0
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// idleCell is one watcher with n idle agents.
type idleCell struct {
	bin, label, dir string
	n               int
	w               *watcherProc
	cpu             float64 // watcher CPU seconds per second while idle
	lat             []time.Duration
}

// start makes the idle agents and starts the watcher, and returns once it
// has processed their intents and gone quiet.
func (c *idleCell) start() error {
	if err := os.MkdirAll(filepath.Join(c.dir, "journal"), 0o775); err != nil {
		return err
	}
	// Idle agents as a finished writer leaves them: a lock file and one
	// segment with one intent, processed at the watcher's start.
	for i := range c.n {
		folder := filepath.Join(c.dir, "journal", fmt.Sprintf("idle-%05d", i))
		if err := os.MkdirAll(folder, 0o775); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(folder, ".lock"), nil, 0o664); err != nil {
			return err
		}
		line := fmt.Sprintf(`{"seq":1,"file":"idle.json","merge":{"idle-%05d":1}}`+"\n", i)
		if err := os.WriteFile(filepath.Join(folder, "00000000000000000001.jsonl"), []byte(line), 0o664); err != nil {
			return err
		}
	}
	w, err := startWatcher([]string{c.bin}, c.dir)
	if err != nil {
		return err
	}
	c.w = w
	deadline := time.Now().Add(10 * time.Minute)
	for {
		if n, _ := watcherCounters(c.dir); n >= uint64(c.n) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the %d idle intents were not processed in 10m: %s", c.n, w.tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The results of the idle intents are written after the commit
	// counter moves: wait for two seconds under 5% of a core, or for the
	// rate to hold steady (an older watcher may never go below).
	prev := time.Duration(-1)
	for {
		a, err := procCPU(w.pid())
		if err != nil {
			return err
		}
		time.Sleep(2 * time.Second)
		b, err := procCPU(w.pid())
		if err != nil {
			return err
		}
		d := b - a
		if d < 100*time.Millisecond || (prev >= 0 && d <= prev*13/10 && prev <= d*13/10) {
			return nil
		}
		prev = d
		if time.Now().After(deadline) {
			return fmt.Errorf("the watcher never went idle: %s", w.tail())
		}
	}
}

// submit runs one `stateward submit --wait` as the active agent and
// records its latency.
func (c *idleCell) submit(i int) error {
	t := time.Now()
	cmd := exec.Command(c.bin, "submit", "--dir", c.dir, "--agent", "active", "--file", "active.json", "--wait", "--timeout", "60s",
		"--merge", fmt.Sprintf(`{"n":%d}`, i))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("submit: %v: %s", err, out)
	}
	c.lat = append(c.lat, time.Since(t))
	return nil
}
