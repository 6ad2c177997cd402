package observe

import (
	"cmp"
	"errors"
	"slices"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/stateward/stateward/journal"
	"github.com/stateward/stateward/replay"
)

// maxSeries bounds the series of a metric labelled by agent or document,
// so that a swarm of thousands of agents cannot flood Prometheus: the
// maxSeries agents with the largest backlog (ties by name) get a series
// each, and the others are summed under agent="_other"; the first
// maxSeries documents by name get one each, the size of the others is
// summed under document="_other". Names of agents and documents start with
// a letter or digit, so "_other" is never a real one.
const maxSeries = 100

// otherLabel is the label value of what is summed beyond maxSeries.
const otherLabel = "_other"

// metrics are the collectors the commit path updates.
type metrics struct {
	commits      prometheus.Counter
	intents      *prometheus.CounterVec
	retries      prometheus.Counter
	batches      prometheus.Counter
	adoptions    prometheus.Counter
	batchIntents prometheus.Histogram
	batchSeconds prometheus.Histogram
	batchBytes   prometheus.Histogram
	fsyncSeconds prometheus.Histogram
	recovery     prometheus.Gauge
}

// newMetrics registers every collector of s on s.reg.
func newMetrics(s *Server) *metrics {
	m := &metrics{
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stateward_commits_total",
			Help: "Intents given a commit number (applied, conflict or rejected) since the watcher started.",
		}),
		intents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stateward_intents_total",
			Help: "Intents processed since the watcher started, by result status (retries not included).",
		}, []string{"status"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stateward_intent_retries_total",
			Help: "Repeated intents (same seq or id) answered with a copy of the original result since the watcher started.",
		}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stateward_batches_total",
			Help: "Batches committed since the watcher started.",
		}),
		adoptions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stateward_adoptions_total",
			Help: "Changes made to documents outside stateward and taken in as new versions since the watcher started.",
		}),
		batchIntents: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stateward_batch_intents",
			Help:    "Journal lines processed per batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14), // 1 .. 8192 (DefaultMaxBatch)
		}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stateward_batch_duration_seconds",
			Help:    "Time from reading the journals to the last result written, per batch.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		batchBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stateward_batch_written_bytes",
			Help:    "Bytes written per batch: commit record, documents and results.",
			Buckets: prometheus.ExponentialBuckets(256, 4, 10), // 256 B .. 64 MiB
		}),
		fsyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stateward_fsync_duration_seconds",
			Help:    "Time of the fsync of each batch's commit record, which every batch waits for.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		recovery: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "stateward_recovery_duration_seconds",
			Help: "How long the last recovery (start-up) took.",
		}),
	}
	for _, st := range []string{journal.StatusApplied, journal.StatusConflict, journal.StatusRejected} {
		m.intents.WithLabelValues(st) // every status shows, from 0
	}
	s.reg.MustRegister(m.commits, m.intents, m.retries, m.batches, m.adoptions,
		m.batchIntents, m.batchSeconds, m.batchBytes, m.fsyncSeconds, m.recovery,
		newStatusCollector(s),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// batch counts a committed batch.
func (m *metrics) batch(b replay.BatchStats) {
	for _, c := range b.Changes {
		if c.Result.Retry {
			m.retries.Inc()
			continue
		}
		m.commits.Inc()
		m.intents.WithLabelValues(c.Result.Status).Inc()
	}
	m.batches.Inc()
	m.adoptions.Add(float64(len(b.Adopted)))
	m.batchIntents.Observe(float64(len(b.Changes)))
	m.batchSeconds.Observe(b.Took.Seconds())
	m.batchBytes.Observe(float64(b.Bytes))
	m.fsyncSeconds.Observe(b.LogSync.Seconds())
}

// statusCollector reports what is read from the files at each scrape (as
// `stateward status` reads it) and the watcher's health.
type statusCollector struct {
	s *Server

	healthy, commit, agents, backlogTotal, backlog       *prometheus.Desc
	docs, unusable, version, size, disk, fsAvail, fsSize *prometheus.Desc
}

func newStatusCollector(s *Server) *statusCollector {
	d := prometheus.NewDesc
	return &statusCollector{
		s:            s,
		healthy:      d("stateward_healthy", "1 while the watcher is recovered and its apply loop alive (as /healthz), else 0.", nil, nil),
		commit:       d("stateward_commit_number", "Last commit number: it counts every intent ever processed in this state directory.", nil, nil),
		agents:       d("stateward_agents", "Agents with a journal folder.", nil, nil),
		backlogTotal: d("stateward_backlog_intents", "Complete journal lines of all agents not processed yet.", nil, nil),
		backlog: d("stateward_agent_backlog_intents", "Complete journal lines of an agent not processed yet "+
			"(the 100 largest backlogs; the rest summed under agent=\"_other\").", []string{"agent"}, nil),
		docs:     d("stateward_documents", "Documents the watcher knows, existing or not.", nil, nil),
		unusable: d("stateward_documents_unusable", "Documents whose state is not ok (invalid JSON, changed or deleted outside stateward, unreadable).", nil, nil),
		version:  d("stateward_document_version", "Version of a document (the first 100 documents by name).", []string{"document"}, nil),
		size: d("stateward_document_size_bytes", "Size of a document on disk (the first 100 documents by name; "+
			"the rest summed under document=\"_other\").", []string{"document"}, nil),
		disk:    d("stateward_disk_usage_bytes", "Bytes of the state directory by part: documents, journals, results, commit_log, checkpoints.", []string{"part"}, nil),
		fsAvail: d("stateward_filesystem_avail_bytes", "Bytes available to the watcher on the file system of the state directory.", nil, nil),
		fsSize:  d("stateward_filesystem_size_bytes", "Size of the file system of the state directory.", nil, nil),
	}
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.healthy, c.commit, c.agents, c.backlogTotal, c.backlog,
		c.docs, c.unusable, c.version, c.size, c.disk, c.fsAvail, c.fsSize} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ok, _ := c.s.health()
	gauge(c.healthy, boolFloat(ok))
	var fs syscall.Statfs_t
	if err := syscall.Statfs(c.s.dir, &fs); err == nil {
		gauge(c.fsAvail, float64(fs.Bavail)*float64(fs.Bsize))
		gauge(c.fsSize, float64(fs.Blocks)*float64(fs.Bsize))
	}
	st, err := c.s.readStatus()
	if errors.Is(err, errNotReady) {
		return // the rest is read from the files once the watcher holds them
	}
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.agents, err)
		return
	}
	c.s.mu.Lock()
	commit := max(c.s.commit, st.Commit)
	c.s.mu.Unlock()
	gauge(c.commit, float64(commit))

	gauge(c.agents, float64(len(st.Agents)))
	agents := slices.Clone(st.Agents)
	slices.SortFunc(agents, func(a, b replay.AgentStatus) int {
		return cmp.Or(cmp.Compare(b.Backlog, a.Backlog), cmp.Compare(a.Agent, b.Agent))
	})
	total, other := 0, 0
	for i, ag := range agents {
		total += ag.Backlog
		if i < maxSeries {
			gauge(c.backlog, float64(ag.Backlog), ag.Agent)
		} else {
			other += ag.Backlog
		}
	}
	if len(agents) > maxSeries {
		gauge(c.backlog, float64(other), otherLabel)
	}
	gauge(c.backlogTotal, float64(total))

	gauge(c.docs, float64(len(st.Docs)))
	unusable, otherSize := 0, int64(0)
	for i, d := range st.Docs { // sorted by name
		if d.State != "ok" {
			unusable++
		}
		if i < maxSeries {
			gauge(c.version, float64(d.Version), d.File)
			gauge(c.size, float64(d.Size), d.File)
		} else {
			otherSize += d.Size
		}
	}
	if len(st.Docs) > maxSeries {
		gauge(c.size, float64(otherSize), otherLabel)
	}
	gauge(c.unusable, float64(unusable))

	for part, n := range map[string]int64{
		"documents":   st.Disk.Documents,
		"journals":    st.Disk.Journals,
		"results":     st.Disk.Results,
		"commit_log":  st.Disk.CommitLog,
		"checkpoints": st.Disk.Checkpoints,
	} {
		gauge(c.disk, float64(n), part)
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
