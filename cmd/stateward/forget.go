package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/stateward/stateward/journal"
	"github.com/stateward/stateward/replay"
)

// forget asks the watcher to forget an agent (docs/format.md, "Forgetting
// an agent"): it writes a request under DIR/journal/.forget/ and waits for
// the watcher's answer.
func (m *Main) forget(ctx context.Context, args []string) int {
	fs := m.flagSet("forget", "forget --dir DIR --agent NAME [--timeout DURATION]")
	dir := fs.String("dir", "", "state directory (or STATEWARD_DIR)")
	agent := fs.String("agent", "", "agent to forget: its journal and results go, and the name starts afresh")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the watcher's answer")
	pos, err := parse(fs, args)
	if err != nil {
		return usageExit(err)
	}
	d, err := m.stateDir(*dir)
	if err != nil {
		return m.usageErr("forget", "%v", err)
	}
	switch {
	case *agent == "":
		return m.usageErr("forget", "--agent is required")
	case len(pos) > 0:
		return m.usageErr("forget", "unexpected argument %q", pos[0])
	case *timeout <= 0:
		return m.usageErr("forget", "--timeout must be > 0")
	}
	if err := journal.CheckAgentName(*agent); err != nil {
		return m.usageErr("forget", "%v", err)
	}
	// Refuse at once while a writer holds the agent; the watcher checks
	// again, holding the lock while it forgets.
	lk, err := journal.LockAgent(d, *agent)
	switch {
	case errors.Is(err, journal.ErrLocked):
		fmt.Fprintf(m.Stderr, "stateward forget: refused: %v\n", err)
		return exitConflict
	case err == nil:
		lk.Close()
	case !errors.Is(err, os.ErrNotExist):
		return m.fail("forget", err)
	}
	var nonce [8]byte
	rand.Read(nonce[:])
	req, ans := replay.ForgetRequest(*agent, hex.EncodeToString(nonce[:]))
	req, ans = filepath.Join(d, req), filepath.Join(d, ans)
	if err := writeRequest(req, *agent); err != nil {
		return m.fail("forget", err)
	}
	wctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		data, err := os.ReadFile(ans)
		if err == nil {
			var a struct {
				Status string `json:"status"`
			}
			if json.Unmarshal(data, &a) != nil {
				return m.fail("forget", fmt.Errorf("answer %s is not JSON: %.80s", ans, data))
			}
			os.Remove(ans)
			m.Stdout.Write(data)
			if a.Status != "forgotten" {
				return exitConflict
			}
			return exitOK
		}
		select {
		case <-wctx.Done():
			fmt.Fprintf(m.Stderr, "stateward forget: no answer within %s (is a watcher running on %s?); the request %s stays, and the watcher carries it out when it runs\n", *timeout, d, req)
			return exitTimeout
		case <-tick.C:
		}
	}
}

// writeRequest creates a forget request durably (its folder too).
func writeRequest(req, agent string) error {
	folder := filepath.Dir(req)
	if err := os.Mkdir(folder, journal.DirMode); err == nil {
		if err := journal.SyncDir(filepath.Dir(folder)); err != nil {
			return err
		}
	} else if !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", folder, err)
	}
	line, _ := json.Marshal(map[string]any{"agent": agent, "time": time.Now().UTC().Format(time.RFC3339Nano), "pid": os.Getpid()})
	f, err := os.OpenFile(req, os.O_WRONLY|os.O_CREATE|os.O_EXCL, journal.FileMode)
	if err != nil {
		return fmt.Errorf("write forget request: %w", err)
	}
	_, err = f.Write(append(line, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write forget request %s: %w", req, err)
	}
	return journal.SyncDir(folder)
}
