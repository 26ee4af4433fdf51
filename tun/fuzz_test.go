package tun

import (
	"log/slog"
	"net/netip"
	"testing"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/l3"
)

// FuzzHostPackets drives what acts on packets before the stack sees them, whatever their
// bytes: the ingress's sorting of a packet read from the TUN (raw or not, a SYN kept or not,
// the ICMP error quoting it), and the gateway's handling of a packet from a raw flow (an
// authenticated peer's) and of one read from its own TUN. None may panic, and each does work
// bounded by the packet's length.
func FuzzHostPackets(f *testing.F) {
	tcp4 := l3.Identity{Proto: l3.TCP, Src: netip.MustParseAddrPort("10.98.0.2:40000"), Dst: netip.MustParseAddrPort("10.99.2.1:80")}
	tcp6 := l3.Identity{Proto: l3.TCP, Src: netip.MustParseAddrPort("[fd98::2]:40000"), Dst: netip.MustParseAddrPort("[fd99::1]:80")}
	f.Add(synPacket(tcp4))
	f.Add(synPacket(tcp6))
	f.Add(ipPacket("10.98.0.2", "10.99.0.1"))
	f.Add(ipPacket("10.99.0.1", "10.98.0.2"))
	f.Add([]byte{0x4f, 0, 0, 0})
	f.Add([]byte{0x60})
	peer := rendr.MustNewKey().Public()
	f.Fuzz(func(t *testing.T, p []byte) {
		dev := &recordDevice{}
		in := &Ingress{dev: dev, syns: &synTable{}, log: slog.New(slog.DiscardHandler)}
		// As inject sorts a packet read from the device.
		if len(p) >= 20 && p[0]>>4 == 4 || len(p) >= 40 && p[0]>>4 == 6 {
			if !isRaw(p) {
				in.noteSYN(p)
			}
		}
		if id, ok := l3.FromPacket(p); ok {
			in.hostUnreachable(id)
			if id.Proto == l3.UDP {
				in.portUnreachable(id)
			}
		}
		for _, w := range dev.writes {
			if len(w) > 40+8+quoteMax {
				t.Fatalf("an ICMP error of %d bytes", len(w))
			}
		}
		g := &Gateway{dev: dev, allow: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")}, hosts: map[netip.Addr]*gatewayConn{}}
		c, err := g.attach(peer, netip.MustParseAddr("10.98.0.2"))
		if err != nil {
			t.Fatal(err)
		}
		c.Write(p)
		g.deliver(p)
		c.Close()
	})
}
