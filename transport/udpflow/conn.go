package udpflow

import (
	"crypto/sha256"
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
	at     time.Duration // when it was queued, on the socket's clock
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
// PacketReader, PacketKeeper, CongestionMarker and HandshakeExtender.
//
// A listener's Conn starts pending: it holds the hello's payload and at most pendingLen more
// datagrams, copied at their size and counted against the listener's pendingBudget, and
// counts toward the listener's pending connections, until it is promoted (promote) to the
// full queue bounds.
type Conn struct {
	s       *socket
	ln      *Listener  // the listening side's listener; nil when dialed
	d       *dialState // the dialing side's state; nil when accepted
	maxSize int        // UDP payload, header included
	done    chan struct{}
	once    sync.Once
	err     error // why it closed, set before done closes: net.ErrClosed or ErrStatelessReset
	// rd is the read deadline, made by the first SetReadDeadline: a connection whose hello
	// nobody has taken yet does not pay for it.
	rd atomic.Pointer[deadline.Deadline]

	// Connection ids: hdrs[i][:headerSize] is the data header carrying id i. Id 0 is the one
	// the dialer chose; 1 to nids-1 the ones it offered in the handshake (HelloExtra), once
	// both ends know them. An entry below nids never changes again, so the write path reads
	// hdrs[cur] with no lock; each sits in 16 bytes of its own so that writing the next ones
	// shares no word with it.
	hdrs     [maxIDs][16]byte
	nids     atomic.Int32
	cur      atomic.Int32 // the id this end sends with; it only grows
	seen     atomic.Int32 // listener: the newest id the peer sent with
	switches atomic.Int64 // times cur moved

	// The reader's alone.
	lent   inbound // the datagram ReadPacket returned last
	marked bool    // the datagram read last met a queue that stood or filled
	// standing: the datagrams read since standSince all waited markDelay or more with
	// markMinLen or more behind them.
	standing   bool
	standSince time.Duration

	// qmu guards the receive queue and what follows.
	qmu      sync.Mutex
	q        ring
	qlen     int         // bound on datagrams queued: pendingLen until promoted, then queueLen
	promoted atomic.Bool // qlen is queueLen for good (read without the lock)
	queued   int64       // bytes queued, by their charge
	pcharge  int64       // of those, what counts against the listener's pendingBudget
	closed   bool        // no more datagrams are queued
	hasHello bool        // listener: hello holds the hello's payload, not yet read
	// helloBudget: the hello, over pendingBytes, counts in pcharge until read or promoted.
	helloBudget bool
	hello       []byte
	ready       chan struct{} // a datagram was queued (one token: the reader looks again)
	waiting     bool          // the reader found the queue empty: the next datagram wakes it
	dropped     atomic.Int64  // datagrams dropped for a full queue

	// mu guards what follows.
	mu       sync.Mutex
	peer     netip.AddrPort
	wrote    bool     // the first datagram went
	first    []byte   // the first datagram sent (dialer: the padded hello; listener: the answer)
	helloSum [16]byte // listener: SHA-256 of the hello's payload, to know its copies
	helloLen int      // listener: the first datagram's size, which bounds the answer's
	echoes   int
	pending  bool // listener: not yet promoted
	answered bool // dialer: the listener's answer arrived
	tries    int  // dialer: copies of the hello sent
	retire   *time.Timer

	wmu  sync.Mutex
	wbuf []byte
}

// dialState is what only the dialing side keeps.
type dialState struct {
	resend  *time.Timer // sends the first datagram again until answered
	retries int         // Retry datagrams acted on (the Conn's mu)
	offered int         // future ids offered by HelloExtra (the Conn's mu)
	// tokens[i] is the stateless reset token of id i, valid once tokensOK.
	tokens   [maxIDs][resetTokenSize]byte
	tokensOK atomic.Bool
	base     time.Time    // lastSend counts from it, on the monotonic clock
	lastSend atomic.Int64 // nanoseconds since base at the last send

	retriesTaken  atomic.Int64
	resetsIgnored atomic.Int64
}

func newConn(s *socket, peer netip.AddrPort, maxSize int, id [8]byte) *Conn {
	c := &Conn{s: s, peer: unmap(peer), maxSize: maxSize, qlen: pendingLen,
		done: make(chan struct{}), ready: make(chan struct{}, 1)}
	c.setID(0, id)
	c.nids.Store(1)
	return c
}

// routineDialerRead reads the dialer's own socket.
func (c *Conn) routineDialerRead() {
	c.s.readLoop(func(b []byte, from netip.AddrPort, rb *rxBuf) bool {
		if len(b) < headerSize {
			return false
		}
		i := c.idIndex([8]byte(b[1:headerSize]))
		return i >= 0 && c.deliver(b, from, rb, i)
	})
	c.Close()
}

// deliver takes one datagram of this connection, its id the connection's id idx, from the
// socket's reader, and reports whether it kept a reference to rb (see readFunc).
func (c *Conn) deliver(b []byte, from netip.AddrPort, rb *rxBuf, idx int) bool {
	switch b[0] {
	case 0:
		if c.d != nil {
			c.mu.Lock()
			ok := c.answered // before its answer, nothing of the listener's path counts
			c.mu.Unlock()
			if !ok {
				return false
			}
		}
		if c.d == nil {
			c.heard(idx)
		}
		c.advance(idx) // the peer moved to a newer id: follow it
	case flagReply:
		if c.d == nil {
			return false
		}
		c.mu.Lock()
		dup := c.answered
		c.answered = true
		c.mu.Unlock()
		if dup {
			return false
		}
		c.d.resend.Stop()
	case flagRetry:
		if c.d != nil {
			c.takeRetry(b, from)
		}
		return false
	case flagReset:
		if c.d != nil {
			c.takeReset(b, idx)
		}
		return false
	case flagHello, flagHello | flagToken:
		if c.d == nil {
			c.helloCopy(b, from)
		}
		return false
	default:
		return false
	}
	return c.enqueue(b, from, rb)
}

// helloCopy answers a copy of the first datagram: the answer was lost. It sends the answer
// again for a copy of the payload at least as large as the first (the answer is at most three
// times that), maxEchoes times at most.
func (c *Conn) helloCopy(b []byte, from netip.AddrPort) {
	p, _, err := parseHello(b)
	if err != nil {
		return
	}
	sum := helloHash(p)
	c.mu.Lock()
	var again []byte
	if sum == c.helloSum && len(b) >= c.helloLen && c.first != nil && c.echoes < maxEchoes {
		c.echoes++
		again = c.first
	}
	c.mu.Unlock()
	if again != nil {
		c.s.writeTo(again, from)
	}
}

func helloHash(p []byte) (h [16]byte) {
	sum := sha256.Sum256(p)
	copy(h[:], sum[:])
	return h
}

// enqueue queues a data or reply datagram for the reader, and reports whether it kept a
// reference to rb. A promoted connection's copy is made outside the queue's lock, so the
// reader, woken by the datagram before, does not wait for the next one's copy.
func (c *Conn) enqueue(b []byte, from netip.AddrPort, rb *rxBuf) (kept bool) {
	if !c.promoted.Load() {
		c.qmu.Lock()
		if c.qlen == pendingLen {
			ok := c.enqueuePendingLocked(b, from)
			w := ok && c.waiting
			c.waiting = c.waiting && !w
			c.qmu.Unlock()
			if w {
				c.wake()
			}
			if !ok {
				c.dropped.Add(1)
			}
			return false
		}
		c.qmu.Unlock() // promoted meanwhile
	}
	in := inbound{from: from, at: c.s.now()}
	if rb != nil {
		in.rb = rb
		in.charge = rb.charge(len(b))
		in.data = b[headerSize:len(b):len(b)]
	} else {
		in.b = getBuf(len(b))
		in.data = (*in.b)[:copy(*in.b, b[headerSize:])]
		in.charge = cap(*in.b) // what the copy holds while queued
	}
	c.qmu.Lock()
	if c.closed || c.q.n >= c.qlen || c.queued+int64(in.charge) > queueBytes {
		c.qmu.Unlock()
		if in.b != nil {
			putBuf(in.b)
		}
		c.dropped.Add(1) // the reader is behind: dropped, as the network might have
		return false
	}
	if rb != nil {
		rb.refs.Add(1)
	}
	c.q.push(in, c.qlen)
	c.queued += int64(in.charge)
	w := c.waiting
	c.waiting = false
	c.qmu.Unlock()
	if w {
		c.wake() // only a reader that waits needs it: one that is busy looks again anyway
	}
	return rb != nil
}

// enqueuePendingLocked queues a datagram of a connection not yet promoted: copied at its
// size, never lent, so that what nobody authenticated pins no more than it is, and counted
// against the listener's pendingBudget.
func (c *Conn) enqueuePendingLocked(b []byte, from netip.AddrPort) bool {
	n := int64(len(b) - headerSize)
	if c.closed || c.q.n >= c.qlen {
		return false
	}
	if c.ln.pendingQueued.Add(n) > pendingBudget {
		c.ln.pendingQueued.Add(-n)
		return false
	}
	c.q.push(inbound{from: from, data: append(make([]byte, 0, n), b[headerSize:]...), charge: int(n), at: c.s.now()}, c.qlen)
	c.queued += n
	c.pcharge += n
	return true
}

// wake makes the reader look at the queue (and its deadline) again.
func (c *Conn) wake() {
	select {
	case c.ready <- struct{}{}:
	default: // the reader has a wake-up coming already
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
	for {
		select {
		case <-c.done:
			return inbound{}, c.err // even if a datagram slipped in after Close drained the queue
		default:
		}
		c.qmu.Lock()
		if c.hasHello {
			// The hello, from the peer the connection started with.
			in := inbound{data: c.hello, charge: len(c.hello)}
			c.hasHello, c.hello = false, nil
			c.queued -= int64(in.charge)
			if c.helloBudget {
				c.helloBudget = false
				c.pcharge -= int64(in.charge)
				c.ln.pendingQueued.Add(-int64(in.charge))
			}
			c.qmu.Unlock()
			c.marked = false
			return in, nil
		}
		in, ok := c.q.pop()
		if ok {
			c.queued -= int64(in.charge)
			if c.pcharge > 0 {
				c.pcharge -= int64(in.charge)
				c.ln.pendingQueued.Add(-int64(in.charge))
			}
			c.marked = c.markLocked(in.at)
			c.qmu.Unlock()
			c.mu.Lock()
			if in.from == c.peer {
				in.from = netip.AddrPort{}
			}
			c.mu.Unlock()
			return in, nil
		}
		c.waiting = true
		c.qmu.Unlock()
		var expired <-chan struct{} // nil, never ready, while no deadline was ever set
		if rd := c.rd.Load(); rd != nil {
			expired = rd.Wait()
		}
		select {
		case <-c.ready:
		case <-c.done:
			return inbound{}, c.err
		case <-expired:
			return inbound{}, os.ErrDeadlineExceeded
		}
	}
}

// queueLen is how many datagrams wait for the reader.
func (c *Conn) queueLen() int {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return c.q.n
}

// queuedBytes is what the waiting datagrams count against the queue's byte bound.
func (c *Conn) queuedBytes() int64 {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return c.queued
}

// markLocked says whether a datagram queued at at, just taken off the queue, met congestion
// (transport.CongestionMarker): the reader has fallen behind for good, not for a moment.
//
// A reader that pauses (the scheduler ran something else, a collection ran) finds datagrams
// that waited, and catches up: that queue did its work, and marking it would cost the sender
// window it then needs, most of all on a long fast path, where a window regrows slowly. A
// reader slower than the sender leaves a queue that stands: as CoDel tells a standing queue
// from a burst (RFC 8289), a datagram is marked once every one read for markStand has waited
// markDelay or more, with markMinLen or more still behind it. Waiting time, not bytes, is what
// says so at any rate: 1 MiB is 8 ms at 1 Gbit/s but under a millisecond at 10.
//
// A queue a quarter full (markBytes, markLen) marks whatever the waits: at loopback rates the
// bounds fill faster than markStand, and the sender, in slow start, doubles its window each
// round trip; the rest of the queue absorbs the round trip it takes to hear of it.
func (c *Conn) markLocked(at time.Duration) bool {
	if c.queued >= markBytes || c.q.n >= markLen {
		return true
	}
	if c.q.n < markMinLen {
		c.standing = false
		return false
	}
	now := c.s.now()
	switch {
	case now-at < markDelay:
		c.standing = false
		return false
	case !c.standing:
		c.standing, c.standSince = true, now
		return false
	}
	return now-c.standSince >= markStand
}

// Marked reports whether the datagram read last met congestion: it left a queue that stood
// or was a quarter full (transport.CongestionMarker).
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

// Close ends the connection. A dialed one closes its socket; a listener's leaves its socket
// to the listener.
func (c *Conn) Close() error {
	c.closeWith(net.ErrClosed)
	return nil
}

// closeWith closes the connection, its reads and writes failing with err from then on.
func (c *Conn) closeWith(err error) {
	c.once.Do(func() {
		c.err = err
		close(c.done)
		if c.d != nil {
			c.d.resend.Stop()
		}
		c.mu.Lock()
		if c.retire != nil {
			c.retire.Stop()
		}
		c.mu.Unlock()
		if c.ln != nil {
			c.ln.forget(c)
		} else {
			c.s.close()
		}
		c.qmu.Lock()
		c.closed = true
		c.hasHello, c.hello = false, nil
		for {
			in, ok := c.q.pop()
			if !ok {
				break
			}
			c.queued -= int64(in.charge)
			in.done()
		}
		c.releasePendingLocked()
		c.qmu.Unlock()
	})
}

// releasePendingLocked gives back what the connection's queue counted against its
// listener's pendingBudget: it was promoted, or closed.
func (c *Conn) releasePendingLocked() {
	if c.pcharge != 0 {
		c.ln.pendingQueued.Add(-c.pcharge)
		c.pcharge = 0
	}
	c.helloBudget = false
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
	rd := c.rd.Load()
	if rd == nil {
		c.rd.CompareAndSwap(nil, deadline.New())
		rd = c.rd.Load()
		defer c.wake() // a Read blocked before there was a deadline looks again
	}
	rd.Set(t)
	return nil
}

// SetWriteDeadline does nothing: a UDP write does not wait for the peer.
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }
