package udpflow

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rendr-go/rendr/transport"
)

// socket is one UDP socket: a dialer's own, or a listener's shared by its connections.
type socket struct {
	u    *net.UDPConn
	bat  *batcher // nil: one system call per datagram
	once sync.Once
	lent atomic.Int32 // receive buffers out on loan to connections (rxBuf)

	wmu  sync.Mutex // guards wbuf
	wbuf []byte

	// tap, when set (by tests, before the socket is used), sees each datagram writeTo
	// sends, and sends it in the socket's stead when it returns true.
	tap func(b []byte, to netip.AddrPort) bool
	// clock, when set (by tests, before the socket is used), stands in for the monotonic
	// time since epoch that the socket's connections time their queues by.
	clock func() time.Duration
	epoch time.Time
}

// now is the time on the socket's clock: since the socket opened, on the monotonic clock.
func (s *socket) now() time.Duration {
	if s.clock != nil {
		return s.clock()
	}
	return time.Since(s.epoch)
}

// sockBuffer is the socket buffer size asked for: a window's worth at the rates rendr runs,
// so a burst is not dropped by the socket itself.
const sockBuffer = 4 << 20

func newSocket(u *net.UDPConn, batch bool) (*socket, error) {
	if err := setDontFragment(u); err != nil {
		return nil, err
	}
	u.SetReadBuffer(sockBuffer) // best effort: the system's limit may be lower
	u.SetWriteBuffer(sockBuffer)
	s := &socket{u: u, epoch: time.Now()}
	if batch {
		s.bat = newBatcher(u)
	}
	return s, nil
}

func (s *socket) close() {
	s.once.Do(func() { s.u.Close() })
}

// rxBuf is a receive buffer handed from a socket's reader to the connections its datagrams
// belong to, so that a large datagram, or a GRO run of many, is read from where the kernel put
// it instead of being copied to a queue first. Each datagram queued from it holds a reference.
type rxBuf struct {
	b    *[]byte
	n    int // bytes the kernel wrote into it: what its datagrams share its capacity by
	refs atomic.Int32
	lent *atomic.Int32 // the socket's count of buffers out on loan
}

// rxBufs recycles rxBuf headers: one per large read would be an allocation per GRO run.
var rxBufs = sync.Pool{New: func() any { return new(rxBuf) }}

// handoffMin is the smallest read worth handing off whole; smaller datagrams are copied to a
// buffer of their size, which pins less memory while queued.
const handoffMin = 16 << 10

// maxLent bounds the buffers one socket has out on loan. A lent buffer stays pinned while any
// datagram of it waits, however little of it that is, so beyond this reads are copied:
// otherwise a reader that lags, or a sender whose runs carry one datagram of a connection and
// junk, could pin far more than a queue's byte bound says.
const maxLent = 128

func (r *rxBuf) release() {
	if r.refs.Add(-1) == 0 {
		r.lent.Add(-1)
		putBuf(r.b)
		r.recycle()
	}
}

// recycle returns the header to its pool, its buffer gone elsewhere.
func (r *rxBuf) recycle() {
	r.b, r.n, r.lent = nil, 0, nil
	rxBufs.Put(r)
}

// Unpin implements transport.Pin: a datagram's reader, done with it, lets its buffer go.
func (r *rxBuf) Unpin() { r.release() }

// charge is what a datagram of n bytes from r counts against its connection's queue bound:
// its share of the buffer it keeps from being reused.
func (r *rxBuf) charge(n int) int { return cap(*r.b) * n / max(r.n, 1) }

// readFunc takes one datagram from a socket's reader. rb is non-nil when the datagram may be
// kept in place: the function reports true having taken a reference (rb.refs.Add(1)), which it
// releases once done. Otherwise b is valid only during the call.
type readFunc func(b []byte, from netip.AddrPort, rb *rxBuf) (kept bool)

// readLoop reads datagrams until the socket closes, handing each to fn.
func (s *socket) readLoop(fn readFunc) {
	if s.bat != nil && s.bat.readLoop(fn, &s.lent) {
		return
	}
	buf := getBuf(maxUDP + 1)
	for {
		n, from, err := s.u.ReadFromUDPAddrPort(*buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				putBuf(buf)
				return
			}
			continue // an ICMP error reported on the socket, a truncated datagram: next
		}
		buf = handOff(buf, n, &s.lent, func(rb *rxBuf) int {
			if fn((*buf)[:n], unmap(from), rb) {
				return 1
			}
			return 0
		})
	}
}

// handOff runs deliver over a read of n bytes in buf, lending the buffer to the datagrams
// kept when the read is large enough; it returns the buffer to read into next.
func handOff(buf *[]byte, n int, lent *atomic.Int32, deliver func(rb *rxBuf) (kept int)) *[]byte {
	if n < handoffMin || lent.Load() >= maxLent {
		deliver(nil)
		return buf
	}
	rb := rxBufs.Get().(*rxBuf)
	rb.b, rb.n, rb.lent = buf, n, lent
	rb.refs.Store(1) // the reader's own, until every datagram of the read is handed out
	lent.Add(1)
	if deliver(rb) == 0 {
		lent.Add(-1)
		rb.recycle()
		return buf // nobody kept any: read into it again
	}
	rb.release()
	return getBuf(maxUDP + 1)
}

// writeTo sends one datagram.
func (s *socket) writeTo(b []byte, to netip.AddrPort) error {
	if s.tap != nil && s.tap(b, to) {
		return nil
	}
	_, err := s.u.WriteToUDPAddrPort(b, to)
	return sendErr(err)
}

// writeBatch sends each of bufs, with header before it, to one address.
func (s *socket) writeBatch(header []byte, bufs [][]byte, to netip.AddrPort) error {
	if s.bat != nil {
		if done, err := s.bat.writeBatch(header, bufs, to); done {
			return sendErr(err)
		}
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for _, b := range bufs {
		s.wbuf = append(append(s.wbuf[:0], header...), b...)
		if err := s.writeTo(s.wbuf, to); err != nil {
			return err
		}
	}
	return nil
}

// sendErr maps a send error: EMSGSIZE is the path MTU, which rendr handles; an unreachable
// network or host (a route gone while an interface changes) is loss, as it would be one hop
// further; anything else is returned as it is.
func sendErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EMSGSIZE):
		return fmt.Errorf("udpflow: %w: %w", transport.ErrDatagramTooLarge, err)
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENOBUFS), errors.Is(err, syscall.EAGAIN),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPERM):
		return nil
	}
	return err
}
