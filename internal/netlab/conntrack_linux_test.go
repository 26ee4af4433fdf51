package netlab

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestFlushConntrack: behind `masquerade random` in the client namespace, one client socket
// reaches the server from one port while its conntrack entry lives, and from a new port after
// FlushConntrack: a NAT rebinding.
func TestFlushConntrack(t *testing.T) {
	l := newLab(t, Config{Paths: 1})
	srv, err := l.ListenPacket(Server, "udp4", netip.AddrPortFrom(l.ServerAddr(0), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	rules := fmt.Sprintf(`table ip nat {
		chain post { type nat hook postrouting priority srcnat; policy accept;
			ip daddr %s udp dport %d masquerade random
		}
	}`, l.ServerAddr(0), srv.LocalAddr().(*net.UDPAddr).Port)
	if err := l.NFT(Client, rules); err != nil {
		t.Fatal(err)
	}
	cli, err := l.ListenPacket(Client, "udp4", netip.AddrPortFrom(l.ClientAddr(0), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// from sends one datagram and returns the port the server saw it come from.
	from := func() int {
		t.Helper()
		if _, err := cli.WriteTo([]byte("x"), srv.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, a, err := srv.ReadFrom(make([]byte, 16))
		if err != nil {
			t.Fatal(err)
		}
		return a.(*net.UDPAddr).Port
	}
	first := from()
	if again := from(); again != first {
		t.Fatalf("the mapping moved from port %d to %d without a flush", first, again)
	}
	// A random port can come out the same; a few flushes make that vanishingly unlikely.
	for i := range 4 {
		if err := l.FlushConntrack(Client); err != nil {
			t.Fatal(err)
		}
		if p := from(); p != first {
			t.Logf("port %d, then %d after %d flushes", first, p, i+1)
			return
		}
	}
	t.Fatalf("still port %d after 4 flushes", first)
}
