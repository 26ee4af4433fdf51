//go:build linux

package rendr_test

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/status"
)

// countedConn counts a carrier's bytes both ways into n.
type countedConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countedConn) Read(p []byte) (int, error) {
	k, err := c.Conn.Read(p)
	c.n.Add(int64(k))
	return k, err
}

func (c countedConn) Write(p []byte) (int, error) {
	k, err := c.Conn.Write(p)
	c.n.Add(int64(k))
	return k, err
}

// TestNetnsBackupHeadStart: the backup head start over real kernel paths (two veth pairs,
// 100 Mbit/s each).
//
// A primary that takes 80 ms longer to set up than its backup, both healthy: the backup
// connects first, yet not one payload byte crosses it. Its carrier moves its handshake and
// probes alone, and neither side ever routes on it.
//
// A dead primary (blackholed: its SYNs go nowhere): the backup carries the flow once the head
// start is over, while the primary is still dialing, rather than after its dial times out.
func TestNetnsBackupHeadStart(t *testing.T) {
	lab := testkit.NetLab(t, netlab.Config{Paths: 2, RateMbit: []int{100, 100}, Name: "rhead"})
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	var srcs []net.Listener
	for i := range lab.Paths() {
		l, err := lab.Listen(netlab.Server, "tcp", netip.AddrPortFrom(lab.ServerAddr(i), 0).String())
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, l)
	}
	var lmig testkit.Migrations
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()},
		Options: rendr.Options{OnMigrate: lmig.Record}}, srcs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	// path dials path i from its own address, after delay, counting its carriers' bytes;
	// pending counts its dials that have not returned yet.
	type path struct {
		bytes   atomic.Int64
		pending atomic.Int32
	}
	dialer := func(i int, delay time.Duration, p *path) func(ctx context.Context) (net.Conn, error) {
		dial := lab.Dialer(netlab.Client, &net.Dialer{
			LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(lab.ClientAddr(i), 0))})
		addr := srcs[i].Addr().String()
		return func(ctx context.Context) (net.Conn, error) {
			p.pending.Add(1)
			defer p.pending.Add(-1)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			c, err := dial(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return countedConn{c, &p.bytes}, nil
		}
	}
	run := func(t *testing.T, primary, backup *path, primaryDelay time.Duration, payload int64) (first status.Migration, all []status.Migration, primaryPending bool, took time.Duration) {
		var dmig testkit.Migrations
		var pendingAtFirst atomic.Bool
		var once sync.Once
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
			Root: rendr.Selector("uplinks",
				rendr.Path("primary", dialer(0, primaryDelay, primary)),
				rendr.Path("backup", dialer(1, 0, backup), rendr.Backup())),
			Options: rendr.Options{HandshakeTimeout: 10 * time.Second, OnMigrate: func(m status.Migration) {
				once.Do(func() { pendingAtFirst.Store(primary.pending.Load() > 0) })
				dmig.Record(m)
			}}})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		start := time.Now()
		dc, lc, err := testkit.OpenFlow(ctx, d, ln)
		if err != nil {
			t.Fatal(err)
		}
		defer dc.Close()
		defer lc.Close()
		dc.SetDeadline(time.Now().Add(60 * time.Second))
		lc.SetDeadline(time.Now().Add(60 * time.Second))
		seed := testkit.Seed(t)
		back := make(chan error, 1)
		go func() { back <- testkit.Transfer(lc, dc, payload/4, seed+1, nil) }()
		if err := testkit.Transfer(dc, lc, payload, seed, nil); err != nil {
			t.Fatalf("down: %v\n%s", err, testkit.Describe(dc.Status()))
		}
		if err := <-back; err != nil {
			t.Fatalf("up: %v\n%s", err, testkit.Describe(dc.Status()))
		}
		all = dmig.All()
		if len(all) == 0 {
			t.Fatal("no route at all")
		}
		return all[0], all, pendingAtFirst.Load(), all[0].Time.Sub(start)
	}

	t.Run("slow primary", func(t *testing.T) {
		var primary, backup path
		const payload = 16 << 20
		first, all, _, _ := run(t, &primary, &backup, 80*time.Millisecond, payload)
		if first.To != "primary" || first.Cause != status.CauseFirst {
			t.Fatalf("first route %s -> %s (%v), want -> primary (first); all: %v", first.From, first.To, first.Cause, all)
		}
		for side, evs := range map[string][]status.Migration{"dialer": all, "listener": lmig.All()} {
			for _, ev := range evs {
				if slices.Contains(ev.Active, "backup") {
					t.Fatalf("%s routed on the backup: %s -> %s (%v); all: %v", side, ev.From, ev.To, ev.Cause, evs)
				}
			}
		}
		// The flow's 20 MiB against a handshake and a few probes.
		if n := backup.bytes.Load(); n > 16<<10 {
			t.Fatalf("the backup's carrier moved %d bytes while the flow moved %d", n, payload+payload/4)
		}
		if n := primary.bytes.Load(); n < payload+payload/4 {
			t.Fatalf("the primary's carrier moved %d bytes, less than the flow's %d", n, payload+payload/4)
		}
		t.Logf("backup carrier: %d bytes; primary carrier: %d bytes", backup.bytes.Load(), primary.bytes.Load())
	})

	t.Run("dead primary", func(t *testing.T) {
		if err := lab.Blackhole(0, true); err != nil {
			t.Fatal(err)
		}
		defer lab.Blackhole(0, false)
		var primary, backup path
		first, all, pending, took := run(t, &primary, &backup, 0, 4<<20)
		if first.To != "backup" || first.Cause != status.CauseFirst {
			t.Fatalf("first route %s -> %s (%v), want -> backup (first); all: %v", first.From, first.To, first.Cause, all)
		}
		if took < 250*time.Millisecond {
			t.Fatalf("the backup carried traffic %v after the dial began, inside the primary's 250ms head start", took)
		}
		if !pending {
			t.Fatalf("the backup took the flow only once the dead primary's dial had ended (%v after the start), not when its head start did", took)
		}
		t.Logf("the backup took the flow %v after the dial began, the dead primary still dialing", took)
	})
}
