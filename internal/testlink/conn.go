package testlink

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// network is the name returned by Addr.Network and used in errors.
const network = "testlink"

// Addr is the address of one end of a link.
type Addr string

// Network returns "testlink".
func (a Addr) Network() string { return network }

// String returns the address as "testlink:name".
func (a Addr) String() string { return network + ":" + string(a) }

var _ net.Addr = Addr("")

// pipeSeq numbers pipes so every end has a distinct address.
var pipeSeq atomic.Uint64

// Conn is one end of a link. It implements net.Conn.
type Conn struct {
	l             *Link
	in, out       *half // peer->this, this->peer
	local, remote Addr

	// Guarded by l.mu.
	closed   bool
	rdl, wdl time.Time // read and write deadlines; zero means none
}

var _ net.Conn = (*Conn)(nil)

// Pipe returns the two ends of one full-duplex link; ab shapes a->b and ba
// shapes b->a.
func Pipe(ab, ba Config) (a, b *Conn, l *Link) {
	n := pipeSeq.Add(1)
	return newPipe(ab, ba, Addr(fmt.Sprintf("a-%d", n)), Addr(fmt.Sprintf("b-%d", n)))
}

func newPipe(ab, ba Config, aAddr, bAddr Addr) (a, b *Conn, l *Link) {
	l = &Link{wake: make(chan struct{})}
	// Distinct PCG streams keep the two directions from mirroring each
	// other when they share a seed.
	l.dir[0], l.dir[1] = newHalf(ab, 1), newHalf(ba, 2)
	a = &Conn{l: l, in: l.dir[1], out: l.dir[0], local: aAddr, remote: bAddr}
	b = &Conn{l: l, in: l.dir[0], out: l.dir[1], local: bAddr, remote: aAddr}
	return a, b, l
}

func (c *Conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: network, Source: c.local, Addr: c.remote, Err: err}
}

// expired reports whether deadline dl (zero: none) has passed at now.
func expired(dl, now time.Time) bool {
	return !dl.IsZero() && !now.Before(dl)
}

// earliest returns the earlier of two times, ignoring zero ones.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// Read reads bytes that have arrived, returning as soon as there are any.
func (c *Conn) Read(p []byte) (int, error) {
	l, h := c.l, c.in
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		if c.closed {
			return 0, c.opErr("read", net.ErrClosed)
		}
		if h.reset {
			return 0, c.opErr("read", os.NewSyscallError("read", syscall.ECONNRESET))
		}
		now := time.Now()
		// Like a real socket, an expired deadline wins over pending data.
		if expired(c.rdl, now) {
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		}
		if len(p) == 0 {
			return 0, nil
		}
		if n := h.take(p, now); n > 0 {
			l.broadcastLocked() // a writer may be waiting for buffer space
			return n, nil
		}
		until := c.rdl
		switch {
		case len(h.q) > 0:
			until = earliest(until, h.q[0].at)
		case h.fin && !now.Before(h.finAt):
			return 0, io.EOF
		case h.fin:
			until = earliest(until, h.finAt)
		}
		l.waitLocked(until)
	}
}

// Write blocks until all of p has been accepted into the link, or fails.
// Concurrent Writes are serialised so their bytes never interleave.
func (c *Conn) Write(p []byte) (int, error) {
	l, h := c.l, c.out
	l.mu.Lock()
	defer l.mu.Unlock()
	n, owner := 0, false
	defer func() {
		if owner {
			h.writing = false
			l.broadcastLocked()
		}
	}()
	for {
		if c.closed {
			return n, c.opErr("write", net.ErrClosed)
		}
		if h.broken != 0 {
			return n, c.opErr("write", os.NewSyscallError("write", h.broken))
		}
		now := time.Now()
		if expired(c.wdl, now) {
			return n, c.opErr("write", os.ErrDeadlineExceeded)
		}
		if len(p) == 0 {
			return 0, nil
		}
		if !owner && h.writing {
			l.waitLocked(c.wdl)
			continue
		}
		owner, h.writing = true, true
		space := h.cfg.buffer() - h.inflight
		if space <= 0 {
			l.waitLocked(c.wdl)
			continue
		}
		k := min(space, len(p)-n)
		h.push(p[n:n+k], now, l.blackhole)
		n += k
		l.broadcastLocked() // a reader may be waiting for data
		if n == len(p) {
			return n, nil
		}
	}
}

// Close closes this end. The peer reads the bytes already written, then
// io.EOF (Delay after the close, like a FIN); the peer's Writes fail with
// an error satisfying errors.Is(err, syscall.EPIPE); this end's pending and
// future calls fail with an error wrapping net.ErrClosed.
func (c *Conn) Close() error {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.closed {
		return c.opErr("close", net.ErrClosed)
	}
	c.closed = true
	if !c.out.fin {
		c.out.fin, c.out.finAt = true, c.out.schedule(time.Now(), 0)
	}
	c.in.discard() // nobody will read them
	if c.in.broken == 0 {
		c.in.broken = syscall.EPIPE
	}
	l.broadcastLocked()
	return nil
}

// LocalAddr returns this end's address.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.setDeadline(t, true, true) }

// SetReadDeadline sets the absolute time after which pending and future
// Reads fail with a timeout; the zero time clears it.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.setDeadline(t, true, false) }

// SetWriteDeadline sets the absolute time after which pending and future
// Writes fail with a timeout; the zero time clears it.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.setDeadline(t, false, true) }

func (c *Conn) setDeadline(t time.Time, read, write bool) error {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.closed {
		return c.opErr("set deadline", net.ErrClosed)
	}
	if read {
		c.rdl = t
	}
	if write {
		c.wdl = t
	}
	l.broadcastLocked() // pending calls re-arm their timers
	return nil
}
