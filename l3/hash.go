package l3

// The 5-tuple of an IP packet: its identity, and the hash that pins an IP connection's packets
// to one path of a Bond.

import (
	"bytes"
	"encoding/binary"
	"net/netip"
)

// FromPacket is the identity of the IPv4 or IPv6 packet p: its protocol, its addresses and,
// for a protocol with ports, its ports. ok is false for anything else: a packet too short for
// its header, one that is not IP, a fragment after the first, a protocol with ports whose
// ports are cut off or zero. An IPv6 packet's extension headers are not walked: its Proto is
// the first Next Header.
func FromPacket(p []byte) (id Identity, ok bool) {
	src, dst, proto, l4, frag, ok := header(p)
	if !ok || frag {
		return Identity{}, false
	}
	sa, _ := netip.AddrFromSlice(src)
	da, _ := netip.AddrFromSlice(dst)
	id = Identity{Proto: Proto(proto), Src: netip.AddrPortFrom(sa, 0), Dst: netip.AddrPortFrom(da, 0)}
	if id.Proto.HasPorts() {
		if len(l4) < 4 {
			return Identity{}, false
		}
		id.Src = netip.AddrPortFrom(sa, binary.BigEndian.Uint16(l4))
		id.Dst = netip.AddrPortFrom(da, binary.BigEndian.Uint16(l4[2:]))
	}
	if id.Valid() != nil {
		return Identity{}, false
	}
	return id, true
}

// header finds the addresses, protocol and transport header of an IP packet; frag says it is
// an IPv4 fragment after the first, whose transport header is elsewhere.
func header(p []byte) (src, dst []byte, proto byte, l4 []byte, frag, ok bool) {
	if len(p) < 1 {
		return
	}
	switch p[0] >> 4 {
	case 4:
		ihl := int(p[0]&0x0f) * 4
		if len(p) < 20 || ihl < 20 || len(p) < ihl {
			return
		}
		frag = binary.BigEndian.Uint16(p[6:8])&0x1fff != 0
		return p[12:16], p[16:20], p[9], p[ihl:], frag, true
	case 6:
		if len(p) < 40 {
			return
		}
		return p[8:24], p[24:40], p[6], p[40:], false, true
	}
	return
}

// FlowHash hashes the 5-tuple of an IPv4 or IPv6 packet (addresses, protocol and, for TCP,
// UDP, UDP-Lite and SCTP, ports), for rendr's PacketConn.SetFlowHash: a Bond keeps the
// packets of one IP connection on one path, as ECMP does, so an inner TCP connection is not
// reordered. Both directions of a connection hash alike, and a packet hashes as its
// Identity's Hash. Anything else (a fragment after the first, a short packet, an IPv6
// packet's extension headers) hashes by what it has: the addresses and protocol, or 0 when
// it is not IP. It does not allocate.
func FlowHash(p []byte) uint64 {
	src, dst, proto, l4, frag, ok := header(p)
	if !ok {
		return 0
	}
	var sport, dport uint16
	if Proto(proto).HasPorts() && !frag && len(l4) >= 4 {
		sport, dport = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
	}
	return hash5(src, dst, proto, sport, dport)
}

// Hash is the FlowHash of the packets of the connection id stands for, either way.
func (id Identity) Hash() uint64 {
	if id.IsZero() {
		return 0
	}
	var s, d []byte
	if a := id.Src.Addr(); a.Is4() {
		s4, d4 := a.As4(), id.Dst.Addr().As4()
		s, d = s4[:], d4[:]
	} else {
		s16, d16 := a.As16(), id.Dst.Addr().As16()
		s, d = s16[:], d16[:]
	}
	return hash5(s, d, byte(id.Proto), id.Src.Port(), id.Dst.Port())
}

// hash5 is FNV-1a over the 5-tuple with its two ends in order, so that both directions of a
// connection hash alike. (hash/fnv's Hash64 would allocate on every packet.)
func hash5(src, dst []byte, proto byte, sport, dport uint16) uint64 {
	if c := bytes.Compare(src, dst); c > 0 || (c == 0 && sport > dport) {
		src, dst, sport, dport = dst, src, dport, sport
	}
	h := uint64(14695981039346656037)
	mix := func(b byte) { h = (h ^ uint64(b)) * 1099511628211 }
	for _, b := range src {
		mix(b)
	}
	for _, b := range dst {
		mix(b)
	}
	for _, b := range [...]byte{proto, byte(sport >> 8), byte(sport), byte(dport >> 8), byte(dport)} {
		mix(b)
	}
	return h
}
