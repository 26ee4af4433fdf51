package udpflow

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr/internal/deadline"
	"github.com/rendr-go/rendr/transport"
)

// inbound is one datagram waiting for Read: the whole datagram, header included, in a pooled
// buffer.
type inbound struct {
	b      *[]byte // a copy of the datagram, in a buffer of its own; nil when rb holds it
	rb     *rxBuf  // the socket's buffer the datagram arrived in, lent (a large read)
	data   []byte  // the payload, in b or in rb
	charge int     // what it counts against queueBytes
	from   netip.AddrPort
}

// done gives the datagram's memory back.
func (in *inbound) done() {
	if in.rb != nil {
		in.rb.release()
	} else if in.b != nil {
		putBuf(in.b)
	}
}

// Buffers for queued datagrams come in three sizes, so a datagram just over one size does
// not hold a 64 KiB buffer; a queue's bound counts their capacity.
var pools = [...]struct {
	size int
	p    sync.Pool
}{{size: 2048}, {size: 16 << 10}, {size: maxUDP + 1}}

func getBuf(n int) *[]byte {
	for i := range pools {
		if n <= pools[i].size {
			if b, ok := pools[i].p.Get().(*[]byte); ok {
				return b
			}
			b := make([]byte, pools[i].size)
			return &b
		}
	}
	b := make([]byte, n)
	return &b
}

func putBuf(b *[]byte) {
	for i := range pools {
		if cap(*b) == pools[i].size {
			pools[i].p.Put(b)
			return
		}
	}
}

// Conn is one udpflow connection: rendr's carrier for one path. Read returns one datagram's
// payload; Write sends one. It implements transport.PacketCarrier, Rebinder, BatchWriter,
// PacketReader, PacketKeeper and CongestionMarker.
type Conn struct {
	s       *socket
	id      [8]byte
	dataHdr [headerSize]byte // the header of every datagram after the first: set once, only read
	dialer  bool
	ln      *Listener // the listening side's listener; nil when dialed
	maxSize int       // UDP payload, header included
	q       chan inbound
	lent    inbound      // the datagram ReadPacket returned last (its reader's alone)
	marked  bool         // the datagram read last met a filling queue (its reader's alone)
	queued  atomic.Int64 // bytes in q
	done    chan struct{}
	once    sync.Once
	rd      *deadline.Deadline
	resend  *time.Timer // dialer: sends the first datagram again until answered

	mu       sync.Mutex
	peer     netip.AddrPort
	wrote    bool   // the first datagram went
	first    []byte // the first datagram sent (dialer: the padded hello; listener: the answer)
	hello    []byte // listener: the first datagram's payload, to know its copies
	helloLen int    // listener: the first datagram's size, which bounds the answer's
	echoes   int
	answered bool // dialer: the listener's answer arrived
	tries    int

	wmu  sync.Mutex
	wbuf []byte
}

func newConn(s *socket, peer netip.AddrPort, maxSize int, id [8]byte) *Conn {
	c := &Conn{s: s, id: id, peer: unmap(peer), maxSize: maxSize,
		q: make(chan inbound, queueLen), done: make(chan struct{}), rd: deadline.New()}
	c.header(c.dataHdr[:0], 0)
	return c
}

// routineDialerRead reads the dialer's own socket.
func (c *Conn) routineDialerRead() {
	c.s.readLoop(func(b []byte, from netip.AddrPort, rb *rxBuf) bool {
		return len(b) >= headerSize && [8]byte(b[1:headerSize]) == c.id && c.deliver(b, from, rb)
	})
	c.Close()
}

// deliver takes one datagram of this connection from the socket's reader, and reports
// whether it kept a reference to rb (see readFunc).
func (c *Conn) deliver(b []byte, from netip.AddrPort, rb *rxBuf) bool {
	off := headerSize
	switch b[0] {
	case 0:
		c.mu.Lock()
		ok := !c.dialer || c.answered // before its answer, nothing of the listener's path counts
		c.mu.Unlock()
		if !ok {
			return false
		}
	case flagReply:
		if !c.dialer {
			return false
		}
		c.mu.Lock()
		dup := c.answered
		c.answered = true
		c.mu.Unlock()
		if dup {
			return false
		}
		c.resend.Stop()
	case flagHello:
		if c.dialer {
			return false
		}
		p, err := helloPayload(b)
		if err != nil {
			return false
		}
		c.mu.Lock()
		if c.hello != nil {
			// A copy of the first datagram: our answer was lost. Send it again (it is
			// smaller than the padded copy, so this amplifies nothing).
			var again []byte
			if bytes.Equal(p, c.hello) && c.first != nil && c.echoes < maxEchoes {
				c.echoes++
				again = c.first
			}
			c.mu.Unlock()
			if again != nil {
				c.s.writeTo(again, from)
			}
			return false
		}
		c.hello = bytes.Clone(p)
		c.helloLen = len(b)
		c.mu.Unlock()
		off = headerSize + 2
		b = b[:off+len(p)]
	default:
		return false
	}
	in := inbound{rb: rb, from: from, charge: len(b)}
	if rb != nil {
		in.charge = rb.charge(len(b))
	}
	if len(c.q) == cap(c.q) || c.queued.Load()+int64(in.charge) > queueBytes {
		return false // the reader is behind: dropped, as the network might have
	}
	if rb != nil {
		rb.refs.Add(1)
		in.data = b[off:len(b):len(b)]
	} else {
		in.b = getBuf(len(b))
		in.data = (*in.b)[:copy(*in.b, b[off:])]
		in.charge = cap(*in.b) // what the copy holds while queued
	}
	c.queued.Add(int64(in.charge))
	select {
	case c.q <- in:
		return rb != nil
	case <-c.done:
		c.queued.Add(-int64(in.charge))
		if rb != nil {
			rb.refs.Add(-1) // the reader still holds its own reference: never the last
		} else {
			putBuf(in.b)
		}
		return false
	}
}

func addrPort(a *net.UDPAddr) netip.AddrPort { return unmap(a.AddrPort()) }

// unmap makes IPv4-mapped IPv6 addresses plain IPv4, so one peer has one form.
func unmap(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }

// Read reads one datagram's payload. A buffer too small for it gets what fits.
func (c *Conn) Read(b []byte) (int, error) {
	n, _, err := c.read(b)
	return n, err
}

// ReadFrom is Read that also says where the datagram came from: nil for the current peer.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.read(b)
	if err != nil || !from.IsValid() {
		return n, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

func (c *Conn) read(b []byte) (int, netip.AddrPort, error) {
	in, err := c.next()
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	n := copy(b, in.data)
	in.done()
	return n, in.from, nil
}

// next takes the next datagram off the queue; from is zero when it came from the peer.
func (c *Conn) next() (inbound, error) {
	var in inbound
	select {
	case <-c.done:
		return in, net.ErrClosed // even if a datagram slipped in after Close drained the queue
	default:
	}
	select {
	case in = <-c.q:
	default:
		select {
		case in = <-c.q:
		case <-c.done:
			return in, net.ErrClosed
		case <-c.rd.Wait():
			return in, os.ErrDeadlineExceeded
		}
	}
	c.marked = c.queued.Add(-int64(in.charge)) >= markBytes || len(c.q) >= markLen
	c.mu.Lock()
	if in.from == c.peer {
		in.from = netip.AddrPort{}
	}
	c.mu.Unlock()
	return in, nil
}

// Marked reports whether the datagram read last left a queue that was filling: an eighth of
// its bounds or more still behind it (transport.CongestionMarker).
func (c *Conn) Marked() bool { return c.marked }

// Keep makes the datagram ReadPacket returned last outlive the next ReadPacket, when it was lent
// (a large read); a small one was copied into a queue buffer, which is reused, and cannot be
// kept (transport.PacketKeeper). The pin keeps the socket's whole receive buffer from reuse
// (the size reported is the datagram's share of it): with maxLent of them out, the socket
// copies what it reads until some come back.
func (c *Conn) Keep() (transport.Pin, int) {
	rb := c.lent.rb
	if rb == nil {
		return nil, 0
	}
	rb.refs.Add(1)
	return rb, c.lent.charge // its share of the buffer, as its queue counted it
}

// ReadPacket returns the next datagram where it arrived, with no copy (transport.PacketReader):
// valid until the next ReadPacket, which after Close returns net.ErrClosed and lets the last one
// go. Only one goroutine may use it, and not beside Read.
func (c *Conn) ReadPacket() ([]byte, net.Addr, error) {
	c.lent.done() // the one lent before
	c.lent = inbound{}
	in, err := c.next()
	if err != nil {
		return nil, nil, err
	}
	c.lent = in
	if !in.from.IsValid() {
		return in.data, nil, nil
	}
	return in.data, net.UDPAddrFromAddrPort(in.from), nil
}

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

// SetPeer moves the connection to addr, which rendr validated.
func (c *Conn) SetPeer(addr net.Addr) {
	if ua, ok := addr.(*net.UDPAddr); ok {
		c.mu.Lock()
		c.peer = addrPort(ua)
		c.mu.Unlock()
	}
}

func (c *Conn) writeTo(b []byte, to netip.AddrPort) error {
	select {
	case <-c.done:
		return net.ErrClosed
	default:
	}
	if len(b) > c.MaxDatagramSize() {
		return fmt.Errorf("udpflow: %d-byte datagram: %w", len(b), transport.ErrDatagramTooLarge)
	}
	c.mu.Lock()
	if !c.wrote {
		if !c.dialer && headerSize+len(b) > 3*c.helloLen {
			// Nothing three times larger than what came from an address not yet proven:
			// the first datagram's source may be a victim's.
			c.mu.Unlock()
			return fmt.Errorf("udpflow: a %d-byte answer to a %d-byte first datagram: %w", len(b), c.helloLen, transport.ErrDatagramTooLarge)
		}
		c.wrote = true
		d := c.firstDatagram(b)
		c.first = d
		c.mu.Unlock()
		if c.dialer {
			c.resend.Reset(250 * time.Millisecond)
		}
		return c.s.writeTo(d, to)
	}
	c.mu.Unlock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = c.header(c.wbuf[:0], 0)
	c.wbuf = append(c.wbuf, b...)
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
		return net.ErrClosed
	default:
	}
	return c.s.writeBatch(c.dataHdr[:], b, peer)
}

func (c *Conn) header(b []byte, flags byte) []byte {
	return append(append(b, flags), c.id[:]...)
}

// firstDatagram is the first datagram of the connection carrying b: the dialer's padded to
// helloSize, the listener's marked as the answer.
func (c *Conn) firstDatagram(b []byte) []byte {
	if !c.dialer {
		return append(c.header(nil, flagReply), b...)
	}
	d := c.header(make([]byte, 0, max(helloSize, headerSize+2+len(b))), flagHello)
	d = binary.BigEndian.AppendUint16(d, uint16(len(b)))
	d = append(d, b...)
	return d[:cap(d)] // zero padding
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
	c.resend.Reset(250 * time.Millisecond << tries)
}

// ID is the connection id the dialer chose, as every datagram of the connection carries it:
// for logs, and for matching packet captures to paths.
func (c *Conn) ID() [8]byte { return c.id }

// MaxDatagramSize is the largest datagram Write takes: a UDP datagram less the header, and
// less the 2-byte length the first datagram carries before its padding.
func (c *Conn) MaxDatagramSize() int { return c.maxSize - headerSize - 2 }

// BaseDatagramSize is what every path carries: 1200 bytes of UDP payload, less the same.
func (c *Conn) BaseDatagramSize() int { return min(baseSize, c.maxSize) - headerSize - 2 }

// Close ends the connection. A dialed one closes its socket; a listener's leaves its socket
// to the listener.
func (c *Conn) Close() error {
	c.once.Do(func() {
		close(c.done)
		if c.resend != nil {
			c.resend.Stop()
		}
		if c.ln != nil {
			c.ln.forget(c)
		} else {
			c.s.close()
		}
		for {
			select {
			case in := <-c.q:
				c.queued.Add(-int64(in.charge))
				in.done()
			default:
				return
			}
		}
	})
	return nil
}

// LocalAddr is the socket's address.
func (c *Conn) LocalAddr() net.Addr { return c.s.u.LocalAddr() }

// RemoteAddr is the peer's current address.
func (c *Conn) RemoteAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return net.UDPAddrFromAddrPort(c.peer)
}

// SetDeadline sets the read deadline; writes do not block.
func (c *Conn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline makes a blocked Read return os.ErrDeadlineExceeded at t.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rd.Set(t)
	return nil
}

// SetWriteDeadline does nothing: a UDP write does not wait for the peer.
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }
