// Reliability matrix row 6b: a path MTU black hole across real kernel paths.

package rendr_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/transport/udpflow"
)

// The same on a real kernel path: udpflow between two network namespaces, nftables dropping
// every IPv4 packet longer than 1280 bytes at the ingress of both ends (no ICMP is sent).
func TestReliabilityPMTUBlackHoleNetns(t *testing.T) {
	lab := testkit.NetLab(t, netlab.Config{Paths: 1, Name: "rendrp"})
	for side, dev := range map[netlab.Side]string{netlab.Client: lab.ClientIface(0), netlab.Server: lab.ServerIface(0)} {
		rules := fmt.Sprintf(`table netdev pmtu {
			chain in { type filter hook ingress device %q priority -10; policy accept;
				ip length > 1280 counter drop
			}
		}`, dev)
		if err := lab.NFT(side, rules); err != nil {
			t.Fatal(err)
		}
	}
	in := func(side netlab.Side) udpflow.Option {
		return udpflow.ListenPacket(func(network, address string) (net.PacketConn, error) {
			return lab.ListenPacket(side, network, address)
		})
	}
	// One datagram per packet: a veth hands a UDP GSO send to the other namespace whole, so
	// the filter would see one long packet where a real link carries segments of the size
	// rendr chose, and drop what fits.
	src, err := udpflow.Listen(netip.AddrPortFrom(lab.ServerAddr(0), 0).String(), in(netlab.Server), udpflow.NoBatching())
	if err != nil {
		t.Fatal(err)
	}
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}}, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ud := udpflow.Dialer(src.Addr().String(), udpflow.LocalAddr(lab.ClientAddr(0).String()), in(netlab.Client), udpflow.NoBatching())
	// udpflow takes its own header out of each datagram: the sizes rendr sees are that much
	// smaller than the UDP payload.
	var base atomic.Int64
	dial := func(ctx context.Context) (net.Conn, error) {
		c, err := ud(ctx)
		if err == nil {
			base.Store(int64(c.(*udpflow.Conn).BaseDatagramSize()))
		}
		return c, err
	}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(), Root: rendr.Path("p0", dial)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	c1, c2 := testkit.DialAccept(t, d, ln)
	c1.SetDeadline(time.Now().Add(60 * time.Second))
	c2.SetDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	if err := testkit.Both(c1, c2, 8<<20, 63, nil); err != nil {
		t.Fatalf("%v\ndialer: %s\nlistener: %s", err, testkit.Describe(c1.Status()), testkit.Describe(c2.Status()))
	}
	took := time.Since(start)
	b := int(base.Load())
	limit := rlPMTUPayload - (1200 - b)
	dm := rlCheckMTU(t, "dialer", c1.Status(), b, limit)
	lm := rlCheckMTU(t, "listener", c2.Status(), b, limit)
	var drops []int
	for _, side := range []netlab.Side{netlab.Client, netlab.Server} {
		out, err := lab.Exec(side, "nft", "list", "chain", "netdev", "pmtu", "in")
		if err != nil {
			t.Fatal(err)
		}
		drops = append(drops, rlCounter(string(out)))
	}
	t.Logf("8 MiB each way in %v; settled on %v (dialer) and %v (listener) bytes of %d that fit; packets over 1280 dropped at client, server: %v; carriers dialed %d",
		took.Round(time.Millisecond), dm, lm, limit, drops, c1.Status().Paths[0].Dials)
	if p := c1.Status().Paths[0]; p.Dials != 1 {
		t.Errorf("the path was dialed %d times: the black hole must cost probes, not the path", p.Dials)
	}
	if drops[0] == 0 || drops[1] == 0 {
		t.Errorf("packets dropped over 1280 bytes at client, server: %v: the search did not probe both ways", drops)
	}
}

// rlCounter is N in the first "packets N bytes M" of an nft listing, or -1.
func rlCounter(listing string) int {
	var p, b int
	for i := 0; i+7 < len(listing); i++ {
		if _, err := fmt.Sscanf(listing[i:], "packets %d bytes %d", &p, &b); err == nil {
			return p
		}
	}
	return -1
}
