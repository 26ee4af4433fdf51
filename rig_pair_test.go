// The plain rig: a Listener and a Dialer over loopback TCP with nothing between them, an
// echo, and a dialer's round trip or refusal.

package rendr_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
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

// lmListen starts a listener on n loopback TCP sources.
func lmListen(t *testing.T, cfg rendr.ListenConfig, n int) (*rendr.Listener, []string) {
	t.Helper()
	var srcs []net.Listener
	var addrs []string
	for range n {
		l, err := tcp.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, l)
		addrs = append(addrs, l.Addr().String())
	}
	ln, err := rendr.Listen(cfg, srcs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, addrs
}

// lmEcho serves every accepted flow with an echo until the listener closes.
func lmEcho(t *testing.T, ln *rendr.Listener) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				io.Copy(c, c)
				c.Close()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}

// lmRoundTrip checks that one flow of d carries bytes both ways.
func lmRoundTrip(t *testing.T, d *rendr.Dialer) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	msg := []byte("through the bound")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != string(msg) {
		return errors.New("echo differs")
	}
	return nil
}

// lmDialRefused dials with d until refused() says the listener turned it away, then gives up
// and returns the dial's error, which must say why.
func lmDialRefused(t *testing.T, d *rendr.Dialer, refused func() bool) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := d.DialContext(ctx)
		errc <- err
	}()
	// The listener counts the refusal before the dialer reads it: wait for both.
	told := func() bool {
		for _, p := range d.Status().Paths {
			if p.LastError != "" {
				return true
			}
		}
		return false
	}
	if !testkit.Wait(20*time.Second, func() bool { return refused() && told() }) {
		t.Fatalf("the listener never refused the dial (dialer: %+v)", d.Status().Paths)
	}
	cancel()
	return <-errc
}

func lmDialer(t *testing.T, key rendr.PrivateKey, srv rendr.PublicKey, addrs ...string) *rendr.Dialer {
	t.Helper()
	var kids []*rendr.Target
	for i, a := range addrs {
		kids = append(kids, rendr.Path(string(rune('a'+i)), tcp.Dialer(a)))
	}
	root := kids[0]
	if len(kids) > 1 {
		root = rendr.Selector("g", kids...)
	}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: key, PeerKey: srv, Root: root,
		Options: rendr.Options{HandshakeTimeout: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}
