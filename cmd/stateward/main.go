// Command stateward is the stateward daemon and its command-line client.
// See README.md and docs/ for what each subcommand does.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stateward/stateward/cmd/stateward/earlysig"
	"github.com/stateward/stateward/replay"
)

// Exit codes (README.md, docs/operations.md).
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitConflict = 3
	exitRejected = 4
	exitTimeout  = 5
)

func main() {
	ctx, stop := signalContext(os.Args[1:])
	m := &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Hangup: earlysig.Hangup}
	code := m.Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// signalContext returns a context that is cancelled by SIGTERM or SIGINT,
// including one that came before main ran: package earlysig has caught
// them since the process started. Only watch reloads on SIGHUP: for the
// other commands (args) SIGHUP gets its default action back.
func signalContext(args []string) (context.Context, context.CancelFunc) {
	if len(args) == 0 || args[0] != "watch" {
		earlysig.ReleaseHangup()
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-earlysig.Terminate:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// Main is the program with its environment injected, so that tests run it
// in-process.
type Main struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string

	// Hangup, if set, delivers the SIGHUPs that make watch reload; by
	// default watch asks for them itself (signal.Notify) when it starts.
	Hangup <-chan os.Signal

	// Self, if set, returns a command that runs this program with args
	// (demo starts its watcher and agents with it); by default it is the
	// running executable.
	Self func(args ...string) *exec.Cmd

	// Seams for tests, unset in production. hook is called at named points
	// of watch: "recovery" just before recovery runs, on the goroutine that
	// runs it; "heartbeat" on the apply loop at every heartbeat, so that a
	// test can wedge the loop by blocking there. extendEvery, if > 0,
	// replaces the constant extendEvery: how often a recovery still
	// running asks systemd for more time.
	hook        func(point string)
	extendEvery time.Duration
	// open, if set, replaces (*replay.Applier).Open in watch, so that a
	// test can make recovery fail for lack of space.
	open func(*replay.Applier) error
}

const usage = `stateward: many agents, one shared JSON state, no locks.

Usage:
  stateward watch  --dir DIR [--log-level LEVEL] [--log-level-file FILE]
                   [--log-format text|json] [--http ADDR [--http-allow-remote]]
  stateward submit --dir DIR --agent NAME --file DOC [--if-version N] [--id ID]
                   [--merge] [--wait] [--timeout DURATION] [PATCH]
  stateward update --dir DIR --agent NAME --file DOC [--retries N] [--merge]
                   [--skip-if-version] [--timeout DURATION] -- COMMAND...
  stateward edit   --dir DIR --file DOC [--agent NAME] [--timeout DURATION]
  stateward read   --dir DIR DOC
  stateward ready  --dir DIR --file DOC --path POINTER [--match JSON]
                   [--deps NAME] [--done JSON] [--order NAME] [--json]
  stateward status --dir DIR [--json]
  stateward forget --dir DIR --agent NAME [--timeout DURATION]
  stateward replay --dir DIR (--verify | --out DIR2)
  stateward demo   [--agents N] [--tasks N] [--dir DIR]

DIR may also be given as STATEWARD_DIR. Run "stateward COMMAND --help" for
the flags of a command.
`

// Run runs one subcommand and returns the process exit code.
func (m *Main) Run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return exitUsage
	}
	cmds := map[string]func(context.Context, []string) int{
		"watch":      m.watch,
		"submit":     m.submit,
		"update":     m.update,
		"edit":       m.edit,
		"read":       m.read,
		"ready":      m.ready,
		"status":     m.status,
		"forget":     m.forget,
		"replay":     m.replay,
		"demo":       m.demo,
		"demo-agent": m.demoAgent,
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(m.Stdout, usage)
		return exitOK
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(m.Stderr, "stateward: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	return cmd(ctx, args[1:])
}

// flagSet returns a FlagSet for a subcommand that reports to stderr.
func (m *Main) flagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: stateward %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// errHelp is returned by parse when --help was asked for.
var errHelp = flag.ErrHelp

// parse parses flags that may come before or after the positional
// arguments, which it returns.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// usageExit returns the exit code for a parse error.
func usageExit(err error) int {
	if errors.Is(err, errHelp) {
		return exitOK
	}
	return exitUsage
}

// stateDir returns --dir, or STATEWARD_DIR.
func (m *Main) stateDir(dir string) (string, error) {
	if dir == "" {
		dir = m.Getenv("STATEWARD_DIR")
	}
	if dir == "" {
		return "", errors.New("no state directory: give --dir DIR or set STATEWARD_DIR")
	}
	return dir, nil
}

// usageErr prints a usage error and returns its exit code.
func (m *Main) usageErr(cmd string, format string, args ...any) int {
	fmt.Fprintf(m.Stderr, "stateward %s: %s\n", cmd, withoutPrefixes(fmt.Sprintf(format, args...)))
	fmt.Fprintf(m.Stderr, "Run \"stateward %s --help\" for usage.\n", cmd)
	return exitUsage
}

// fail prints an error and returns exitError.
func (m *Main) fail(cmd string, err error) int {
	fmt.Fprintf(m.Stderr, "stateward %s: %s\n", cmd, humanError(err))
	return exitError
}

// packagePrefixes are the prefixes of the Go packages' error texts, which
// say where an error came from in the code, not what went wrong.
var packagePrefixes = []string{"journal: ", "replay: ", "watcher: ", "observe: "}

// humanError returns err's text without Go package prefixes.
func humanError(err error) string { return withoutPrefixes(err.Error()) }

// withoutPrefixes returns msg without Go package prefixes: at its start and
// after each ": " ("write: journal: closed" reads "write: closed").
func withoutPrefixes(msg string) string {
	parts := strings.Split(msg, ": ")
	out := parts[:0]
	for i, p := range parts {
		if i < len(parts)-1 && parts[i+1] != "" && slices.Contains(packagePrefixes, p+": ") {
			continue
		}
		out = append(out, p)
	}
	return strings.Join(out, ": ")
}

// optUint is a flag holding an optional integer >= 0.
type optUint struct {
	set bool
	v   uint64
}

func (o *optUint) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.FormatUint(o.v, 10)
}

func (o *optUint) Set(s string) error {
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return fmt.Errorf("must be an integer >= 0")
	}
	o.set, o.v = true, v
	return nil
}
