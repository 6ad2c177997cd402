package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/stateward/stateward/journal"
)

// The soak test runs its agents as children of the test binary, like the
// watcher, but with programs of its own: soakAgentEnv names the kind of
// agent to run instead of the tests. init runs before TestMain, so the
// child never reaches it.
const soakAgentEnv = "STATEWARD_SOAK_AGENT"

// Environment of a soak agent child.
const (
	soakDirEnv   = "STATEWARD_SOAK_DIR"   // state directory
	soakNameEnv  = "STATEWARD_SOAK_NAME"  // agent name
	soakSideEnv  = "STATEWARD_SOAK_SIDE"  // folder of the agents' own logs and the stop file
	soakSeedEnv  = "STATEWARD_SOAK_SEED"  // seed of the workload
	soakTasksEnv = "STATEWARD_SOAK_TASKS" // tasks on the board
	soakLifeEnv  = "STATEWARD_SOAK_LIFE"  // how many times this agent was started before
)

// soakStopName is the file in the side folder that tells agents to finish.
const soakStopName = "stop"

// soakResultTimeout is how long an agent waits for a result before it
// gives up (and exits 1, which fails the test: a result that never comes is
// a lost intent).
const soakResultTimeout = 2 * time.Minute

func init() {
	if kind := os.Getenv(soakAgentEnv); kind != "" {
		if err := runSoakAgent(kind); err != nil {
			fmt.Fprintf(os.Stderr, "soak agent %s (%s): %v\n", os.Getenv(soakNameEnv), kind, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// soakEvent is one line of an agent's side log (SIDE/<agent>.jsonl), which
// it writes outside the state directory for the test to check afterwards.
type soakEvent struct {
	Ev     string          `json:"ev"`               // start, acked or seen
	Torn   int64           `json:"torn,omitempty"`   // start: bytes of a torn tail found
	Retry  bool            `json:"retry,omitempty"`  // acked: the line repeats an earlier intent
	Seq    uint64          `json:"seq,omitempty"`    // acked, seen
	N      int             `json:"n,omitempty"`      // raw agent: the line's place in the journal, from 1
	Result json.RawMessage `json:"result,omitempty"` // seen: the result line as read
}

// soakAgent is what both kinds of agent share: configuration, workload and
// side log.
type soakAgent struct {
	dir, name string
	tasks     int
	rng       *rand.Rand
	side      *os.File
	stopPath  string
	owned     map[int]bool // tasks this life of the agent holds
}

func runSoakAgent(kind string) error {
	seed, _ := strconv.ParseUint(os.Getenv(soakSeedEnv), 10, 64)
	tasks, _ := strconv.Atoi(os.Getenv(soakTasksEnv))
	life, _ := strconv.ParseUint(os.Getenv(soakLifeEnv), 10, 64)
	h := fnv.New64a()
	h.Write([]byte(os.Getenv(soakNameEnv)))
	ag := &soakAgent{
		dir:      os.Getenv(soakDirEnv),
		name:     os.Getenv(soakNameEnv),
		tasks:    tasks,
		rng:      rand.New(rand.NewPCG(seed^h.Sum64(), life)),
		stopPath: filepath.Join(os.Getenv(soakSideEnv), soakStopName),
		owned:    map[int]bool{},
	}
	if ag.dir == "" || ag.name == "" || tasks < 1 {
		return errors.New("incomplete environment")
	}
	side, err := os.OpenFile(filepath.Join(os.Getenv(soakSideEnv), ag.name+".jsonl"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer side.Close()
	ag.side = side
	switch kind {
	case "go":
		return ag.runGo()
	case "raw":
		return ag.runRaw()
	}
	return fmt.Errorf("unknown kind %q", kind)
}

// log appends an event to the side log with one write.
func (ag *soakAgent) log(ev soakEvent) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = ag.side.Write(append(b, '\n'))
	return err
}

func (ag *soakAgent) stopped() bool {
	_, err := os.Stat(ag.stopPath)
	return err == nil
}

// soakTask names task i of the board.
func soakTask(i int) string { return fmt.Sprintf("task-%04d", i) }

// nextOp returns the file and patch of a random operation: an inc of the
// agent's counter, a claim of a random task (test open, replace status and
// assignee), or the release of a task it holds (test assignee).
func (ag *soakAgent) nextOp() (file string, patch []byte) {
	var ops []any
	switch x := ag.rng.IntN(100); {
	case x < 45:
		file = "metrics.json"
		ops = []any{map[string]any{"op": "inc", "path": "/inc/" + ag.name, "value": 1}}
	case x < 80 || len(ag.owned) == 0:
		file = "tasks.json"
		t := "/tasks/" + soakTask(1+ag.rng.IntN(ag.tasks))
		ops = []any{
			map[string]any{"op": "test", "path": t + "/status", "value": "open"},
			map[string]any{"op": "replace", "path": t + "/status", "value": "claimed"},
			map[string]any{"op": "replace", "path": t + "/assignee", "value": ag.name},
		}
	default:
		file = "tasks.json"
		var held []int
		for i := range ag.owned {
			held = append(held, i)
		}
		t := "/tasks/" + soakTask(held[ag.rng.IntN(len(held))])
		ops = []any{
			map[string]any{"op": "test", "path": t + "/assignee", "value": ag.name},
			map[string]any{"op": "replace", "path": t + "/status", "value": "open"},
			map[string]any{"op": "replace", "path": t + "/assignee", "value": nil},
		}
	}
	p, err := json.Marshal(ops)
	if err != nil {
		panic(err)
	}
	return file, p
}

// learn sets the tasks the agent holds from the board's JSON: an agent that
// was restarted finds its tasks there.
func (ag *soakAgent) learn(data []byte) error {
	var board struct {
		Tasks map[string]struct {
			Assignee *string `json:"assignee"`
		} `json:"tasks"`
	}
	if err := json.Unmarshal(data, &board); err != nil {
		return fmt.Errorf("tasks.json: %w", err)
	}
	for id, t := range board.Tasks {
		var i int
		if _, err := fmt.Sscanf(id, "task-%04d", &i); err == nil && t.Assignee != nil && *t.Assignee == ag.name {
			ag.owned[i] = true
		}
	}
	return nil
}

// note updates the tasks the agent holds from an applied claim or release.
func (ag *soakAgent) note(patch []byte, status string) {
	var ops []struct {
		Op, Path string
		Value    any
	}
	if json.Unmarshal(patch, &ops) != nil || len(ops) != 3 || status != journal.StatusApplied {
		return
	}
	var i int
	if _, err := fmt.Sscanf(ops[0].Path, "/tasks/task-%04d/", &i); err != nil {
		return
	}
	if ops[0].Value == "open" {
		ag.owned[i] = true
	} else {
		delete(ag.owned, i)
	}
}

// tornTail returns how many bytes follow the last "\n" of a file.
func tornTail(p string) int64 {
	data, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	return int64(len(data) - (bytes.LastIndexByte(data, '\n') + 1))
}

// runGo is an agent written with the journal client: it appends batches of
// one to four intents (explicit seq, id "<agent>-<seq>") and waits for each
// result. On start it finds the tasks it holds with journal.ReadDocument,
// and half of the time retries its last intent by id, as an agent that
// cannot tell whether it was processed would.
func (ag *soakAgent) runGo() error {
	folder := filepath.Join(ag.dir, "journal", ag.name)
	segs, err := journal.ListSegments(folder)
	if err != nil {
		return err
	}
	var torn int64
	var newest string
	if len(segs) > 0 {
		newest = filepath.Join(folder, journal.SegmentName(segs[len(segs)-1]))
		torn = tornTail(newest)
	}
	w, err := journal.OpenWriter(ag.dir, ag.name) // cuts a torn tail
	if err != nil {
		return err
	}
	defer w.Close()
	if torn > 0 && tornTail(newest) != 0 {
		return fmt.Errorf("OpenWriter left a torn tail of %d bytes in %s", tornTail(newest), newest)
	}
	res, err := journal.OpenResults(ag.dir, ag.name)
	if err != nil {
		return err
	}
	defer res.Close()
	if err := ag.log(soakEvent{Ev: "start", Torn: torn}); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), soakResultTimeout)
	doc, err := journal.ReadDocument(ctx, ag.dir, "tasks.json")
	cancel()
	if err != nil {
		return err
	}
	if err := ag.learn(doc.Data); err != nil {
		return err
	}
	wait := func(in journal.Intent) error {
		ctx, cancel := context.WithTimeout(context.Background(), soakResultTimeout)
		defer cancel()
		r, err := res.Wait(ctx, in.Seq)
		if err != nil {
			return err
		}
		if err := ag.log(soakEvent{Ev: "seen", Seq: in.Seq, Result: r.AppendLine(nil)}); err != nil {
			return err
		}
		ag.note(in.Patch, r.Status)
		return nil
	}
	if w.LastSeq() > 0 && ag.rng.IntN(2) == 0 {
		last, err := lastIntent(folder)
		if err != nil {
			return err
		}
		last.Seq = 0
		in, err := w.Append(last)
		if err != nil {
			return err
		}
		if err := ag.log(soakEvent{Ev: "acked", Seq: in.Seq, Retry: true}); err != nil {
			return err
		}
		if err := wait(in); err != nil {
			return err
		}
	}
	for !ag.stopped() {
		ins := make([]journal.Intent, 1+ag.rng.IntN(4))
		for i := range ins {
			seq := w.LastSeq() + 1 + uint64(i)
			file, patch := ag.nextOp()
			ins[i] = journal.Intent{Seq: seq, ID: fmt.Sprintf("%s-%d", ag.name, seq), File: file, Patch: patch}
		}
		out, err := w.AppendBatch(ins)
		if err != nil {
			return err
		}
		for _, in := range out {
			if err := ag.log(soakEvent{Ev: "acked", Seq: in.Seq}); err != nil {
				return err
			}
		}
		for _, in := range out {
			if err := wait(in); err != nil {
				return err
			}
		}
	}
	return nil
}

// lastIntent returns the last complete record of a journal folder.
func lastIntent(folder string) (journal.Intent, error) {
	segs, err := journal.ListSegments(folder)
	if err != nil {
		return journal.Intent{}, err
	}
	for i := len(segs) - 1; i >= 0; i-- {
		data, err := os.ReadFile(filepath.Join(folder, journal.SegmentName(segs[i])))
		if err != nil {
			return journal.Intent{}, err
		}
		data = data[:bytes.LastIndexByte(data, '\n')+1]
		if len(data) == 0 {
			continue
		}
		line := data[bytes.LastIndexByte(data[:len(data)-1], '\n')+1:]
		in, _, err := journal.ParseIntent(line)
		return in, err
	}
	return journal.Intent{}, errors.New("no complete record")
}

// runRaw is an agent that writes intent lines itself, as one in another
// language would: one segment it never rotates, each line written in up to
// three pieces (a buffered writer flushing as it goes), then fsynced, and
// results read by polling the files. On start it cuts a torn tail itself and
// continues after the last complete line; it finds the tasks it holds by
// reading tasks.json as a plain file (which must parse: G1); half of the
// time it first writes its last line again, a retry by seq.
func (ag *soakAgent) runRaw() error {
	folder := filepath.Join(ag.dir, "journal", ag.name)
	if err := os.MkdirAll(folder, 0o775); err != nil {
		return err
	}
	for _, d := range []string{filepath.Dir(folder), folder} {
		if err := journal.SyncDir(d); err != nil {
			return err
		}
	}
	p := filepath.Join(folder, journal.SegmentName(1))
	f, err := os.OpenFile(p, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o664)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := journal.SyncDir(folder); err != nil {
		return err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	end := bytes.LastIndexByte(data, '\n') + 1
	if torn := len(data) - end; torn > 0 {
		if err := f.Truncate(int64(end)); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if err := ag.log(soakEvent{Ev: "start", Torn: int64(len(data) - end)}); err != nil {
		return err
	}
	// Read the board as a plain file: it is always whole JSON (G1).
	board, err := os.ReadFile(filepath.Join(ag.dir, "tasks.json"))
	if err != nil {
		return err
	}
	if err := ag.learn(board); err != nil {
		return err
	}
	n := 0 // complete lines in the journal
	var lastSeq uint64
	var lastLine []byte
	for line := range bytes.Lines(data[:end]) {
		var rec struct {
			Seq uint64 `json:"seq"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			return fmt.Errorf("line %d of my journal: %v", n+1, err)
		}
		n++
		lastSeq, lastLine = max(lastSeq, rec.Seq), line
	}
	rr := &rawResults{folder: filepath.Join(ag.dir, "results", ag.name), off: map[uint64]int64{}}
	write := func(line []byte, seq uint64, retry bool, patch []byte) error {
		// Up to three pieces, with a pause between: a kill may land between.
		cuts := []int{0, 1 + ag.rng.IntN(len(line)-1), len(line)}
		if ag.rng.IntN(2) == 0 {
			cuts = []int{0, 1 + ag.rng.IntN(len(line)/2), len(line)/2 + 1 + ag.rng.IntN(len(line)/2-1), len(line)}
		}
		for i := 1; i < len(cuts); i++ {
			if _, err := f.Write(line[cuts[i-1]:cuts[i]]); err != nil {
				return err
			}
			if i < len(cuts)-1 {
				time.Sleep(time.Duration(ag.rng.IntN(4000)) * time.Microsecond) // workload: a slow writer
			}
		}
		if err := f.Sync(); err != nil {
			return err
		}
		n++
		if err := ag.log(soakEvent{Ev: "acked", Seq: seq, N: n, Retry: retry}); err != nil {
			return err
		}
		res, err := rr.wait(n, time.Now().Add(soakResultTimeout))
		if err != nil {
			return err
		}
		if err := ag.log(soakEvent{Ev: "seen", Seq: seq, N: n, Result: res}); err != nil {
			return err
		}
		var r journal.Result
		if err := json.Unmarshal(res, &r); err != nil {
			return err
		}
		ag.note(patch, r.Status)
		return nil
	}
	if n > 0 && ag.rng.IntN(2) == 0 {
		if err := write(lastLine, lastSeq, true, nil); err != nil {
			return err
		}
	}
	for !ag.stopped() {
		seq := lastSeq + 1
		file, patch := ag.nextOp()
		// Fields in another order than the Go client's, an unknown field
		// and a time: all allowed by docs/format.md.
		line := fmt.Appendf(nil, `{"file":%q,"agent":%q,"id":"%s-%d","seq":%d,"time":%q,"patch":%s}`+"\n",
			file, ag.name, ag.name, seq, seq, time.Now().UTC().Format(time.RFC3339Nano), patch)
		if err := write(line, seq, false, patch); err != nil {
			return err
		}
		lastSeq = seq
	}
	return nil
}

// rawResults reads an agent's result lines by polling its results files,
// as a client without inotify would.
type rawResults struct {
	folder string
	off    map[uint64]int64 // bytes read of each segment
	lines  [][]byte         // complete result lines, in order
}

// wait returns the n-th result line (from 1), polling until it is there or
// the deadline passes.
func (rr *rawResults) wait(n int, deadline time.Time) ([]byte, error) {
	for {
		if err := rr.poll(); err != nil {
			return nil, err
		}
		if len(rr.lines) >= n {
			return rr.lines[n-1], nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no result for my line %d after %s", n, soakResultTimeout)
		}
		time.Sleep(5 * time.Millisecond) // the client's poll interval
	}
}

func (rr *rawResults) poll() error {
	segs, err := journal.ListSegments(rr.folder)
	if err != nil {
		return err
	}
	for _, s := range segs {
		f, err := os.Open(filepath.Join(rr.folder, journal.SegmentName(s)))
		if err != nil {
			return err
		}
		off := rr.off[s]
		data, err := io.ReadAll(io.NewSectionReader(f, off, 1<<62))
		f.Close()
		if err != nil {
			return err
		}
		for line := range bytes.Lines(data) {
			if line[len(line)-1] != '\n' {
				break
			}
			rr.lines = append(rr.lines, bytes.Clone(line))
			off += int64(len(line))
		}
		rr.off[s] = off
	}
	return nil
}
