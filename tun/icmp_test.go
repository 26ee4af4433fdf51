package tun

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"os"
	"testing"

	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/l3"
)

// recordDevice keeps what is written to it.
type recordDevice struct{ writes [][]byte }

func (d *recordDevice) File() *os.File                         { return nil }
func (d *recordDevice) Read([][]byte, []int, int) (int, error) { return 0, os.ErrClosed }
func (d *recordDevice) Write(bufs [][]byte, off int) (int, error) {
	for _, b := range bufs {
		d.writes = append(d.writes, bytes.Clone(b[off:]))
	}
	return len(bufs), nil
}
func (d *recordDevice) MTU() (int, error)          { return 1500, nil }
func (d *recordDevice) Name() (string, error)      { return "rec", nil }
func (d *recordDevice) Events() <-chan wgtun.Event { return nil }
func (d *recordDevice) Close() error               { return nil }
func (d *recordDevice) BatchSize() int             { return 1 }

// synPacket is a TCP SYN of id with sequence number 0x01020304.
func synPacket(id l3.Identity) []byte {
	var p []byte
	if id.Src.Addr().Is4() {
		p = make([]byte, 20+20)
		p[0], p[8], p[9] = 0x45, 64, 6
		binary.BigEndian.PutUint16(p[2:], 40)
		s, d := id.Src.Addr().As4(), id.Dst.Addr().As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
	} else {
		p = make([]byte, 40+20)
		p[0], p[6], p[7] = 0x60, 6, 64
		binary.BigEndian.PutUint16(p[4:], 20)
		s, d := id.Src.Addr().As16(), id.Dst.Addr().As16()
		copy(p[8:], s[:])
		copy(p[24:], d[:])
	}
	t := p[len(p)-20:]
	binary.BigEndian.PutUint16(t, id.Src.Port())
	binary.BigEndian.PutUint16(t[2:], id.Dst.Port())
	binary.BigEndian.PutUint32(t[4:], 0x01020304)
	t[12], t[13] = 5<<4, 0x02 // SYN
	return p
}

// TestICMPErrors: the errors the ingress writes are well-formed (every checksum right, the
// ICMPv6 one over its pseudo-header), go from the destination to the source, and quote the
// SYN they answer (its sequence number included) or a datagram of the UDP flow.
func TestICMPErrors(t *testing.T) {
	for _, id := range []l3.Identity{
		{Proto: l3.TCP, Src: netip.MustParseAddrPort("10.98.0.2:40000"), Dst: netip.MustParseAddrPort("10.99.2.1:80")},
		{Proto: l3.TCP, Src: netip.MustParseAddrPort("[fd00::2]:40000"), Dst: netip.MustParseAddrPort("[fd99::1]:80")},
	} {
		dev := &recordDevice{}
		in := &Ingress{dev: dev, syns: &synTable{}}
		in.log = slog.New(slog.DiscardHandler)
		if in.hostUnreachable(id) {
			t.Fatal("an ICMP error for a SYN never seen")
		}
		syn := synPacket(id)
		in.noteSYN(syn)
		if !in.hostUnreachable(id) || len(dev.writes) != 1 {
			t.Fatalf("%v: no ICMP error written", id)
		}
		checkICMP(t, dev.writes[0], id, syn[:len(syn)-12])
		if in.hostUnreachable(id) {
			t.Fatal("the SYN was quoted twice")
		}
		u := id
		u.Proto = l3.UDP
		if !in.portUnreachable(u) {
			t.Fatal("no port unreachable")
		}
		checkICMP(t, dev.writes[1], u, nil)
	}
}

// checkICMP checks an ICMP error about id, whose quote must start with want (when not nil).
func checkICMP(t *testing.T, p []byte, id l3.Identity, want []byte) {
	t.Helper()
	var icmp, quote []byte
	if id.Src.Addr().Is4() {
		if checksum.Checksum(p[:20], 0) != 0xffff || p[9] != 1 {
			t.Fatalf("IPv4 header %x", p[:20])
		}
		if src, dst := netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])); src != id.Dst.Addr() || dst != id.Src.Addr() {
			t.Fatalf("ICMP from %v to %v", src, dst)
		}
		icmp = p[20:]
		if checksum.Checksum(icmp, 0) != 0xffff || icmp[0] != 3 {
			t.Fatalf("ICMP %x", icmp[:8])
		}
	} else {
		if p[6] != 58 || int(binary.BigEndian.Uint16(p[4:])) != len(p)-40 {
			t.Fatalf("IPv6 header %x", p[:40])
		}
		icmp = p[40:]
		pseudo := append(append(append([]byte(nil), p[8:40]...), binary.BigEndian.AppendUint32(nil, uint32(len(icmp)))...), 0, 0, 0, 58)
		if checksum.Checksum(icmp, checksum.Checksum(pseudo, 0)) != 0xffff || icmp[0] != 1 {
			t.Fatalf("ICMPv6 %x", icmp[:8])
		}
	}
	quote = icmp[8:]
	if want != nil && !bytes.Equal(quote, want) {
		t.Fatalf("quote %x, want %x", quote, want)
	}
	if q, ok := l3.FromPacket(quote); !ok || q != id {
		t.Fatalf("the quote is of %v (%v), want %v", q, ok, id)
	}
}

// TestTooBig: a raw packet over what a flow carries gets ICMP fragmentation needed (ICMPv6
// packet too big) from its destination, with rendr.MaxDatagram as the MTU and the packet's
// start quoted; an IPv4 packet that may be fragmented gets none. Neither is sent on.
func TestTooBig(t *testing.T) {
	for _, c := range []struct {
		src, dst string
		df, want bool
	}{
		{"10.98.0.2", "10.99.0.1", true, true},
		{"10.98.0.2", "10.99.0.1", false, false},
		{"fd98::2", "fd99::1", false, true},
	} {
		src, dst := netip.MustParseAddr(c.src), netip.MustParseAddr(c.dst)
		var p []byte
		if src.Is4() {
			p = make([]byte, rendr.MaxDatagram+1)
			p[0], p[8], p[9] = 0x45, 64, 47 // GRE
			if c.df {
				p[6] = 0x40
			}
			binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
			copy(p[12:], src.AsSlice())
			copy(p[16:], dst.AsSlice())
		} else {
			p = make([]byte, rendr.MaxDatagram+1)
			p[0], p[6], p[7] = 0x60, 47, 64
			binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
			copy(p[8:], src.AsSlice())
			copy(p[24:], dst.AsSlice())
		}
		dev := &recordDevice{}
		in := &Ingress{dev: dev, syns: &synTable{}}
		in.log = slog.New(slog.DiscardHandler)
		in.raw = map[netip.Addr]*rawFlow{}
		in.sendRaw(p)
		if len(in.raw) != 0 || in.stats.rawDropped.Load() != 1 {
			t.Errorf("%s: the packet was not dropped, or a flow was opened for it", c.src)
		}
		if !c.want {
			if len(dev.writes) != 0 {
				t.Errorf("%s: an ICMP error for a packet that may be fragmented", c.src)
			}
			continue
		}
		if len(dev.writes) != 1 {
			t.Fatalf("%s: %d ICMP errors, want 1", c.src, len(dev.writes))
		}
		w := dev.writes[0]
		hl, typ := 20, byte(3)
		if !src.Is4() {
			hl, typ = 40, 2
		}
		if w[hl] != typ || binary.BigEndian.Uint32(w[hl+4:]) != rendr.MaxDatagram {
			t.Errorf("%s: ICMP %x, want type %d with MTU %d", c.src, w[hl:hl+8], typ, rendr.MaxDatagram)
		}
		if q := w[hl+8:]; len(w) > 1280 || !bytes.Equal(q, p[:len(q)]) || len(q) < 28 {
			t.Errorf("%s: an error of %d bytes quoting %d", c.src, len(w), len(q))
		}
		if s, d, _ := addrs(w); s != dst || d != src {
			t.Errorf("%s: the error goes from %v to %v", c.src, s, d)
		}
	}
}
