package quic_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	qgo "github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/rendr-go/rendr/internal/carriertest"
	"github.com/rendr-go/rendr/internal/testcert"
	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/quic"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair dials one carrier from local to a listener on 127.0.0.1 and accepts it.
func pair(t *testing.T, local string) (*quic.Client, *quic.Carrier, *quic.Carrier) {
	t.Helper()
	srv, cli := testcert.Must()
	ln, err := quic.Listen("127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	d := quic.NewClient(ln.Addr().String(), cli, quic.LocalAddr(local))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// The listener sees the stream once bytes are on it, as rendr's handshake puts them.
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	got := make([]byte, 5)
	if _, err := io.ReadFull(s, got); err != nil || string(got) != "hello" {
		t.Fatalf("first bytes %q, %v", got, err)
	}
	return d, c.(*quic.Carrier), s.(*quic.Carrier)
}

func TestStreamBothWays(t *testing.T) {
	_, c, s := pair(t, "127.0.0.1")
	carriertest.Stream(t, c, s, 8<<20, nil)
	carriertest.Stream(t, s, c, 8<<20, nil)
}

// TestMigrateInPlace moves the dialing side from 127.0.0.1 to 127.0.0.2 halfway through a
// transfer: the same connection and stream go on, and every byte arrives.
func TestMigrateInPlace(t *testing.T) {
	d, c, s := pair(t, "127.0.0.1")
	var merr error
	carriertest.Stream(t, c, s, 8<<20, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		merr = d.Migrate(ctx, "127.0.0.2")
	})
	if merr != nil {
		t.Fatalf("migrate: %v", merr)
	}
	if got := c.LocalAddr().(*net.UDPAddr).IP.String(); got != "127.0.0.2" {
		t.Fatalf("dialer's local address after migrating is %s", got)
	}
	carriertest.Stream(t, s, c, 4<<20, nil)
	// A later dial uses the new address too.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c2, err := d.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got := c2.LocalAddr().(*net.UDPAddr).IP.String(); got != "127.0.0.2" {
		t.Fatalf("a dial after Migrate binds %s", got)
	}
}

func TestDatagrams(t *testing.T) {
	_, c, s := pair(t, "127.0.0.1")
	max := c.MaxDatagramSize()
	if max <= 0 {
		t.Fatal("no datagram support negotiated")
	}
	// A datagram far over any QUIC packet gets the documented error with the real limit.
	err := c.SendDatagram(make([]byte, 4000))
	var tl *transport.DatagramTooLargeError
	if !errors.As(err, &tl) || tl.Max <= 0 || tl.Max >= 4000 {
		t.Fatalf("oversized datagram: %v", err)
	}
	if got := c.MaxDatagramSize(); got != tl.Max {
		t.Fatalf("MaxDatagramSize %d after the carrier said %d", got, tl.Max)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Datagrams are unreliable even on loopback; send in small rounds until some arrive.
	want := bytes.Repeat([]byte{7}, tl.Max)
	for range 50 {
		if err := c.SendDatagram(want); err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 100*time.Millisecond)
		got, err := s.ReceiveDatagram(rctx)
		rcancel()
		if err == nil {
			if !bytes.Equal(got, want) {
				t.Fatalf("datagram of %d bytes came back as %d bytes", len(want), len(got))
			}
			return
		}
	}
	t.Fatal("no datagram arrived in 50 tries")
}

func TestCloseEndsPeer(t *testing.T) {
	_, c, s := pair(t, "127.0.0.1")
	c.Close()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Read(make([]byte, 10)); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("read after the peer closed: %v (want an error that is not EOF)", err)
	}
}

// blackhole is a socket whose sends vanish: a new address that no packet leaves from.
type blackhole struct{ net.PacketConn }

func (b blackhole) WriteTo(p []byte, a net.Addr) (int, error) { return len(p), nil }

// sockets opens real sockets for the first k calls, then blackholed ones.
func sockets(k int32) quic.Option {
	var n atomic.Int32
	return quic.ListenPacket(func(network, addr string) (net.PacketConn, error) {
		pc, err := net.ListenPacket(network, addr)
		if err == nil && n.Add(1) > k {
			return blackhole{pc}, nil
		}
		return pc, err
	})
}

// TestFailedMigrateKeepsCarrier: a Migrate whose new address never validates fails, and the
// connection carries on where it was (quic-go ends every connection registered with a
// transport that closes, so the failed attempt's socket must stay open).
func TestFailedMigrateKeepsCarrier(t *testing.T) {
	srv, cli := testcert.Must()
	ln, err := quic.Listen("127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := quic.NewClient(ln.Addr().String(), cli, quic.LocalAddr("127.0.0.1"), sockets(1))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatal(err)
	}
	mctx, mcancel := context.WithTimeout(context.Background(), time.Second)
	err = d.Migrate(mctx, "127.0.0.2")
	mcancel()
	if err == nil {
		t.Fatal("Migrate to an address nothing leaves from succeeded")
	}
	if got := c.LocalAddr().(*net.UDPAddr).IP.String(); got != "127.0.0.1" {
		t.Fatalf("after a failed Migrate the carrier says it is at %s", got)
	}
	carriertest.Stream(t, c, s, 1<<20, nil)
	// A bad address is refused without touching later dials.
	d2 := quic.NewClient(ln.Addr().String(), cli, quic.LocalAddr("127.0.0.1"))
	if err := d2.Migrate(context.Background(), "wlan0"); err == nil {
		t.Fatal("Migrate to a name that is not an address succeeded")
	}
	c2, err := d2.Dial(ctx)
	if err != nil {
		t.Fatalf("dial after a refused Migrate: %v", err)
	}
	c2.Close()
}

// TestMigrateEndsWithCarrier: a Migrate still probing when its carrier closes returns.
func TestMigrateEndsWithCarrier(t *testing.T) {
	srv, cli := testcert.Must()
	ln, err := quic.Listen("127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := quic.NewClient(ln.Addr().String(), cli, sockets(1))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Migrate(context.Background(), "127.0.0.1") }()
	time.Sleep(300 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Migrate of a closed carrier succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Migrate still probing 5 s after its carrier closed")
	}
}

// TestPendingEvictsOldest: connections that never open a stream fill MaxPending; the next
// one pushes the oldest out instead of being refused, so a real peer still gets in.
func TestPendingEvictsOldest(t *testing.T) {
	srv, cli := testcert.Must()
	ln, err := quic.Listen("127.0.0.1:0", srv, quic.MaxPending(2))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var idle []net.Conn
	for range 2 {
		c, err := quic.Dialer(ln.Addr().String(), cli)(ctx) // no byte ever sent
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
		// The listener queues a connection when its side of the handshake completes, which
		// on a loaded machine can be after the next dial's: the pause keeps the order of
		// the queue the order of the dials, so idle[0] is the oldest.
		time.Sleep(200 * time.Millisecond)
	}
	c, err := quic.Dialer(ln.Addr().String(), cli)(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	got := make(chan error, 1)
	go func() {
		s, err := ln.Accept()
		if err == nil {
			s.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a real peer was kept out by connections that never opened a stream")
	}
	// The oldest idle connection was closed to make room.
	idle[0].SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := idle[0].Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the oldest idle connection is still open: %v", err)
	}
}

// TestRetryUnderLoad: past its rate the listener answers new connections with a Retry, and
// a dialer still gets through (quic-go's client follows a Retry) with its bytes intact.
func TestRetryUnderLoad(t *testing.T) {
	srv, cli := testcert.Must()
	for _, c := range []struct {
		name       string
		opt        quic.Option
		dials      int
		minRetries uint64
		maxRetries uint64
	}{
		// A dialer may send more than one Initial before the Retry reaches it; each gets one.
		{"always", quic.RetryAbove(-1), 3, 3, 9},
		{"past the rate", quic.RetryAbove(2), 4, 1, 8},
		{"default, quiet", nil, 3, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var opts []quic.Option
			if c.opt != nil {
				opts = append(opts, c.opt)
			}
			ln, err := quic.Listen("127.0.0.1:0", srv, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			for i := range c.dials {
				d := quic.NewClient(ln.Addr().String(), cli, quic.LocalAddr("127.0.0.1"))
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				cc, err := d.Dial(ctx)
				cancel()
				if err != nil {
					t.Fatalf("dial %d: %v", i, err)
				}
				msg := []byte{byte(i), 'r', 't'}
				if _, err := cc.Write(msg); err != nil {
					t.Fatal(err)
				}
				s, err := ln.Accept()
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(s, got); err != nil || string(got) != string(msg) {
					t.Fatalf("dial %d: read %q, %v", i, got, err)
				}
				s.Close()
				cc.Close()
			}
			if n := ln.Retries(); n < c.minRetries || n > c.maxRetries {
				t.Fatalf("%d retries for %d dials, want %d..%d", n, c.dials, c.minRetries, c.maxRetries)
			}
		})
	}
}

// deaf is a socket that sends but drops everything it receives: a dialer behind it starts a
// handshake and never finishes it, as a spoofed source does.
type deaf struct{ net.PacketConn }

func (d deaf) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		if _, _, err := d.PacketConn.ReadFrom(b); err != nil {
			return 0, nil, err
		}
	}
}

// TestRetryPending: while RetryPending connections are in their handshake, every new one is
// asked for a Retry whatever the rate, and a real dialer still gets through; once they are
// gone, connections are taken without one again.
func TestRetryPending(t *testing.T) {
	srv, cli := testcert.Must()
	ln, err := quic.Listen("127.0.0.1:0", srv, quic.RetryPending(1), quic.RetryAbove(1000),
		quic.WithConfig(&qgo.Config{HandshakeIdleTimeout: 500 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	echo := func(i int) {
		t.Helper()
		d := quic.NewClient(ln.Addr().String(), cli, quic.LocalAddr("127.0.0.1"))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cc, err := d.Dial(ctx)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		defer cc.Close()
		msg := []byte{byte(i), 'r', 'p'}
		cc.Write(msg)
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("dial %d: read %q, %v", i, got, err)
		}
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		for end := time.Now().Add(time.Minute); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%s: not within a minute", what)
			}
		}
	}

	echo(0)
	if n, h := ln.Retries(), ln.Handshaking(); n != 0 || h != 0 {
		t.Fatalf("quiet listener: %d retries, %d handshaking; want none", n, h)
	}
	stuckCtx, stuck := context.WithCancel(context.Background())
	stuckDone := make(chan struct{})
	go func() {
		defer close(stuckDone)
		d := quic.NewClient(ln.Addr().String(), cli, quic.LocalAddr("127.0.0.1"),
			quic.ListenPacket(func(network, addr string) (net.PacketConn, error) {
				pc, err := net.ListenPacket(network, addr)
				return deaf{pc}, err
			}))
		if c, err := d.Dial(stuckCtx); err == nil {
			c.Close()
		}
	}()
	wait("the deaf dialer's handshake held", func() bool { return ln.Handshaking() == 1 })
	echo(1)
	if n := ln.Retries(); n == 0 {
		t.Fatal("a dial while the bound was reached got no Retry")
	}
	stuck()
	<-stuckDone
	wait("the deaf dialer's handshake timed out", func() bool { return ln.Handshaking() == 0 })
	before := ln.Retries()
	echo(2)
	if n := ln.Retries(); n != before {
		t.Fatalf("%d retries once no handshake was held, want none", n-before)
	}
}
