package observe

import (
	"errors"
	"net"
	"testing"
)

// TestCheckListener checks the address a listener got (what "localhost"
// resolved to): only a loopback IP address passes, unless remote access is
// allowed.
func TestCheckListener(t *testing.T) {
	for _, c := range []struct {
		addr   net.Addr
		remote bool
		ok     bool
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9440}, false, true},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 9440}, false, true},
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9440}, false, false},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 9440}, false, false},
		{&net.UnixAddr{Name: "/tmp/x", Net: "unix"}, false, false},
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9440}, true, true},
	} {
		err := checkListener(c.addr, c.remote)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrNotLoopback)) {
			t.Errorf("checkListener(%v, %v) = %v, want ok %v (or ErrNotLoopback)", c.addr, c.remote, err, c.ok)
		}
	}
}
