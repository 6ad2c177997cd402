package main

import (
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

var httpAddrRE = regexp.MustCompile(`addr=http://([0-9.:\[\]]+)/`)

// httpGet does a GET and returns the status code and body ("" and 0 if the
// request failed).
func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestWatch_HTTP runs `watch --http 127.0.0.1:0` and checks that the
// endpoints answer and that the commit counter moves with submitted
// intents; observe's own tests check each endpoint in depth.
func TestWatch_HTTP(t *testing.T) {
	dir := t.TempDir()
	w := startWatcher(t, dir, "--http", "127.0.0.1:0")
	m := httpAddrRE.FindStringSubmatch(w.log.String())
	if m == nil {
		t.Fatalf("no HTTP address in the log:\n%s", w.log)
	}
	base := "http://" + m[1]
	waitFor(t, 10*time.Second, "/healthz 200", func() bool {
		code, _ := httpGet(base + "/healthz")
		return code == http.StatusOK
	})
	mustRun(t, 0, "", "submit", "--dir", dir, "--agent", "alice", "--file", "a.json", "--if-version", "0", "--wait", "--merge", `{"n":1}`)
	waitFor(t, 10*time.Second, "stateward_commits_total 1", func() bool {
		_, body := httpGet(base + "/metrics")
		return strings.Contains(body, "\nstateward_commits_total 1\n") && strings.Contains(body, `stateward_document_version{document="a.json"} 1`)
	})
	if code, body := httpGet(base + "/api/status"); code != http.StatusOK || !strings.Contains(body, `"file":"a.json"`) {
		t.Fatalf("/api/status: %d %s", code, body)
	}
	if code, body := httpGet(base + "/"); code != http.StatusOK || !strings.Contains(body, "<html") {
		t.Fatalf("/: %d %.200s", code, body)
	}
	resp, err := http.Post(base+"/api/status", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /api/status: %d, want 405", resp.StatusCode)
	}
	w.stop(t)
	if code, _ := httpGet(base + "/healthz"); code != 0 {
		t.Fatalf("/healthz answered %d after the watcher stopped", code)
	}
}

// TestWatch_HTTPUsage checks that --http refuses an address off the
// loopback unless --http-allow-remote is given.
func TestWatch_HTTPUsage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--http", "0.0.0.0:9440"},
		{"--http", ":9440"},
		{"--http", "[::]:9440"},
		{"--http", "192.168.1.10:9440"},
		{"--http", "example.com:9440"},
		{"--http", "9440"},
		{"--http-allow-remote"},
	} {
		r := runMain(t, "", append([]string{"watch", "--dir", dir}, args...)...)
		if r.code != exitUsage {
			t.Errorf("watch %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, exitUsage, r.stderr)
		}
		if strings.Contains(args[len(args)-1], ".") && !strings.Contains(r.stderr, "--http-allow-remote") {
			t.Errorf("watch %s: the error does not say how to allow it:\n%s", strings.Join(args, " "), r.stderr)
		}
		if strings.Contains(r.stderr, "observe:") {
			t.Errorf("watch %s: a Go package prefix in the message:\n%s", strings.Join(args, " "), r.stderr)
		}
	}

	// A port that is taken: the watcher does not start.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := runMain(t, "", "watch", "--dir", dir, "--http", l.Addr().String())
	if r.code != exitError || !strings.Contains(r.stderr, "stateward watch: --http: listen: ") {
		t.Errorf("watch --http on a taken port: exit %d, want %d, and the reason:\n%s", r.code, exitError, r.stderr)
	}
}

// TestWatch_HTTPAllowRemote serves on every interface with
// --http-allow-remote (and is reached over the loopback only).
func TestWatch_HTTPAllowRemote(t *testing.T) {
	w := startWatcher(t, t.TempDir(), "--http", "0.0.0.0:0", "--http-allow-remote")
	m := regexp.MustCompile(`addr=http://[0-9.:\[\]]*:([0-9]+)/`).FindStringSubmatch(w.log.String())
	if m == nil {
		t.Fatalf("no HTTP address in the log:\n%s", w.log)
	}
	waitFor(t, 10*time.Second, "/healthz 200", func() bool {
		code, _ := httpGet("http://127.0.0.1:" + m[1] + "/healthz")
		return code == http.StatusOK
	})
}

// TestHTTPServer_Timeouts checks that the server of watch --http bounds
// every phase of a connection: a client that sends its header slowly,
// stops reading an answer, or keeps an idle connection open is cut off.
func TestHTTPServer_Timeouts(t *testing.T) {
	srv := newHTTPServer(http.NotFoundHandler(), hclog.NewNullLogger())
	for _, c := range []struct {
		name string
		d    time.Duration
	}{
		{"ReadHeaderTimeout", srv.ReadHeaderTimeout},
		{"ReadTimeout", srv.ReadTimeout},
		{"WriteTimeout", srv.WriteTimeout},
		{"IdleTimeout", srv.IdleTimeout},
	} {
		if c.d <= 0 || c.d > 5*time.Minute {
			t.Errorf("%s = %v, want set, at most 5m", c.name, c.d)
		}
	}
}
