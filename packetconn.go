// Packet flows: PacketConn, datagrams over the session, and pinning them to paths.

package rendr

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/rendr-go/rendr/internal/flow"
	"github.com/rendr-go/rendr/status"
)

// PacketConn is one packet flow: a net.PacketConn between two peers that rides the session's
// paths like a Conn. Each write is one datagram; datagrams are never resent and never
// delivered twice (a Race sends copies; the receiver keeps the first), and may be lost when a
// path dies with them in flight or a queue is full (Stats counts every drop). Opening and
// closing are reliable: ReadFrom returns io.EOF once the peer has closed and every datagram
// that arrived before is read.
type PacketConn struct {
	flowEnd
	hash atomic.Pointer[func([]byte) uint64] // SetFlowHash
}

var (
	_ net.PacketConn = (*PacketConn)(nil)
	_ net.Conn       = (*PacketConn)(nil)
)

// MaxDatagram is the largest datagram a PacketConn carries; a longer one gets ErrTooLarge.
const MaxDatagram = flow.MaxDatagram

// ErrTooLarge is returned for a datagram over MaxDatagram.
var ErrTooLarge = flow.ErrTooLarge

// PacketStats counts a packet flow's datagrams: sent and received, and every drop by cause.
type PacketStats = flow.PacketStats

func newPacketConn(s *session, st *flow.Stream) *PacketConn {
	return &PacketConn{flowEnd: newFlowEnd(s, st)}
}

// ReadFrom reads one datagram into p (cut to len(p) if longer) and returns the peer's address.
func (c *PacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, err := c.st.ReadDatagram(p)
	if err != nil {
		return n, nil, err
	}
	return n, c.peer, nil
}

// WriteTo sends p as one datagram to the flow's peer; addr must be nil or the peer's address
// (RemoteAddr). It never blocks: a datagram that finds the send queue full is dropped and
// counted (Stats().SendDrops), as a UDP socket would.
func (c *PacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if addr != nil && addr.String() != c.peer.String() {
		return 0, fmt.Errorf("rendr: WriteTo %v: a packet flow only reaches its peer %v", addr, c.peer)
	}
	var err error
	if h := c.hash.Load(); h != nil {
		err = c.st.WriteDatagramPinned(p, (*h)(p))
	} else {
		err = c.st.WriteDatagram(p)
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// SetFlowHash pins datagrams to paths: over a Bond, datagrams for which hash returns the same
// value always take the same path (the value modulo the paths carrying traffic), as ECMP keeps
// one connection on one link, so an inner TCP connection of a VPN is not reordered across
// paths. FlowHashIP hashes an IP packet's 5-tuple. Nil turns pinning off. A Race still sends
// every datagram on every path; when the paths carrying traffic change, hashes map anew.
func (c *PacketConn) SetFlowHash(hash func(datagram []byte) uint64) {
	if hash == nil {
		c.hash.Store(nil)
		return
	}
	c.hash.Store(&hash)
}

// FlowHashIP hashes the 5-tuple of an IPv4 or IPv6 packet (addresses, protocol and, for TCP,
// UDP, UDP-Lite and SCTP, ports), for SetFlowHash. Both directions of a connection hash the
// same. Anything else (a fragment after the first, a short packet, not IP) hashes by what it
// has: the addresses and protocol, or 0.
//
// It belongs with the L3 identity (a package of its own, with the TUN ingress), and moves
// there when that lands; it stays here, exported, until then, so that a program pinning an
// IP tunnel's flows has it now.
func FlowHashIP(p []byte) uint64 {
	if len(p) < 1 {
		return 0
	}
	var src, dst []byte
	var proto byte
	var l4 []byte
	switch p[0] >> 4 {
	case 4:
		ihl := int(p[0]&0x0f) * 4
		if len(p) < 20 || ihl < 20 || len(p) < ihl {
			return 0
		}
		proto, src, dst = p[9], p[12:16], p[16:20]
		if fragOff := binary.BigEndian.Uint16(p[6:8]) & 0x1fff; fragOff == 0 {
			l4 = p[ihl:]
		}
	case 6:
		if len(p) < 40 {
			return 0
		}
		proto, src, dst, l4 = p[6], p[8:24], p[24:40], p[40:] // extension headers: addresses only
	default:
		return 0
	}
	var sport, dport uint16
	switch proto {
	case 6, 17, 136, 132: // TCP, UDP, UDP-Lite, SCTP
		if len(l4) >= 4 {
			sport, dport = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		}
	}
	// Order the two ends so that both directions hash alike.
	if bytes.Compare(src, dst) > 0 || (bytes.Equal(src, dst) && sport > dport) {
		src, dst, sport, dport = dst, src, dport, sport
	}
	// FNV-1a, inline: hash/fnv's Hash64 would allocate on every datagram.
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

// Read is ReadFrom without the address.
func (c *PacketConn) Read(p []byte) (int, error) { return c.st.ReadDatagram(p) }

// Write is WriteTo the peer.
func (c *PacketConn) Write(p []byte) (int, error) { return c.WriteTo(p, nil) }

// Close closes the flow: datagrams already queued are sent, then the peer reads io.EOF.
func (c *PacketConn) Close() error { return c.st.Close() }

// FlowID is the flow's id within its session (even: packet flows).
func (c *PacketConn) FlowID() uint64 { return c.st.ID() }

// Stats returns the flow's datagram counters.
func (c *PacketConn) Stats() PacketStats { return c.st.PacketStats() }

// Status describes the flow's session.
func (c *PacketConn) Status() status.Session { return c.s.snapshot() }

// DialPacket opens a new packet flow. Like DialContext, the first call waits for the
// session's first path; later ones cost no round trip.
func (d *Dialer) DialPacket(ctx context.Context) (*PacketConn, error) {
	s, st, err := d.open(ctx, (*flow.Engine).OpenPacket)
	if err != nil {
		return nil, err
	}
	return newPacketConn(s, st), nil
}

// AcceptPacket waits for the next packet flow a peer opened.
func (l *Listener) AcceptPacket(ctx context.Context) (*PacketConn, error) {
	return acceptFrom(ctx, l.acceptPk, l.done)
}

// routineSessionAcceptPacket hands a session's new packet flows to AcceptPacket.
func (l *Listener) routineSessionAcceptPacket(s *session) {
	handOff(l, s, (*flow.Engine).AcceptPacket, newPacketConn, l.acceptPk)
}

// handOff passes the flows a session accepts with accept, wrapped, to out until the session
// or the Listener ends; a flow nobody takes by then is closed.
func handOff[C interface{ Close() error }](l *Listener, s *session,
	accept func(*flow.Engine, context.Context) (*flow.Stream, error),
	wrap func(*session, *flow.Stream) C, out chan C) {
	defer s.wg.Done()
	for {
		st, err := accept(s.engine, s.ctx)
		if err != nil {
			return
		}
		c := wrap(s, st)
		select {
		case out <- c:
		case <-s.done:
			c.Close()
			return
		case <-l.done:
			c.Close()
			return
		}
	}
}
