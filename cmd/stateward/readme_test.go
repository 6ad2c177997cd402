package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeCommand is one shell command of a README block, with what the
// README says it prints and the exit code it says it ends with.
type readmeCommand struct {
	text   string   // as written, continuation lines included
	output []string // the lines the README shows after it
	exit   int      // "exit code N" in the comment before it, else 0
	line   int      // line number in README.md
}

// setupCommands are the two commands of the README's "Set up" block: the
// demo and the whole test suite. TestREADME_Walkthrough checks that they
// are there but does not run them (the second would run this test again).
var setupCommands = []string{"go run ./cmd/stateward demo", "bash .ci/test"}

var exitHint = regexp.MustCompile(`exit code (\d+)`)

// readmeBlocks returns the shell commands of README.md's indented code
// blocks, in order, with the set-up block apart. A block is a shell block
// when its first line that is not a comment starts with a command this
// README uses; other blocks (the diagram) are skipped.
func readmeBlocks(tb testing.TB, readme string) (setup []string, cmds []readmeCommand) {
	tb.Helper()
	lines := strings.Split(readme, "\n")
	var blocks [][]int // line indexes of each block
	var cur []int
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "    "):
			cur = append(cur, i)
		case strings.TrimSpace(l) == "" && len(cur) > 0:
			cur = append(cur, i)
		default:
			if len(cur) > 0 {
				blocks = append(blocks, cur)
			}
			cur = nil
		}
	}
	if len(cur) > 0 {
		blocks = append(blocks, cur)
	}
	starts := []string{"go ", "./stateward", "export ", "bash ", "kill ", "EDITOR="}
	for _, b := range blocks {
		first := ""
		for _, i := range b {
			if t := strings.TrimSpace(lines[i]); t != "" && !strings.HasPrefix(t, "#") {
				first = t
				break
			}
		}
		shell := false
		for _, s := range starts {
			shell = shell || strings.HasPrefix(first, s)
		}
		if !shell {
			continue
		}
		isSetup := false
		for _, s := range setupCommands {
			isSetup = isSetup || strings.HasPrefix(first, s)
		}
		want := 0
		var open *readmeCommand
		for _, i := range b {
			l := strings.TrimPrefix(lines[i], "    ")
			t := strings.TrimSpace(l)
			switch {
			case open != nil:
				open.text += "\n" + l
			case t == "":
				continue
			case isSetup:
				setup = append(setup, strings.TrimSpace(strings.SplitN(t, "#", 2)[0]))
				continue
			case strings.HasPrefix(t, "#"):
				if m := exitHint.FindStringSubmatch(t); m != nil {
					want, _ = strconv.Atoi(m[1])
				}
				continue
			case strings.HasPrefix(t, "{"):
				if len(cmds) == 0 {
					tb.Fatalf("README.md:%d: output before any command", i+1)
				}
				cmds[len(cmds)-1].output = append(cmds[len(cmds)-1].output, t)
				continue
			default:
				cmds = append(cmds, readmeCommand{text: l, exit: want, line: i + 1})
				want = 0
				open = &cmds[len(cmds)-1]
			}
			// A command goes on while a line ends in a backslash or a
			// single quote is open.
			if !strings.HasSuffix(l, `\`) && strings.Count(open.text, "'")%2 == 0 {
				open = nil
			}
		}
	}
	return setup, cmds
}

// copyModule copies the Go module's files to dst (every package with what
// it embeds; not .git, nested modules, node_modules, tests or a binary left
// by an earlier go build), so that the README's go build runs as in a
// fresh checkout.
func copyModule(tb testing.TB, root, dst string) {
	tb.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			if rel != "." {
				if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
					return filepath.SkipDir // another module (bench)
				}
			}
			switch d.Name() {
			case ".git", "node_modules", "testdata":
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() || strings.HasSuffix(p, "_test.go") || rel == "stateward" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// needTools ends the test when a tool it needs (what, for the message) is
// missing from PATH. Under CI=true that is a failure: CI must run every
// test. Elsewhere the test is skipped, and says so on standard error as
// well as in its skip message, so that it does not pass silently.
func needTools(tb testing.TB, what string, tools ...string) {
	tb.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err == nil {
			continue
		}
		msg := fmt.Sprintf("%s not found in PATH, so %s DID NOT RUN: %s need %s", tool, tb.Name(), what, strings.Join(tools, ", "))
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		fmt.Fprintf(os.Stderr, "\n*** WARNING: %s ***\n\n", msg)
		tb.Skip(msg)
	}
}

// TestREADME_WalkthroughMissingTool runs TestREADME_Walkthrough in a child
// process with an empty PATH: under CI=true it must fail, elsewhere it must
// say on standard error that it did not run.
func TestREADME_WalkthroughMissingTool(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ci     string
		wantOK bool
	}{
		{name: "CI", ci: "true", wantOK: false},
		{name: "Local", ci: "", wantOK: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run", "^TestREADME_Walkthrough$", "-test.v")
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "CI=") && !strings.HasPrefix(kv, childEnv+"=") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			cmd.Env = append(cmd.Env, "PATH="+t.TempDir(), "CI="+tc.ci)
			out, err := cmd.CombinedOutput()
			if got := err == nil; got != tc.wantOK {
				t.Fatalf("CI=%q: child succeeded=%v, want %v; output:\n%s", tc.ci, got, tc.wantOK, out)
			}
			if !bytes.Contains(out, []byte("DID NOT RUN")) {
				t.Fatalf("CI=%q: output does not say the walkthrough did not run:\n%s", tc.ci, out)
			}
		})
	}
}

// TestREADME_Walkthrough runs every command block of README.md as written,
// in order, in one shell, in a fresh copy of the module with a fresh
// temporary folder, and checks each command's exit code and the lines the
// README shows it printing, byte for byte. The set-up block is checked,
// not run.
func TestREADME_Walkthrough(t *testing.T) {
	needTools(t, "the README's commands", "bash", "go", "jq", "sed")
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	setup, cmds := readmeBlocks(t, string(readme))
	if strings.Join(setup, "\n") != strings.Join(setupCommands, "\n") {
		t.Errorf("set-up block is %q, want %q", setup, setupCommands)
	}
	if len(cmds) < 10 {
		t.Fatalf("found %d commands in README.md", len(cmds))
	}
	work, tmp, out := t.TempDir(), t.TempDir(), t.TempDir()
	copyModule(t, root, work)

	var script strings.Builder
	script.WriteString("set -u\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n")
	for i, c := range cmds {
		if strings.HasSuffix(strings.TrimSpace(strings.SplitN(c.text, " #", 2)[0]), "&") {
			fmt.Fprintf(&script, "%s\necho 0 >%s/%d.code\n", c.text, out, i) // a background job, as written
			continue
		}
		fmt.Fprintf(&script, "{ %s\n} >%[2]s/%[3]d.out 2>%[2]s/%[3]d.err; echo $? >%[2]s/%[3]d.code\n", c.text, out, i)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	cmd.Dir = work
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STATEWARD_") && !strings.HasPrefix(kv, "TMPDIR=") && !strings.HasPrefix(kv, "VISUAL=") && !strings.HasPrefix(kv, "EDITOR=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// mktemp's folder inside the test's; a path-independent build, so that
	// the copy's go build is served from the build cache.
	cmd.Env = append(cmd.Env, "TMPDIR="+tmp, "GOFLAGS=-trimpath")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	runErr := cmd.Run()
	for i, c := range cmds {
		codeText, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("%d.code", i)))
		if err != nil {
			t.Fatalf("README.md:%d: %q never ran (%v)\nshell: %v\n%s", c.line, c.text, err, runErr, log.String())
		}
		code, _ := strconv.Atoi(strings.TrimSpace(string(codeText)))
		stdout, _ := os.ReadFile(filepath.Join(out, fmt.Sprintf("%d.out", i)))
		stderr, _ := os.ReadFile(filepath.Join(out, fmt.Sprintf("%d.err", i)))
		if code != c.exit {
			t.Errorf("README.md:%d: %q exited %d, the README says %d\nstdout:\n%s\nstderr:\n%s", c.line, c.text, code, c.exit, stdout, stderr)
			continue
		}
		if len(c.output) == 0 {
			continue
		}
		got := strings.Split(strings.TrimSpace(string(stdout)), "\n")
		if len(got) != len(c.output) {
			t.Errorf("README.md:%d: %q printed\n%s\nthe README shows\n%s", c.line, c.text, stdout, strings.Join(c.output, "\n"))
			continue
		}
		for j := range got {
			if got[j] != c.output[j] {
				t.Errorf("README.md:%d: %q printed\n%s\nthe README shows\n%s", c.line, c.text, got[j], c.output[j])
			}
		}
	}
	if runErr != nil {
		t.Errorf("shell: %v\n%s", runErr, log.String())
	}
}
