package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/stateward/stateward/journal"
)

// agentConfig is what the parent tells an agent process (flags of the
// "agent" subcommand).
type agentConfig struct {
	Contender string
	Dir       string
	Index     int
	Agents    int
	Tasks     int
	Mode      string        // closed, fixed or open
	Duration  time.Duration // closed and open: the run's length
	K         int           // fixed: ops to finish
	Timeout   time.Duration // fixed: give up after this long
	Window    int           // open: intents in flight (stateward), ops per unit (baselines)

	LockBase, LockMax, LockStale time.Duration
	Busy                         time.Duration
}

func (c agentConfig) args() []string {
	return []string{"agent",
		"-contender", c.Contender, "-dir", c.Dir,
		"-index", fmt.Sprint(c.Index), "-agents", fmt.Sprint(c.Agents), "-tasks", fmt.Sprint(c.Tasks),
		"-mode", c.Mode, "-duration", c.Duration.String(), "-k", fmt.Sprint(c.K),
		"-timeout", c.Timeout.String(), "-window", fmt.Sprint(c.Window),
		"-lock-base", c.LockBase.String(), "-lock-max", c.LockMax.String(), "-lock-stale", c.LockStale.String(),
		"-busy", c.Busy.String(),
	}
}

// agentSummary is what an agent prints when it is done: one JSON object.
type agentSummary struct {
	Name      string         `json:"name"`
	Ops       int            `json:"ops"`        // ops completed within the run
	Late      int            `json:"late"`       // completed after the deadline: not counted
	Conflicts int            `json:"conflicts"`  // ops whose precondition failed (0 expected)
	IncsDone  int            `json:"incs_done"`  // incs known to be applied
	IncsMaybe int            `json:"incs_maybe"` // stateward: incs in the journal, result not seen before the end
	LastSeq   uint64         `json:"last_seq"`   // stateward: last seq appended
	FinishNS  int64          `json:"finish_ns"`  // from go to the end of the last counted op
	Done      bool           `json:"done"`       // fixed: finished all K ops
	Lat       []int64        `json:"lat"`        // latency of each counted op, in ns
	Stats     map[string]int `json:"stats,omitempty"`
}

// runAgent is the "agent" subcommand: set up, print "ready", wait for "go"
// on stdin, run, print the summary.
func runAgent(args []string, stdin io.Reader, stdout io.Writer) error {
	var c agentConfig
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.StringVar(&c.Contender, "contender", "", "stateward, lockfile, flock or sqlite")
	fs.StringVar(&c.Dir, "dir", "", "state directory")
	fs.IntVar(&c.Index, "index", 0, "agent index")
	fs.IntVar(&c.Agents, "agents", 1, "number of agents")
	fs.IntVar(&c.Tasks, "tasks", 1000, "tasks on the board")
	fs.StringVar(&c.Mode, "mode", "closed", "closed, fixed or open")
	fs.DurationVar(&c.Duration, "duration", 5*time.Second, "run length")
	fs.IntVar(&c.K, "k", 100, "fixed: ops per agent")
	fs.DurationVar(&c.Timeout, "timeout", time.Minute, "fixed: give up after")
	fs.IntVar(&c.Window, "window", 16, "open: ops in flight")
	fs.DurationVar(&c.LockBase, "lock-base", time.Millisecond, "lock file: first backoff")
	fs.DurationVar(&c.LockMax, "lock-max", time.Second, "lock file: longest backoff")
	fs.DurationVar(&c.LockStale, "lock-stale", 10*time.Second, "lock file: age of a stale lock")
	fs.DurationVar(&c.Busy, "busy", 5*time.Second, "sqlite: busy_timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	name := agentName(c.Index)
	ctx := context.Background()

	var rmw rmwClient
	var sw *swClient
	var err error
	switch c.Contender {
	case "stateward":
		sw, err = newSWClient(c.Dir, name)
	case "lockfile":
		rmw = newLockfileClient(c.Dir, name, c.LockBase, c.LockMax, c.LockStale, uint64(c.Index))
	case "flock":
		rmw, err = newFlockClient(c.Dir, name)
	case "sqlite":
		rmw, err = newSQLiteClient(ctx, c.Dir, name, c.Busy)
	default:
		err = fmt.Errorf("unknown contender %q", c.Contender)
	}
	if err != nil {
		return err
	}

	in := bufio.NewReader(stdin)
	fmt.Fprintln(stdout, "ready")
	line, err := in.ReadString('\n')
	if err != nil || line != "go\n" {
		return fmt.Errorf("waiting for go: got %q, %v", line, err)
	}
	start := time.Now()
	limit := c.Duration
	if c.Mode == "fixed" {
		limit = c.Timeout
	}
	runCtx, cancel := context.WithDeadline(ctx, start.Add(limit))
	defer cancel()

	sum := agentSummary{Name: name}
	if sw != nil {
		if c.Mode == "open" {
			err = sw.runOpen(runCtx, c, start, &sum)
		} else {
			err = sw.runClosed(runCtx, c, start, &sum)
		}
		sum.LastSeq = sw.w.LastSeq()
		sw.close()
	} else {
		err = runRMW(runCtx, rmw, c, start, &sum)
		sum.Stats = rmw.stats()
		rmw.close()
	}
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(stdout)
	if err := json.NewEncoder(bw).Encode(sum); err != nil {
		return err
	}
	return bw.Flush()
}

// unit returns how many ops the next unit of work has.
func unit(c agentConfig, done int) int {
	n := 1
	if c.Mode == "open" {
		n = c.Window
	}
	if c.Mode == "fixed" {
		n = min(n, c.K-done)
	}
	return n
}

// runRMW runs a baseline agent.
func runRMW(ctx context.Context, cl rmwClient, c agentConfig, start time.Time, sum *agentSummary) error {
	deadline, _ := ctx.Deadline()
	for j := 0; c.Mode != "fixed" || j < c.K; {
		n := unit(c, j)
		ops := make([]op, n)
		for i := range ops {
			ops[i] = opFor(c.Index, c.Agents, c.Tasks, j+i)
		}
		t0 := time.Now()
		applied, err := cl.do(ctx, ops)
		t1 := time.Now()
		if errors.Is(err, errDeadline) {
			break
		}
		if err != nil {
			return err
		}
		for i, ok := range applied {
			switch {
			case !ok:
				sum.Conflicts++
			case ops[i].kind == opInc:
				sum.IncsDone++
			}
		}
		j += n
		if t1.After(deadline) {
			sum.Late += n
			break
		}
		sum.Ops += n
		sum.FinishNS = int64(t1.Sub(start))
		for range n {
			sum.Lat = append(sum.Lat, int64(t1.Sub(t0)))
		}
	}
	sum.Done = c.Mode == "fixed" && sum.Ops >= c.K
	return nil
}

// swClient is a stateward agent: its journal writer and results follower.
type swClient struct {
	name string
	w    *journal.Writer
	res  *journal.Results
}

func newSWClient(dir, name string) (*swClient, error) {
	w, err := journal.OpenWriter(dir, name)
	if err != nil {
		return nil, err
	}
	res, err := journal.OpenResults(dir, name)
	if err != nil {
		w.Close()
		return nil, err
	}
	return &swClient{name: name, w: w, res: res}, nil
}

func (s *swClient) close() {
	s.res.Close()
	s.w.Close()
}

// note records a result.
func (s *swClient) note(r journal.Result, o op, sum *agentSummary) error {
	switch r.Status {
	case journal.StatusApplied:
		if o.kind == opInc {
			sum.IncsDone++
		}
	case journal.StatusConflict:
		sum.Conflicts++
	default:
		return fmt.Errorf("%s seq %d (%s): %s: %s", s.name, r.Seq, o.kind, r.Status, r.Error)
	}
	return nil
}

// runClosed appends one intent, waits for its result, and again.
func (s *swClient) runClosed(ctx context.Context, c agentConfig, start time.Time, sum *agentSummary) error {
	for j := 0; c.Mode != "fixed" || j < c.K; j++ {
		if ctx.Err() != nil {
			break
		}
		o := opFor(c.Index, c.Agents, c.Tasks, j)
		t0 := time.Now()
		rec, err := s.w.Append(journal.Intent{File: docName, Patch: patchFor(o, s.name)})
		if err != nil {
			return err
		}
		r, err := s.res.Wait(ctx, rec.Seq)
		if err != nil {
			if ctx.Err() != nil {
				if o.kind == opInc {
					sum.IncsMaybe++ // durable: the watcher applies it later
				}
				break
			}
			return err
		}
		t1 := time.Now()
		if err := s.note(r, o, sum); err != nil {
			return err
		}
		sum.Ops++
		sum.FinishNS = int64(t1.Sub(start))
		sum.Lat = append(sum.Lat, int64(t1.Sub(t0)))
	}
	sum.Done = c.Mode == "fixed" && sum.Ops >= c.K
	return nil
}

// runOpen keeps up to c.Window intents in flight: it appends what is
// missing with one AppendBatch (one write, one fsync), waits for the oldest
// result, takes every other result already there, and refills.
func (s *swClient) runOpen(ctx context.Context, c agentConfig, start time.Time, sum *agentSummary) error {
	type pending struct {
		seq uint64
		t0  time.Time
		o   op
	}
	var fly []pending
	nowait, cancel := context.WithCancel(context.Background())
	cancel() // a done context: Wait only looks at what is there
	for j := 0; ctx.Err() == nil; {
		if n := c.Window - len(fly); n > 0 {
			ins := make([]journal.Intent, n)
			ops := make([]op, n)
			for i := range ins {
				ops[i] = opFor(c.Index, c.Agents, c.Tasks, j+i)
				ins[i] = journal.Intent{File: docName, Patch: patchFor(ops[i], s.name)}
			}
			t0 := time.Now()
			recs, err := s.w.AppendBatch(ins)
			if err != nil {
				return err
			}
			for i, r := range recs {
				fly = append(fly, pending{r.Seq, t0, ops[i]})
			}
			j += n
		}
		wctx := ctx
		for len(fly) > 0 {
			r, err := s.res.Wait(wctx, fly[0].seq)
			if err != nil {
				if wctx == ctx && ctx.Err() == nil {
					return err
				}
				break // nothing more ready (or the run is over)
			}
			t1 := time.Now()
			if err := s.note(r, fly[0].o, sum); err != nil {
				return err
			}
			sum.Ops++
			sum.FinishNS = int64(t1.Sub(start))
			sum.Lat = append(sum.Lat, int64(t1.Sub(fly[0].t0)))
			fly = fly[1:]
			wctx = nowait
		}
	}
	for _, p := range fly {
		if p.o.kind == opInc {
			sum.IncsMaybe++
		}
	}
	return nil
}

// agentMain runs the agent subcommand as a process.
func agentMain(args []string) int {
	if err := runAgent(args, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "swbench agent: %v\n", err)
		return 1
	}
	return 0
}
