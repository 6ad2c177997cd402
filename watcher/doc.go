// Package watcher is stateward's daemon loop. It drives an opened
// replay.Applier: fsnotify events on the journal folder and on every agent
// folder, a slow periodic rescan (RescanInterval, 2 s, spaced further if a
// rescan takes more than 1/RescanShare of it), and a rescan after
// any event-queue overflow or watcher error, all call the same
// Applier.Step, which reads journals from their durable positions. An event
// names the agent whose folder changed, and the step reads that agent only
// (Applier.Touch); a rescan lists the journal folder and stats each agent's
// folder and newest segment, and reads the agents that changed
// (Applier.Rescan). So a batch costs what the agents with new lines cost,
// however many idle agents there are. Events are hints: a lost one costs
// latency, never data, and where inotify does not work (NFS) the rescan
// alone keeps it going. Past the system's limit on watches
// (fs.inotify.max_user_watches) the folders left without one are read at
// the rescan only, logged once.
//
// Events and Errors are drained in one goroutine that never touches the
// disk beyond adding watches; the apply loop runs on the caller's goroutine
// and calls Heartbeat on every pass and every HeartbeatInterval (systemd's
// watchdog rides on it). The heartbeat does not scan. The package writes
// nothing and owns no format.
//
//	w := watcher.New(applier, logger.Named("watcher"))
//	w.Heartbeat = func() { daemon.SdNotify(false, "WATCHDOG=1") }
//	err := w.Run(ctx) // returns nil when ctx is done, after the batch in progress
package watcher
