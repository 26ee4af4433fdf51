package tun

// ICMP errors to the host: what its own network would answer when the far side found a
// destination unreachable, or a UDP port closed.

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/l3"
)

// synSlots is the size of the table of recent SYNs. An ICMP error about a connection must
// quote its SYN (the host's TCP takes it only with the SYN's sequence number), so the ingress
// keeps the start of each SYN it reads, in a fixed table: one a later SYN overwrites loses its
// ICMP error, and the host's connect times out instead.
const synSlots = 1024

// quoteMax is the most of a packet an ICMP error quotes here: its IP header (IPv4 with
// options: up to 60 bytes) and the first 8 bytes of its transport header.
const quoteMax = 60 + 8

type synSlot struct {
	id    l3.Identity
	n     int
	quote [quoteMax]byte
}

// synTable is the table of recent SYNs.
type synTable struct {
	mu    sync.Mutex
	seed  maphash.Seed
	slots [synSlots]synSlot
}

// note keeps the start of p, a TCP SYN of the connection id.
func (t *synTable) note(id l3.Identity, p []byte, hdr int) {
	n := min(hdr+8, len(p), quoteMax)
	t.mu.Lock()
	s := &t.slots[maphash.Comparable(t.seed, id)%synSlots]
	s.id, s.n = id, copy(s.quote[:], p[:n])
	t.mu.Unlock()
}

// take returns the start of the SYN of id (nil when the table has lost it), and forgets it.
func (t *synTable) take(id l3.Identity) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &t.slots[maphash.Comparable(t.seed, id)%synSlots]
	if s.id != id || s.n == 0 {
		return nil
	}
	q := append([]byte(nil), s.quote[:s.n]...)
	s.id, s.n = l3.Identity{}, 0
	return q
}

// noteSYN keeps p's start when it is a TCP SYN (not a SYN-ACK).
func (in *Ingress) noteSYN(p []byte) {
	var hdr int
	var proto byte
	switch p[0] >> 4 {
	case 4:
		hdr, proto = int(p[0]&0x0f)*4, p[9]
	case 6:
		hdr, proto = 40, p[6]
	}
	if proto != byte(l3.TCP) || len(p) < hdr+14 || p[hdr+13]&0x12 != 0x02 { // SYN, not ACK
		return
	}
	id, ok := l3.FromPacket(p)
	if !ok {
		return
	}
	in.syns.note(id, p, hdr)
}

// hostUnreachable tells the host that the destination of its TCP connection id cannot be
// reached: ICMP host unreachable (ICMPv6 address unreachable), quoting its SYN. It reports
// whether it could (the SYN was still known).
func (in *Ingress) hostUnreachable(id l3.Identity) bool {
	q := in.syns.take(id)
	if q == nil {
		return false
	}
	if id.Src.Addr().Is4() {
		return in.sendICMP(id, 3, 1, q) // destination unreachable, host unreachable
	}
	return in.sendICMP(id, 1, 3, q) // destination unreachable, address unreachable
}

// portUnreachable tells the host that the destination of its UDP flow id has no socket on that
// port: ICMP port unreachable, quoting a datagram of the flow.
func (in *Ingress) portUnreachable(id l3.Identity) bool {
	var q []byte
	if id.Src.Addr().Is4() {
		q = make([]byte, 20+8)
		q[0], q[8], q[9] = 0x45, 64, byte(l3.UDP)
		binary.BigEndian.PutUint16(q[2:], 28)
		s, d := id.Src.Addr().As4(), id.Dst.Addr().As4()
		copy(q[12:], s[:])
		copy(q[16:], d[:])
		binary.BigEndian.PutUint16(q[10:], ^checksum.Checksum(q[:20], 0))
	} else {
		q = make([]byte, 40+8)
		q[0], q[6], q[7] = 0x60, byte(l3.UDP), 64
		binary.BigEndian.PutUint16(q[4:], 8)
		s, d := id.Src.Addr().As16(), id.Dst.Addr().As16()
		copy(q[8:], s[:])
		copy(q[24:], d[:])
	}
	u := q[len(q)-8:]
	binary.BigEndian.PutUint16(u, id.Src.Port())
	binary.BigEndian.PutUint16(u[2:], id.Dst.Port())
	binary.BigEndian.PutUint16(u[4:], 8)
	if id.Src.Addr().Is4() {
		return in.sendICMP(id, 3, 3, q) // destination unreachable, port unreachable
	}
	return in.sendICMP(id, 1, 4, q) // destination unreachable, port unreachable
}

// sendICMP writes to the device an ICMP (ICMPv6) error of type and code about the packet whose
// start is quote, of the connection id: from its destination, to its source.
func (in *Ingress) sendICMP(id l3.Identity, typ, code byte, quote []byte) bool {
	return in.sendICMPRest(id, typ, code, 0, quote)
}

// tooBig tells the host that its packet p is larger than a flow carries: ICMP fragmentation
// needed (ICMPv6 packet too big) with an MTU of rendr.MaxDatagram, quoting as much of p as an
// error may carry, as a router on a narrower link would. It reports whether it did: an IPv4
// packet that may be fragmented gets no such error (a router would fragment it; the ingress
// drops it).
func (in *Ingress) tooBig(p []byte) bool {
	src, dst, ok := addrs(p)
	if !ok {
		return false
	}
	id := l3.Identity{Src: netip.AddrPortFrom(src, 0), Dst: netip.AddrPortFrom(dst, 0)}
	if src.Is4() {
		if p[6]&0x40 == 0 { // DF not set
			return false
		}
		return in.sendICMPRest(id, 3, 4, rendr.MaxDatagram, p[:min(len(p), 576-28)])
	}
	return in.sendICMPRest(id, 2, 0, rendr.MaxDatagram, p[:min(len(p), 1280-48)])
}

// sendICMPRest is sendICMP with rest in the header's last four bytes (an MTU, for some types).
func (in *Ingress) sendICMPRest(id l3.Identity, typ, code byte, rest uint32, quote []byte) bool {
	b := make([]byte, offset, offset+40+8+len(quote))
	src, dst := id.Dst.Addr(), id.Src.Addr()
	if src.Is4() {
		ip := make([]byte, 20)
		ip[0], ip[8], ip[9] = 0x45, 64, 1
		binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(quote)))
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ^checksum.Checksum(ip, 0))
		icmp := append(binary.BigEndian.AppendUint32([]byte{typ, code, 0, 0}, rest), quote...)
		binary.BigEndian.PutUint16(icmp[2:], ^checksum.Checksum(icmp, 0))
		b = append(append(b, ip...), icmp...)
	} else {
		ip := make([]byte, 40)
		ip[0], ip[6], ip[7] = 0x60, 58, 64
		binary.BigEndian.PutUint16(ip[4:], uint16(8+len(quote)))
		s, d := src.As16(), dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		icmp := append(binary.BigEndian.AppendUint32([]byte{typ, code, 0, 0}, rest), quote...)
		// The ICMPv6 checksum covers a pseudo-header: both addresses, the length, the
		// next header.
		binary.BigEndian.PutUint16(icmp[2:], ^checksum.Checksum(icmp, pseudoSum(ip, 58, len(icmp))))
		b = append(append(b, ip...), icmp...)
	}
	if _, err := in.dev.Write([][]byte{b}, offset); err != nil {
		in.log.Debug("rendr/tun: ICMP error not written", "identity", id, "err", err)
		return false
	}
	in.stats.icmp.Add(1)
	return true
}
