package udpflow

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/rendr-go/rendr/transport"
)

// Write sends b as one datagram to the current peer.
func (c *Conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	peer := c.peer
	c.mu.Unlock()
	if err := c.writeTo(b, peer); err != nil {
		return 0, err
	}
	return len(b), nil
}

// WriteTo sends b as one datagram to addr (a *net.UDPAddr): a PATH_CHALLENGE to an address
// the peer's datagrams came from.
func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("udpflow: WriteTo %T", addr)
	}
	if err := c.writeTo(b, addrPort(ua)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// SetPeer moves the connection to addr, which rendr validated. On the listening side a move
// to another address also moves the connection to its next id (when it has one left), so
// that what it sends there does not carry the id an observer saw at the old address.
func (c *Conn) SetPeer(addr net.Addr) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return
	}
	a := addrPort(ua)
	c.mu.Lock()
	moved := c.peer != a
	c.peer = a
	c.mu.Unlock()
	if moved && c.d == nil {
		c.advance(int(c.cur.Load()) + 1)
	}
}

func (c *Conn) writeTo(b []byte, to netip.AddrPort) error {
	select {
	case <-c.done:
		return c.err
	default:
	}
	if len(b) > c.MaxDatagramSize() {
		return fmt.Errorf("udpflow: %d-byte datagram: %w", len(b), transport.ErrDatagramTooLarge)
	}
	c.mu.Lock()
	if !c.wrote {
		if c.d == nil && headerSize+len(b) > 3*c.helloLen {
			// Nothing three times larger than what came from an address not yet proven:
			// the first datagram's source may be a victim's.
			c.mu.Unlock()
			return fmt.Errorf("udpflow: a %d-byte answer to a %d-byte first datagram: %w", len(b), c.helloLen, transport.ErrDatagramTooLarge)
		}
		c.wrote = true
		d := c.firstDatagram(b)
		c.first = d
		c.mu.Unlock()
		if c.d != nil {
			c.d.lastSend.Store(int64(time.Since(c.d.base)))
			c.d.resend.Reset(250 * time.Millisecond)
		} else {
			// The listening side answers only a hello its handshake authenticated: for a
			// caller that does not say so through AnswerExtra, this is the sign.
			c.promote()
		}
		return c.s.writeTo(d, to)
	}
	c.mu.Unlock()
	h := c.sendHeader()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = append(append(c.wbuf[:0], h[:headerSize]...), b...)
	return c.s.writeTo(c.wbuf, to)
}

// WriteBatch sends each element of b as one datagram to the current peer, with as few system
// calls as the kernel allows (sendmmsg; one UDP GSO call for a run of same-size datagrams).
func (c *Conn) WriteBatch(b [][]byte) error {
	c.mu.Lock()
	peer, first := c.peer, !c.wrote
	c.mu.Unlock()
	if first {
		for _, d := range b {
			if _, err := c.Write(d); err != nil {
				return err
			}
		}
		return nil
	}
	for _, d := range b {
		if len(d) > c.MaxDatagramSize() {
			return fmt.Errorf("udpflow: %d-byte datagram: %w", len(d), transport.ErrDatagramTooLarge)
		}
	}
	select {
	case <-c.done:
		return c.err
	default:
	}
	return c.s.writeBatch(c.sendHeader()[:headerSize], b, peer)
}

// sendHeader is the header of the next data datagram: the current id's. A dialer that has
// not sent for idleSwitch moves to its next id first.
func (c *Conn) sendHeader() *[16]byte {
	if c.d != nil {
		now := int64(time.Since(c.d.base))
		if now-c.d.lastSend.Swap(now) >= int64(idleSwitch) {
			c.advance(int(c.cur.Load()) + 1)
		}
	}
	return &c.hdrs[c.cur.Load()]
}

// firstDatagram is the first datagram of the connection carrying b: the dialer's padded to
// helloSize, the listener's marked as the answer.
func (c *Conn) firstDatagram(b []byte) []byte {
	if c.d == nil {
		return append(append([]byte{flagReply}, c.hdrs[0][1:headerSize]...), b...)
	}
	return buildHello(c.id(0), b, nil)
}

// resendHello sends the dialer's first datagram again, until the answer comes.
func (c *Conn) resendHello() {
	c.mu.Lock()
	if c.answered || c.tries >= 6 {
		c.mu.Unlock()
		return
	}
	c.tries++
	d, peer, tries := c.first, c.peer, c.tries
	c.mu.Unlock()
	select {
	case <-c.done:
		return
	default:
	}
	c.s.writeTo(d, peer)
	c.d.resend.Reset(250 * time.Millisecond << tries)
}

// MaxDatagramSize is the largest datagram Write takes: a UDP datagram less the header, and
// less the 2-byte length the first datagram carries before its padding.
func (c *Conn) MaxDatagramSize() int { return c.maxSize - headerSize - 2 }

// BaseDatagramSize is what every path carries: 1200 bytes of UDP payload, less the same.
func (c *Conn) BaseDatagramSize() int { return min(baseSize, c.maxSize) - headerSize - 2 }
