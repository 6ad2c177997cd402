// Package replay is the only writer of a stateward state directory's shared
// JSON documents. It reads the agents' journals, decides each intent with a
// deterministic state machine, and commits each batch durably; after a crash
// the same code finishes what the crash interrupted ("recovery is not a
// mode": Open recovers, then Step runs, both live and after a crash).
//
// It is not a public API: agents use package journal. The watcher package
// drives an Applier; `stateward replay --verify` calls Verify.
//
// # Usage
//
//	a := replay.NewApplier(dir, logger.Named("replay"))
//	if err := a.Open(); err != nil { ... } // lock, recover
//	defer a.Close()
//	for {
//		n, err := a.Step(ctx) // one batch; n journal lines processed
//		if err != nil { ... } // errors.Is(err, replay.ErrFailed): restart
//		...
//	}
//
// # Files
//
//	DIR/<name>.json                      documents (replaced by rename)
//	DIR/results/<agent>/<N>.jsonl        results, one line per processed line
//	DIR/.stateward/lock                  flocked, holder's pid; DIR is flocked too (G6)
//	DIR/.stateward/commits/<B>.jsonl     the commit log, from batch B
//	DIR/.stateward/checkpoints/<B>.json  the newest checkpoint (G7)
//	DIR/.stateward/versions.json         versions and hashes, for readers
//
// Every access goes through an os.Root on DIR (fs.go): no name, ".." or
// symbolic link leads outside it, and a document must be a regular file.
//
// The commit log has one line per batch:
//
//	+----------+---+-----------------------------------------+----+
//	| crc32c   | " "| JSON commit record                     | \n |
//	| 8 hex    |   | batch, commit, adopt[], entries[],      |    |
//	|          |   | docs{}, journals{}, results{}, synced   |    |
//	+----------+---+-----------------------------------------+----+
//
// Each entry holds the agent, the journal position of the line, the intent
// itself (when it parsed) and the exact result. docs holds each changed
// document's new version and SHA-256 and the SHA-256 it had before; journals
// the new read positions; results where each agent's result lines of the
// batch start; synced the last batch whose results are fsynced. A torn last
// line (no "\n", or a bad checksum with nothing valid after it) is a batch
// that never committed and is cut; damage followed by valid records is
// ErrCorruptLog and recovery stops.
//
// # The commit path
//
// Step reads what is ready (each agent's complete lines in seq order, agents
// interleaved, at most MaxAgentBatch lines each), decides every line in
// memory against the parsed documents, then:
//
//  1. fsyncs the journal segments the batch read and any adopted document
//     (an agent may not have finished its own fsync; a line the log
//     depends on must not vanish after a power loss);
//  2. appends the commit record and fsyncs the log;
//  3. writes each changed document, encoded once for the batch: temp file
//     in DIR, fsync (fs.go; written while the commit record is being made
//     durable), renamed to its swap name and exchanged with the document
//     (docs.go publishDoc: a hand edit it displaces is put back for the
//     next batch to adopt), then one fsync of DIR;
//  4. replaces versions.json (not fsynced: recovery rewrites it);
//  5. appends each agent's result lines (fsynced every
//     ResultsSyncInterval; recovery re-derives them from the log);
//  6. compacts: deletes journal segments wholly behind their agent's
//     cursor, prunes old result segments, and past CheckpointBytes of log
//     writes a checkpoint and deletes the log and checkpoints behind it.
//
// The temp-file recipe is written here (fs.go) rather than taken from
// natefinch/atomic: that package formats errors with %v, so a full disk
// (retry) cannot be told from a failed fsync (stop); it works on paths, not
// through an os.Root; and it hides the steps between which the crash tests
// stop.
//
// A result appears only after its document is durable and versions.json
// names its version, so an agent that reads the file after its result sees
// its own write. A failed fsync, or a write that failed otherwise than for
// lack of space, stops the Applier (ErrFailed): it acknowledges nothing
// more, and the process must restart and recover. A write that failed for
// lack of space (ErrNoSpace) leaves it stale: the next Step (or Open)
// recovers from disk and tries again, until there is space. Every error of
// the commit path, of recovery and of a checkpoint is classified by one
// function (fail). Recovery writes versions.json as advice only: a failure
// to write it is logged and does not fail recovery.
//
// # Crash windows and how recovery closes them
//
// Recovery reads the newest checkpoint and the commit log after it, folds
// them into the machine's bookkeeping (positions, versions, retained
// results), then compares the files with it:
//
//	W1 before the commit record is durable (steps 1-2): the batch never
//	   happened. Nothing was acknowledged; positions come from the previous
//	   record, so its lines are read and decided again.
//	W2 a torn commit record: cut (see above); same as W1. An intact record
//	   that may not have reached the disk is fsynced before it is acted on.
//	W3 after the record, before or during the document writes: each
//	   document whose bytes hash to the record's "prev" is redone from the
//	   record's intents; the result must hash to the record's new SHA-256
//	   (else ErrDiverged). A document already at the new hash is kept.
//	   Temporary files of the interrupted write are removed. A swap file
//	   (the displaced side of an exchange) that holds the record's new or
//	   previous bytes, or the document's current ones, is removed; any
//	   other of the last batch is a hand edit the exchange displaced: it is
//	   put back at the document's name and adopted by the first Step only
//	   if the name still holds the committed version; otherwise (edited or
//	   deleted while down), and for a swap of an earlier batch, it is kept
//	   as ".displaced-<name>-<batch>.<random>", never deleted (adoptSwaps).
//	W4 after the renames, before the directory fsync: a power loss may undo
//	   renames; the document is back at "prev" and W3 redoes it.
//	W5 before or while writing versions.json: recovery rewrites it (or, if
//	   it cannot, the next batch does, before its results).
//	W6 during the results appends, or before their fsync: for every batch
//	   after the last "synced" one, each agent's result bytes are compared
//	   with what the record says they are; a missing or damaged tail is
//	   rewritten from the record, and bytes already right are never written
//	   again, so no result line appears twice and none changes (G4).
//	W7 an external edit adopted by a batch: its bytes are fsynced before the
//	   record (step 1), and the record carries them, so the adoption is
//	   replayable.
//
//	W8 while writing a checkpoint: a checkpoint is used only once renamed
//	   into place, and its folder is fsynced before the log behind it is
//	   deleted; records it covers that are still there are skipped.
//	W9 while deleting journal segments or result segments: only what the
//	   durable log and the fsynced results no longer need is deleted, so a
//	   deletion undone by a power loss, or not done, changes nothing.
//
// A document that differs from the log in any other way was changed by
// someone else after the last commit: the first Step adopts it as a new
// version, logged, and never overwrites it silently (docs/format.md,
// Versions and external edits).
//
// # Determinism
//
// Verify replays the log from the newest checkpoint (or from empty
// documents) through the same machine and checks every decision, every batch's document hashes, the
// journal lines the log copied, and the final bytes on disk (G3). The
// document encoding is deterministic: object keys sorted, two-space
// indentation, numbers kept as written, one "\n" at the end.
package replay
