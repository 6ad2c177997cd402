package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A rmwClient runs ops as one unit: all of them are applied (or found in
// conflict) and durable when do returns nil. The baselines implement it;
// stateward's agent loop is in agent.go.
type rmwClient interface {
	// do applies ops in order and reports, for each, whether it applied
	// (false: its precondition failed). It returns errDeadline, having
	// written nothing, if ctx ends before it could start writing.
	do(ctx context.Context, ops []op) ([]bool, error)
	// stats returns contender-specific counters for the summary.
	stats() map[string]int
	close() error
}

// errDeadline is returned when an op was abandoned at the end of the run.
var errDeadline = errors.New("deadline")

// writeDurable replaces path with data the way careful agents do: a temp
// file in the same folder, fsync, rename over path, fsync of the folder.
func writeDurable(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp := path + ".tmp-" + strconv.Itoa(os.Getpid())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// readModifyWrite reads the whole document, parses it into generic maps (as
// an agent in Python or JavaScript would), applies ops, and writes it back
// durably. The caller holds the lock.
func readModifyWrite(path, name string, ops []op) ([]bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	tasks, _ := doc["tasks"].(map[string]any)
	counters, _ := doc["counters"].(map[string]any)
	if tasks == nil || counters == nil {
		return nil, fmt.Errorf("%s: no tasks or counters", path)
	}
	applied := make([]bool, len(ops))
	for i, o := range ops {
		switch o.kind {
		case opInc:
			n, _ := counters[name].(float64)
			counters[name] = n + 1
			applied[i] = true
		case opClaim:
			t, _ := tasks[taskID(o.task)].(map[string]any)
			if t != nil && t["status"] == "open" {
				t["status"], t["assignee"] = "claimed", name
				applied[i] = true
			}
		case opRelease:
			t, _ := tasks[taskID(o.task)].(map[string]any)
			if t != nil && t["assignee"] == name {
				t["status"], t["assignee"] = "open", nil
				applied[i] = true
			}
		}
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	out = append(out, '\n')
	if err := writeDurable(path, out); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return applied, nil
}

// lockfileClient is the approach stateward replaces: a ".lock" sidecar
// created with O_CREAT|O_EXCL; on EEXIST, exponential backoff with jitter;
// a lock older than Stale, or whose holder's pid is gone, is removed; then a
// read-modify-write of the whole document.
type lockfileClient struct {
	path, lock, name string
	base, max, stale time.Duration
	rng              *rand.Rand

	attempts, backoffs, staleRemoved, abandoned int
}

func newLockfileClient(dir, name string, base, maxWait, stale time.Duration, seed uint64) *lockfileClient {
	p := filepath.Join(dir, docName)
	return &lockfileClient{
		path: p, lock: p + ".lock", name: name,
		base: base, max: maxWait, stale: stale,
		rng: rand.New(rand.NewPCG(seed, uint64(os.Getpid()))),
	}
}

// acquire takes the lock file, or returns errDeadline when ctx ends first.
func (c *lockfileClient) acquire(ctx context.Context) error {
	wait := c.base
	for {
		c.attempts++
		f, err := os.OpenFile(c.lock, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			_, werr := fmt.Fprintf(f, "%d %d\n", os.Getpid(), time.Now().UnixNano())
			cerr := f.Close()
			if werr != nil || cerr != nil {
				os.Remove(c.lock)
				return fmt.Errorf("write lock %s: %v %v", c.lock, werr, cerr)
			}
			return nil
		}
		if !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create lock %s: %w", c.lock, err)
		}
		if c.isStale() {
			if os.Remove(c.lock) == nil {
				c.staleRemoved++
			}
			continue
		}
		// Exponential backoff with "equal jitter": half the step fixed,
		// half random.
		d := wait/2 + time.Duration(c.rng.Int64N(int64(wait/2)+1))
		wait = min(2*wait, c.max)
		c.backoffs++
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return errDeadline
		case <-t.C:
		}
	}
}

// isStale reports whether the lock file is older than c.stale or names a
// process that no longer exists.
func (c *lockfileClient) isStale() bool {
	fi, err := os.Stat(c.lock)
	if err != nil {
		return false // gone already: the next try creates it
	}
	if time.Since(fi.ModTime()) > c.stale {
		return true
	}
	data, err := os.ReadFile(c.lock)
	if err != nil {
		return false
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return false // being written
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func (c *lockfileClient) do(ctx context.Context, ops []op) ([]bool, error) {
	if err := c.acquire(ctx); err != nil {
		if errors.Is(err, errDeadline) {
			c.abandoned++
		}
		return nil, err
	}
	defer os.Remove(c.lock)
	if ctx.Err() != nil {
		c.abandoned++
		return nil, errDeadline // the run is over: write nothing
	}
	return readModifyWrite(c.path, c.name, ops)
}

func (c *lockfileClient) stats() map[string]int {
	return map[string]int{"lock_attempts": c.attempts, "backoffs": c.backoffs, "stale_removed": c.staleRemoved, "abandoned": c.abandoned}
}

func (c *lockfileClient) close() error { return nil }

// flockClient takes flock(LOCK_EX) on a sidecar file (the document itself
// is replaced by rename, so it cannot carry the lock), then does the same
// read-modify-write.
type flockClient struct {
	path, name string
	f          *os.File
	abandoned  int
}

func newFlockClient(dir, name string) (*flockClient, error) {
	p := filepath.Join(dir, docName)
	f, err := os.OpenFile(p+".flock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return &flockClient{path: p, name: name, f: f}, nil
}

func (c *flockClient) do(ctx context.Context, ops []op) ([]bool, error) {
	if ctx.Err() != nil {
		return nil, errDeadline
	}
	for {
		err := syscall.Flock(int(c.f.Fd()), syscall.LOCK_EX)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EINTR) {
			return nil, fmt.Errorf("flock: %w", err)
		}
	}
	defer syscall.Flock(int(c.f.Fd()), syscall.LOCK_UN)
	if ctx.Err() != nil {
		c.abandoned++
		return nil, errDeadline
	}
	return readModifyWrite(c.path, c.name, ops)
}

func (c *flockClient) stats() map[string]int { return map[string]int{"abandoned": c.abandoned} }

func (c *flockClient) close() error { return c.f.Close() }

// sqliteClient runs each op as an UPDATE in its own transaction (WAL,
// synchronous=FULL: the commit fsyncs the WAL), or several ops in one
// BEGIN IMMEDIATE ... COMMIT when the agent pipelines.
type sqliteClient struct {
	db                 *sql.DB
	conn               *sql.Conn
	name               string
	claim, release, in *sql.Stmt
	busy, abandoned    int
}

func newSQLiteClient(ctx context.Context, dir, name string, busy time.Duration) (*sqliteClient, error) {
	db, err := sql.Open("sqlite", sqliteDSN(filepath.Join(dir, sqliteName), int(busy/time.Millisecond)))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	c := &sqliteClient{db: db, conn: conn, name: name}
	for _, s := range []struct {
		st *(*sql.Stmt)
		q  string
	}{
		{&c.claim, sqlClaim},
		{&c.release, sqlRelease},
		{&c.in, sqlInc},
	} {
		if *s.st, err = conn.PrepareContext(ctx, s.q); err != nil {
			c.close()
			return nil, fmt.Errorf("prepare %q: %w", s.q, err)
		}
	}
	return c, nil
}

func isBusy(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "SQLITE_BUSY") || strings.Contains(err.Error(), "database is locked"))
}

// Queries of the SQLite contender.
const (
	sqlClaim   = `UPDATE tasks SET status = 'claimed', assignee = ? WHERE id = ? AND status = 'open'`
	sqlRelease = `UPDATE tasks SET status = 'open', assignee = NULL WHERE id = ? AND assignee = ?`
	sqlInc     = `UPDATE counters SET n = n + 1 WHERE agent = ?`
)

func (c *sqliteClient) exec(ctx context.Context, tx *sql.Tx, o op) (bool, error) {
	st, q, args := c.in, sqlInc, []any{c.name}
	switch o.kind {
	case opClaim:
		st, q, args = c.claim, sqlClaim, []any{c.name, o.task}
	case opRelease:
		st, q, args = c.release, sqlRelease, []any{o.task, c.name}
	}
	var res sql.Result
	var err error
	if tx != nil {
		res, err = tx.ExecContext(ctx, q, args...)
	} else {
		res, err = st.ExecContext(ctx, args...)
	}
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// do runs ops; once a try has started it is not interrupted at the end of
// the run (an interrupted commit would leave it unknown whether the op was
// applied): busy_timeout bounds it.
func (c *sqliteClient) do(ctx context.Context, ops []op) ([]bool, error) {
	for {
		if ctx.Err() != nil {
			c.abandoned++
			return nil, errDeadline
		}
		applied, err := c.try(context.Background(), ops)
		if err == nil {
			return applied, nil
		}
		if !isBusy(err) {
			return nil, err
		}
		c.busy++ // busy_timeout ran out: try again, as an agent would
	}
}

func (c *sqliteClient) try(ctx context.Context, ops []op) ([]bool, error) {
	if len(ops) == 1 {
		ok, err := c.exec(ctx, nil, ops[0]) // autocommit: one transaction
		if err != nil {
			return nil, err
		}
		return []bool{ok}, nil
	}
	tx, err := c.conn.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock)
	if err != nil {
		return nil, err
	}
	applied := make([]bool, len(ops))
	for i, o := range ops {
		if applied[i], err = c.exec(ctx, tx, o); err != nil {
			tx.Rollback()
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return applied, nil
}

func (c *sqliteClient) stats() map[string]int {
	return map[string]int{"busy_retries": c.busy, "abandoned": c.abandoned}
}

func (c *sqliteClient) close() error {
	for _, st := range []*sql.Stmt{c.claim, c.release, c.in} {
		if st != nil {
			st.Close()
		}
	}
	c.conn.Close()
	return c.db.Close()
}
