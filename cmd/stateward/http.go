package main

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/stateward/stateward/observe"
)

// httpShutdown bounds how long watch waits, when it stops, for the HTTP
// requests in progress to finish.
const httpShutdown = 2 * time.Second

// The HTTP server's timeouts. No endpoint streams: each answers one page or
// one JSON body, so a write bound also bounds a client that stops reading.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 30 * time.Second
	httpWriteTimeout      = 60 * time.Second // /api/status hashes every document
	httpIdleTimeout       = 60 * time.Second
)

// newHTTPServer returns the server of watch --http for h, with its timeouts.
func newHTTPServer(h http.Handler, logger hclog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		ErrorLog:          logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
}

// startHTTP starts the read-only HTTP server of watch --http on addr (none
// if addr is empty), before recovery, so that /healthz answers 503 while
// recovery runs. stop marks the watcher as stopping and shuts the server
// down; call it before the Applier is closed. It may be called more than
// once.
func startHTTP(addr string, allowRemote bool, dir string, logger hclog.Logger) (s *observe.Server, stop func(), err error) {
	if addr == "" {
		return nil, func() {}, nil
	}
	l, err := observe.Listen(addr, allowRemote)
	if err != nil {
		return nil, nil, err
	}
	s = observe.New(dir, logger)
	s.AllowRemote = allowRemote
	srv := newHTTPServer(s.Handler(), logger)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != http.ErrServerClosed {
			logger.Error("HTTP server stopped", "error", err)
		}
	}()
	logger.Info("serving HTTP (read only)", "addr", "http://"+l.Addr().String()+"/")
	var once sync.Once
	return s, func() {
		once.Do(func() {
			s.Stopping()
			ctx, cancel := context.WithTimeout(context.Background(), httpShutdown)
			defer cancel()
			srv.Shutdown(ctx)
			<-done
		})
	}, nil
}
