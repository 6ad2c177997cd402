// Package journal holds stateward's on-disk record formats and the client
// that agents use. It is the public API of stateward: agents import it to
// append intents, wait for their results and read documents with their
// versions. It depends only on the standard library, gofrs/flock and
// fsnotify.
//
// # Layout (docs/format.md)
//
//	DIR/journal/<agent>/<N>.jsonl   an agent's intents, in segments
//	DIR/journal/<agent>/.lock       one Writer per agent (advisory lock)
//	DIR/results/<agent>/<N>.jsonl   the watcher's answers, in segments
//	DIR/.stateward/versions.json    each document's version and SHA-256
//
// A segment's N is the seq of its first record in 20 decimal digits.
// Segments are read in numeric order; only the newest is appended to.
//
// # Records
//
// One JSON object per line, "\n"-terminated. A line without its "\n" is not
// written yet: readers stop before it (Reader.Next returns
// io.ErrUnexpectedEOF) and the watcher waits for it.
//
//	{"seq":7,"file":"tasks.json","if_version":3,"id":"claim-42",
//	 "patch":[{"op":"test","path":"/tasks/42/status","value":"open"},
//	          {"op":"replace","path":"/tasks/42/status","value":"claimed"}]}
//
//	{"seq":7,"id":"claim-42","file":"tasks.json","status":"applied",
//	 "version":4,"commit":1031}
//
// # Durability
//
// Writer.Append writes each record (or AppendBatch several) with one write(2)
// on an O_APPEND file and fsyncs before returning; a new segment's directory
// is fsynced before its first record is acknowledged. A failed write or
// fsync closes the Writer: the tail's state is unknown until Open repairs
// it. Open cuts a torn last line (its Append never returned) and continues
// after the last complete record.
//
// # Usage
//
//	w, err := journal.OpenWriter(dir, "agent-1")
//	rec, err := w.Append(journal.Intent{File: "tasks.json", Patch: patch})
//	res, err := journal.WaitResult(ctx, dir, "agent-1", rec.Seq)
//	doc, err := journal.ReadDocument(ctx, dir, "tasks.json") // data + version
//
// Read-modify-write with optimistic concurrency (if_version, retried with
// backoff on conflict):
//
//	r, err := journal.OpenResults(dir, "agent-1")
//	u := journal.NewUpdater(w, r)
//	res, attempts, err := u.Update(ctx, "state.json", func(doc journal.Document) (journal.Intent, error) {
//		return journal.Intent{Merge: []byte(`{"phase":"review"}`)}, nil
//	})
package journal
