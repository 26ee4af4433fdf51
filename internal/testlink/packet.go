package testlink

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"sync"
	"time"
)

// Packet links are the datagram twin of Pipe: each Write is one datagram, each Read returns one
// whole, and a direction may lose, duplicate, reorder and corrupt them, drop those over an MTU,
// or drop the first few. A PacketConn implements what rendr looks for in a datagram carrier
// (net.Conn plus MaxDatagramSize and BaseDatagramSize), so a path over it runs rendr's own
// packet numbering, loss recovery and MTU search. Like the stream links they have no
// background goroutines: a Read waits on the link's broadcast channel and on a timer for the
// head datagram's delivery time, so under testing/synctest virtual time jumps straight to it.

// MaxPacketQueue bounds the datagrams waiting to be read at one end; more are dropped and
// counted in PacketStats.Overflow, as a full socket receive buffer drops them.
const MaxPacketQueue = 1 << 13

// PacketConfig shapes one direction of a packet link. The zero value delivers every datagram
// at once, in order.
type PacketConfig struct {
	// Delay is the one-way delay of every datagram.
	Delay time.Duration
	// Jitter adds a random delay in [0, Jitter) per datagram. Unlike a stream link's, it
	// reorders: a datagram may be delivered before an earlier one.
	Jitter time.Duration
	// Loss is the probability that a datagram vanishes.
	Loss float64
	// Dup is the probability that a datagram that is not lost is delivered twice (the copy
	// draws its own jitter).
	Dup float64
	// Corrupt is the probability that a delivered copy has one bit flipped.
	Corrupt float64
	// MTU: larger datagrams vanish silently, as on a path whose routers drop them without an
	// ICMP message (a PMTU black hole). Zero means no limit.
	MTU int
	// DropFirst: the first DropFirst datagrams in this direction vanish (a lost handshake).
	DropFirst int
	// Seed seeds the link's PRNG so runs are repeatable.
	Seed int64
}

// PacketStats counts what happened to the datagrams written in one direction.
type PacketStats struct {
	Sent       int // datagrams written
	Delivered  int // copies read by the receiver
	Lost       int // dropped by Loss, DropFirst or the blackhole
	Oversize   int // dropped for exceeding MTU
	Duplicated int // extra copies scheduled
	Corrupted  int // copies with a flipped bit
	Overflow   int // copies dropped because the receiver's queue was full
}

type packet struct {
	b   []byte
	at  time.Time
	seq uint64 // order of scheduling, to keep equal times in write order
}

// packetHalf is one direction; guarded by PacketLink.mu.
type packetHalf struct {
	cfg   PacketConfig
	q     []packet // sorted by (at, seq)
	seq   uint64
	stats PacketStats
}

// PacketLink controls both directions of a packet link from the test. It is safe for
// concurrent use.
type PacketLink struct {
	mu        sync.Mutex
	wake      chan struct{}
	rng       *rand.Rand
	dir       [2]*packetHalf // [0] is a->b
	blackhole bool
	killed    bool
}

// PacketConn is one end of a packet link.
type PacketConn struct {
	l             *PacketLink
	in, out       *packetHalf
	local, remote Addr
	max, base     int

	// Guarded by l.mu.
	closed bool
	rdl    time.Time
}

var _ net.Conn = (*PacketConn)(nil)

// PacketPipe returns the two ends of a packet link; ab shapes a->b and ba shapes b->a. Both
// ends report max as MaxDatagramSize and base as BaseDatagramSize (the size rendr assumes
// every path carries; it probes the sizes between).
func PacketPipe(ab, ba PacketConfig, max, base int) (a, b *PacketConn, l *PacketLink) {
	n := pipeSeq.Add(1)
	return newPacketPipe(ab, ba, max, base, Addr(fmt.Sprintf("pa-%d", n)), Addr(fmt.Sprintf("pb-%d", n)))
}

func newPacketPipe(ab, ba PacketConfig, max, base int, aAddr, bAddr Addr) (a, b *PacketConn, l *PacketLink) {
	l = &PacketLink{wake: make(chan struct{}), rng: rand.New(rand.NewPCG(uint64(ab.Seed), uint64(ba.Seed)^0x9e3779b97f4a7c15))}
	l.dir[0], l.dir[1] = &packetHalf{cfg: ab}, &packetHalf{cfg: ba}
	a = &PacketConn{l: l, in: l.dir[1], out: l.dir[0], local: aAddr, remote: bAddr, max: max, base: base}
	b = &PacketConn{l: l, in: l.dir[0], out: l.dir[1], local: bAddr, remote: aAddr, max: max, base: base}
	return a, b, l
}

func (l *PacketLink) broadcastLocked() {
	close(l.wake)
	l.wake = make(chan struct{})
}

// Set changes the shaping of each direction for datagrams written afterwards (DropFirst counts
// from the change). Seed is ignored.
func (l *PacketLink) Set(ab, ba PacketConfig) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dir[0].cfg, l.dir[1].cfg = ab, ba
}

// Blackhole drops every datagram, in both directions, while on; turning it on also drops the
// datagrams still on the way.
func (l *PacketLink) Blackhole(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.blackhole = on
	if on {
		for _, h := range l.dir {
			h.stats.Lost += len(h.q)
			h.q = nil
		}
	}
	l.broadcastLocked()
}

// Kill closes both ends at once, as when the sockets go away: blocked Reads and Writes fail
// with an error wrapping net.ErrClosed.
func (l *PacketLink) Kill() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.killed = true
	l.broadcastLocked()
}

// Stats returns the counters of each direction.
func (l *PacketLink) Stats() (ab, ba PacketStats) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dir[0].stats, l.dir[1].stats
}

// send schedules the copies of one datagram. Callers hold l.mu.
func (l *PacketLink) sendLocked(h *packetHalf, p []byte, now time.Time) {
	h.stats.Sent++
	c := h.cfg
	switch {
	case l.blackhole:
		h.stats.Lost++
		return
	case c.DropFirst > 0:
		h.cfg.DropFirst--
		h.stats.Lost++
		return
	case c.MTU > 0 && len(p) > c.MTU:
		h.stats.Oversize++
		return
	case c.Loss > 0 && l.rng.Float64() < c.Loss:
		h.stats.Lost++
		return
	}
	copies := 1
	if c.Dup > 0 && l.rng.Float64() < c.Dup {
		copies = 2
		h.stats.Duplicated++
	}
	for range copies {
		if len(h.q) >= MaxPacketQueue {
			h.stats.Overflow++
			continue
		}
		b := make([]byte, len(p))
		copy(b, p)
		if c.Corrupt > 0 && len(b) > 0 && l.rng.Float64() < c.Corrupt {
			b[l.rng.IntN(len(b))] ^= 1 << l.rng.IntN(8)
			h.stats.Corrupted++
		}
		at := now.Add(c.Delay)
		if c.Jitter > 0 {
			at = at.Add(time.Duration(l.rng.Int64N(int64(c.Jitter))))
		}
		h.seq++
		pk := packet{b: b, at: at, seq: h.seq}
		i := sort.Search(len(h.q), func(i int) bool { return h.q[i].at.After(at) })
		h.q = append(h.q, packet{})
		copy(h.q[i+1:], h.q[i:])
		h.q[i] = pk
	}
}

func (c *PacketConn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: network, Source: c.local, Addr: c.remote, Err: err}
}

// Read returns the next datagram that has arrived, waiting for one. A datagram longer than p
// is cut to len(p).
func (c *PacketConn) Read(p []byte) (int, error) {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		if c.closed || l.killed {
			return 0, c.opErr("read", net.ErrClosed)
		}
		now := time.Now()
		if expired(c.rdl, now) {
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		}
		var until time.Time
		if len(c.in.q) > 0 {
			head := c.in.q[0]
			if !head.at.After(now) {
				c.in.q[0] = packet{}
				c.in.q = c.in.q[1:]
				c.in.stats.Delivered++
				return copy(p, head.b), nil
			}
			until = head.at
		}
		until = earliest(until, c.rdl)
		wake := l.wake
		l.mu.Unlock()
		if until.IsZero() {
			<-wake
		} else {
			t := time.NewTimer(time.Until(until))
			select {
			case <-wake:
			case <-t.C:
			}
			t.Stop()
		}
		l.mu.Lock()
	}
}

// Write sends p as one datagram. It never blocks: a datagram the link cannot take is dropped
// and counted, as a network drops it.
func (c *PacketConn) Write(p []byte) (int, error) {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.closed || l.killed {
		return 0, c.opErr("write", net.ErrClosed)
	}
	if len(p) > c.max {
		return 0, c.opErr("write", fmt.Errorf("datagram of %d bytes over the carrier's %d", len(p), c.max))
	}
	l.sendLocked(c.out, p, time.Now())
	l.broadcastLocked()
	return len(p), nil
}

// Close closes this end; the other end does not notice, as with UDP.
func (c *PacketConn) Close() error {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	c.closed = true
	l.broadcastLocked()
	return nil
}

// MaxDatagramSize is the largest datagram Write takes.
func (c *PacketConn) MaxDatagramSize() int { return c.max }

// BaseDatagramSize is the size every path is assumed to carry.
func (c *PacketConn) BaseDatagramSize() int { return c.base }

// LocalAddr returns this end's address.
func (c *PacketConn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the other end's address.
func (c *PacketConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read deadline; writes never block.
func (c *PacketConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline sets the read deadline; the zero time means none.
func (c *PacketConn) SetReadDeadline(t time.Time) error {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	c.rdl = t
	l.broadcastLocked()
	return nil
}

// SetWriteDeadline is accepted and has no effect: writes never block.
func (c *PacketConn) SetWriteDeadline(time.Time) error { return nil }

// PacketListener hands packet links made by Dial to Accept. It implements net.Listener.
type PacketListener struct {
	acceptor[*PacketConn]
	max, base int
}

var _ net.Listener = (*PacketListener)(nil)

// ListenPacket returns a listener of packet links whose ends report max and base as their
// datagram sizes.
func ListenPacket(name string, max, base int) *PacketListener {
	return &PacketListener{acceptor: newAcceptor[*PacketConn](name), max: max, base: base}
}

// Dial makes a packet link, hands one end to Accept and returns the other, as Listener.Dial
// does for stream links.
func (ln *PacketListener) Dial(ctx context.Context, ab, ba PacketConfig) (*PacketConn, *PacketLink, error) {
	var l *PacketLink
	a, err := ln.dial(ctx, func(local Addr) (*PacketConn, *PacketConn) {
		var a, b *PacketConn
		a, b, l = newPacketPipe(ab, ba, ln.max, ln.base, local, ln.addr)
		return a, b
	})
	if err != nil {
		return nil, nil, err
	}
	return a, l, nil
}
