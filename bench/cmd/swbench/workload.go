package main

import (
	"database/sql"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The workload. The shared document is tasks.json:
//
//	{
//	  "counters": {},                       // "agent-07": n, one per agent
//	  "tasks": {
//	    "task-000000": {"assignee": null, "id": 0, "priority": 2,
//	                    "status": "open", "title": "Refactor module 0"},
//	    ...                                 // ~150 bytes per task
//	  }
//	}
//
// Each agent cycles through four ops: claim its task t, inc its counter,
// release t, inc its counter; then t moves on to the agent's next task. A
// claim tests that t is open and replaces its status and assignee; a
// release tests that the agent is t's assignee and puts it back. Both are a
// patch of three operations [test, replace, replace]. Agent i owns tasks i,
// i+N, i+2N, ... so that the board never runs out and no op conflicts: every
// op is a real write, for every contender. A conflict would be a bug, and
// the bench counts them.

const docName = "tasks.json"

// opKind is what an op does.
type opKind int

const (
	opClaim opKind = iota
	opInc
	opRelease
)

func (k opKind) String() string {
	switch k {
	case opClaim:
		return "claim"
	case opInc:
		return "inc"
	default:
		return "release"
	}
}

// op is one unit of work of one agent.
type op struct {
	kind opKind
	task int // index of the task (claim, release)
}

// agentName returns the name of agent i.
func agentName(i int) string { return fmt.Sprintf("agent-%02d", i) }

// taskID returns the key of task k.
func taskID(k int) string { return fmt.Sprintf("task-%06d", k) }

// opFor returns agent i's j-th op (j from 0) with n agents on a board of
// tasks tasks.
func opFor(i, n, tasks, j int) op {
	owned := (tasks-1-i)/n + 1 // tasks i, i+n, ... below tasks
	t := i + n*((j/4)%owned)
	switch j % 4 {
	case 0:
		return op{kind: opClaim, task: t}
	case 2:
		return op{kind: opRelease, task: t}
	default:
		return op{kind: opInc}
	}
}

// patchFor returns the stateward patch of o for agent name.
func patchFor(o op, name string) []byte {
	switch o.kind {
	case opInc:
		return []byte(`[{"op":"inc","path":"/counters/` + name + `","value":1}]`)
	case opClaim:
		p := "/tasks/" + taskID(o.task)
		return []byte(`[{"op":"test","path":"` + p + `/status","value":"open"},` +
			`{"op":"replace","path":"` + p + `/status","value":"claimed"},` +
			`{"op":"replace","path":"` + p + `/assignee","value":"` + name + `"}]`)
	default:
		p := "/tasks/" + taskID(o.task)
		return []byte(`[{"op":"test","path":"` + p + `/assignee","value":"` + name + `"},` +
			`{"op":"replace","path":"` + p + `/status","value":"open"},` +
			`{"op":"replace","path":"` + p + `/assignee","value":null}]`)
	}
}

// docSize is one document size of the sweep.
type docSize struct {
	Label string // "150KB"
	Tasks int
}

// knownSizes maps the labels of the sweep to task counts.
var knownSizes = []docSize{
	{"15KB", 100},
	{"150KB", 1000},
	{"1.5MB", 10000},
	{"15MB", 100000},
}

func parseSize(s string) (docSize, error) {
	for _, d := range knownSizes {
		if strings.EqualFold(d.Label, s) {
			return d, nil
		}
	}
	if n, err := strconv.Atoi(strings.TrimSuffix(s, "tasks")); err == nil && n > 0 {
		return docSize{Label: fmt.Sprintf("%dtasks", n), Tasks: n}, nil
	}
	return docSize{}, fmt.Errorf("unknown document size %q: use 15KB, 150KB, 1.5MB, 15MB or Ntasks", s)
}

// taskTitle pads titles so that a task takes about 150 bytes of the
// document as stateward writes it (sorted keys, two-space indentation).
func taskTitle(k int) string {
	return fmt.Sprintf("Refactor module %d", k)
}

// boardJSON returns tasks.json with tasks open tasks and no counters,
// encoded as stateward encodes documents (object keys sorted, two-space
// indentation, final newline), so that every contender starts from the same
// bytes.
func boardJSON(tasks int) []byte {
	var b strings.Builder
	b.Grow(tasks * 160)
	b.WriteString("{\n  \"counters\": {},\n  \"tasks\": {\n")
	for k := range tasks {
		fmt.Fprintf(&b, "    %q: {\n", taskID(k))
		b.WriteString("      \"assignee\": null,\n")
		fmt.Fprintf(&b, "      \"id\": %d,\n", k)
		fmt.Fprintf(&b, "      \"priority\": %d,\n", k%5)
		b.WriteString("      \"status\": \"open\",\n")
		fmt.Fprintf(&b, "      \"title\": %q\n", taskTitle(k))
		if k == tasks-1 {
			b.WriteString("    }\n")
		} else {
			b.WriteString("    },\n")
		}
	}
	b.WriteString("  }\n}\n")
	return []byte(b.String())
}

// sqliteDSN is how every SQLite contender opens the database: WAL,
// synchronous=FULL (each commit fsyncs the WAL), a busy timeout, and
// transactions that take the write lock when they begin.
func sqliteDSN(path string, busyMS int) string {
	return "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)" +
		fmt.Sprintf("&_pragma=busy_timeout(%d)", busyMS) + "&_txlock=immediate"
}

const sqliteName = "tasks.db"

// makeSQLite creates the SQLite version of the board at path: the same
// tasks as rows, and one counter row per agent (maxAgents of them).
func makeSQLite(path string, tasks, maxAgents int) error {
	db, err := sql.Open("sqlite", sqliteDSN(path, 5000))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{
		`CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, status TEXT NOT NULL,
			assignee TEXT, priority INTEGER NOT NULL)`,
		`CREATE TABLE counters (agent TEXT PRIMARY KEY, n INTEGER NOT NULL)`,
	} {
		if _, err := db.Exec(q); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
	}
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	st, err := tx.Prepare(`INSERT INTO tasks (id, title, status, assignee, priority) VALUES (?, ?, 'open', NULL, ?)`)
	if err != nil {
		tx.Rollback()
		return err
	}
	for k := range tasks {
		if _, err := st.Exec(k, taskTitle(k), k%5); err != nil {
			tx.Rollback()
			return fmt.Errorf("insert task: %w", err)
		}
	}
	st.Close()
	for i := range maxAgents {
		if _, err := tx.Exec(`INSERT INTO counters (agent, n) VALUES (?, 0)`, agentName(i)); err != nil {
			tx.Rollback()
			return fmt.Errorf("insert counter: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if _, err := db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// copyFile copies src to dst (a fresh board for each cell).
func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}
