// Package quic is rendr's QUIC carrier (github.com/quic-go/quic-go): a path is one QUIC
// connection. rendr's records ride one bidirectional QUIC stream; packet flows' datagrams ride
// QUIC DATAGRAM frames (RFC 9221), so a lost one never holds back the stream. A datagram
// larger than a QUIC packet can hold travels in the stream instead.
//
// Each dialed connection has a UDP socket and a quic.Transport of its own, so it can move in
// place: when the host's address changes (Wi-Fi to cellular), Client.Migrate probes the new
// local address, switches the live connections to it (QUIC connection migration, RFC 9000
// section 9) and keeps the path up: rendr sees no failover at all. A dialer whose socket is not
// bound to an address needs no call: the kernel picks the new source address by itself and
// the listening side follows the connection to it.
//
// TLS is the embedder's: Dialer and Listen take a *tls.Config, and this package has no
// certificate of its own. QUIC's handshake answers anyone who sends a valid Initial packet,
// unlike a rendr source on TCP that stays silent to strangers; rendr's own handshake, inside
// the connection, still admits only the configured peers. Verify the server certificate (or
// pin it) so a stranger cannot even open the QUIC connection; rendr's records are encrypted
// with the session's keys either way unless the path is declared a secure carrier.
package quic

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	qgo "github.com/quic-go/quic-go"

	"github.com/rendr-go/rendr/internal/rate"
	"github.com/rendr-go/rendr/transport"
)

// ALPN is the application protocol rendr negotiates when the tls.Config names none.
const ALPN = "rendr/1"

// Option configures a Dialer, a Client or a Listener.
type Option func(*options)

type options struct {
	listen    func(network, address string) (net.PacketConn, error)
	local     string
	conf      *qgo.Config
	streamTTL time.Duration
	pending   int
	retry     int // new connections a second before Retry is asked of every one; <0: always
	retryPend int // connections in their handshake before Retry is asked; <0: no bound
}

// LocalAddr binds the dialing socket to a local address (an interface's address, to pin a
// path to one uplink). Client.Migrate moves it later.
func LocalAddr(ip string) Option { return func(o *options) { o.local = ip } }

// ListenPacket opens every UDP socket the Client or Listener uses with f instead of
// net.ListenPacket: to set socket options, bind to a device, or open sockets in another
// network namespace. address is "ip:port", the ip empty for any address.
func ListenPacket(f func(network, address string) (net.PacketConn, error)) Option {
	return func(o *options) { o.listen = f }
}

// WithConfig bases the QUIC configuration on c (windows, idle timeout, tracing...). rendr
// turns datagrams on in its copy; c itself is not changed.
func WithConfig(c *qgo.Config) Option { return func(o *options) { o.conf = c } }

// MaxPending bounds how many connections a Listener holds that have not reached Accept yet
// (waiting for their first stream, at most 5 s, or for Accept); one more closes the oldest.
// Zero means 256.
func MaxPending(n int) Option { return func(o *options) { o.pending = n } }

// RetryAbove makes a Listener validate the source address of new connections with QUIC's
// Retry (RFC 9000 section 8.1.2) once more than n arrive in a second: above that rate a
// connection attempt costs the listener no state until its dialer proves it receives at its
// address, at the price of one round trip. Zero means 64; a negative n asks it of every
// connection.
func RetryAbove(n int) Option { return func(o *options) { o.retry = n } }

// RetryPending makes a Listener ask QUIC's Retry of every new connection while n or more are
// in their QUIC handshake, whatever the rate: attempts from addresses nobody has proven
// (spoofed, say) then hold quic-go's state for at most n connections at once, each until its
// handshake ends or times out. Zero means 32; a negative n sets no such bound (RetryAbove
// still applies).
func RetryPending(n int) Option { return func(o *options) { o.retryPend = n } }

func build(opts []Option) options {
	o := options{streamTTL: 5 * time.Second, pending: 256, listen: net.ListenPacket}
	for _, f := range opts {
		f(&o)
	}
	if o.pending <= 0 {
		o.pending = 256
	}
	if o.retry == 0 {
		o.retry = 64
	}
	if o.retryPend == 0 {
		o.retryPend = 32
	}
	return o
}

// retryGate decides which connection attempts must first prove their address: every one
// while pend connections or more are in their handshake, and every one once more than rate
// a second have come (a token bucket, rate at once). It keeps no state per source: quic-go
// asks it before it keeps any.
type retryGate struct {
	rate        int
	pend        int
	lim         rate.Limiter
	n           atomic.Uint64 // attempts sent a Retry
	handshaking atomic.Int64  // connections quic-go holds that have not reached Accept
}

func (g *retryGate) verify(net.Addr) bool {
	if (g.pend < 0 || g.handshaking.Load() < int64(g.pend)) &&
		g.rate >= 0 && g.lim.Take(time.Now(), float64(g.rate), float64(g.rate)) {
		return false
	}
	g.n.Add(1)
	return true
}

// handshake marks one connection in its handshake: counted from quic-go's ConnContext until
// the connection reaches Accept or ends, whichever comes first.
type handshake struct {
	g    *retryGate
	over atomic.Bool
}

type handshakeKey struct{}

func (h *handshake) end() {
	if h.over.CompareAndSwap(false, true) {
		h.g.handshaking.Add(-1)
	}
}

// connContext is quic-go's ConnContext: it is called for every connection quic-go makes,
// with a context that ends when the connection does.
func (g *retryGate) connContext(ctx context.Context, _ *qgo.ClientInfo) (context.Context, error) {
	h := &handshake{g: g}
	g.handshaking.Add(1)
	ctx = context.WithValue(ctx, handshakeKey{}, h)
	context.AfterFunc(ctx, h.end)
	return ctx, nil
}

// established ends the count of a connection whose handshake is done.
func established(qc *qgo.Conn) {
	if h, ok := qc.Context().Value(handshakeKey{}).(*handshake); ok {
		h.end()
	}
}

// config is the QUIC configuration rendr runs with: the embedder's, with datagrams on and no
// keep-alives (rendr probes its paths itself, and faster).
func (o *options) config() *qgo.Config {
	c := &qgo.Config{}
	if o.conf != nil {
		c = o.conf.Clone()
	}
	c.EnableDatagrams = true
	// rendr uses one stream per connection, opened by the dialing side.
	c.MaxIncomingStreams = 1
	c.MaxIncomingUniStreams = -1
	if c.MaxIdleTimeout == 0 {
		// Longer than rendr's own death deadlines, so a path dies by rendr's verdict (and
		// its cause) rather than by QUIC's timer first.
		c.MaxIdleTimeout = 30 * time.Second
	}
	return c
}

// tlsConfig clones t and names rendr's ALPN if t names none: QUIC requires one.
func tlsConfig(t *tls.Config) *tls.Config {
	if t == nil {
		t = &tls.Config{}
	}
	t = t.Clone()
	if len(t.NextProtos) == 0 {
		t.NextProtos = []string{ALPN}
	}
	if t.MinVersion < tls.VersionTLS13 {
		t.MinVersion = tls.VersionTLS13
	}
	return t
}

// Dialer returns the dial function of a path that opens QUIC carriers to address ("host:port")
// with the embedder's TLS configuration. Use NewClient instead to move live carriers to a new
// local address.
func Dialer(address string, tlsConf *tls.Config, opts ...Option) transport.DialFunc {
	return NewClient(address, tlsConf, opts...).Dial
}

// Client opens QUIC carriers to one address and can move the live ones to a new local address.
// Its Dial method is a transport.DialFunc.
type Client struct {
	addr   string
	tls    *tls.Config
	conf   *qgo.Config
	listen func(network, address string) (net.PacketConn, error)

	mu struct {
		sync.Mutex
		local string
		live  map[*Carrier]struct{}
	}
}

// NewClient returns a Client for address ("host:port") with the embedder's TLS configuration.
func NewClient(address string, tlsConf *tls.Config, opts ...Option) *Client {
	o := build(opts)
	d := &Client{addr: address, tls: tlsConfig(tlsConf), conf: o.config(), listen: o.listen}
	d.mu.local = o.local
	d.mu.live = map[*Carrier]struct{}{}
	return d
}

// Dial opens one carrier: a UDP socket of its own, a QUIC connection and its first stream.
func (d *Client) Dial(ctx context.Context) (net.Conn, error) {
	raddr, err := net.ResolveUDPAddr("udp", d.addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	local := d.mu.local
	d.mu.Unlock()
	tr, err := openTransport(d.listen, local)
	if err != nil {
		return nil, err
	}
	qc, err := tr.Dial(ctx, raddr, d.tls, d.conf)
	if err != nil {
		tr.close()
		return nil, err
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		qc.CloseWithError(0, "")
		tr.close()
		return nil, err
	}
	tr.up.Store(true)
	c := newCarrier(qc, st, tr.pc.LocalAddr())
	c.mu.trs = []*ownTransport{tr}
	c.forget, c.listen = d.forget, d.listen
	d.mu.Lock()
	d.mu.live[c] = struct{}{}
	d.mu.Unlock()
	return c, nil
}

func (d *Client) forget(c *Carrier) {
	d.mu.Lock()
	delete(d.mu.live, c)
	d.mu.Unlock()
}

// Migrate moves every live carrier to a socket on localIP ("" for any address) without
// closing it, and makes later dials use localIP. It returns the first error; a carrier that
// cannot move stays where it was, and rendr fails over from it if its old address is gone.
func (d *Client) Migrate(ctx context.Context, localIP string) error {
	if err := checkIP(localIP); err != nil {
		return err // and later dials keep the address they had
	}
	d.mu.Lock()
	d.mu.local = localIP
	live := make([]*Carrier, 0, len(d.mu.live))
	for c := range d.mu.live {
		live = append(live, c)
	}
	d.mu.Unlock()
	var first error
	for _, c := range live {
		if err := c.Migrate(ctx, localIP); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// ownTransport is a quic.Transport with the socket it was given: quic-go does not close a
// socket it did not open.
type ownTransport struct {
	*qgo.Transport
	pc net.PacketConn
	up atomic.Bool // the connection on it is up: routing errors on send are loss (tolerant)
}

// checkIP accepts an IP address or "" (any address).
func checkIP(ip string) error {
	if ip == "" {
		return nil
	}
	if _, err := netip.ParseAddr(ip); err != nil {
		return &net.AddrError{Err: "not an IP address", Addr: ip}
	}
	return nil
}

func openTransport(listen func(network, address string) (net.PacketConn, error), localIP string) (*ownTransport, error) {
	if err := checkIP(localIP); err != nil {
		return nil, err
	}
	pc, err := listen("udp", net.JoinHostPort(localIP, "0"))
	if err != nil {
		return nil, err
	}
	t := &ownTransport{pc: pc}
	t.Transport = &qgo.Transport{Conn: tolerant(pc, &t.up)}
	return t, nil
}

func (t *ownTransport) close() {
	t.Transport.Close()
	t.pc.Close()
}

// Listener accepts QUIC connections and hands each one's first stream to rendr as a carrier.
// It is a net.Listener: give it to rendr.Listen or Listener.AddSource.
type Listener struct {
	tr     *ownTransport
	ln     *qgo.Listener
	o      options
	gate   *retryGate
	out    chan *Carrier
	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	once   sync.Once
	wg     sync.WaitGroup
	mu     sync.Mutex
	pend   list.List // *pending, oldest first: connections not yet taken by Accept
}

// Listen listens for QUIC connections on address ("host:port") with the embedder's TLS
// configuration (it needs a certificate).
func Listen(address string, tlsConf *tls.Config, opts ...Option) (*Listener, error) {
	if tlsConf == nil || len(tlsConf.Certificates) == 0 && tlsConf.GetCertificate == nil &&
		tlsConf.GetConfigForClient == nil {
		// quic-go would listen and then fail every handshake; say it where it can be fixed.
		return nil, errors.New("quic: Listen needs a TLS certificate: set Certificates or GetCertificate in its *tls.Config")
	}
	o := build(opts)
	pc, err := o.listen("udp", address)
	if err != nil {
		return nil, err
	}
	tr := &ownTransport{pc: pc}
	tr.up.Store(true) // one client's vanished route must not end the others' connections
	gate := &retryGate{rate: o.retry, pend: o.retryPend}
	tr.Transport = &qgo.Transport{Conn: tolerant(pc, &tr.up), VerifySourceAddress: gate.verify,
		ConnContext: gate.connContext}
	ln, err := tr.Listen(tlsConfig(tlsConf), o.config())
	if err != nil {
		tr.close()
		return nil, err
	}
	l := &Listener{tr: tr, ln: ln, o: o, out: make(chan *Carrier), gate: gate}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.routineAccept()
	return l, nil
}

// Retries counts the connection attempts the Listener answered with a Retry (RetryAbove,
// RetryPending).
func (l *Listener) Retries() uint64 { return l.gate.n.Load() }

// Handshaking is how many connections are in their QUIC handshake now (RetryPending).
func (l *Listener) Handshaking() int { return int(l.gate.handshaking.Load()) }

// pending is an accepted connection that has not reached Accept yet.
type pending struct {
	cancel context.CancelFunc
	elem   *list.Element
}

func (l *Listener) routineAccept() {
	defer l.wg.Done()
	for {
		qc, err := l.ln.Accept(l.ctx)
		if err != nil {
			return
		}
		established(qc)
		ctx, cancel := context.WithTimeout(l.ctx, l.o.streamTTL)
		p := &pending{cancel: cancel}
		l.mu.Lock()
		if l.pend.Len() >= l.o.pending {
			// Full: the oldest gives way, as rendr's own handshake slots do, so that a
			// flood of connections that never open a stream cannot keep real peers out.
			old := l.pend.Remove(l.pend.Front()).(*pending)
			old.elem = nil
			old.cancel()
		}
		p.elem = l.pend.PushBack(p)
		l.mu.Unlock()
		l.wg.Add(1)
		go l.routineStream(ctx, qc, p)
	}
}

// routineStream waits a bounded time for the connection's first stream, which the dialer
// opens with rendr's handshake in it, then for Accept to take it. The connection holds its
// pending slot until then.
func (l *Listener) routineStream(ctx context.Context, qc *qgo.Conn, p *pending) {
	defer l.wg.Done()
	defer func() {
		p.cancel()
		l.mu.Lock()
		if p.elem != nil {
			l.pend.Remove(p.elem)
			p.elem = nil
		}
		l.mu.Unlock()
	}()
	st, err := qc.AcceptStream(ctx)
	if err != nil {
		qc.CloseWithError(0, "")
		return
	}
	c := newCarrier(qc, st, l.tr.pc.LocalAddr())
	select {
	case l.out <- c:
	case <-ctx.Done():
		c.Close()
	}
}

// Accept returns the next carrier.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.out:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the socket. Carriers it accepted share that socket, so they
// end with it.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.cancel()
		l.ln.Close()
		l.tr.close()
	})
	l.wg.Wait()
	return nil
}

// Addr is the UDP address the Listener is bound to.
func (l *Listener) Addr() net.Addr { return l.tr.pc.LocalAddr() }

// Carrier is one QUIC connection as a rendr carrier: a net.Conn over its first stream, and a
// transport.Datagrammer over its DATAGRAM frames.
type Carrier struct {
	conn   *qgo.Conn
	st     *qgo.Stream
	dg     bool // the peer takes datagrams
	remote net.Addr
	forget func(*Carrier)
	listen func(network, address string) (net.PacketConn, error) // dialing side: for Migrate
	once   sync.Once

	mu struct {
		sync.Mutex
		trs     []*ownTransport // dialing side: every socket the connection has used, newest last
		local   net.Addr
		maxDG   int
		probeAt time.Time
		closed  bool
	}
}

var (
	_ net.Conn              = (*Carrier)(nil)
	_ transport.Datagrammer = (*Carrier)(nil)
)

// initialMaxDatagram is the datagram size tried first: what fits a 1452-byte QUIC packet,
// quic-go's largest, less its headers. A failure teaches the real limit; it is tried again
// now and then, as path MTU discovery may have raised it since.
const (
	initialMaxDatagram = 1400
	retryMaxDatagram   = 10 * time.Second
	// maxSockets bounds the sockets one dialed connection keeps: every address it was moved
	// to, or tried, stays registered with the connection until it closes.
	maxSockets = 16
)

// newCarrier wraps a connection whose handshake is done. It reads the connection's state and
// addresses once, here: quic-go's Conn reads them unsynchronized with a path switch on its own
// goroutine, so asking again during a migration would be a data race.
func newCarrier(qc *qgo.Conn, st *qgo.Stream, local net.Addr) *Carrier {
	c := &Carrier{conn: qc, st: st, dg: qc.ConnectionState().SupportsDatagrams.Remote, remote: qc.RemoteAddr()}
	c.mu.local = local
	c.mu.maxDG = initialMaxDatagram
	return c
}

// Conn is the QUIC connection under the carrier.
func (c *Carrier) Conn() *qgo.Conn { return c.conn }

func (c *Carrier) Read(p []byte) (int, error)  { return c.st.Read(p) }
func (c *Carrier) Write(p []byte) (int, error) { return c.st.Write(p) }

// Close closes the connection at once (a CONNECTION_CLOSE tells the peer) and the sockets it
// owns.
func (c *Carrier) Close() error {
	c.once.Do(func() {
		c.st.CancelRead(0)
		c.st.CancelWrite(0)
		c.conn.CloseWithError(0, "")
		c.mu.Lock()
		c.mu.closed = true
		trs := c.mu.trs
		c.mu.trs = nil
		c.mu.Unlock()
		for _, t := range trs {
			t.close()
		}
		if c.forget != nil {
			c.forget(c)
		}
	})
	return nil
}

// CloseWrite ends the stream's sending side (a FIN); reading goes on.
func (c *Carrier) CloseWrite() error { return c.st.Close() }

// LocalAddr is the local socket's address: on the dialing side, the one Migrate last moved
// to.
func (c *Carrier) LocalAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.local
}

// RemoteAddr is the peer's address when the connection was set up. On the listening side it
// does not follow a dialer that migrated: quic-go offers no race-free way to read the new one.
func (c *Carrier) RemoteAddr() net.Addr { return c.remote }

func (c *Carrier) SetDeadline(t time.Time) error      { return c.st.SetDeadline(t) }
func (c *Carrier) SetReadDeadline(t time.Time) error  { return c.st.SetReadDeadline(t) }
func (c *Carrier) SetWriteDeadline(t time.Time) error { return c.st.SetWriteDeadline(t) }

// SendDatagram sends b in one QUIC DATAGRAM frame.
func (c *Carrier) SendDatagram(b []byte) error {
	err := c.conn.SendDatagram(b)
	var tl *qgo.DatagramTooLargeError
	if errors.As(err, &tl) {
		c.mu.Lock()
		c.mu.maxDG = int(tl.MaxDatagramPayloadSize)
		c.mu.probeAt = time.Now().Add(retryMaxDatagram)
		c.mu.Unlock()
		return &transport.DatagramTooLargeError{Max: int(tl.MaxDatagramPayloadSize)}
	}
	return err
}

// ReceiveDatagram returns the next DATAGRAM frame's payload.
func (c *Carrier) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	return c.conn.ReceiveDatagram(ctx)
}

// MaxDatagramSize is the largest datagram believed to fit now; zero when the peer did not
// enable datagrams.
func (c *Carrier) MaxDatagramSize() int {
	if !c.dg {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.maxDG < initialMaxDatagram && !c.mu.probeAt.IsZero() && time.Now().After(c.mu.probeAt) {
		c.mu.maxDG = initialMaxDatagram
	}
	return c.mu.maxDG
}

// Migrate moves the connection to a new socket on localIP ("" for any address): it validates
// the new path with the peer (QUIC PATH_CHALLENGE), then switches to it. The stream and every
// byte in flight carry on. Only the dialing side can migrate.
func (c *Carrier) Migrate(ctx context.Context, localIP string) error {
	c.mu.Lock()
	if c.mu.closed || c.mu.trs == nil {
		c.mu.Unlock()
		return errors.New("rendr/quic: only an open dialed carrier can migrate")
	}
	if len(c.mu.trs) >= maxSockets {
		c.mu.Unlock()
		return fmt.Errorf("rendr/quic: %d sockets used by one connection already; close it and dial again", maxSockets)
	}
	c.mu.Unlock()
	tr, err := openTransport(c.listen, localIP)
	if err != nil {
		return err
	}
	p, err := c.conn.AddPath(tr.Transport)
	if err != nil {
		tr.close() // nothing of the connection is on it yet
		return err
	}
	// quic-go's Probe waits only for its context: end it when the connection ends too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.conn.Context(), cancel)
	defer stop()
	if err = p.Probe(ctx); err == nil {
		tr.up.Store(true)
		err = p.Switch()
	}
	if err != nil {
		p.Close()
	}
	// Once probed, the connection is registered with the new transport, and closing that
	// transport would end the connection, whether the switch happened or not: like the
	// earlier ones, it stays open until the carrier closes.
	c.mu.Lock()
	closed := c.mu.closed
	if !closed {
		c.mu.trs = append(c.mu.trs, tr)
		if err == nil {
			c.mu.local = tr.pc.LocalAddr()
		}
	}
	c.mu.Unlock()
	if closed {
		tr.close()
		if err == nil {
			err = net.ErrClosed
		}
	}
	return err
}
