package main

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestBaselines_NoLostUpdates runs a few concurrent clients of each
// baseline on one board (goroutines stand in for processes: the lock file
// and flock exclude across file descriptors as across processes) and checks
// that no increment is lost and no claim conflicts.
func TestBaselines_NoLostUpdates(t *testing.T) {
	const agents, ops, tasks = 4, 12, 20
	for _, contender := range []string{"lockfile", "flock", "sqlite"} {
		t.Run(contender, func(t *testing.T) {
			dir := t.TempDir()
			if contender == "sqlite" {
				if err := makeSQLite(filepath.Join(dir, sqliteName), tasks, agents); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(filepath.Join(dir, docName), boardJSON(tasks), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			var wg sync.WaitGroup
			incs := make([]int, agents)
			errs := make(chan error, agents)
			for i := range agents {
				wg.Go(func() {
					var c rmwClient
					var err error
					switch contender {
					case "lockfile":
						c = newLockfileClient(dir, agentName(i), time.Millisecond, 20*time.Millisecond, 10*time.Second, uint64(i))
					case "flock":
						c, err = newFlockClient(dir, agentName(i))
					case "sqlite":
						c, err = newSQLiteClient(ctx, dir, agentName(i), 5*time.Second)
					}
					if err != nil {
						errs <- err
						return
					}
					defer c.close()
					for j := 0; j < ops; {
						n := 1 + (j/3)%2 // one op, then two in one unit (the pipelined path), ...
						batch := make([]op, n)
						for k := range batch {
							batch[k] = opFor(i, agents, tasks, j+k)
						}
						applied, err := c.do(ctx, batch)
						if err != nil {
							errs <- err
							return
						}
						for k, ok := range applied {
							if !ok {
								errs <- &conflictError{agentName(i), batch[k]}
								return
							}
							if batch[k].kind == opInc {
								incs[i]++
							}
						}
						j += n
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			counters, err := readCounters(contender, dir)
			if err != nil {
				t.Fatal(err)
			}
			for i := range agents {
				if got, want := counters[agentName(i)], incs[i]; got != want || want == 0 {
					t.Errorf("%s: counter=%d, want %d (> 0)", agentName(i), got, want)
				}
			}
		})
	}
}

type conflictError struct {
	agent string
	o     op
}

func (e *conflictError) Error() string {
	return e.agent + ": unexpected conflict on " + e.o.kind.String()
}

func TestLockfile_StaleLockRemoved(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, docName), boardJSON(10), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newLockfileClient(dir, agentName(0), time.Millisecond, 10*time.Millisecond, time.Hour, 1)
	// A lock left by a process that is gone: pid 1 is alive, so use a pid
	// far above pid_max.
	if err := os.WriteFile(c.lock, []byte("999999999 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := c.do(ctx, []op{{kind: opInc}}); err != nil {
		t.Fatal(err)
	}
	if got := c.stats()["stale_removed"]; got != 1 {
		t.Fatalf("stale_removed=%d, want 1", got)
	}
	if _, err := os.Stat(c.lock); !os.IsNotExist(err) {
		t.Fatalf("lock still there after the op: %v", err)
	}
}

func TestLockfile_AbandonsAtDeadline(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, docName), boardJSON(10), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newLockfileClient(dir, agentName(0), time.Millisecond, 10*time.Millisecond, time.Hour, 1)
	// Held by this (live) process: never stale.
	if err := os.WriteFile(c.lock, []byte("1 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.do(ctx, []op{{kind: opInc}}); err != errDeadline {
		t.Fatalf("do: %v, want errDeadline", err)
	}
	if c.stats()["backoffs"] == 0 {
		t.Fatal("no backoff")
	}
}
