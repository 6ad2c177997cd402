//go:build browser

// The browser test needs Debian's chromium. It is kept out of `go test
// ./...` by the build tag "browser"; .ci/test.d/40-browser installs
// chromium where it is missing and runs it:
//
//	go test -tags browser -run TestBrowser ./observe/
//
// It fails, never skips, when chromium is missing.

package observe_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/stateward/stateward/journal"
)

// workload runs agents in a closed loop (append, wait for the result) until
// ctx is done: they claim tasks of one board (racing, so some conflict),
// count their claims, and now and then send an intent that is rejected.
func workload(ctx context.Context, t *testing.T, dir string, agents int) (wait func()) {
	var wg sync.WaitGroup
	for i := range agents {
		name := fmt.Sprintf("agent-%d", i+1)
		wg.Go(func() {
			w, err := journal.OpenWriter(dir, name)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				return
			}
			defer w.Close()
			res, err := journal.OpenResults(dir, name)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				return
			}
			defer res.Close()
			for n := 0; ctx.Err() == nil; n++ {
				task := fmt.Sprintf("t%d", (n*7+i)%40)
				in := patch("tasks.json", fmt.Sprintf(`[{"op":"test","path":"/tasks/%s/owner","value":""},{"op":"replace","path":"/tasks/%s/owner","value":%q}]`, task, task, name))
				switch {
				case n%5 == 4:
					in = patch("metrics.json", fmt.Sprintf(`[{"op":"inc","path":"/claims/%s","value":1}]`, name))
				case n%23 == 22:
					in = patch("memory.json", `[{"op":"remove","path":"/nothing"}]`) // rejected
				case n%7 == 6:
					in = patch("tasks.json", fmt.Sprintf(`[{"op":"replace","path":"/tasks/%s/owner","value":""}]`, task)) // release
				}
				out, err := w.Append(in)
				if err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				if _, err := res.Wait(ctx, out.Seq); err != nil && ctx.Err() == nil {
					t.Errorf("%s: wait: %v", name, err)
					return
				}
			}
		})
	}
	return wg.Wait
}

// TestBrowser loads the status page in headless Chromium while agents
// work, checks that the documents and agents appear and that the commit
// count moves, and saves a screenshot: to $STATEWARD_SCREENSHOT if set
// (docs/status-page.png is made so), else to a temporary file it names.
// $STATEWARD_BROWSER_WARMUP (a duration) lets the agents work that long
// first, so that the plots have something to show.
func TestBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found (%v): install Debian's chromium; .ci/test.d/40-browser does", err)
	}
	r := newRig(t)
	r.open(t)
	// The board: 40 open tasks (owner ""), and the counters.
	tasks := map[string]any{}
	for i := range 40 {
		tasks[fmt.Sprintf("t%d", i)] = map[string]any{"owner": "", "title": fmt.Sprintf("task %d", i)}
	}
	board, _ := json.Marshal(map[string]any{"tasks": tasks})
	r.submit(t, "setup",
		journal.Intent{File: "tasks.json", IfVersion: ver(0), Merge: board},
		journal.Intent{File: "metrics.json", IfVersion: ver(0), Merge: json.RawMessage(`{"claims":{}}`)},
		journal.Intent{File: "memory.json", IfVersion: ver(0), Merge: json.RawMessage(`{"notes":[]}`)})

	ctx, stopAgents := context.WithCancel(t.Context())
	waitAgents := workload(ctx, t, r.dir, 6)
	defer waitAgents()
	defer stopAgents()
	if d, err := time.ParseDuration(os.Getenv("STATEWARD_BROWSER_WARMUP")); err == nil && d > 0 {
		<-time.After(d) // let the plots fill; the test waits on conditions below
	}

	alloc, cancel := chromedp.NewExecAllocator(t.Context(),
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1200),
	)
	defer cancel()
	bctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	// The first Run starts the browser and lives as long as bctx: no
	// timeout on it; each step below has its own.
	if err := chromedp.Do(bctx, chromedp.Navigate(r.http.URL+"/")); err != nil {
		t.Fatalf("open the page in chromium: %v", err)
	}
	step := func(what string, a chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, a); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}

	for _, doc := range []string{"tasks.json", "metrics.json", "memory.json"} {
		step("document "+doc+" shown", chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#docs tr[data-doc=%q]`, doc))))
	}
	for i := range 6 {
		step("agent shown", chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#agents tr[data-agent="agent-%d"]`, i+1))))
	}
	if got := text(`#watcher`); !strings.HasPrefix(got, "running") {
		t.Errorf("watcher pill %q, want running (pid ...)", got)
	}
	commit := func() int {
		s := strings.ReplaceAll(text("#commit"), ",", "")
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("#commit %q: %v", s, err)
		}
		return n
	}
	first := commit()
	deadline := time.Now().Add(30 * time.Second)
	for commit() <= first {
		if time.Now().After(deadline) {
			t.Fatalf("the commit count on the page stayed at %d for 30s while agents work", first)
		}
		step("poll", chromedp.Sleep(200*time.Millisecond)) // polling the page for a condition
	}
	step("recent changes listed", chromedp.WaitVisible(chromedp.CSS(`#changes tbody span.badge.applied`)))

	out := os.Getenv("STATEWARD_SCREENSHOT")
	if out == "" {
		out = filepath.Join(os.TempDir(), "stateward-status-page.png")
	}
	sctx, cancelShot := context.WithTimeout(bctx, 30*time.Second)
	defer cancelShot()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes); commit went from %d on the page", out, len(png), first)
}
