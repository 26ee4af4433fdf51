// Reliability matrix row 4b: datagrams duplicated, reordered and corrupted across real
// kernel paths.

package rendr_test

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/internal/path"
	"github.com/rendr-go/rendr/internal/relay"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/transport/udpflow"
)

// TestReliabilityMangledDatagramsNetns: the same faults on a real kernel path. A user-space
// relay stands in the server's network namespace between the veth and the listener; udpflow
// from the client's namespace crosses the veth to it, and it duplicates, reorders and
// corrupts the datagrams both ways.
func TestReliabilityMangledDatagramsNetns(t *testing.T) {
	lab := testkit.NetLab(t, netlab.Config{Paths: 1, Name: "rendrm"})
	in := func(side netlab.Side) udpflow.Option {
		return udpflow.ListenPacket(func(network, address string) (net.PacketConn, error) {
			return lab.ListenPacket(side, network, address)
		})
	}
	srvAddr := netip.AddrPortFrom(lab.ServerAddr(0), 0).String()
	src, err := udpflow.Listen(srvAddr, in(netlab.Server))
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
	logs := &testkit.ErrorLog{}
	opts := rendr.Options{Logger: slog.New(logs)}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()},
		Options: opts}, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ud := udpflow.Dialer(u.Addr(), udpflow.LocalAddr(lab.ClientAddr(0).String()), in(netlab.Client))
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(), Root: rendr.Path("p0", ud),
		Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	c1, c2 := testkit.DialAccept(t, d, ln)
	u.SetMangle(relay.Mangle{Dup: 0.25, Reorder: 0.1, Corrupt: 0.05})
	const size = 2 << 20
	c1.SetDeadline(time.Now().Add(60 * time.Second))
	c2.SetDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	if err := testkit.Both(c1, c2, size, 57, nil); err != nil {
		t.Fatalf("%v\ndialer: %s\nlistener: %s", err, testkit.Describe(c1.Status()), testkit.Describe(c2.Status()))
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
	if logs.Logged(path.ErrRecord) {
		t.Errorf("a path died of a record error: corrupted datagrams must be dropped, not kill the path")
	}
	t.Logf("carriers dialed: %d", c1.Status().Paths[0].Dials)
}
