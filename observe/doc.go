// Package observe serves what a running watcher is doing over HTTP, read
// only: Prometheus metrics, a health check, the JSON of `stateward status
// --json`, and a status page for people. `stateward watch --http ADDR`
// starts it; it is off by default.
//
// It is not a public API. It imports replay and implements replay.Metrics;
// replay does not import it.
//
// # Endpoints
//
//	GET /             the status page (one HTML file embedded in the binary)
//	GET /metrics      Prometheus text format (client_golang)
//	GET /healthz      200 "ok" once recovered while the apply loop is alive, else 503
//	GET /api/status   the JSON of `stateward status --json`
//	GET /api/live     what the page plots: recent changes, throughput, latency
//
// Every other method is answered 405, on every path: no endpoint changes
// anything. While a listener is confined to the loopback (the default),
// requests that name any other host are refused with 403 as well, which
// stops a web page from reaching the server through DNS rebinding.
//
// # Usage
//
//	s := observe.New(dir, logger.Named("http"))
//	a.Metrics = s // replay.Applier: told of every batch
//	l, err := observe.Listen(addr, allowRemote)
//	go http.Serve(l, s.Handler())
//	... a.Open() ...; s.Recovered(took)
//	... on every apply-loop heartbeat: s.Beat()
//	s.Stopping() // before closing the Applier
package observe
