package observe

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// ErrNotLoopback is returned by CheckAddr and Listen for an address that
// is not on the loopback interface, unless remote access is allowed. The
// endpoints have no authentication and no TLS, and the page and
// /api/status show document and agent names and the agents' last errors:
// anyone who can reach the port reads them.
var ErrNotLoopback = errors.New("observe: not a loopback address")

// CheckAddr checks an address of the form HOST:PORT, such as
// 127.0.0.1:9440 or [::1]:9440. Unless allowRemote, HOST must be a loopback
// IP address or "localhost": an empty HOST (":9440") listens on every
// interface and is refused, as is any other name, which could resolve to
// anything.
func CheckAddr(addr string, allowRemote bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("observe: address %q: want HOST:PORT, such as 127.0.0.1:9440", addr)
	}
	if allowRemote || isLoopback(host) {
		return nil
	}
	if host == "" {
		host = "every interface"
	}
	return fmt.Errorf("%w: %s (%s)", ErrNotLoopback, addr, host)
}

// Listen checks addr (CheckAddr) and listens on it. Unless allowRemote,
// it also checks the address it listens on (the resolver turned
// "localhost" into it): a listener that is not on the loopback is closed
// and ErrNotLoopback returned.
func Listen(addr string, allowRemote bool) (net.Listener, error) {
	if err := CheckAddr(addr, allowRemote); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("observe: listen: %w", err)
	}
	if err := checkListener(l.Addr(), allowRemote); err != nil {
		l.Close()
		return nil, fmt.Errorf("%w (%s)", err, addr)
	}
	return l, nil
}

// checkListener returns ErrNotLoopback for a listening address that is not
// a loopback IP address, unless allowRemote.
func checkListener(a net.Addr, allowRemote bool) error {
	if allowRemote {
		return nil
	}
	if ta, ok := a.(*net.TCPAddr); ok && ta.IP.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: listening on %s", ErrNotLoopback, a)
}

// isLoopback reports whether host (without a port) is a loopback IP address
// or localhost.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return ip != nil && ip.IsLoopback()
}

// loopbackHost reports whether the Host header of a request (with or
// without a port) names the loopback.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return isLoopback(host)
}
