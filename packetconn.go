// Packet flows: PacketConn, datagrams over the session, and pinning them to paths.

package rendr

import (
	"context"
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
// paths. l3.FlowHash hashes an IP packet's 5-tuple. Nil turns pinning off. A Race still sends
// every datagram on every path; when the paths carrying traffic change, hashes map anew.
func (c *PacketConn) SetFlowHash(hash func(datagram []byte) uint64) {
	if hash == nil {
		c.hash.Store(nil)
		return
	}
	c.hash.Store(&hash)
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
	return acceptFrom(ctx, l.acceptPk, l.done, errListenerClosed)
}

// routineSessionAcceptPacket hands a session's new packet flows to AcceptPacket.
func (l *Listener) routineSessionAcceptPacket(s *session) {
	handOff(s, (*flow.Engine).AcceptPacket, newPacketConn, l.acceptPk, l.done, l.carries)
}
