//go:build linux

// Reliability matrix row 5: NAT rebinding and conntrack flushes under a flow.

package rendr_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport/udpflow"
)

// Row 5 of the reliability matrix: the NAT in front of a udpflow path rebinds again and again.
// The client namespace masquerades the path's datagrams with random ports (`masquerade
// random`), and the conntrack table is flushed every interval: the next datagram leaves from a
// new port, and datagrams the listener still sends to the old one are lost. The listener must
// follow the path to each new port (after it proves itself), with the flow running both ways
// and every byte exact, and the dialer must notice nothing. TestNetnsUDPFlowNATRebinding does
// one rebinding with a spoofer alongside; this is many in a row.
//
// In a normal run it rebinds 3 times, a second apart. RENDR_SOAK (a duration, say 10m) makes it
// the long run: a rebinding every 5 s for that long.
func TestReliabilityNATRebinding(t *testing.T) {
	rebinds, every := 3, time.Second
	if s := os.Getenv("RENDR_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("RENDR_SOAK=%q: %v", s, err)
		}
		every = 5 * time.Second
		rebinds = max(1, int(d/every))
	}
	lab := testkit.NetLab(t, netlab.Config{Paths: 1, Name: "rendrn"})
	in := func(side netlab.Side) udpflow.Option {
		return udpflow.ListenPacket(func(network, address string) (net.PacketConn, error) {
			return lab.ListenPacket(side, network, address)
		})
	}
	src, err := udpflow.Listen(netip.AddrPortFrom(lab.ServerAddr(0), 0).String(), in(netlab.Server))
	if err != nil {
		t.Fatal(err)
	}
	rules := fmt.Sprintf(`table ip nat {
		chain post { type nat hook postrouting priority srcnat; policy accept;
			ip daddr %s udp dport %d masquerade random
		}
	}`, lab.ServerAddr(0), src.Addr().(*net.UDPAddr).Port)
	if err := lab.NFT(netlab.Client, rules); err != nil {
		t.Fatal(err)
	}
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}}, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ud := udpflow.Dialer(src.Addr().String(), udpflow.LocalAddr(lab.ClientAddr(0).String()), in(netlab.Client))
	mig := &testkit.Migrations{}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(), Root: rendr.Path("p0", ud),
		Options: rendr.Options{OnMigrate: mig.Record}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	c1, c2 := testkit.DialAccept(t, d, ln)
	before := c1.Status().Paths[0]
	// The listener's view of the path: where it sends, and how often it moved.
	remote := func() (netip.AddrPort, uint64) {
		ps := c2.Status().Paths
		if len(ps) != 1 || ps[0].Packets == nil || ps[0].Remote == nil {
			return netip.AddrPort{}, 0
		}
		return ps[0].Remote.(*net.UDPAddr).AddrPort(), ps[0].Packets.Rebinds
	}
	up := rlStartFlow(c1, c2, 16<<10, 2*time.Millisecond, 71)
	down := rlStartFlow(c2, c1, 16<<10, 2*time.Millisecond, 72)
	var ports []uint16
	var flushes int
	var follow []time.Duration
	for i := range rebinds {
		time.Sleep(every)
		at, n := remote()
		ports = append(ports, at.Port())
		start := time.Now()
		moved := false
		// A random port can come out the same as before; a few flushes make that vanishingly
		// unlikely.
		for try := 0; try < 4 && !moved; try++ {
			if err := lab.FlushConntrack(netlab.Client); err != nil {
				t.Fatal(err)
			}
			flushes++
			moved = testkit.Wait(5*time.Second, func() bool {
				now, m := remote()
				return now != at && m > n
			})
		}
		if !moved {
			t.Fatalf("rebinding %d: the listener still sends to %v: %s", i, at, testkit.Describe(c2.Status()))
		}
		follow = append(follow, time.Since(start).Round(time.Millisecond))
		// Bytes must keep moving after each move, both ways.
		mark := up.read.Load() + down.read.Load()
		if !testkit.Wait(10*time.Second, func() bool { return up.read.Load()+down.read.Load() > mark+64<<10 }) {
			t.Fatalf("rebinding %d: the flow stopped: %s", i, testkit.Describe(c2.Status()))
		}
	}
	at, n := remote()
	ports = append(ports, at.Port())
	up.finish(t, "dialer to listener", 30*time.Second)
	down.finish(t, "listener to dialer", 30*time.Second)
	after := c1.Status().Paths[0]
	lp := c2.Status().Paths[0]
	t.Logf("%d rebindings (%d conntrack flushes), the listener followed each in %v; ports %v; %d and %d bytes moved, longest gap %v up, %v down; listener: %d rebinds, %d forged, %d lost of %d",
		rebinds, flushes, follow, ports, up.wcount, down.wcount, up.gap(), down.gap(), n, lp.Packets.Forged, lp.Packets.Lost, lp.Packets.Sent)
	if n < uint64(rebinds) {
		t.Errorf("the listener counts %d rebinds, want at least %d", n, rebinds)
	}
	if after.ID != before.ID || after.Dials != before.Dials || after.State != status.Up {
		t.Errorf("the dialer's path did not carry on: before %+v, after %s", before, testkit.Describe(c1.Status()))
	}
	if m := mig.Moves(); m != 0 {
		t.Errorf("%d rendr migrations (%v) for NAT rebindings", m, mig)
	}
}
