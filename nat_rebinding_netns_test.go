//go:build linux

// NAT rebinding over real kernel paths (network namespaces): a udpflow path whose source
// address and port change mid-transfer keeps its flow exact without failover, and a spoofer
// with the path's connection id moves nothing.

package rendr_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/transport/udpflow"
)

// rtTapConn is a dialed udpflow carrier that keeps a copy of the datagrams it sends while
// recording, for a spoofer to replay.
type rtTapConn struct {
	*udpflow.Conn
	mu   sync.Mutex
	on   bool
	tape [][]byte
}

func (c *rtTapConn) keep(b []byte) {
	c.mu.Lock()
	if c.on && len(c.tape) < 64 {
		c.tape = append(c.tape, bytes.Clone(b))
	}
	c.mu.Unlock()
}

func (c *rtTapConn) Write(b []byte) (int, error) {
	c.keep(b)
	return c.Conn.Write(b)
}

func (c *rtTapConn) WriteBatch(bs [][]byte) error {
	for _, b := range bs {
		c.keep(b)
	}
	return c.Conn.WriteBatch(bs)
}

// TestNetnsUDPFlowNATRebinding runs a flow over one udpflow path between two network
// namespaces and, mid-transfer, gives the dialer's datagrams a new source address and port on
// the way out (stateless NAT rules in the client namespace), while the old address stops
// receiving anything, as when a NAT mapping expires and a new one is made. The listener must
// follow the path to the new address once it proves itself, with every byte arriving both
// ways and no rendr failover. Meanwhile a spoofer at a third address sends datagrams with the
// path's connection id: garbage, a fake first datagram, and replays of real datagrams. None
// may move the path or get a byte back.
func TestNetnsUDPFlowNATRebinding(t *testing.T) {
	lab := testkit.NetLab(t, netlab.Config{Paths: 2, Name: "rendru"})
	// The rewritten datagrams enter and leave by interfaces the routes do not name for their
	// addresses: no reverse-path filtering in the lab.
	for _, side := range []netlab.Side{netlab.Client, netlab.Server} {
		if out, err := lab.Exec(side, "sh", "-c", "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done"); err != nil {
			t.Fatalf("rp_filter: %v: %s", err, out)
		}
	}
	in := func(side netlab.Side) udpflow.Option {
		return udpflow.ListenPacket(func(network, address string) (net.PacketConn, error) {
			return lab.ListenPacket(side, network, address)
		})
	}
	src, err := udpflow.Listen(netip.AddrPortFrom(lab.ServerAddr(0), 0).String(), in(netlab.Server))
	if err != nil {
		t.Fatal(err)
	}
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}}, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	oldIP, newIP := lab.ClientAddr(0), lab.ClientAddr(1)
	ud := udpflow.Dialer(src.Addr().String(), udpflow.LocalAddr(oldIP.String()), in(netlab.Client))
	var tapMu sync.Mutex
	var taps []*rtTapConn
	dial := func(ctx context.Context) (net.Conn, error) {
		c, err := ud(ctx)
		if err != nil {
			return nil, err
		}
		tc := &rtTapConn{Conn: c.(*udpflow.Conn)}
		tapMu.Lock()
		taps = append(taps, tc)
		tapMu.Unlock()
		return tc, nil
	}
	mig := &testkit.Migrations{}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root: rendr.Path("p0", dial), Options: rendr.Options{OnMigrate: mig.Record}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	c1, c2 := testkit.DialAccept(t, d, ln)
	before, m0 := c1.Status().Paths, c1.Migrations()
	tapMu.Lock()
	tap := taps[0]
	tapMu.Unlock()
	oldPort := tap.LocalAddr().(*net.UDPAddr).Port
	const newPort = 41234
	spoofer, err := lab.ListenPacket(netlab.Client, "udp4", netip.AddrPortFrom(newIP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer spoofer.Close()

	const size = 48 << 20
	var progress atomic.Int64
	moved := make(chan error, 1)
	go func() {
		for progress.Load() < size/3 {
			time.Sleep(time.Millisecond)
		}
		moved <- rtRebindAndSpoof(lab, tap, spoofer, src.Addr(), oldIP, newIP, oldPort, newPort)
	}()
	c1.SetDeadline(time.Now().Add(90 * time.Second))
	c2.SetDeadline(time.Now().Add(90 * time.Second))
	if err := testkit.Both(c1, c2, size, 77, &progress); err != nil {
		t.Logf("dialer: %s", testkit.Describe(c1.Status()))
		t.Logf("listener: %s", testkit.Describe(c2.Status()))
		t.Fatal(err)
	}
	if err := <-moved; err != nil {
		t.Fatalf("rebinding: %v", err)
	}
	// The listener followed the dialer to its new address, once.
	lp := c2.Status().Paths
	if len(lp) != 1 || lp[0].Packets == nil {
		t.Fatalf("listener paths: %s", testkit.Describe(c2.Status()))
	}
	want := netip.AddrPortFrom(newIP, newPort)
	if got := lp[0].Remote.(*net.UDPAddr).AddrPort(); got != want || lp[0].Packets.Rebinds != 1 {
		t.Fatalf("listener's path at %v after %d rebinds, want %v after 1", got, lp[0].Packets.Rebinds, want)
	}
	if lp[0].Packets.Forged < 50 {
		t.Fatalf("%d forged datagrams counted, the spoofer sent 50", lp[0].Packets.Forged)
	}
	// The dialer noticed nothing: same path, no redial, no migration.
	after := c1.Status().Paths
	if len(after) != 1 || after[0].ID != before[0].ID || after[0].Dials != before[0].Dials {
		t.Fatalf("the dialer's path did not carry on: %s", testkit.Describe(c1.Status()))
	}
	if m := mig.Moves(); m != 0 || c1.Migrations() != m0 {
		t.Fatalf("%d rendr migrations (%v) for a NAT rebinding", m, mig)
	}
	// Nothing ever went to the spoofer.
	spoofer.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, from, err := spoofer.ReadFrom(make([]byte, 64<<10)); err == nil {
		t.Fatalf("the spoofer got %d bytes from %v", n, from)
	}
}

// rtRebindAndSpoof installs the NAT rules and runs the spoofer.
func rtRebindAndSpoof(lab *netlab.Lab, tap *rtTapConn, spoofer net.PacketConn, server net.Addr,
	oldIP, newIP netip.Addr, oldPort, newPort int) error {
	// Record real datagrams to replay later, once the listener has seen them.
	tap.mu.Lock()
	tap.on = true
	tap.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	tap.mu.Lock()
	tap.on = false
	tape := tap.tape
	tap.mu.Unlock()
	if len(tape) == 0 {
		return fmt.Errorf("nothing recorded to replay")
	}
	// The NAT: out, the old address and port become the new ones; in, what comes to the new
	// ones goes to the socket, and the old mapping takes nothing any more.
	rules := fmt.Sprintf(`table ip rebind {
		chain pre { type filter hook prerouting priority -300;
			ip daddr %[1]s udp dport %[3]d drop
			ip daddr %[2]s udp dport %[4]d notrack ip daddr set %[1]s udp dport set %[3]d
		}
		chain out { type filter hook output priority -300;
			ip saddr %[1]s udp sport %[3]d notrack ip saddr set %[2]s udp sport set %[4]d
		}
	}`, oldIP, newIP, oldPort, newPort)
	if err := lab.NFT(netlab.Client, rules); err != nil {
		return fmt.Errorf("nft: %v", err)
	}
	id := tap.ID()
	head := append([]byte{0}, id[:]...)
	send := func(b []byte) error {
		_, err := spoofer.WriteTo(b, server)
		return err
	}
	for range 50 { // garbage with the path's id
		junk := make([]byte, 200)
		rand.Read(junk)
		if err := send(append(bytes.Clone(head), junk...)); err != nil {
			return err
		}
	}
	// A fake first datagram with the same id: the listener already has that connection.
	hello := append([]byte{1}, id[:]...)
	hello = binary.BigEndian.AppendUint16(hello, 100)
	if err := send(append(hello, make([]byte, 1200-len(hello))...)); err != nil {
		return err
	}
	for _, b := range tape { // real datagrams, replayed from elsewhere
		if err := send(append(bytes.Clone(head), b...)); err != nil {
			return err
		}
	}
	return nil
}
