package rendr_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/internal/relay"
	"github.com/rendr-go/rendr/internal/testlink"
	"github.com/rendr-go/rendr/path"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport/udpflow"
)

// Row 4 of the reliability matrix: datagram paths that duplicate 25% of datagrams, reorder
// them (a jitter far above the spacing of packets) and corrupt 5%. Every byte must arrive
// exactly once and in order; a corrupted datagram fails authentication and is dropped, so none
// reaches a flow (the SHA-256 over the data says so), and it is counted as forged. Stream
// carriers cannot duplicate or reorder; a corrupted record there kills the path and the
// session moves: TestSynctestCorruptActive (in memory) and TestAdversarialCorruption (TCP,
// QUIC, gVisor and udpflow) cover that.

// rlForged adds up the forged-datagram counters of a side's packet paths.
func rlForged(st status.Session) (forged, lost, sent uint64) {
	for _, p := range st.Paths {
		if p.Packets != nil {
			forged += p.Packets.Forged
			lost += p.Packets.Lost
			sent += p.Packets.Sent
		}
	}
	return forged, lost, sent
}

func TestReliabilityMangledDatagrams(t *testing.T) {
	for _, g := range []struct {
		name string
		root func([]*rendr.Target) *rendr.Target
	}{{"selector", rlSelector}, {"bond", rlBond}} {
		t.Run(g.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mangle := func(seed int64) testlink.PacketConfig {
					return testlink.PacketConfig{Delay: 10 * time.Millisecond, Jitter: 8 * time.Millisecond,
						Dup: 0.25, Corrupt: 0.05, Seed: seed}
				}
				lb := rlNewLab(t, rendr.Options{}, g.root,
					rlSpec{name: "a", packet: true, pab: mangle(51), pba: mangle(52)},
					rlSpec{name: "b", packet: true, pab: mangle(53), pba: mangle(54)})
				dc, lc := lb.open()
				defer dc.Close()
				defer lc.Close()
				const size = 2 << 20
				up, down := stDuplex(dc, lc, size, 55)
				up.check(t, "dialer to listener", 5*time.Minute)
				down.check(t, "listener to dialer", 5*time.Minute)
				var ab, ba testlink.PacketStats
				for _, p := range lb.paths {
					x, y := p.packetStats()
					rlAddStats(&ab, x)
					rlAddStats(&ba, y)
				}
				dForged, dLost, dSent := rlForged(lb.d.Status())
				var lForged, lLost, lSent uint64
				for _, s := range lb.ln.Sessions() {
					f, l, n := rlForged(s)
					lForged, lLost, lSent = lForged+f, lLost+l, lSent+n
				}
				t.Logf("%s: %d MiB each way in %v (virtual); links: up %s, down %s; dialer sent %d packets, declared %d lost, dropped %d forged; listener sent %d, declared %d lost, dropped %d forged; carriers dialed: a %d, b %d",
					g.name, size>>20, up.finished.Sub(up.start), rlStatsString(ab), rlStatsString(ba),
					dSent, dLost, dForged, lSent, lLost, lForged, lb.paths["a"].dials(), lb.paths["b"].dials())
				if ab.Duplicated == 0 || ab.Corrupted == 0 || ba.Duplicated == 0 || ba.Corrupted == 0 {
					t.Fatalf("the links did not mangle both ways: up %s, down %s", rlStatsString(ab), rlStatsString(ba))
				}
				// Every corrupted copy that was read was refused; a few may still be on the way.
				if lForged == 0 || dForged == 0 || lForged > uint64(ab.Corrupted) || dForged > uint64(ba.Corrupted) {
					t.Fatalf("forged datagrams counted: listener %d of %d corrupted, dialer %d of %d corrupted",
						lForged, ab.Corrupted, dForged, ba.Corrupted)
				}
				// In virtual time nothing starves: no fault here may cost a carrier.
				if lb.logs.logged(path.ErrRecord) || lb.paths["a"].dials() != 1 || lb.paths["b"].dials() != 1 {
					t.Errorf("a path died (record error logged: %v); carriers dialed: a %d, b %d",
						lb.logs.logged(path.ErrRecord), lb.paths["a"].dials(), lb.paths["b"].dials())
				}
			})
		})
	}
}

func rlStatsString(s testlink.PacketStats) string {
	return fmt.Sprintf("{sent %d delivered %d dup %d corrupt %d lost %d overflow %d}",
		s.Sent, s.Delivered, s.Duplicated, s.Corrupted, s.Lost, s.Overflow)
}

// TestReliabilityMangledDatagramsNetns: the same faults on a real kernel path. A user-space
// relay stands in the server's network namespace between the veth and the listener; udpflow
// from the client's namespace crosses the veth to it, and it duplicates, reorders and
// corrupts the datagrams both ways.
func TestReliabilityMangledDatagramsNetns(t *testing.T) {
	lab := newLab(t, netlab.Config{Paths: 1, Name: "rendrm"})
	in := func(side netlab.Side) udpflow.Option {
		return udpflow.ListenPacket(func(network, address string) (net.PacketConn, error) {
			return lab.ListenPacket(side, network, address)
		})
	}
	srvAddr := netip.AddrPortFrom(lab.ServerAddr(0), 0).String()
	src, err := udpflow.Listen("udp4", srvAddr, in(netlab.Server))
	if err != nil {
		t.Fatal(err)
	}
	dialIn := lab.Dialer(netlab.Server, nil)
	u, err := relay.NewUDPConfig(src.Addr().String(), relay.UDPConfig{
		Listen: srvAddr,
		ListenPacket: func(network, address string) (net.PacketConn, error) {
			return lab.ListenPacket(netlab.Server, network, address)
		},
		Dial: func(network, address string) (net.Conn, error) {
			return dialIn(context.Background(), network, address)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	// The errors rendr logs, to tell why a path went down.
	logs := &stLogSink{}
	opts := rendr.Options{Logger: slog.New(logs)}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()},
		Options: opts}, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ud := udpflow.NewDialer(u.Addr(), udpflow.LocalAddr(lab.ClientAddr(0).String()), in(netlab.Client))
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(), Root: rendr.Path("p0", ud.Dial),
		Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	c1, c2 := rtDialAccept(t, d, ln)
	u.SetMangle(relay.Mangle{Dup: 0.25, Reorder: 0.1, Corrupt: 0.05})
	const size = 2 << 20
	c1.SetDeadline(time.Now().Add(60 * time.Second))
	c2.SetDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	if err := rtBoth(c1, c2, size, 57, nil); err != nil {
		t.Fatalf("%v\ndialer: %s\nlistener: %s", err, rtDescribe(c1.Status()), rtDescribe(c2.Status()))
	}
	m := u.Mangled()
	dForged, dLost, dSent := rlForged(c1.Status())
	lForged, lLost, lSent := rlForged(c2.Status())
	t.Logf("%d MiB each way in %v; relay duplicated %d, reordered %d, corrupted %d of %d up and %d down; dialer sent %d packets, declared %d lost, dropped %d forged; listener sent %d, declared %d lost, dropped %d forged",
		size>>20, time.Since(start).Round(time.Millisecond), m.Duplicated, m.Reordered, m.Corrupted,
		u.Stats().SentUp, u.Stats().SentDown, dSent, dLost, dForged, lSent, lLost, lForged)
	if m.Duplicated == 0 || m.Reordered == 0 || m.Corrupted == 0 {
		t.Fatalf("the relay did not mangle: %+v", m)
	}
	if dForged+lForged == 0 || int64(dForged+lForged) > 2*m.Corrupted {
		t.Fatalf("forged datagrams counted: dialer %d, listener %d; the relay corrupted %d", dForged, lForged, m.Corrupted)
	}
	// A corrupted datagram is dropped, never taken for a broken path. (Under the race detector
	// on a loaded machine the path is sometimes declared silent and dialed again; that is
	// the relay and both ends starved of CPU, not the faults, and costs no byte.)
	if logs.logged(path.ErrRecord) {
		t.Errorf("a path died of a record error: corrupted datagrams must be dropped, not kill the path")
	}
	t.Logf("carriers dialed: %d", c1.Status().Paths[0].Dials)
}
