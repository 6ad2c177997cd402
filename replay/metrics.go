package replay

import (
	"time"

	"github.com/stateward/stateward/journal"
)

// Metrics is told about every batch the Applier commits. Package observe
// implements it for the watcher's /metrics and status page; replay knows
// nothing of either. Batch is called on the goroutine that calls Step,
// after the batch is durable and its results are written: it must return
// quickly and must not call the Applier. Recovery does not call it.
type Metrics interface {
	Batch(BatchStats)
}

// BatchStats describes one committed batch.
type BatchStats struct {
	Batch   uint64        // the batch's number
	Commit  uint64        // last commit number after the batch
	Bytes   int64         // bytes written: commit record, documents and results
	Took    time.Duration // from the start of Step to the last result written
	LogSync time.Duration // the commit record's fsync
	Adopted []string      // documents changed outside stateward and taken in
	Changes []Change      // one per processed journal line, in commit order
}

// Change is one processed journal line: its agent and its result (a retry
// carries Retry and the original's commit number).
type Change struct {
	Agent  string
	Result journal.Result
}

// reportBatch hands the batch just committed to Metrics, if set.
func (a *Applier) reportBatch(entries []entry, start time.Time) {
	if a.Metrics == nil {
		return
	}
	st := BatchStats{
		Batch:   a.batch,
		Commit:  a.m.commit,
		Bytes:   a.written,
		LogSync: a.logSync,
		Changes: make([]Change, len(entries)),
	}
	for _, ad := range a.m.adopted {
		st.Adopted = append(st.Adopted, ad.File)
	}
	for i, e := range entries {
		st.Changes[i] = Change{Agent: e.Agent, Result: e.Result}
	}
	st.Took = time.Since(start)
	a.Metrics.Batch(st)
}
