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
