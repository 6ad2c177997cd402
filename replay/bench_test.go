package replay

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stateward/stateward/journal"
)

// BenchmarkApplier_Catchup measures batch apply throughput: b.N intents
// from 16 agents already in their journals (claims of tasks on a 1,000-task
// board and inc counters, half each), applied durably by Step: every batch
// pays its fsyncs. Report: intents/s.
func BenchmarkApplier_Catchup(b *testing.B) {
	for _, tasks := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("tasks=%d", tasks), func(b *testing.B) {
			dir := b.TempDir()
			board := string(taskBoard(tasks)) // from patch_test.go
			appendRaw(b, dir, "setup", intentLine(1, "tasks.json", `"patch":[{"op":"add","path":"","value":`+board+`}]`))
			a := MustOpen(b, dir)
			drain(b, a)
			const agents = 16
			lines := make([]strings.Builder, agents)
			for i := range b.N {
				ag := i % agents
				seq := uint64(i/agents + 1)
				if i%2 == 0 {
					task := fmt.Sprintf("task-%04d", (i/2)%tasks)
					lines[ag].WriteString(intentLine(seq, "tasks.json", fmt.Sprintf(
						`"patch":[{"op":"replace","path":"/tasks/%s/status","value":"claimed"},{"op":"replace","path":"/tasks/%s/assignee","value":"agent-%d"}]`, task, task, ag)))
				} else {
					lines[ag].WriteString(intentLine(seq, "tasks.json", fmt.Sprintf(`"patch":[{"op":"inc","path":"/counters/agent-%d","value":1}]`, ag)))
				}
			}
			for ag := range agents {
				folder := filepath.Join(dir, "journal", fmt.Sprintf("agent-%02d", ag))
				if err := os.MkdirAll(folder, 0o755); err != nil {
					b.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(folder, journal.SegmentName(1)), []byte(lines[ag].String()), 0o644); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			n := drain(b, a)
			b.StopTimer()
			if n != b.N {
				b.Fatalf("processed %d intents, want %d", n, b.N)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "intents/s")
			b.ReportMetric(float64(a.batch-1)/b.Elapsed().Seconds(), "batches/s")
		})
	}
}

// BenchmarkApplier_OneAgentAmongIdle measures a batch of one line from one
// agent, as the watcher steps it (Hinted, the agent touched), beside idle
// agents that each processed one intent. The cost should not grow with
// the idle agents.
func BenchmarkApplier_OneAgentAmongIdle(b *testing.B) {
	for _, idle := range []int{0, 2000} {
		b.Run(fmt.Sprintf("idle=%d", idle), func(b *testing.B) {
			dir := b.TempDir()
			for i := range idle {
				appendRaw(b, dir, fmt.Sprintf("idle-%05d", i), intentLine(1, "idle.json", fmt.Sprintf(`"merge":{"i%d":1}`, i)))
			}
			a := MustOpen(b, dir)
			drain(b, a)
			a.Hinted = true
			b.ResetTimer()
			for i := range b.N {
				appendRaw(b, dir, "active", intentLine(uint64(i+1), "active.json", `"merge":{"n":1}`))
				a.Touch("active")
				if n, err := a.Step(b.Context()); err != nil || n != 1 {
					b.Fatalf("Step = %d, %v", n, err)
				}
			}
		})
	}
}
