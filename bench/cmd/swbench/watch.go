package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/stateward/stateward/replay"
	"github.com/stateward/stateward/watcher"
)

// watchMain is the "watch" subcommand: the same apply loop as `stateward
// watch` (replay.Applier driven by watcher.Watcher, default knobs) without
// systemd, plus --cpuprofile. It is used only for the profile runs (-profile);
// every measured cell runs the real stateward binary.
func watchMain(args []string) int {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	dir := fs.String("dir", "", "state directory")
	level := fs.String("log-level", "warn", "log level")
	prof := fs.String("cpuprofile", "", "write a CPU profile here")
	tr := fs.String("trace", "", "write an execution trace here")
	mem := fs.String("memprofile", "", "write a heap profile here on exit (after a GC)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger := hclog.New(&hclog.LoggerOptions{Name: "swbench-watch", Level: hclog.LevelFromString(*level), Output: os.Stderr})
	if *prof != "" {
		f, err := os.Create(*prof)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	if *tr != "" {
		f, err := os.Create(*tr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer trace.Stop()
	}
	if *mem != "" {
		runtime.MemProfileRate = 64 << 10
	}
	a := replay.NewApplier(*dir, logger.Named("replay"))
	if err := a.Open(); err != nil {
		logger.Error("recovery failed", "error", err)
		return 1
	}
	defer a.Close()
	err := watcher.New(a, logger.Named("watcher")).Run(ctx)
	if *mem != "" {
		// While the Applier is still alive: what it holds is the point.
		if merr := writeHeapProfile(*mem); merr != nil {
			fmt.Fprintln(os.Stderr, merr)
		}
		runtime.KeepAlive(a)
	}
	if err != nil {
		logger.Error("stopped", "error", err)
		return 1
	}
	return 0
}

// writeHeapProfile writes the heap in use, after a GC, to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
