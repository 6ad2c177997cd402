// Command goagent is a stateward agent written against package journal, for
// the TypeScript client's cross-language tests.
//
//	goagent hold DIR AGENT    open the writer, print "locked", hold it until stdin closes
//	goagent claim DIR AGENT   claim open tasks of tasks.json until none is left,
//	                          counting each claim in metrics.json; print a JSON summary
//
// A writer that cannot open prints the error and exits 2.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	"github.com/stateward/stateward/journal"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: goagent hold|claim DIR AGENT")
		os.Exit(2)
	}
	mode, dir, agent := os.Args[1], os.Args[2], os.Args[3]
	w := journal.NewWriter(dir, agent)
	w.LockTimeout = 0
	if mode == "claim" {
		w.LockTimeout = 5 * time.Second
	}
	if err := w.Open(); err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	defer w.Close()
	switch mode {
	case "hold":
		fmt.Println("locked")
		io.Copy(io.Discard, os.Stdin)
	case "claim":
		if gate := os.Getenv("STATEWARD_TEST_GATE"); gate != "" {
			// Start with the others: print "ready", wait for the gate file.
			fmt.Println("ready")
			for {
				if _, err := os.Stat(gate); err == nil {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		if err := claim(dir, agent, w); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

func claim(dir, agent string, w *journal.Writer) error {
	r, err := journal.OpenResults(dir, agent)
	if err != nil {
		return err
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	submit := func(in journal.Intent) (journal.Result, error) {
		out, err := w.Append(in)
		if err != nil {
			return journal.Result{}, err
		}
		return r.Wait(ctx, out.Seq)
	}
	var claims, conflicts, intents int
	for {
		doc, err := journal.ReadDocument(ctx, dir, "tasks.json")
		if err != nil {
			return err
		}
		var board struct {
			Tasks map[string]struct {
				Owner *string `json:"owner"`
			} `json:"tasks"`
		}
		if err := json.Unmarshal(doc.Data, &board); err != nil {
			return err
		}
		var open []string
		for id, t := range board.Tasks {
			if t.Owner == nil {
				open = append(open, id)
			}
		}
		if len(open) == 0 {
			break
		}
		id := open[rand.IntN(len(open))]
		res, err := submit(journal.Intent{File: "tasks.json", Patch: json.RawMessage(fmt.Sprintf(
			`[{"op":"test","path":"/tasks/%s/owner","value":null},{"op":"replace","path":"/tasks/%s/owner","value":%q},{"op":"replace","path":"/tasks/%s/status","value":"claimed"}]`,
			id, id, agent, id))})
		if err != nil {
			return err
		}
		intents++
		switch res.Status {
		case journal.StatusApplied:
			claims++
			m, err := submit(journal.Intent{File: "metrics.json", Patch: json.RawMessage(fmt.Sprintf(`[{"op":"inc","path":"/claims/%s","value":1}]`, agent))})
			if err != nil {
				return err
			}
			intents++
			if m.Status != journal.StatusApplied {
				return fmt.Errorf("inc: %+v", m)
			}
		case journal.StatusConflict:
			conflicts++
		default:
			return fmt.Errorf("claim: %+v", res)
		}
	}
	out, _ := json.Marshal(map[string]any{"agent": agent, "claims": claims, "conflicts": conflicts, "intents": intents})
	fmt.Println(string(out))
	return nil
}
