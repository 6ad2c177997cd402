package observe_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/stateward/stateward/journal"
	"github.com/stateward/stateward/observe"
	"github.com/stateward/stateward/replay"
	"github.com/stateward/stateward/watcher"
)

// rig is a real watcher (Applier driven by a Watcher) with its observe
// Server behind an httptest server on the loopback.
type rig struct {
	dir     string
	applier *replay.Applier
	srv     *observe.Server
	http    *httptest.Server
	stop    func() // stops the apply loop; idempotent
}

// newRig starts the HTTP server on a state directory, before recovery, as
// watch does. Call open to recover and start the loop.
func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{dir: t.TempDir(), stop: func() {}}
	r.applier = replay.NewApplier(r.dir, nil)
	r.srv = observe.New(r.dir, nil)
	r.applier.Metrics = r.srv
	r.http = httptest.NewServer(r.srv.Handler())
	t.Cleanup(r.http.Close)
	return r
}

// open recovers and starts the apply loop, with the Server's heartbeat.
func (r *rig) open(t *testing.T) {
	t.Helper()
	start := time.Now()
	if err := r.applier.Open(); err != nil {
		t.Fatalf("Open: %v", err)
	}
	r.srv.Recovered(time.Since(start), r.applier.Commit())
	w := watcher.New(r.applier, nil)
	w.RescanInterval = 50 * time.Millisecond
	w.HeartbeatInterval = 20 * time.Millisecond
	w.Heartbeat = r.srv.Beat
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stopped := false
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watcher: %v", err)
		}
	}
	t.Cleanup(func() {
		r.stop()
		r.srv.Stopping()
		r.applier.Close()
	})
}

// submit appends intents for agent and waits for their results.
func (r *rig) submit(t *testing.T, agent string, ins ...journal.Intent) []journal.Result {
	t.Helper()
	w, err := journal.OpenWriter(r.dir, agent)
	if err != nil {
		t.Fatalf("OpenWriter: %v", err)
	}
	defer w.Close()
	out, err := w.AppendBatch(ins)
	if err != nil {
		t.Fatalf("AppendBatch: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var res []journal.Result
	for _, in := range out {
		rr, err := journal.WaitResult(ctx, r.dir, agent, in.Seq)
		if err != nil {
			t.Fatalf("wait for %s seq %d: %v", agent, in.Seq, err)
		}
		res = append(res, rr)
	}
	return res
}

func ver(v uint64) *uint64 { return &v }

func patch(file, ops string) journal.Intent {
	return journal.Intent{File: file, Patch: json.RawMessage(ops)}
}

// get does a GET and returns the status code and body.
func (r *rig) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(r.http.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// scrape fetches /metrics and parses it with the Prometheus text parser,
// with the classic (legacy) name rules.
func (r *rig) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := r.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

// value returns the value of the sample of family name with the given
// label pairs (name, value, ...), and whether there is one. A histogram's
// value is its sample count.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// waitFor polls cond until it returns "" or the deadline passes.
func waitFor(t *testing.T, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after 20s", what, why)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, not waiting for time
	}
}

func TestServer_Healthz(t *testing.T) {
	r := newRig(t)
	if code, body := r.get(t, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "recovering") {
		t.Fatalf("before recovery: /healthz = %d %q, want 503 recovering", code, body)
	}
	if code, _ := r.get(t, "/api/status"); code != http.StatusServiceUnavailable {
		t.Fatalf("before recovery: /api/status = %d, want 503", code)
	}
	fams := r.scrape(t)
	if v, ok := value(fams, "stateward_healthy"); !ok || v != 0 {
		t.Fatalf("before recovery: stateward_healthy = %v (present %v), want 0", v, ok)
	}
	r.open(t)
	if code, body := r.get(t, "/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Fatalf("after recovery: /healthz = %d %q, want 200 ok", code, body)
	}
	if v, _ := value(r.scrape(t), "stateward_healthy"); v != 1 {
		t.Fatalf("after recovery: stateward_healthy = %v, want 1", v)
	}
	if _, ok := value(r.scrape(t), "stateward_recovery_duration_seconds"); !ok {
		t.Fatalf("no stateward_recovery_duration_seconds")
	}

	t.Run("LoopSilent", func(t *testing.T) {
		r.srv.StaleAfter = 200 * time.Millisecond
		r.stop() // the apply loop ends: no more heartbeats
		waitFor(t, "/healthz after the loop stopped", func() string {
			code, body := r.get(t, "/healthz")
			if code == http.StatusServiceUnavailable && strings.Contains(body, "apply loop silent") {
				return ""
			}
			return fmt.Sprintf("%d %q", code, body)
		})
	})
	t.Run("Stopping", func(t *testing.T) {
		r.srv.StaleAfter = time.Hour
		r.srv.Beat()
		if code, _ := r.get(t, "/healthz"); code != http.StatusOK {
			t.Fatalf("after Beat: /healthz = %d, want 200", code)
		}
		r.srv.Stopping()
		if code, body := r.get(t, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "stopping") {
			t.Fatalf("after Stopping: /healthz = %d %q, want 503 stopping", code, body)
		}
	})
}

func TestServer_Metrics(t *testing.T) {
	r := newRig(t)
	r.open(t)
	before := r.scrape(t)
	if v, _ := value(before, "stateward_commits_total"); v != 0 {
		t.Fatalf("stateward_commits_total = %v before any intent, want 0", v)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes", "process_open_fds"} {
		if _, ok := value(before, name); !ok {
			t.Errorf("no %s among the process and Go metrics", name)
		}
	}

	res := r.submit(t, "alice",
		journal.Intent{File: "tasks.json", IfVersion: ver(0), Merge: json.RawMessage(`{"tasks":{"t1":{"status":"open"}}}`)},
		patch("tasks.json", `[{"op":"replace","path":"/tasks/t1/status","value":"claimed"}]`))
	if res[1].Status != journal.StatusApplied {
		t.Fatalf("second intent: %+v", res[1])
	}
	r.submit(t, "bob",
		patch("tasks.json", `[{"op":"test","path":"/tasks/t1/status","value":"open"}]`), // conflict
		patch("nothing.json", `[]`), // rejected: an empty patch on a document that does not exist
		patch("metrics.json", `[{"op":"add","path":"","value":{"n":1}}]`))
	// A retry: carol repeats an id.
	w, err := journal.OpenWriter(r.dir, "carol")
	if err != nil {
		t.Fatal(err)
	}
	w.Append(journal.Intent{ID: "x", File: "metrics.json", Patch: json.RawMessage(`[{"op":"inc","path":"/n","value":1}]`)})
	w.Append(journal.Intent{ID: "x", File: "metrics.json", Patch: json.RawMessage(`[{"op":"inc","path":"/n","value":1}]`)})
	w.Close()
	if _, err := journal.WaitResult(t.Context(), r.dir, "carol", 2); err != nil {
		t.Fatal(err)
	}

	// The document's version comes from versions.json, written before the
	// results; the counters and histograms are updated by Server.Batch after
	// the commit, and batches_total before its histograms: wait for all of
	// them (a count that never comes fails at the deadline, with the last
	// value seen).
	batchHists := []string{"stateward_batch_intents", "stateward_batch_duration_seconds", "stateward_batch_written_bytes", "stateward_fsync_duration_seconds"}
	var after map[string]*dto.MetricFamily
	waitFor(t, "document and batch metrics", func() string {
		after = r.scrape(t)
		if v, _ := value(after, "stateward_document_version", "document", "metrics.json"); v != 2 {
			return fmt.Sprintf("metrics.json version %v", v)
		}
		for _, c := range []struct {
			name   string
			labels []string
			want   float64
		}{
			{"stateward_commits_total", nil, 6},
			{"stateward_intents_total", []string{"status", "applied"}, 4},
			{"stateward_intents_total", []string{"status", "conflict"}, 1},
			{"stateward_intents_total", []string{"status", "rejected"}, 1},
			{"stateward_intent_retries_total", nil, 1},
		} {
			if got, _ := value(after, c.name, c.labels...); got != c.want {
				return fmt.Sprintf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
			}
		}
		batches, _ := value(after, "stateward_batches_total")
		if batches < 1 {
			return fmt.Sprintf("stateward_batches_total = %v, want >= 1", batches)
		}
		for _, h := range batchHists {
			if n, _ := value(after, h); n != batches {
				return fmt.Sprintf("%s has %v samples, want one per batch (%v)", h, n, batches)
			}
		}
		return ""
	})
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"stateward_commits_total", nil, 6},
		{"stateward_intents_total", []string{"status", "applied"}, 4},
		{"stateward_intents_total", []string{"status", "conflict"}, 1},
		{"stateward_intents_total", []string{"status", "rejected"}, 1},
		{"stateward_intent_retries_total", nil, 1},
		{"stateward_commit_number", nil, 6},
		{"stateward_document_version", []string{"document", "tasks.json"}, 2},
		{"stateward_documents", nil, 3}, // nothing.json is known, at version 0
		{"stateward_documents_unusable", nil, 0},
		{"stateward_agents", nil, 3},
		{"stateward_agent_backlog_intents", []string{"agent", "alice"}, 0},
		{"stateward_backlog_intents", nil, 0},
	} {
		if got, ok := value(after, c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	batches, _ := value(after, "stateward_batches_total")
	if batches < 1 {
		t.Errorf("stateward_batches_total = %v, want >= 1", batches)
	}
	for _, h := range batchHists {
		if n, ok := value(after, h); !ok || n != batches {
			t.Errorf("%s has %v samples (present %v), want one per batch (%v)", h, n, ok, batches)
		}
	}
	if v, _ := value(after, "stateward_document_size_bytes", "document", "tasks.json"); v < 10 {
		t.Errorf("stateward_document_size_bytes{tasks.json} = %v", v)
	}
	for _, part := range []string{"documents", "journals", "results", "commit_log", "checkpoints"} {
		if _, ok := value(after, "stateward_disk_usage_bytes", "part", part); !ok {
			t.Errorf("no stateward_disk_usage_bytes{part=%q}", part)
		}
	}
	if v, _ := value(after, "stateward_disk_usage_bytes", "part", "commit_log"); v <= 0 {
		t.Errorf("stateward_disk_usage_bytes{commit_log} = %v, want > 0", v)
	}
	if v, _ := value(after, "stateward_filesystem_avail_bytes"); v <= 0 {
		t.Errorf("stateward_filesystem_avail_bytes = %v", v)
	}

	t.Run("Backlog", func(t *testing.T) {
		// Lines appended while the loop is stopped stay in the backlog.
		r.stop()
		w, err := journal.OpenWriter(r.dir, "dave")
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := w.Append(patch("metrics.json", `[{"op":"inc","path":"/n","value":1}]`)); err != nil {
				t.Fatal(err)
			}
		}
		w.Close()
		waitFor(t, "dave's backlog", func() string {
			fams := r.scrape(t)
			a, _ := value(fams, "stateward_agent_backlog_intents", "agent", "dave")
			all, _ := value(fams, "stateward_backlog_intents")
			if a != 3 || all != 3 {
				return fmt.Sprintf("dave %v, all %v", a, all)
			}
			return ""
		})
	})

	t.Run("Lint", func(t *testing.T) {
		_, body := r.get(t, "/metrics")
		problems, err := promlint.New(strings.NewReader(body)).Lint()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			if strings.HasPrefix(p.Metric, "stateward_") {
				t.Errorf("promlint: %s: %s", p.Metric, p.Text)
			}
		}
		fams := r.scrape(t)
		for name, f := range fams {
			if !strings.HasPrefix(name, "stateward_") {
				continue
			}
			if f.GetHelp() == "" {
				t.Errorf("%s has no help", name)
			}
			if f.GetType() == dto.MetricType_COUNTER != strings.HasSuffix(name, "_total") {
				t.Errorf("%s: a counter's name, and only a counter's, ends in _total (type %s)", name, f.GetType())
			}
		}
	})
}

func TestServer_API(t *testing.T) {
	r := newRig(t)
	r.open(t)
	r.submit(t, "alice", journal.Intent{File: "tasks.json", IfVersion: ver(0), Merge: json.RawMessage(`{"a":1}`)})
	r.submit(t, "bob", patch("tasks.json", `[{"op":"replace","path":"/a","value":2}]`))

	t.Run("Status", func(t *testing.T) {
		code, body := r.get(t, "/api/status")
		if code != http.StatusOK {
			t.Fatalf("/api/status: %d %s", code, body)
		}
		var got replay.Status
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("/api/status: %v: %s", err, body)
		}
		want, err := replay.ReadStatus(r.dir)
		if err != nil {
			t.Fatal(err)
		}
		wantJSON, _ := json.Marshal(want)
		gotJSON, _ := json.Marshal(&got)
		if !bytes.Equal(gotJSON, wantJSON) {
			t.Fatalf("/api/status = %s\nwant (status --json) %s", gotJSON, wantJSON)
		}
		if got.Commit != 2 || len(got.Docs) != 1 || len(got.Agents) != 2 || !strings.HasPrefix(got.Watcher, "running") {
			t.Fatalf("/api/status = %s", body)
		}
	})
	t.Run("Live", func(t *testing.T) {
		code, body := r.get(t, "/api/live")
		if code != http.StatusOK {
			t.Fatalf("/api/live: %d %s", code, body)
		}
		var live observe.Live
		if err := json.Unmarshal([]byte(body), &live); err != nil {
			t.Fatalf("/api/live: %v: %s", err, body)
		}
		if !live.Healthy || live.Commit != 2 || live.Intents["applied"] != 2 {
			t.Fatalf("/api/live = %s", body)
		}
		if len(live.Changes) != 2 || live.Changes[0].Agent != "bob" || live.Changes[0].Commit != 2 || live.Changes[1].Agent != "alice" {
			t.Fatalf("changes (newest first) = %+v", live.Changes)
		}
		if d := live.Docs["tasks.json"]; d.By != "bob" || d.Commit != 2 {
			t.Fatalf("last change of tasks.json = %+v, want by bob at commit 2", d)
		}
		if _, ok := live.Agents["alice"]; !ok {
			t.Fatalf("alice never seen: %s", body)
		}
		var applied int
		for _, p := range live.Series {
			applied += p.Applied
		}
		if applied != 2 || len(live.Series) == 0 {
			t.Fatalf("series counts %d applied, want 2: %+v", applied, live.Series)
		}
	})
	t.Run("Page", func(t *testing.T) {
		resp, err := http.Get(r.http.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("/: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Fatalf("/: Content-Security-Policy %q", csp)
		}
		// Self-contained: nothing is loaded from anywhere else.
		for _, bad := range []string{"http://", "https://", "<script src", "<link ", "@import", "//cdn"} {
			if i := bytes.Index(bytes.ToLower(body), []byte(bad)); i >= 0 && !bytes.Contains(body[i:min(len(body), i+60)], []byte("www.w3.org/2000/svg")) {
				t.Errorf("/ contains %q: %s", bad, body[i:min(len(body), i+80)])
			}
		}
		if code, _ := r.get(t, "/nothing-here"); code != http.StatusNotFound {
			t.Errorf("/nothing-here = %d, want 404", code)
		}
	})
}

// TestServer_ReadOnly sends every method that could change something to
// every path: each is refused with 405.
func TestServer_ReadOnly(t *testing.T) {
	r := newRig(t)
	r.open(t)
	for _, path := range []string{"/", "/metrics", "/healthz", "/api/status", "/api/live", "/api/anything", "/nothing-here"} {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions, "PROPFIND"} {
			req, err := http.NewRequest(method, r.http.URL+path, strings.NewReader(`{"op":"remove","path":""}`))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			resp.Body.Close()
			if got, want := resp.StatusCode, http.StatusMethodNotAllowed; got != want {
				t.Errorf("%s %s = %d, want %d", method, path, got, want)
			}
			if got := resp.Header.Get("Allow"); got != "GET, HEAD" {
				t.Errorf("%s %s: Allow %q", method, path, got)
			}
		}
	}
	if code, _ := r.get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("GET /healthz = %d after the refused requests", code)
	}
}

// TestServer_Host checks that a request naming another host is refused
// (DNS rebinding) unless remote access is allowed.
func TestServer_Host(t *testing.T) {
	r := newRig(t)
	r.open(t)
	do := func(host string) int {
		req, _ := http.NewRequest(http.MethodGet, r.http.URL+"/api/status", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for host, want := range map[string]int{
		"localhost:9440":       http.StatusOK,
		"127.0.0.1":            http.StatusOK,
		"[::1]:9440":           http.StatusOK,
		"attacker.example:80":  http.StatusForbidden,
		"192.168.1.10:9440":    http.StatusForbidden,
		"127.0.0.1.nip.io:943": http.StatusForbidden,
	} {
		if got := do(host); got != want {
			t.Errorf("Host %s: %d, want %d", host, got, want)
		}
	}
	r.srv.AllowRemote = true
	if got := do("watcher.example:9440"); got != http.StatusOK {
		t.Errorf("AllowRemote, Host watcher.example: %d, want 200", got)
	}
}

func TestCheckAddr(t *testing.T) {
	for _, c := range []struct {
		addr   string
		remote bool
		ok     bool
	}{
		{"127.0.0.1:9440", false, true},
		{"127.0.0.1:0", false, true},
		{"127.1.2.3:9440", false, true},
		{"[::1]:9440", false, true},
		{"localhost:9440", false, true},
		{":9440", false, false},
		{"0.0.0.0:9440", false, false},
		{"[::]:9440", false, false},
		{"192.168.1.10:9440", false, false},
		{"example.com:9440", false, false},
		{"0.0.0.0:9440", true, true},
		{":9440", true, true},
		{"127.0.0.1", false, false},
		{"", false, false},
	} {
		err := observe.CheckAddr(c.addr, c.remote)
		if (err == nil) != c.ok {
			t.Errorf("CheckAddr(%q, %v) = %v, want ok %v", c.addr, c.remote, err, c.ok)
		}
		if err != nil && c.addr != "" && strings.Contains(c.addr, ":") && !errors.Is(err, observe.ErrNotLoopback) && c.addr != "127.0.0.1" {
			t.Errorf("CheckAddr(%q) = %v, want ErrNotLoopback", c.addr, err)
		}
	}
	if _, err := observe.Listen("0.0.0.0:0", false); !errors.Is(err, observe.ErrNotLoopback) {
		t.Fatalf("Listen(0.0.0.0:0) = %v, want ErrNotLoopback", err)
	}
	l, err := observe.Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}

// TestDocs_Metrics checks that docs/operations.md lists every stateward_
// metric served, and that the alert rules there and the Grafana dashboard
// use only metrics that exist.
func TestDocs_Metrics(t *testing.T) {
	r := newRig(t)
	r.open(t)
	r.submit(t, "alice", journal.Intent{File: "a.json", IfVersion: ver(0), Merge: json.RawMessage(`{"n":1}`)})
	served := map[string]bool{}
	for name := range r.scrape(t) {
		if strings.HasPrefix(name, "stateward_") {
			served[name] = true
		}
	}
	ops, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	dash, err := os.ReadFile("../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var board struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dash, &board); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	nameRE := regexp.MustCompile(`stateward_[a-z_]+[a-z]`)
	for name := range served {
		if !bytes.Contains(ops, []byte("`"+name+"`")) && !bytes.Contains(ops, []byte("`"+name+"{")) {
			t.Errorf("docs/operations.md does not list %s", name)
		}
	}
	known := func(n string) bool {
		for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
			if served[strings.TrimSuffix(n, suffix)] && strings.HasSuffix(n, suffix) {
				return true
			}
		}
		return false
	}
	for _, n := range nameRE.FindAllString(string(ops), -1) {
		if !known(n) {
			t.Errorf("docs/operations.md names %s, which is not served", n)
		}
	}
	exprs := 0
	for _, p := range board.Panels {
		for _, tg := range p.Targets {
			exprs++
			for _, n := range nameRE.FindAllString(tg.Expr, -1) {
				if !known(n) {
					t.Errorf("dashboard panel %q uses %s, which is not served", p.Title, n)
				}
			}
		}
	}
	if exprs < 10 {
		t.Errorf("dashboard has %d queries", exprs)
	}
}
