package gvisor

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// Listener takes TCP connections from dialing stacks: one UDP socket, and a stack per dialing
// address, started by a SYN to the listening stack's port that carries a token proving its
// source address (see the package doc). It is a net.Listener: give it to rendr.Listen or
// Listener.AddSource.
type Listener struct {
	pc   net.PacketConn
	o    options
	gate *gate
	out  chan *Conn
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	// Counters, read by Stats; fields accessed atomically.
	hellos, short, strays, expired, badTokens, badSYNs atomic.Uint64
	started, evicted, refused                          atomic.Uint64

	mu    sync.RWMutex
	peers map[string]*peer // by dialing address; only proven addresses have one
}

// ListenerStats counts what a Listener did with the datagrams of sources that had no stack.
// None of them leaves state behind except Started.
type ListenerStats struct {
	Hellos    uint64 // hellos answered with a token, each answer smaller than its hello
	Short     uint64 // hellos dropped for lacking the padding (under 64 bytes)
	Strays    uint64 // datagrams that were no control message, bare SYNs among them
	Expired   uint64 // SYNs whose token had outlived its 60 s
	BadTokens uint64 // SYNs whose token this listener did not make for their source
	BadSYNs   uint64 // valid tokens followed by no valid SYN
	Started   uint64 // stacks started, one per proven SYN
	Evicted   uint64 // half-open stacks that gave way to a newer one at MaxPeers
	Refused   uint64 // proven SYNs dropped at MaxPeers: every stack carried a live connection
	Peers     int    // stacks running now, at most MaxPeers
}

// Stats returns the Listener's counters.
func (l *Listener) Stats() ListenerStats {
	l.mu.RLock()
	n := len(l.peers)
	l.mu.RUnlock()
	return ListenerStats{
		Hellos: l.hellos.Load(), Short: l.short.Load(), Strays: l.strays.Load(),
		Expired: l.expired.Load(), BadTokens: l.badTokens.Load(), BadSYNs: l.badSYNs.Load(),
		Started: l.started.Load(), Evicted: l.evicted.Load(), Refused: l.refused.Load(),
		Peers: n,
	}
}

// peer is one dialing address's stack on the listening side.
type peer struct {
	addr    net.Addr
	key     string
	ns      *netstack
	gl      *gonet.TCPListener
	started time.Time
	handed  bool // its connection went to Accept: the Conn owns the stack now
}

// Listen listens on address ("host:port") for dialing stacks.
func Listen(address string, opts ...Option) (*Listener, error) {
	o := build(opts)
	pc, err := o.listen("udp", address)
	if err != nil {
		return nil, err
	}
	l := &Listener{pc: pc, o: o, gate: newGate(), out: make(chan *Conn), done: make(chan struct{}),
		peers: map[string]*peer{}}
	l.wg.Add(1)
	go l.routineRead()
	return l, nil
}

func (l *Listener) routineRead() {
	defer l.wg.Done()
	buf := make([]byte, 65536)
	var reply [cookieSize]byte
	for {
		n, from, err := l.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		l.handle(buf[:n], from, reply[:0])
	}
}

// handle takes one datagram: to its source's stack if the source has one, else to the
// address check. A reply the check makes is written before handle returns, into scratch.
func (l *Listener) handle(b []byte, from net.Addr, scratch []byte) {
	key := from.String()
	l.mu.RLock()
	p := l.peers[key]
	l.mu.RUnlock()
	if p != nil {
		if len(b) > 1+tokenSize && b[0] == kindSYN {
			b = b[1+tokenSize:] // the dialer's SYN once more, with its token
		}
		p.ns.inject(b)
		return
	}
	v, out := l.gate.check(b, key, l.gate.now(), scratch)
	switch v {
	case answer:
		l.hellos.Add(1)
		l.pc.WriteTo(out, from) // a lost answer is a lost hello: the dialer sends it again
	case admit:
		if p = l.start(from, key); p != nil {
			p.ns.inject(out)
		}
	case dropShort:
		l.short.Add(1)
	case dropExpired:
		l.expired.Add(1)
	case dropBadMAC:
		l.badTokens.Add(1)
	case dropBadSYN:
		l.badSYNs.Add(1)
	default:
		l.strays.Add(1)
	}
}

// isSYN reports whether b is an IPv4 TCP segment with SYN alone, to the listening stack's
// address and port, with valid checksums: the only packet that may start a stack.
func isSYN(b []byte) bool {
	if len(b) < header.IPv4MinimumSize || header.IPVersion(b) != header.IPv4Version {
		return false
	}
	ip := header.IPv4(b)
	if !ip.IsValid(len(b)) || !ip.IsChecksumValid() || ip.Protocol() != uint8(tcp.ProtocolNumber) ||
		ip.DestinationAddress() != listenerIP || ip.SourceAddress() != dialerIP {
		return false
	}
	seg := header.TCP(ip.Payload())
	if len(seg) < header.TCPMinimumSize || int(seg.DataOffset()) < header.TCPMinimumSize || int(seg.DataOffset()) > len(seg) {
		return false
	}
	data := seg[seg.DataOffset():]
	if !seg.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(data, 0), uint16(len(data))) {
		return false
	}
	return seg.DestinationPort() == listenerPort && seg.Flags() == header.TCPFlagSyn
}

// start makes a stack for a new, proven dialing address; nil when the Listener is closing or
// full. At the bound, the oldest stack still waiting for its handshake gives way, so that
// dialers that proved their addresses but never finish (an attacker's own addresses, say)
// cannot keep real dialers out.
func (l *Listener) start(from net.Addr, key string) *peer {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		return nil
	default:
	}
	if len(l.peers) >= l.o.maxPeers {
		var oldest *peer
		for _, p := range l.peers {
			if !p.handed && (oldest == nil || p.started.Before(oldest.started)) {
				oldest = p
			}
		}
		if oldest == nil {
			l.refused.Add(1)
			return nil // every stack carries a live connection
		}
		delete(l.peers, oldest.key)
		oldest.gl.Close() // its accept routine ends it
		l.evicted.Add(1)
	}
	ns, err := newNetstack(&l.o, listenerIP, func(b []byte) error {
		_, err := l.pc.WriteTo(b, from)
		return err
	})
	if err != nil {
		return nil
	}
	gl, err := gonet.ListenTCP(ns.s, tcpip.FullAddress{NIC: nicID, Addr: listenerIP, Port: listenerPort}, ipv4.ProtocolNumber)
	if err != nil {
		ns.close()
		return nil
	}
	p := &peer{addr: from, key: key, ns: ns, gl: gl, started: time.Now()}
	l.peers[key] = p
	l.started.Add(1)
	l.wg.Add(1)
	go l.routineAccept(p)
	return p
}

// acceptWithin bounds how long a started stack waits for its connection's handshake: a
// SYN-ACK's round trip, with room for a few retransmissions.
const acceptWithin = 3 * time.Second

// routineAccept takes the one connection a peer's stack carries.
func (l *Listener) routineAccept(p *peer) {
	defer l.wg.Done()
	timer := time.AfterFunc(acceptWithin, func() { p.gl.Close() })
	c, err := p.gl.Accept()
	timer.Stop()
	p.gl.Close()
	if err != nil {
		l.drop(p)
		return
	}
	l.mu.Lock()
	p.handed = true
	l.mu.Unlock()
	conn := &Conn{TCPConn: c.(*gonet.TCPConn), ns: p.ns, remote: p.addr, release: func() { l.forget(p) }}
	select {
	case l.out <- conn:
	case <-l.done:
		conn.Close()
	}
}

// drop ends a peer whose connection never came. Its stack stops before its address is
// forgotten, so no stack sends anything once Stats no longer counts it.
func (l *Listener) drop(p *peer) {
	p.ns.close()
	l.forget(p)
}

func (l *Listener) forget(p *peer) {
	l.mu.Lock()
	if l.peers[p.key] == p {
		delete(l.peers, p.key)
	}
	l.mu.Unlock()
}

// Accept returns the next connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.out:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops listening and closes the socket. Connections already accepted send through it,
// so they end with it.
func (l *Listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.pc.Close()
		l.mu.Lock()
		for _, p := range l.peers {
			if !p.handed {
				p.gl.Close() // its accept routine drops it
			}
		}
		l.mu.Unlock()
	})
	l.wg.Wait()
	return nil
}

// Addr is the UDP address the Listener is bound to.
func (l *Listener) Addr() net.Addr { return l.pc.LocalAddr() }
