// Package watcher is stateward's daemon loop. It drives an
// opened replay.Applier: fsnotify events on the journal folder and on every
// agent folder, a slow periodic rescan, and a rescan after any event-queue
// overflow or watcher error, all call the same Applier.Step, which reads
// every journal from its durable position. Events are hints: a lost one
// costs latency, never data, and where inotify does not work (NFS) the
// rescan alone keeps it going.
//
// Events and Errors are drained in one goroutine that never touches the
// disk beyond adding watches; the apply loop runs on the caller's goroutine
// and calls Heartbeat on every pass (systemd's watchdog rides on it). The
// package writes nothing and owns no format.
//
//	w := watcher.New(applier, logger.Named("watcher"))
//	w.Heartbeat = func() { daemon.SdNotify(false, "WATCHDOG=1") }
//	err := w.Run(ctx) // returns nil when ctx is done, after the batch in progress
package watcher
