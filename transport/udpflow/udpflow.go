// Package udpflow is rendr's raw UDP carrier: a path is a flow of UDP datagrams, each one
// rendr record, encrypted and authenticated by the session. rendr's path layer does over it
// what TCP would do: it numbers and acknowledges the packets, resends what stream flows lost,
// runs CUBIC with pacing, and finds the largest datagram the network carries
// (docs/datagram-paths.md). What UDP adds is what TCP cannot do: no head-of-line blocking
// for packet flows, no kernel retransmission fighting rendr's, and a path that survives NAT
// rebinding.
//
// Every datagram starts with a 9-byte header: a flags byte and a connection id of 8 random
// bytes the dialer chose. The listener tells its connections apart by id, not by address, so
// a dialer whose NAT gives it a new port or address keeps its connection: the datagram from
// the new address reaches the same path, which moves there once the peer answers a challenge
// from it (transport.Rebinder); a datagram from anywhere else that does not authenticate, or
// replays one that did, changes nothing.
//
// The dialer's first datagram (rendr's handshake message) is padded to 1200 bytes, and the
// listener sends nothing larger than three times what it received before the handshake
// completes, so the listener cannot be used to amplify a spoofed flood. The dialer sends its
// first datagram again after 250 ms, doubling, until the answer comes; the listener answers a
// copy with a copy of its answer.
package udpflow

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/rendr-go/rendr/transport"
)

// Header flags.
const (
	flagHello = 0x01 // the dialer's first datagram: length, payload, padding to helloSize
	flagReply = 0x02 // the listener's first datagram: the handshake's answer

	headerSize = 9
	helloSize  = 1200 // the dialer's first datagram, padded
	// baseSize is the UDP payload every path carries (IPv6's minimum MTU less its headers,
	// as QUIC assumes); maxUDP the largest one IPv4 allows.
	baseSize = 1200
	maxUDP   = 65507
	// maxEchoes bounds the copies of its answer a listener connection sends for copies of
	// the first datagram.
	maxEchoes = 8
	// queueLen and queueBytes bound what a connection holds for its reader: a burst the
	// socket delivered faster than the path reads, up to about a socket buffer's worth.
	queueLen   = 8192
	queueBytes = 8 << 20
	// A datagram that leaves the queue with more than markBytes or markLen still behind it is
	// marked as having met congestion (transport.CongestionMarker): the sender's window then
	// shrinks before the queue overflows, and nothing is lost. An eighth of the bounds leaves
	// the reader a queue to work from after a pause, and the sender a round trip to react.
	markBytes = queueBytes / 8
	markLen   = queueLen / 8
)

// Option configures a Dialer or a Listener.
type Option func(*options)

type options struct {
	listen  func(network, address string) (net.PacketConn, error)
	local   string
	maxSize int
	pending int
	batch   bool
}

// LocalAddr binds the dialing socket to a local address (to pin a path to one uplink).
func LocalAddr(ip string) Option { return func(o *options) { o.local = ip } }

// ListenPacket opens the UDP sockets with f instead of net.ListenPacket: to set socket
// options, bind to a device, or open sockets in another network namespace. It must return a
// *net.UDPConn. address is "ip:port", the ip empty for any address.
func ListenPacket(f func(network, address string) (net.PacketConn, error)) Option {
	return func(o *options) { o.listen = f }
}

// MaxDatagram caps the UDP payload rendr may use, whatever the network would carry (an
// embedder's tunnel inside, say). The path MTU search stops there. Zero means no cap (65507
// bytes; the interface's MTU bounds it in practice).
func MaxDatagram(n int) Option { return func(o *options) { o.maxSize = n } }

// MaxPending bounds how many new connections a Listener holds before Accept takes them; more
// are dropped (their dialers try again). Zero means 256.
func MaxPending(n int) Option { return func(o *options) { o.pending = n } }

// NoBatching turns off sendmmsg, recvmmsg, UDP GSO and GRO: one system call per datagram, as
// on systems without them. For measuring what batching buys.
func NoBatching() Option { return func(o *options) { o.batch = false } }

func build(opts []Option) options {
	o := options{listen: net.ListenPacket, pending: 256, batch: true}
	for _, f := range opts {
		f(&o)
	}
	if o.pending <= 0 {
		o.pending = 256
	}
	if o.maxSize <= 0 || o.maxSize > maxUDP {
		o.maxSize = maxUDP
	}
	o.maxSize = max(o.maxSize, baseSize)
	return o
}

func (o *options) udp(network, address string) (*net.UDPConn, error) {
	pc, err := o.listen(network, address)
	if err != nil {
		return nil, err
	}
	u, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("udpflow: ListenPacket returned %T, not a *net.UDPConn", pc)
	}
	return u, nil
}

// Dialer dials one address.
type Dialer struct {
	addr string
	o    options
}

// NewDialer returns a Dialer for addr ("host:port").
func NewDialer(addr string, opts ...Option) *Dialer {
	return &Dialer{addr: addr, o: build(opts)}
}

// Dial opens a carrier: a UDP socket of its own, connected to the address, and a fresh
// connection id. It implements transport.DialFunc. Nothing is sent until rendr's handshake.
func (d *Dialer) Dial(ctx context.Context) (net.Conn, error) {
	ra, err := (&net.Resolver{}).LookupNetIP(ctx, "ip", hostOf(d.addr))
	if err != nil {
		return nil, err
	}
	port, err := net.LookupPort("udp", portOf(d.addr))
	if err != nil {
		return nil, err
	}
	ip := ra[0].Unmap()
	raddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))) // keeps an IPv6 zone
	network := "udp4"
	if ip.Is6() {
		network = "udp6"
	}
	local := ""
	if d.o.local != "" {
		local = net.JoinHostPort(d.o.local, "0")
	}
	u, err := d.o.udp(network, local)
	if err != nil {
		return nil, err
	}
	s, err := newSocket(u, d.o.batch)
	if err != nil {
		u.Close()
		return nil, err
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		s.close()
		return nil, err
	}
	c := newConn(s, raddr.AddrPort(), d.o.maxSize, id)
	c.dialer = true
	c.resend = time.AfterFunc(time.Hour, c.resendHello)
	c.resend.Stop()
	go c.routineDialerRead()
	return c, nil
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

func portOf(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "0"
	}
	return p
}

// Listener accepts udpflow connections on one UDP socket.
type Listener struct {
	s       *socket
	o       options
	accept  chan *Conn
	done    chan struct{}
	closing sync.Once
	wg      sync.WaitGroup

	mu    sync.Mutex
	conns map[[8]byte]*Conn
}

// Listen opens a Listener on address ("ip:port"). network is "udp", "udp4" or "udp6".
func Listen(network, address string, opts ...Option) (*Listener, error) {
	o := build(opts)
	u, err := o.udp(network, address)
	if err != nil {
		return nil, err
	}
	s, err := newSocket(u, o.batch)
	if err != nil {
		u.Close()
		return nil, err
	}
	l := &Listener{s: s, o: o, accept: make(chan *Conn, o.pending), done: make(chan struct{}),
		conns: map[[8]byte]*Conn{}}
	l.wg.Add(1)
	go l.routineRead()
	return l, nil
}

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.s.u.LocalAddr() }

// Accept returns the next new connection: one whose first datagram (a handshake message to
// rendr) arrived.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops the listener and closes its connections.
func (l *Listener) Close() error {
	l.closing.Do(func() {
		close(l.done)
		l.s.close()
		l.wg.Wait()
		l.mu.Lock()
		conns := l.conns
		l.conns = map[[8]byte]*Conn{}
		l.mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		for {
			select {
			case c := <-l.accept:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

// routineRead reads the listening socket and hands each datagram to its connection.
func (l *Listener) routineRead() {
	defer l.wg.Done()
	l.s.readLoop(func(b []byte, from netip.AddrPort, rb *rxBuf) bool {
		if len(b) < headerSize {
			return false
		}
		id := [8]byte(b[1:headerSize])
		l.mu.Lock()
		c := l.conns[id]
		l.mu.Unlock()
		if c != nil {
			return c.deliver(b, from, rb)
		}
		if b[0] != flagHello || len(b) < helloSize {
			return false // not the start of a connection: nothing answers it
		}
		if _, err := helloPayload(b); err != nil {
			return false
		}
		select {
		case <-l.done:
			return false
		default:
		}
		if len(l.accept) == cap(l.accept) {
			return false // Accept is behind: the dialer will try again
		}
		c = newConn(l.s, from, l.o.maxSize, id)
		c.ln = l
		l.mu.Lock()
		l.conns[id] = c
		l.mu.Unlock()
		kept := c.deliver(b, from, rb)
		l.accept <- c
		return kept
	})
}

func (l *Listener) forget(c *Conn) {
	l.mu.Lock()
	if l.conns[c.id] == c {
		delete(l.conns, c.id)
	}
	l.mu.Unlock()
}

// errHello is a first datagram that does not parse.
var errHello = errors.New("udpflow: malformed first datagram")

// helloPayload is what the dialer's padded first datagram carries.
func helloPayload(b []byte) ([]byte, error) {
	if len(b) < headerSize+2 {
		return nil, errHello
	}
	n := int(binary.BigEndian.Uint16(b[headerSize:]))
	if headerSize+2+n > len(b) {
		return nil, errHello
	}
	return b[headerSize+2 : headerSize+2+n], nil
}

var _ transport.Rebinder = (*Conn)(nil)
var _ transport.BatchWriter = (*Conn)(nil)
var _ transport.PacketReader = (*Conn)(nil)
var _ transport.CongestionMarker = (*Conn)(nil)
var _ transport.PacketKeeper = (*Conn)(nil)
