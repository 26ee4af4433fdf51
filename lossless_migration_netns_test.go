//go:build linux

// Lossless migration over real kernel paths (network namespaces): a silently blackholed
// path and a QUIC address change lose no byte.

package rendr_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/internal/testcert"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport/quic"
)

// TestNetnsBlackhole runs a flow over two real kernel paths (veth pairs between two network
// namespaces, 100 Mbit/s each) and silently blackholes the path carrying it mid-transfer, as a
// dead Wi-Fi link does: no RST, no FIN, nothing. Every byte must arrive exactly, traffic must
// move because of the stall or the silence, and the path must come back once the link does.
// Twice, so each round starts from a recovered session.
func TestNetnsBlackhole(t *testing.T) {
	t.Parallel() // a lab of its own, and mostly waiting
	lab := testkit.NetLab(t, netlab.Config{Paths: 2, RateMbit: []int{100, 100}, Name: "rendr"})

	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	var srcs []net.Listener
	var paths []*rendr.Target
	for i := range lab.Paths() {
		l, err := lab.Listen(netlab.Server, "tcp", netip.AddrPortFrom(lab.ServerAddr(i), 0).String())
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, l)
		// Sockets must be created inside the client namespace and bound to this path's
		// address, so each path really uses its own veth.
		dial := lab.Dialer(netlab.Client, &net.Dialer{
			LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(lab.ClientAddr(i), 0))})
		addr := l.Addr().String()
		paths = append(paths, rendr.Path(testkit.PathName(i), func(ctx context.Context) (net.Conn, error) {
			return dial(ctx, "tcp", addr)
		}))
	}
	// rendr's debug log, shown only when the test fails.
	ring := &testkit.Ring{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last log lines:\n%s", ring)
		}
	})
	opts := rendr.Options{HandshakeTimeout: 2 * time.Second}
	lopts := opts
	lopts.Logger = testkit.Logger(ring, "listener")
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}, Options: lopts}, srcs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	mig := &testkit.Migrations{}
	dopts := opts
	dopts.OnMigrate = mig.Record
	dopts.Logger = testkit.Logger(ring, "dialer")
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root: rendr.Selector("root", paths...), Options: dopts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c1, err := d.DialContext(ctx)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c1.Close()
	c2, err := ln.AcceptContext(ctx)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer c2.Close()

	seed := testkit.Seed(t)
	rng := rand.New(rand.NewPCG(seed, 6))
	const down, up = int64(32 << 20), int64(4 << 20)
	var holed []int
	for round := range 2 {
		testkit.WaitUp(t, "dialer", c1.Status, 2, 60*time.Second)
		testkit.WaitUp(t, "listener", c2.Status, 2, 60*time.Second)

		// Blackhole whatever carries the flow once a random share of the bulk direction went
		// through, so the cut lands mid-transfer.
		at := down/4 + rng.Int64N(down/4)
		var progress atomic.Int64
		target, mark := -1, 0
		stop := make(chan struct{})
		cut := make(chan error, 1)
		go func() {
			for {
				select {
				case <-stop:
					cut <- nil
					return
				case <-time.After(time.Millisecond):
				}
				if progress.Load() < at {
					continue
				}
				if a := testkit.Active(c1.Status()); a >= 0 {
					target, mark = a, len(mig.All())
					cut <- lab.Blackhole(a, true)
					return
				}
			}
		}()
		c1.SetDeadline(time.Now().Add(120 * time.Second))
		c2.SetDeadline(time.Now().Add(120 * time.Second))
		start := time.Now()
		back := make(chan error, 1)
		go func() { back <- testkit.Transfer(c2, c1, up, seed+uint64(2*round)+1, nil) }()
		err := testkit.Transfer(c1, c2, down, seed+uint64(2*round), &progress)
		if err != nil {
			c1.SetReadDeadline(time.Unix(1, 0))
		}
		berr := <-back
		close(stop)
		cerr := <-cut
		t.Logf("round %d: %d MiB down, %d MiB up in %v; blackholed %d at byte %d; migrations %v",
			round, down>>20, up>>20, time.Since(start).Round(time.Millisecond), target, at, mig)
		if cerr != nil {
			t.Fatalf("blackhole: %v", cerr)
		}
		if err != nil || berr != nil {
			t.Fatalf("round %d: down: %v; up: %v\ndialer: %s\nlistener: %s", round, err, berr,
				testkit.Describe(c1.Status()), testkit.Describe(c2.Status()))
		}
		if target < 0 {
			t.Fatalf("round %d: the transfer ended before the blackhole", round)
		}
		moved := false
		for _, ev := range mig.All()[mark:] {
			if ev.From == testkit.PathName(target) && (ev.Cause == status.CauseStall || ev.Cause == status.CauseDeath) {
				moved = true
			}
		}
		if !moved {
			t.Fatalf("round %d: no migration away from blackholed %s by stall or death: %v", round, testkit.PathName(target), mig)
		}
		if err := lab.Blackhole(target, false); err != nil {
			t.Fatal(err)
		}
		holed = append(holed, target)
	}
	testkit.WaitUp(t, "dialer", c1.Status, 2, 60*time.Second)
	testkit.WaitUp(t, "listener", c2.Status, 2, 60*time.Second)
	t.Logf("blackholed paths by round: %v", holed)

	c1.SetDeadline(time.Now().Add(30 * time.Second))
	c2.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c1.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := testkit.ExpectEOF(c2); err != nil {
		t.Fatal(err)
	}
}

// TestNetnsQUICAddressChange: over real kernel links, the dialing host moves from one uplink to
// another mid-transfer, as a phone leaving Wi-Fi for cellular does: a route through the second
// interface appears, the embedder calls Migrate with that interface's address, and the first
// address is then deleted, so nothing could still flow through it. The QUIC connection
// validates the new address and moves; the flow never notices: no rendr migration, the same
// path, every byte both ways.
func TestNetnsQUICAddressChange(t *testing.T) {
	lab := testkit.NetLab(t, netlab.Config{Paths: 2, Name: "rendrq"})
	srvTLS, cliTLS := testcert.Must()
	in := func(side netlab.Side) quic.Option {
		return quic.ListenPacket(func(network, address string) (net.PacketConn, error) {
			return lab.ListenPacket(side, network, address)
		})
	}
	src, err := quic.Listen(netip.AddrPortFrom(lab.ServerAddr(0), 0).String(), srvTLS, in(netlab.Server))
	if err != nil {
		t.Fatal(err)
	}
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}}, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	old := lab.ClientAddr(0)
	qd := quic.NewClient(src.Addr().String(), cliTLS, quic.LocalAddr(old.String()), in(netlab.Client))
	mig := &testkit.Migrations{}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root: rendr.Path("p0", qd.Dial), Options: rendr.Options{OnMigrate: mig.Record}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	c1, c2 := testkit.DialAccept(t, d, ln)
	next := lab.ClientAddr(1)
	rtTransferMovingInPlace(t, c1, c2, mig, 12, next, func() error {
		// The server's address is now reached through the second interface.
		if out, err := lab.Exec(netlab.Client, "ip", "route", "add", lab.ServerAddr(0).String()+"/32",
			"dev", lab.ClientIface(1), "src", next.String()); err != nil {
			return fmt.Errorf("add route: %v: %s", err, out)
		}
		mctx, mcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer mcancel()
		if err := qd.Migrate(mctx, next.String()); err != nil {
			return fmt.Errorf("Migrate: %w", err)
		}
		if out, err := lab.Exec(netlab.Client, "ip", "addr", "del", old.String()+"/24", "dev", lab.ClientIface(0)); err != nil {
			return fmt.Errorf("delete address: %v: %s", err, out)
		}
		return nil
	})
}
