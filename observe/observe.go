package observe

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/stateward/stateward/journal"
	"github.com/stateward/stateward/replay"
)

// DefaultStaleAfter is how long the apply loop may go without a heartbeat
// before /healthz reports it dead. The loop beats at least every second
// when idle; a batch longer than this (a disk that stalls) also counts as
// dead while it lasts.
const DefaultStaleAfter = 15 * time.Second

// statusMaxAge is how long a status read from the files serves the
// endpoints before it is read again: a scrape, the page and /api/status
// coming together read the files once.
const statusMaxAge = 500 * time.Millisecond

// errNotReady is the error of a status asked for while the watcher
// recovers or stops: the files are read only while it holds the lock.
var errNotReady = errors.New("observe: the watcher is not running (recovering or stopping)")

//go:embed page/index.html
var page []byte

// Server serves the endpoints of one watcher's state directory. It
// implements replay.Metrics. Its methods are safe for concurrent use.
type Server struct {
	StaleAfter time.Duration // heartbeat age after which the loop is dead; set by New
	// AllowRemote, if false, refuses requests whose Host header is not a
	// loopback address or localhost (DNS rebinding); set by New to false.
	AllowRemote bool

	dir     string
	logger  hclog.Logger
	reg     *prometheus.Registry
	metrics *metrics
	started time.Time

	mu           sync.Mutex // guards the fields below
	recovered    bool
	stopping     bool
	recoveryTook time.Duration
	lastBeat     time.Time
	commit       uint64
	batches      uint64
	intents      map[string]uint64
	hist         *history

	statusMu sync.Mutex // guards status and statusAt; held while reading the files
	status   *replay.Status
	statusAt time.Time
}

// New returns a Server for the state directory dir. It reports the watcher
// as recovering until Recovered is called.
func New(dir string, logger hclog.Logger) *Server {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s := &Server{
		StaleAfter: DefaultStaleAfter,
		dir:        dir,
		logger:     logger,
		reg:        prometheus.NewRegistry(),
		started:    time.Now(),
		intents:    map[string]uint64{},
		hist:       newHistory(),
	}
	s.metrics = newMetrics(s)
	return s
}

// Batch records a committed batch (replay.Metrics).
func (s *Server) Batch(b replay.BatchStats) {
	s.metrics.batch(b)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commit = max(s.commit, b.Commit)
	s.batches++
	for _, c := range b.Changes {
		if c.Result.Retry {
			s.intents["retry"]++
		} else {
			s.intents[c.Result.Status]++
		}
	}
	s.hist.add(now, b)
	s.lastBeat = now
}

// Recovered records that recovery finished in took, at commit, and that
// the apply loop starts.
func (s *Server) Recovered(took time.Duration, commit uint64) {
	s.metrics.recovery.Set(took.Seconds())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recovered, s.recoveryTook, s.lastBeat = true, took, time.Now()
	s.commit = max(s.commit, commit)
}

// Beat records that the apply loop is alive. The watcher calls it on every
// heartbeat of the loop.
func (s *Server) Beat() {
	s.mu.Lock()
	s.lastBeat = time.Now()
	s.mu.Unlock()
}

// Stopping records that the watcher stops: /healthz answers 503 from now on
// and the files are no longer read. Call it before closing the Applier.
func (s *Server) Stopping() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
}

// health reports whether the watcher is recovered with its loop alive, and
// if not, why.
func (s *Server) health() (ok bool, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopping:
		return false, "stopping"
	case !s.recovered:
		return false, "recovering"
	}
	if quiet := time.Since(s.lastBeat); quiet > s.StaleAfter {
		return false, fmt.Sprintf("apply loop silent for %s", quiet.Round(time.Second))
	}
	return true, "ok"
}

// readStatus returns the status of the state directory, read at most
// statusMaxAge ago. It reads the files only once recovery is done and
// until the watcher stops: before, a crash's batch may be half finished
// and the documents may not agree with the versions file yet.
func (s *Server) readStatus() (*replay.Status, error) {
	s.mu.Lock()
	ready := s.recovered && !s.stopping
	s.mu.Unlock()
	if !ready {
		return nil, errNotReady
	}
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	if s.status != nil && time.Since(s.statusAt) < statusMaxAge {
		return s.status, nil
	}
	st, err := replay.ReadStatus(s.dir)
	// The versions file and the documents are read one after the other, so
	// a read in the middle of a batch can see a document renamed before
	// its version is written, which looks like an edit made outside
	// stateward. Such a state is read again, up to twice, before it is
	// reported: the page and the alert on it should not flicker.
	for range 2 {
		if err != nil || !outsideChange(st) {
			break
		}
		st, err = replay.ReadStatus(s.dir)
	}
	if err != nil {
		return nil, err
	}
	s.status, s.statusAt = st, time.Now()
	return st, nil
}

// Handler returns the handler of every endpoint.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", s.servePage)
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      s.logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}))
	mux.HandleFunc("/healthz", s.serveHealth)
	mux.HandleFunc("/api/status", s.serveStatus)
	mux.HandleFunc("/api/live", s.serveLive)
	return s.guard(mux)
}

// guard answers 405 to every method but GET and HEAD, and 403 to a request
// for a host other than the loopback unless AllowRemote; it passes the
// rest to next.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "read only: use GET", http.StatusMethodNotAllowed)
			return
		}
		if !s.AllowRemote && !loopbackHost(r.Host) {
			http.Error(w, "forbidden host: this server answers to a loopback address or localhost only", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// Everything is in the page: nothing may load from anywhere else.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "+
		"img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	w.Write(page)
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	ok, why := s.health()
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, why)
}

func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.readStatus()
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, errNotReady) {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) serveLive(w http.ResponseWriter, r *http.Request) {
	st, _ := s.readStatus() // may be nil: the page shows what there is
	now := time.Now()
	ok, why := s.health()
	s.mu.Lock()
	live := Live{
		Now:             now.UTC(),
		Started:         s.started.UTC(),
		Healthy:         ok,
		Health:          why,
		Recovered:       s.recovered,
		RecoverySeconds: s.recoveryTook.Seconds(),
		Commit:          s.commit,
		Batches:         s.batches,
		Intents:         map[string]uint64{},
		Series:          s.hist.series(now),
		Changes:         s.hist.recent(),
		Docs:            map[string]DocSeen{},
		Agents:          map[string]AgentSeen{},
	}
	for _, k := range []string{journal.StatusApplied, journal.StatusConflict, journal.StatusRejected, "retry"} {
		live.Intents[k] = s.intents[k]
	}
	for name, d := range s.hist.docs {
		live.Docs[name] = d
	}
	for name, t := range s.hist.agents {
		live.Agents[name] = AgentSeen{Time: t}
	}
	s.mu.Unlock()
	if st != nil {
		live.Commit = max(live.Commit, st.Commit)
		// What happened before the watcher started: the files' times.
		for _, d := range st.Docs {
			if _, ok := live.Docs[d.File]; !ok && d.Exists {
				if fi, err := os.Lstat(filepath.Join(s.dir, d.File)); err == nil {
					live.Docs[d.File] = DocSeen{Time: fi.ModTime().UTC()}
				}
			}
		}
		for _, ag := range st.Agents {
			if _, ok := live.Agents[ag.Agent]; !ok {
				if t, ok := newestSegmentTime(filepath.Join(s.dir, "journal", ag.Agent)); ok {
					live.Agents[ag.Agent] = AgentSeen{Time: t}
				}
			}
		}
	}
	writeJSON(w, http.StatusOK, live)
}

// outsideChange reports whether st shows a document changed or deleted
// outside stateward.
func outsideChange(st *replay.Status) bool {
	for _, d := range st.Docs {
		if strings.HasPrefix(d.State, "changed outside") || strings.HasPrefix(d.State, "deleted outside") {
			return true
		}
	}
	return false
}

// newestSegmentTime returns the modification time of the newest segment of
// a journal folder.
func newestSegmentTime(folder string) (time.Time, bool) {
	segs, err := journal.ListSegments(folder)
	if err != nil || len(segs) == 0 {
		return time.Time{}, false
	}
	fi, err := os.Lstat(filepath.Join(folder, journal.SegmentName(segs[len(segs)-1])))
	if err != nil {
		return time.Time{}, false
	}
	return fi.ModTime().UTC(), true
}

// writeJSON answers v as one line of JSON, encoded as `status --json`
// encodes.
func writeJSON(w http.ResponseWriter, code int, v any) {
	out, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(out, '\n'))
}
