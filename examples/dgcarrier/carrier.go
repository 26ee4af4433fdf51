package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/rendr-go/rendr/transport"
)

// This file is the whole carrier: what a program that already owns UDP sockets (after its own
// NAT traversal, say) writes to run rendr paths over them. A datagram carrier is a net.Conn
// whose Read returns one whole datagram and whose Write sends one, plus the two size methods of
// transport.PacketCarrier. Seeing those, rendr does over the carrier what TCP would do: it
// numbers, acknowledges, paces and resends (docs/datagram-paths.md). What is left to the
// carrier is small:
//
//   - read deadlines, and a Close that unblocks Read: rendr's handshake relies on both;
//   - sending the handshake's first datagram again until it is answered: rendr sends each of
//     its two handshake messages once, so a lost one would cost a redial after the timeout;
//   - on the listening side, telling peers apart (here by source address) and bounding what
//     strangers can make it hold.
//
// transport/udpflow is the full version: connection ids instead of addresses, so a peer whose
// NAT moves it keeps its path (transport.Rebinder), batched system calls, MTU probing.

const (
	// dgSize is the largest datagram either side writes: a 1500-byte MTU less IPv6 and UDP
	// headers. This carrier knows its limit, so it is also the base size, and rendr does not
	// probe for more (loopback would carry more; most networks would not).
	dgSize = 1452
	// helloEvery and helloCopies pace the first datagram's copies; after the last one, rendr's
	// handshake timeout decides.
	helloEvery  = 250 * time.Millisecond
	helloCopies = 4
	// queueLen bounds what one listener conn holds for its reader, and maxPending the new
	// conns waiting for Accept: what a flood of strangers can cost is bounded.
	queueLen   = 512
	maxPending = 16
)

// dgDialer is the dialing side: a fresh UDP socket per carrier, so every redial after a cut is
// a new source to the listener and nothing of the old carrier lingers.
func dgDialer(addr string) transport.DialFunc {
	return func(context.Context) (net.Conn, error) {
		peer, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, err
		}
		sock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil, err
		}
		return &dialConn{sock: sock, peer: peer}, nil
	}
}

// dialConn is a dialed carrier. It has a socket of its own, so the socket's deadlines and Close
// already make Read fail as rendr expects (a timeout error, net.ErrClosed).
type dialConn struct {
	sock *net.UDPConn
	peer netip.AddrPort

	mu       sync.Mutex
	hello    []byte // the first datagram written: rendr's handshake message 1
	resend   *time.Timer
	copies   int
	answered bool // a datagram came back: no more copies
	closed   bool
}

// Read returns the next datagram from the peer; anyone can send to a UDP port, and whatever
// else arrives is skipped.
func (c *dialConn) Read(b []byte) (int, error) {
	for {
		n, from, err := c.sock.ReadFromUDPAddrPort(b)
		if err != nil {
			return 0, err
		}
		if unmap(from) != c.peer {
			continue
		}
		c.mu.Lock()
		if !c.answered && c.resend != nil {
			c.resend.Stop()
		}
		c.answered = true
		c.mu.Unlock()
		return n, nil
	}
}

// Write sends b as one datagram; the first one is kept to send again until answered.
func (c *dialConn) Write(b []byte) (int, error) {
	if len(b) > dgSize {
		return 0, fmt.Errorf("dgcarrier: %d-byte datagram: %w", len(b), transport.ErrDatagramTooLarge)
	}
	c.mu.Lock()
	if c.hello == nil && !c.closed {
		c.hello = bytes.Clone(b)
		c.resend = time.AfterFunc(helloEvery, c.resendHello)
	}
	c.mu.Unlock()
	return c.sock.WriteToUDPAddrPort(b, c.peer)
}

// resendHello is what transport.PacketCarrier asks of a carrier that may lose datagrams. A copy
// of message 1 that arrives after the original is answered is harmless: the listener answers it
// with a copy of its reply (listenConn.deliver), which rendr here drops as a record that does
// not authenticate (status Packets.Forged).
func (c *dialConn) resendHello() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.answered || c.closed || c.copies >= helloCopies {
		return
	}
	c.copies++
	c.sock.WriteToUDPAddrPort(c.hello, c.peer)
	c.resend.Reset(helloEvery)
}

func (c *dialConn) Close() error {
	c.mu.Lock()
	c.closed = true
	if c.resend != nil {
		c.resend.Stop()
	}
	c.mu.Unlock()
	return c.sock.Close()
}

func (c *dialConn) MaxDatagramSize() int               { return dgSize }
func (c *dialConn) BaseDatagramSize() int              { return dgSize }
func (c *dialConn) LocalAddr() net.Addr                { return c.sock.LocalAddr() }
func (c *dialConn) RemoteAddr() net.Addr               { return net.UDPAddrFromAddrPort(c.peer) }
func (c *dialConn) SetDeadline(t time.Time) error      { return c.sock.SetDeadline(t) }
func (c *dialConn) SetReadDeadline(t time.Time) error  { return c.sock.SetReadDeadline(t) }
func (c *dialConn) SetWriteDeadline(t time.Time) error { return c.sock.SetWriteDeadline(t) }

// dgListener is the listening side: one UDP socket, one carrier per source address, handed to
// Accept when its first datagram arrives. rendr then handshakes on it, and closes it if that
// fails, so a stranger's carrier lives only as long as rendr's handshake timeout at most.
type dgListener struct {
	sock    *net.UDPConn
	pending chan *listenConn
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup

	mu    sync.Mutex
	conns map[netip.AddrPort]*listenConn
}

func dgListen(addr string) (*dgListener, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	sock, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	// Every peer's datagrams queue in this one socket: the default buffer (about 200 KiB on
	// Linux) holds fewer packets than one path's congestion window. The kernel caps this at
	// net.core.rmem_max; what still overflows is lost, and rendr resends it.
	sock.SetReadBuffer(4 << 20)
	l := &dgListener{sock: sock, pending: make(chan *listenConn, maxPending),
		done: make(chan struct{}), conns: map[netip.AddrPort]*listenConn{}}
	l.wg.Go(l.routineRead)
	return l, nil
}

// routineRead demultiplexes the socket: each datagram goes to its source's conn, or starts one
// while fewer than maxPending wait for Accept.
func (l *dgListener) routineRead() {
	buf := make([]byte, dgSize+1)
	for {
		n, from, err := l.sock.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil || n == 0 || n > dgSize {
			continue // empty, or larger than any peer of ours writes
		}
		from = unmap(from)
		l.mu.Lock()
		c := l.conns[from]
		if c == nil && len(l.pending) < cap(l.pending) {
			c = &listenConn{ln: l, peer: from, in: make(chan []byte, queueLen),
				done: make(chan struct{}), moved: make(chan struct{})}
			l.conns[from] = c
			l.pending <- c // there is room, and only this goroutine sends
		}
		if c != nil {
			c.deliver(buf[:n]) // under l.mu, so never to a conn forget has dropped
		}
		l.mu.Unlock()
	}
}

func (l *dgListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.pending:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops the reader, then closes every conn, accepted or not: they share its socket.
func (l *dgListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.sock.Close()
		l.wg.Wait()
		l.mu.Lock()
		conns := l.conns
		l.conns = nil
		l.mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return nil
}

func (l *dgListener) Addr() net.Addr { return l.sock.LocalAddr() }

// forget drops a closed conn, so that its source may start a new one.
func (l *dgListener) forget(c *listenConn) {
	l.mu.Lock()
	if l.conns[c.peer] == c {
		delete(l.conns, c.peer)
	}
	l.mu.Unlock()
}

// listenConn is one source's carrier on the listener's socket: the reader queues its
// datagrams, Read takes them. It has no socket of its own, so it keeps its own read deadline.
type listenConn struct {
	ln   *dgListener
	peer netip.AddrPort
	in   chan []byte
	done chan struct{}
	once sync.Once

	mu       sync.Mutex
	deadline time.Time
	moved    chan struct{} // closed when the deadline changes, to wake a waiting Read
	hello    []byte        // the first datagram received: rendr's handshake message 1
	answer   []byte        // the first datagram written: message 2, for copies of hello
	echoes   int
}

// deliver queues one datagram, copied out of the reader's buffer; it never blocks. A copy of
// the first one means the dialer has not heard the answer: it gets the answer again (smaller
// than what it sent, so this amplifies nothing), and rendr never sees the copy.
func (c *listenConn) deliver(b []byte) {
	c.mu.Lock()
	if c.hello != nil && bytes.Equal(b, c.hello) {
		if c.answer != nil && c.echoes < helloCopies {
			c.echoes++
			c.ln.sock.WriteToUDPAddrPort(c.answer, c.peer)
		}
		c.mu.Unlock()
		return
	}
	if c.hello == nil {
		c.hello = bytes.Clone(b)
	}
	c.mu.Unlock()
	select {
	case c.in <- bytes.Clone(b):
	default: // the reader is behind: dropped, as a full socket buffer would; rendr resends
	}
}

// Read copies one datagram into b (a shorter b truncates it, as UDP does). It waits until
// the read deadline, which rendr sets during its handshake and moves into the past to abort
// one: a change wakes it to wait again for the new deadline.
func (c *listenConn) Read(b []byte) (int, error) {
	var timer *time.Timer // only with a deadline: rendr reads its data without one
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		c.mu.Lock()
		deadline, moved := c.deadline, c.moved
		c.mu.Unlock()
		var expired <-chan time.Time // nil: never
		if !deadline.IsZero() {
			if timer == nil {
				timer = time.NewTimer(time.Until(deadline))
			} else {
				timer.Reset(time.Until(deadline))
			}
			expired = timer.C
		}
		select {
		case d := <-c.in:
			return copy(b, d), nil
		case <-c.done:
			return 0, net.ErrClosed
		case <-expired:
			return 0, os.ErrDeadlineExceeded // a net.Error whose Timeout is true
		case <-moved:
		}
	}
}

func (c *listenConn) Write(b []byte) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	if len(b) > dgSize {
		return 0, fmt.Errorf("dgcarrier: %d-byte datagram: %w", len(b), transport.ErrDatagramTooLarge)
	}
	c.mu.Lock()
	if c.answer == nil {
		c.answer = bytes.Clone(b)
	}
	c.mu.Unlock()
	return c.ln.sock.WriteToUDPAddrPort(b, c.peer)
}

// Close is rendr's when the path ends (or the listener's): it frees the source address for a
// new conn, then unblocks Read. In that order, a datagram that follows Close never goes to
// the closed conn.
func (c *listenConn) Close() error {
	c.once.Do(func() {
		c.ln.forget(c)
		close(c.done)
	})
	return nil
}

func (c *listenConn) MaxDatagramSize() int               { return dgSize }
func (c *listenConn) BaseDatagramSize() int              { return dgSize }
func (c *listenConn) LocalAddr() net.Addr                { return c.ln.sock.LocalAddr() }
func (c *listenConn) RemoteAddr() net.Addr               { return net.UDPAddrFromAddrPort(c.peer) }
func (c *listenConn) SetDeadline(t time.Time) error      { return c.SetReadDeadline(t) }
func (c *listenConn) SetWriteDeadline(t time.Time) error { return nil } // writes never wait

func (c *listenConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	close(c.moved)
	c.moved = make(chan struct{})
	c.mu.Unlock()
	return nil
}

// unmap makes an IPv4-mapped IPv6 address plain IPv4, so one peer has one form.
func unmap(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }

var (
	_ transport.PacketCarrier = (*dialConn)(nil)
	_ transport.PacketCarrier = (*listenConn)(nil)
)
