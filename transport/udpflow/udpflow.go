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
//
// Stateless until proven. A hello makes the listener create a connection that holds the
// hello's payload, copied at its size, and a hash of it to know its copies: about 1 KiB in
// all for a payload of rendr's size, and no goroutine. It may queue 4 datagrams beside the
// hello, copied at their size; those, and payloads over 1 KiB, come out of 256 KiB shared
// by all the listener's connections not yet promoted (more is dropped). Its receive queue
// grows toward its full bounds (8192 datagrams, 8 MiB) only once the connection is
// promoted: when rendr's handshake authenticated the hello (transport.HandshakeExtender's
// AnswerExtra), or, for a caller that does not call it, when the listener writes its
// answer. Past RetryPending connections not yet promoted (64 by default), a hello without a
// token creates nothing: it is answered with a 29-byte Retry whose token proves, when the
// dialer sends the hello again with it, that the dialer receives at its address. Tokens that
// are forged, expired or from another address get silence. Listener.Stats counts all of it.
//
// Stateless reset. During rendr's handshake, under its encryption, the dialer sends the
// listener 4 more connection ids for the same connection, and the listener answers with a
// reset token for each id and for the first: HMAC-SHA256 under a reset key
// (StatelessResetKey). A listener that gets a data datagram for an id it does not know
// answers with a 25-byte reset carrying that id's token (rate-limited, never larger than the
// datagram). A dialer that gets a valid one for the id it sends with closes at once with
// ErrStatelessReset, instead of waiting for rendr's probes to time out; an invalid one
// changes nothing.
//
// Fresh ids on migration. The listening side moves to the next of those ids when rendr moves
// its peer to a new address (SetPeer), the dialing side before it sends after 5 s without
// sending (NAT mappings lapse with idleness, so the first datagram from a rebound address
// already carries a new id), and each side follows the other to a newer id as soon as a
// datagram with one arrives. An observer then cannot link the old address to the new one by
// the id. When the ids run out, the connection stays on the last. The wire formats are in
// docs/wire.md; the behaviour in docs/datagram-paths.md.
package udpflow

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/rendr-go/rendr/transport"
)

// Header flags.
const (
	flagHello = 0x01 // the dialer's first datagram: length, payload, padding to helloSize
	flagReply = 0x02 // the listener's first datagram: the handshake's answer
	flagRetry = 0x04 // the listener's answer to a hello when it keeps no state: a token
	flagReset = 0x08 // the listener has no state for the id: a stateless reset token
	flagToken = 0x10 // with flagHello: a Retry's token follows the payload

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
	// Before a connection is promoted (its hello authenticated), it holds the hello's
	// payload and queues at most pendingLen more datagrams, each copied at its size. A
	// listener's pending connections share pendingBudget bytes for those datagrams and for
	// hello payloads over pendingBytes: rendr's first handshake message is at most 522
	// bytes (docs/wire.md 3.2), and a dialer of rendr sends nothing more before the answer,
	// so the budget only has to hold a caller's early data or a large first message, and a
	// flood of them fills it, not memory.
	pendingLen    = 4
	pendingBytes  = 1024
	pendingBudget = 256 << 10
	// A datagram read from a queue that stood marks congestion (transport.CongestionMarker,
	// Conn.markLocked): every datagram read for markStand waited markDelay or more, with
	// markMinLen or more behind it. So does one leaving a queue a quarter full (markBytes,
	// markLen), whatever the waits: the sender's window then shrinks before the queue
	// overflows, and nothing is lost. markDelay is CoDel's target and markStand its interval
	// (RFC 8289): a reader's pause shorter than that, and the catching up after it, mark
	// nothing.
	markDelay  = 5 * time.Millisecond
	markStand  = 100 * time.Millisecond
	markMinLen = 8
	markBytes  = queueBytes / 4
	markLen    = queueLen / 4
	// defaultRetryPending is RetryPending's default.
	defaultRetryPending = 64
)

// Option configures a Dialer or a Listener.
type Option func(*options)

type options struct {
	listen  func(network, address string) (net.PacketConn, error)
	local   string
	maxSize int
	pending int
	batch   bool
	// retryAt: hellos without a token get a Retry while this many connections or more are
	// pending; negative: never.
	retryAt  int
	resetKey *[32]byte
	tap      func(b []byte, to netip.AddrPort) bool // tests: the sockets' tap
	clock    func() time.Duration                   // tests: the sockets' clock
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

// RetryPending makes a Listener answer a hello that carries no token with a Retry, creating
// nothing, while n or more of its connections are not yet promoted (their hello not yet
// authenticated by rendr's handshake); the dialer then sends its hello again with the
// Retry's token, which proves its address, and only then gets a connection. Zero asks every
// dialer for a token; negative never does. The default is 64.
func RetryPending(n int) Option { return func(o *options) { o.retryAt = max(n, -1) } }

// StatelessResetKey is the key a Listener derives its stateless reset tokens from
// (HMAC-SHA256(key, "udpflow reset" | id), first 16 bytes). It must be secret, and it must
// survive restarts: a listener that restarted with the same key (on the same address) can
// tell the dialers of connections it lost that it has none, and they close at once with
// ErrStatelessReset. Without it a Listener uses a random key of its own, and after a restart
// its former peers notice only when rendr's probes time out.
func StatelessResetKey(key [32]byte) Option {
	return func(o *options) { k := key; o.resetKey = &k }
}

// NoBatching turns off sendmmsg, recvmmsg, UDP GSO and GRO: one system call per datagram, as
// on systems without them. For measuring what batching buys.
func NoBatching() Option { return func(o *options) { o.batch = false } }

func build(opts []Option) options {
	o := options{listen: net.ListenPacket, pending: 256, batch: true, retryAt: defaultRetryPending}
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

// Dialer returns the dial function of a path that opens udpflow carriers to addr
// ("host:port"): each a UDP socket of its own, connected to the address, with a fresh
// connection id. Nothing is sent until rendr's handshake.
func Dialer(addr string, opts ...Option) transport.DialFunc {
	return (&dialer{addr: addr, o: build(opts)}).dial
}

// dialer dials one address.
type dialer struct {
	addr string
	o    options
}

// dial opens one carrier.
func (d *dialer) dial(ctx context.Context) (net.Conn, error) {
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
	s.tap = d.o.tap
	s.clock = d.o.clock
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		s.close()
		return nil, err
	}
	c := newConn(s, raddr.AddrPort(), d.o.maxSize, id)
	c.d = &dialState{base: time.Now()}
	c.qlen = queueLen
	c.promoted.Store(true)
	c.d.resend = time.AfterFunc(time.Hour, c.resendHello)
	c.d.resend.Stop()
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

// errHello is a first datagram that does not parse.
var errHello = errors.New("udpflow: malformed first datagram")

// parseHello splits a hello (flagHello, and flagToken when it carries a Retry's token) into
// the payload and the token:
//
//	header 9 | length 2 | payload | (flagToken: token length 1 | token) | zero padding
func parseHello(b []byte) (payload, token []byte, err error) {
	if len(b) < headerSize+2 || b[0]&^flagToken != flagHello {
		return nil, nil, errHello
	}
	n := int(binary.BigEndian.Uint16(b[headerSize:]))
	end := headerSize + 2 + n
	if end > len(b) {
		return nil, nil, errHello
	}
	payload = b[headerSize+2 : end]
	if b[0]&flagToken != 0 {
		if end >= len(b) {
			return nil, nil, errHello
		}
		k := int(b[end])
		if k == 0 || k > maxToken || end+1+k > len(b) {
			return nil, nil, errHello
		}
		token = b[end+1 : end+1+k]
	}
	return payload, token, nil
}

// buildHello builds a hello carrying payload (and token, when not nil), padded to
// helloSize.
func buildHello(id [8]byte, payload, token []byte) []byte {
	n := headerSize + 2 + len(payload)
	flags := byte(flagHello)
	if token != nil {
		flags |= flagToken
		n += 1 + len(token)
	}
	d := make([]byte, 0, max(helloSize, n))
	d = append(append(d, flags), id[:]...)
	d = binary.BigEndian.AppendUint16(d, uint16(len(payload)))
	d = append(d, payload...)
	if token != nil {
		d = append(append(d, byte(len(token))), token...)
	}
	return d[:cap(d)] // zero padding
}

var _ transport.Rebinder = (*Conn)(nil)
var _ transport.BatchWriter = (*Conn)(nil)
var _ transport.PacketReader = (*Conn)(nil)
var _ transport.CongestionMarker = (*Conn)(nil)
var _ transport.PacketKeeper = (*Conn)(nil)
