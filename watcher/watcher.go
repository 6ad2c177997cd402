package watcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
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
	// RescanShare bounds the time the periodic rescan takes: the next one
	// comes RescanInterval after the last, or RescanShare times the last
	// one's duration if that is longer (with 10,000 agent folders a rescan
	// takes tens of milliseconds, so an idle watcher stays under 1% of a
	// core).
	RescanShare = 200
	// MinNoSpaceBackoff and MaxNoSpaceBackoff bound the pace at which a
	// commit that failed for lack of space is retried.
	MinNoSpaceBackoff = 100 * time.Millisecond
	MaxNoSpaceBackoff = 5 * time.Second
)

// Watcher drives an opened replay.Applier: it steps it whenever a journal
// may have grown, as told by fsnotify events, and on a periodic rescan. An
// event names the agent whose folder changed, and the step reads that agent
// only; the rescan looks at every agent folder (a listing and a stat or two
// each, no file opened) and reads those that changed. Events are only
// hints: a lost one costs latency, never data.
type Watcher struct {
	RescanInterval    time.Duration // set by New
	HeartbeatInterval time.Duration // set by New

	// Heartbeat, if set, is called from the apply loop on every pass and at
	// least every HeartbeatInterval while the loop is alive. A wedged loop
	// stops calling it (systemd's watchdog relies on that). The heartbeat
	// only beats: it does not step the Applier.
	Heartbeat func()

	applier *replay.Applier
	logger  hclog.Logger

	// newNotify creates the file event source; tests replace it to run
	// without events, or with a watch limit.
	newNotify func() (notifier, error)

	mu      sync.Mutex          // guards touched and all
	touched map[string]struct{} // agents named by events since the last step
	all     bool                // an overflow or watcher error: rescan every agent
}

// notifier is the part of *fsnotify.Watcher the Watcher uses.
type notifier interface {
	Add(name string) error
	Close() error
	Events() <-chan fsnotify.Event
	Errors() <-chan error
}

// fsNotifier adapts *fsnotify.Watcher to notifier.
type fsNotifier struct{ *fsnotify.Watcher }

func (f fsNotifier) Events() <-chan fsnotify.Event { return f.Watcher.Events }
func (f fsNotifier) Errors() <-chan error          { return f.Watcher.Errors }

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
		newNotify: func() (notifier, error) {
			fw, err := fsnotify.NewWatcher()
			if err != nil {
				return nil, err
			}
			return fsNotifier{fw}, nil
		},
	}
}

// Run processes journals until ctx is done, then returns nil after the batch
// in progress is committed. It returns an error if a step fails (the
// Applier is then unusable: restart and recover).
//
// It steps the Applier when an event names an agent (reading that agent),
// at every RescanInterval (looking at every agent folder; less often if a
// rescan takes more than 1/RescanShare of it), and again at once after a
// step that processed lines. HeartbeatInterval only paces Heartbeat.
func (w *Watcher) Run(ctx context.Context) error {
	if w.RescanInterval <= 0 || w.HeartbeatInterval <= 0 {
		return fmt.Errorf("watcher: intervals must be > 0 (rescan %s, heartbeat %s)", w.RescanInterval, w.HeartbeatInterval)
	}
	a := w.applier
	a.Hinted = true
	defer func() { a.Hinted = false }()
	a.Rescan() // read every journal from its durable position first
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
	rescan := time.NewTimer(w.RescanInterval)
	defer rescan.Stop()
	beat := time.NewTicker(w.HeartbeatInterval)
	defer beat.Stop()
	backoff := MinNoSpaceBackoff
	step, rescanned := true, false
	for {
		if w.Heartbeat != nil {
			w.Heartbeat()
		}
		if err := ctx.Err(); err != nil {
			return nil
		}
		if !step {
			select {
			case <-ctx.Done():
				return nil
			case <-kick:
				step = true
			case <-rescan.C:
				a.Rescan()
				step = true
				rescanned = true
			case <-beat.C:
			}
			continue
		}
		w.handOver()
		n, err := a.Step(ctx)
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
		step = n > 0 // more may be ready: step again before sleeping
		if rescanned {
			rescanned = false
			rescan.Reset(max(w.RescanInterval, RescanShare*a.ScanTime()))
		}
	}
}

// handOver passes the agents named by events since the last step to the
// Applier.
func (w *Watcher) handOver() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name := range w.touched {
		w.applier.Touch(name)
	}
	clear(w.touched)
	if w.all {
		w.applier.Rescan()
		w.all = false
	}
}

// touch notes, from the event goroutine, that an agent's folder changed.
func (w *Watcher) touch(agent string, all bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.touched == nil {
		w.touched = map[string]struct{}{}
	}
	if agent != "" {
		w.touched[agent] = struct{}{}
	}
	w.all = w.all || all
}

// startNotify watches the journal folder and every agent folder in it. Its
// goroutine drains Events and Errors in one loop and never touches the disk
// beyond adding watches: it only notes which agent changed and pokes the
// apply loop.
func (w *Watcher) startNotify(ctx context.Context, poke func()) (notifier, error) {
	root := filepath.Join(w.applier.Dir(), "journal") // Applier.Open created it
	fw, err := w.newNotify()
	if err != nil {
		return nil, err
	}
	if err := fw.Add(root); err != nil {
		fw.Close()
		return nil, fmt.Errorf("watch %s: %w", root, err)
	}
	lim := &watchLimit{}
	w.addAgents(fw, root, lim)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-fw.Events():
				if !ok {
					return
				}
				switch dir := filepath.Dir(ev.Name); {
				case dir == root:
					// An agent folder created, removed or renamed. A new one
					// is watched, and read at once so that what was written
					// before the watch was added is not missed.
					name := filepath.Base(ev.Name)
					if ev.Has(fsnotify.Create) {
						w.addWatch(fw, ev.Name, lim)
					}
					w.touch(name, false)
				case filepath.Dir(dir) == root:
					w.touch(filepath.Base(dir), false)
				default:
					continue
				}
				poke()
			case err, ok := <-fw.Errors():
				if !ok {
					return
				}
				if errors.Is(err, fsnotify.ErrEventOverflow) {
					w.logger.Warn("file event queue overflowed; rescanning every journal")
				} else {
					w.logger.Warn("file watcher error; rescanning every journal", "error", err)
				}
				w.addAgents(fw, root, lim)
				w.touch("", true)
				poke()
			}
		}
	}()
	return fw, nil
}

// watchLimit remembers that the system's limit on watches was reached, so
// that it is logged once.
type watchLimit struct{ reached bool }

// addAgents watches every agent folder under root (adding a watch twice is
// harmless).
func (w *Watcher) addAgents(fw notifier, root string, lim *watchLimit) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range ents {
		// .forget holds the requests of `stateward forget`.
		if e.IsDir() && (journal.ValidAgentName(e.Name()) || e.Name() == ".forget") {
			if !w.addWatch(fw, filepath.Join(root, e.Name()), lim) {
				return
			}
		}
	}
}

// addWatch watches one agent folder. It returns false once the system's
// limit on watches is reached (fs.inotify.max_user_watches): the agents
// left without a watch are served by the periodic rescan, logged once.
func (w *Watcher) addWatch(fw notifier, folder string, lim *watchLimit) bool {
	if lim.reached {
		return false
	}
	err := fw.Add(folder)
	switch {
	case err == nil, errors.Is(err, os.ErrNotExist):
		return true
	case errors.Is(err, syscall.ENOSPC):
		lim.reached = true
		w.logger.Warn("out of file watches (raise fs.inotify.max_user_watches); agent folders without one are read at the periodic rescan only",
			"interval", w.RescanInterval, "folder", folder)
		return false
	default:
		w.logger.Warn("cannot watch agent folder; the periodic rescan covers it", "folder", folder, "error", err)
		return true
	}
}
