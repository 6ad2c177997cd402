// Package earlysig takes over SIGTERM, SIGINT and SIGHUP as the program
// starts, before the packages it imports are initialised and long before
// main runs: without it, a signal that comes while the process is still
// starting (a `systemctl stop` or `reload` right after `start`) would end it
// by the signal instead of the clean exit 0 that `stateward watch` promises.
//
// It depends on nothing but the signal packages of the standard library, so
// that it is among the first packages initialised. Only the few
// milliseconds in which the Go runtime itself starts remain: a signal
// there still ends the process (systemd counts a death by SIGTERM, SIGINT or
// SIGHUP as a clean exit).
package earlysig

import (
	"os"
	"os/signal"
	"syscall"
)

var (
	// Terminate receives SIGTERM and SIGINT from process start on. One
	// signal is kept until someone reads it.
	Terminate = make(chan os.Signal, 1)
	// Hangup receives SIGHUP from process start on, until ReleaseHangup.
	Hangup = make(chan os.Signal, 1)
)

func init() {
	signal.Notify(Terminate, syscall.SIGTERM, syscall.SIGINT)
	signal.Notify(Hangup, syscall.SIGHUP)
}

// ReleaseHangup gives SIGHUP back its default action (it ends the
// process), for the commands that do not reload on it.
func ReleaseHangup() { signal.Stop(Hangup) }
