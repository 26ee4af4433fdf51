package rendr_test

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport/tcp"
)

// pair builds a listener with n loopback TCP sources and a dialer with one path per source.
func pair(t testing.TB, n int, opts rendr.Options) (*rendr.Dialer, *rendr.Listener) {
	t.Helper()
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	var srcs []net.Listener
	var paths []*rendr.Target
	for i := range n {
		l, err := tcp.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, l)
		paths = append(paths, rendr.Path(string(rune('a'+i)), tcp.Dialer(l.Addr().String())))
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}, Options: opts}, srcs...)
	if err != nil {
		t.Fatal(err)
	}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root: rendr.Selector("root", paths...), Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	return d, ln
}

// flowPair is pair with one path and one flow open: the dialer's end c and the listener's s.
// Everything is closed when the test ends.
func flowPair(t *testing.T) (d *rendr.Dialer, ln *rendr.Listener, c, s *rendr.Conn) {
	t.Helper()
	d, ln = pair(t, 1, rendr.Options{})
	t.Cleanup(func() { ln.Close() })
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, err = ln.AcceptContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return d, ln, c, s
}

func TestNettestOnePath(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		d, ln := pair(t, 1, rendr.Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c1, err = d.DialContext(ctx)
		if err != nil {
			return nil, nil, nil, err
		}
		c2, err = ln.AcceptContext(ctx)
		if err != nil {
			return nil, nil, nil, err
		}
		return c1, c2, func() {
			c1.Close()
			c2.Close()
			d.Close()
			ln.Close()
		}, nil
	})
}
