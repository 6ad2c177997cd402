package watcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"

	"github.com/stateward/stateward/journal"
	"github.com/stateward/stateward/replay"
)

// Defaults of a Watcher's knobs.
const (
	// DefaultRescanInterval is the slow periodic rescan of every journal: the
	// fallback where inotify does not work (NFS) and the net under lost
	// events.
	DefaultRescanInterval = 2 * time.Second
	// DefaultHeartbeatInterval is how often an idle loop still calls
	// Heartbeat.
	DefaultHeartbeatInterval = time.Second
	// MinNoSpaceBackoff and MaxNoSpaceBackoff bound the pace at which a
	// commit that failed for lack of space is retried.
	MinNoSpaceBackoff = 100 * time.Millisecond
	MaxNoSpaceBackoff = 5 * time.Second
)

// Watcher drives an opened replay.Applier: it steps it whenever a journal
// may have grown, as told by fsnotify events, and on a periodic rescan. Events
// are only hints; every step reads every journal from its durable position,
// so a lost event costs latency, never data.
type Watcher struct {
	RescanInterval    time.Duration // set by New
	HeartbeatInterval time.Duration // set by New

	// Heartbeat, if set, is called from the apply loop on every pass and at
	// least every HeartbeatInterval while the loop is alive. A wedged loop
	// stops calling it (systemd's watchdog relies on that).
	Heartbeat func()

	applier *replay.Applier
	logger  hclog.Logger
}

// New returns a Watcher that drives a, which must be open.
func New(a *replay.Applier, logger hclog.Logger) *Watcher {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Watcher{
		RescanInterval:    DefaultRescanInterval,
		HeartbeatInterval: DefaultHeartbeatInterval,
		applier:           a,
		logger:            logger,
	}
}

// Run processes journals until ctx is done, then returns nil after the batch
// in progress is committed. It returns an error if a step fails (the
// Applier is then unusable: restart and recover).
func (w *Watcher) Run(ctx context.Context) error {
	if w.RescanInterval <= 0 || w.HeartbeatInterval <= 0 {
		return fmt.Errorf("watcher: intervals must be > 0 (rescan %s, heartbeat %s)", w.RescanInterval, w.HeartbeatInterval)
	}
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	fw, err := w.startNotify(ctx, poke)
	if err != nil {
		w.logger.Warn("file events unavailable; relying on the periodic rescan", "interval", w.RescanInterval, "error", err)
	} else {
		defer fw.Close()
	}
	rescan := time.NewTicker(w.RescanInterval)
	defer rescan.Stop()
	beat := time.NewTicker(w.HeartbeatInterval)
	defer beat.Stop()
	backoff := MinNoSpaceBackoff
	for {
		if w.Heartbeat != nil {
			w.Heartbeat()
		}
		if err := ctx.Err(); err != nil {
			return nil
		}
		n, err := w.applier.Step(ctx)
		switch {
		case errors.Is(err, replay.ErrNoSpace):
			// Nothing was acknowledged; the next Step starts again from
			// what is durable. Retry at a bounded pace, still beating.
			// The Applier logs the episode once, when it starts and when
			// it ends; each retry only at debug level.
			w.logger.Debug("no space left in the state directory; retrying", "in", backoff, "error", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, MaxNoSpaceBackoff)
			continue
		case err != nil:
			if ctx.Err() != nil && !errors.Is(err, replay.ErrFailed) {
				return nil
			}
			return err
		}
		backoff = MinNoSpaceBackoff
		if n > 0 {
			continue // more may be ready: step again before sleeping
		}
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-rescan.C:
		case <-beat.C:
		}
	}
}

// startNotify watches the journal folder and every agent folder in it. Its
// goroutine drains Events and Errors in one loop and never touches the disk
// beyond adding watches: it only pokes the apply loop.
func (w *Watcher) startNotify(ctx context.Context, poke func()) (*fsnotify.Watcher, error) {
	root := filepath.Join(w.applier.Dir(), "journal") // Applier.Open created it
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	if err := fw.Add(root); err != nil {
		fw.Close()
		return nil, fmt.Errorf("watch %s: %w", root, err)
	}
	w.addAgents(fw, root)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-fw.Events:
				if !ok {
					return
				}
				if filepath.Dir(ev.Name) == root && ev.Has(fsnotify.Create) {
					// A new agent folder: watch it, and rescan so that what
					// was written before the watch was added is read.
					if err := fw.Add(ev.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
						w.logger.Warn("cannot watch agent folder; the periodic rescan covers it", "folder", ev.Name, "error", err)
					}
				}
				poke()
			case err, ok := <-fw.Errors:
				if !ok {
					return
				}
				if errors.Is(err, fsnotify.ErrEventOverflow) {
					w.logger.Warn("file event queue overflowed; rescanning every journal")
				} else {
					w.logger.Warn("file watcher error; rescanning every journal", "error", err)
				}
				w.addAgents(fw, root)
				poke()
			}
		}
	}()
	return fw, nil
}

// addAgents watches every agent folder under root (adding a watch twice is
// harmless).
func (w *Watcher) addAgents(fw *fsnotify.Watcher, root string) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.IsDir() && journal.ValidAgentName(e.Name()) {
			if err := fw.Add(filepath.Join(root, e.Name())); err != nil {
				w.logger.Warn("cannot watch agent folder; the periodic rescan covers it", "folder", e.Name(), "error", err)
			}
		}
	}
}
