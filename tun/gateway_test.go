package tun

import (
	"net/netip"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
)

// ipPacket is an IPv4 packet from src to dst of protocol 1 (ICMP), 28 bytes.
func ipPacket(src, dst string) []byte {
	p := make([]byte, 28)
	p[0], p[9] = 0x45, 1
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	return p
}

// TestGateway: a raw flow may send only from its host's address, only to the allowed
// prefixes; an address belongs to one peer at a time (the same peer's new flow replaces its
// old one); packets for a host reach its flow, and those for no flow are dropped and counted.
func TestGateway(t *testing.T) {
	dev := &recordDevice{}
	g := NewGateway(dev, []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")})
	defer g.Close()
	a, b := rendr.MustNewKey().Public(), rendr.MustNewKey().Public()
	host := netip.MustParseAddr("10.98.0.2")
	c, err := g.attach(a, host)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.attach(b, host); err == nil {
		t.Fatal("another peer took a host's address")
	}
	for _, p := range [][]byte{
		ipPacket("10.98.0.3", "10.99.0.1"), // spoofed source
		ipPacket("10.98.0.2", "10.1.0.1"),  // not allowed
		{0x45, 0, 0},                       // not a packet
	} {
		c.Write(p)
	}
	if len(dev.writes) != 0 || g.Stats().Dropped != 3 {
		t.Fatalf("%d packets written, %d dropped; want 0 and 3", len(dev.writes), g.Stats().Dropped)
	}
	c.Write(ipPacket("10.98.0.2", "10.99.0.1"))
	if len(dev.writes) != 1 || g.Stats().Out != 1 {
		t.Fatalf("the host's packet: %d written", len(dev.writes))
	}
	g.deliver(ipPacket("10.99.0.1", "10.98.0.2"))
	g.deliver(ipPacket("10.99.0.1", "10.98.0.9")) // no flow for it
	c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err != nil || n != 28 || netip.AddrFrom4([4]byte(buf[16:20])) != host {
		t.Fatalf("the reply: %d bytes, %v", n, err)
	}
	if st := g.Stats(); st.In != 1 || st.Dropped != 4 {
		t.Fatalf("stats %+v, want 1 in and 4 dropped", st)
	}
	// The same peer again (its client started anew): the old flow's side ends.
	c2, err := g.attach(a, host)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(buf); err == nil {
		t.Fatal("the replaced flow's side still reads")
	}
	c2.Close()
	if g.Stats().Flows != 0 {
		t.Fatalf("%d flows after the last closed", g.Stats().Flows)
	}
}
