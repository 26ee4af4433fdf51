// Package l3 is the network-layer identity of a flow: the protocol and the two addresses and
// ports of the IP connection a flow stands for, as a TUN ingress sees it, with its one
// canonical binary encoding (carried in a flow's OPEN), and the 5-tuple hash that keeps an
// IP connection's packets on one path of a Bond.
//
// The encoding, version 1 (all integers big-endian):
//
//	Version (1 byte) = 1
//	Proto   (1 byte)    the IP protocol number: 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...
//	Family  (1 byte)    4 or 6: the length of both addresses, 4 or 16 bytes
//	Source address, Source port (2 bytes), Destination address, Destination port (2 bytes)
//
// 15 bytes for IPv4, 39 for IPv6. Protocol 0 with the unspecified destination address is a
// Raw identity: a flow of whole IP packets of one host. Every identity has exactly one
// encoding, and decoding takes only that one: an IPv4 address is never written as IPv4-mapped
// IPv6, there is no zone, a protocol with ports (TCP, UDP, UDP-Lite, SCTP) has non-zero ports
// and any other has zero ports, and nothing follows the last byte.
package l3

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Proto is an IP protocol number.
type Proto uint8

// The protocols a TUN ingress meets most.
const (
	ICMP    Proto = 1
	TCP     Proto = 6
	UDP     Proto = 17
	ICMPv6  Proto = 58
	SCTP    Proto = 132
	UDPLite Proto = 136
)

// HasPorts reports whether the protocol's header starts with a source and a destination port.
func (p Proto) HasPorts() bool { return p == TCP || p == UDP || p == SCTP || p == UDPLite }

func (p Proto) String() string {
	switch p {
	case ICMP:
		return "icmp"
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case ICMPv6:
		return "icmpv6"
	case SCTP:
		return "sctp"
	case UDPLite:
		return "udplite"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// Identity is the IP connection a flow stands for, seen from the side that opened the flow:
// Src is the application that started it, Dst where it was going. The zero Identity means
// none.
type Identity struct {
	Proto    Proto
	Src, Dst netip.AddrPort
}

// Version is the version of the encoding this package writes.
const Version = 1

// MaxLen is the longest encoding: an IPv6 identity.
const MaxLen = 3 + 2*(16+2)

// ErrInvalid is the error of an identity that has no canonical encoding, and of bytes that are
// not one.
var ErrInvalid = errors.New("l3: invalid identity")

// IsZero reports whether id is the zero Identity (no identity).
func (id Identity) IsZero() bool { return id == Identity{} }

// Valid reports why id cannot be encoded, or nil: both addresses valid, of one family, with no
// zone and not IPv4-mapped IPv6; ports non-zero for a protocol that has them and zero for one
// that has not.
func (id Identity) Valid() error {
	s, d := id.Src.Addr(), id.Dst.Addr()
	switch {
	case !s.IsValid() || !d.IsValid():
		return fmt.Errorf("%w: %v: an address is missing", ErrInvalid, id)
	case s.Is4() != d.Is4():
		return fmt.Errorf("%w: %v: one IPv4 and one IPv6 address", ErrInvalid, id)
	case s.Zone() != "" || d.Zone() != "":
		return fmt.Errorf("%w: %v: an address has a zone", ErrInvalid, id)
	case s.Is4In6() || d.Is4In6():
		return fmt.Errorf("%w: %v: an IPv4-mapped IPv6 address (use the IPv4 address: netip.Addr.Unmap)", ErrInvalid, id)
	case id.Proto.HasPorts() && (id.Src.Port() == 0 || id.Dst.Port() == 0):
		return fmt.Errorf("%w: %v: port 0", ErrInvalid, id)
	case !id.Proto.HasPorts() && (id.Src.Port() != 0 || id.Dst.Port() != 0):
		return fmt.Errorf("%w: %v: ports on a protocol that has none", ErrInvalid, id)
	}
	return nil
}

// AppendBinary appends id's encoding to b; an identity that is not Valid is an error.
func (id Identity) AppendBinary(b []byte) ([]byte, error) {
	if err := id.Valid(); err != nil {
		return b, err
	}
	fam := byte(6)
	if id.Src.Addr().Is4() {
		fam = 4
	}
	b = append(b, Version, byte(id.Proto), fam)
	for _, ap := range [2]netip.AddrPort{id.Src, id.Dst} {
		if a := ap.Addr(); fam == 4 {
			a4 := a.As4()
			b = append(b, a4[:]...)
		} else {
			a16 := a.As16()
			b = append(b, a16[:]...)
		}
		b = binary.BigEndian.AppendUint16(b, ap.Port())
	}
	return b, nil
}

// MarshalBinary is id's encoding.
func (id Identity) MarshalBinary() ([]byte, error) { return id.AppendBinary(make([]byte, 0, MaxLen)) }

// UnmarshalBinary sets id from its encoding, which must be canonical and of this version.
func (id *Identity) UnmarshalBinary(b []byte) error {
	if len(b) < 3 {
		return fmt.Errorf("%w: %d bytes", ErrInvalid, len(b))
	}
	if b[0] != Version {
		return fmt.Errorf("%w: version %d, this side knows %d", ErrInvalid, b[0], Version)
	}
	n := 0
	switch b[2] {
	case 4:
		n = 4
	case 6:
		n = 16
	default:
		return fmt.Errorf("%w: family %d", ErrInvalid, b[2])
	}
	if len(b) != 3+2*(n+2) {
		return fmt.Errorf("%w: %d bytes for family %d, want %d", ErrInvalid, len(b), b[2], 3+2*(n+2))
	}
	addrPort := func(p []byte) netip.AddrPort {
		a, _ := netip.AddrFromSlice(p[:n])
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(p[n:]))
	}
	got := Identity{Proto: Proto(b[1]), Src: addrPort(b[3:]), Dst: addrPort(b[3+n+2:])}
	if err := got.Valid(); err != nil {
		return err
	}
	*id = got
	return nil
}

// String is "tcp 10.0.0.2:40000 > 192.0.2.1:443" ("none" for the zero Identity).
func (id Identity) String() string {
	if id.IsZero() {
		return "none"
	}
	if id.IsRaw() {
		return fmt.Sprintf("raw %v", id.Src.Addr())
	}
	if !id.Proto.HasPorts() {
		return fmt.Sprintf("%v %v > %v", id.Proto, id.Src.Addr(), id.Dst.Addr())
	}
	return fmt.Sprintf("%v %v > %v", id.Proto, id.Src, id.Dst)
}

// Raw is the identity of a flow that carries whole IP packets of every protocol but TCP and
// UDP (ICMP echo, GRE...) from the host at src: protocol 0 with no ports, and the unspecified
// address of src's family as the destination, since its packets go anywhere. A listener
// writes such a flow's packets to an IP network of its own, and sends back the packets for
// src.
func Raw(src netip.Addr) Identity {
	dst := netip.IPv4Unspecified()
	if src.Is6() {
		dst = netip.IPv6Unspecified()
	}
	return Identity{Src: netip.AddrPortFrom(src, 0), Dst: netip.AddrPortFrom(dst, 0)}
}

// IsRaw reports whether id is a Raw identity.
func (id Identity) IsRaw() bool {
	return id.Proto == 0 && id.Dst.Port() == 0 && id.Dst.Addr().IsUnspecified() && id.Src.Addr().IsValid()
}

// Reverse is the identity of the other direction: source and destination swapped.
func (id Identity) Reverse() Identity {
	return Identity{Proto: id.Proto, Src: id.Dst, Dst: id.Src}
}
