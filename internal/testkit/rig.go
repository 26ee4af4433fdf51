package testkit

// Rig: a Listener and a Dialer over real loopback carriers of each kind (tcp, quic, gvisor,
// udpflow), one watched source per path and a relay in front of each, which a test kills,
// resets or stalls; sources show what the listener sent to whom.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/relay"
	"github.com/rendr-go/rendr/internal/testcert"
	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/gvisor"
	"github.com/rendr-go/rendr/transport/quic"
	"github.com/rendr-go/rendr/transport/tcp"
	"github.com/rendr-go/rendr/transport/udpflow"
)

// Source wraps a carrier source so a test can see every carrier the listener accepted, how
// many bytes the listener wrote back on it, and whether the listener closed it. Strangers must
// get zero bytes.
type Source struct {
	net.Listener
	mu struct {
		sync.Mutex
		carriers []*Carrier
	}
}

// Carrier is one carrier a Source accepted, as the listener uses it.
type Carrier struct {
	net.Conn
	Written atomic.Int64 // bytes the listener wrote on the carrier
	Closed  atomic.Bool  // the listener closed the carrier
}

// Write counts what the listener writes.
func (c *Carrier) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.Written.Add(int64(n))
	return n, err
}

// CloseWrite passes a half-close to the carrier, when it has one.
func (c *Carrier) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("carrier cannot half-close")
}

// Close records that the listener closed the carrier.
func (c *Carrier) Close() error {
	c.Closed.Store(true)
	return c.Conn.Close()
}

// dgCarrier is a Carrier over a carrier that carries datagrams too (QUIC): the wrapper
// must not hide them.
type dgCarrier struct {
	*Carrier
	transport.Datagrammer
}

// Accept wraps each accepted carrier in a Carrier that keeps what its kind can do (datagrams
// beside the stream, or datagrams alone).
func (s *Source) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &Carrier{Conn: c}
	s.mu.Lock()
	s.mu.carriers = append(s.mu.carriers, rc)
	s.mu.Unlock()
	if dg, ok := c.(transport.Datagrammer); ok {
		return &dgCarrier{Carrier: rc, Datagrammer: dg}, nil
	}
	if pk, ok := c.(transport.Rebinder); ok {
		return &pkCarrier{Carrier: rc, pk: pk}, nil
	}
	return rc, nil
}

// pkCarrier is a Carrier over a datagram carrier (udpflow): the wrapper keeps its
// datagram methods, and counts what they write too.
type pkCarrier struct {
	*Carrier
	pk transport.Rebinder
}

func (c *pkCarrier) MaxDatagramSize() int  { return c.pk.MaxDatagramSize() }
func (c *pkCarrier) BaseDatagramSize() int { return c.pk.BaseDatagramSize() }
func (c *pkCarrier) SetPeer(a net.Addr)    { c.pk.SetPeer(a) }

func (c *pkCarrier) ReadFrom(b []byte) (int, net.Addr, error) { return c.pk.ReadFrom(b) }

func (c *pkCarrier) WriteTo(b []byte, a net.Addr) (int, error) {
	n, err := c.pk.WriteTo(b, a)
	c.Written.Add(int64(n))
	return n, err
}

func (c *pkCarrier) WriteBatch(b [][]byte) error {
	bw, ok := c.pk.(transport.BatchWriter)
	if !ok {
		for _, d := range b {
			if _, err := c.Write(d); err != nil {
				return err
			}
		}
		return nil
	}
	err := bw.WriteBatch(b)
	if err == nil {
		for _, d := range b {
			c.Written.Add(int64(len(d)))
		}
	}
	return err
}

// Carriers is every carrier the source accepted so far, in order.
func (s *Source) Carriers() []*Carrier {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Carrier(nil), s.mu.carriers...)
}

// CarrierFrom finds the carrier whose remote end is local (the test's own socket).
func (s *Source) CarrierFrom(local net.Addr) *Carrier {
	for _, c := range s.Carriers() {
		if c.RemoteAddr().String() == local.String() {
			return c
		}
	}
	return nil
}

// Listen opens a tuned loopback TCP source wrapped in an Source. addr may name a port to
// take again after a restart; the kernel may hold it a moment, so it retries a bounded number
// of times.
func Listen(t testing.TB, addr string) *Source {
	t.Helper()
	var err error
	for range 100 {
		var l net.Listener
		if l, err = tcp.Listen(addr); err == nil {
			return &Source{Listener: l}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("listen %s: %v", addr, err)
	return nil
}

// ListenQUIC opens a loopback QUIC source wrapped in an Source.
func ListenQUIC(t testing.TB, tlsConf *tls.Config) *Source {
	t.Helper()
	l, err := quic.Listen("127.0.0.1:0", tlsConf)
	if err != nil {
		t.Fatalf("listen quic: %v", err)
	}
	return &Source{Listener: l}
}

// udpPath controls one path of a rig whose carrier runs over UDP.
type udpPath struct {
	*relay.UDP
	src *Source
	mu  sync.Mutex
	out []net.Conn // carriers dialed through this path
}

func (q *udpPath) dial(d transport.DialFunc) transport.DialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		c, err := d(ctx)
		if err == nil {
			q.mu.Lock()
			q.out = append(q.out, c)
			q.mu.Unlock()
		}
		return c, err
	}
}

func (q *udpPath) Kill(m relay.Mode) int {
	switch m {
	case relay.Close:
		q.mu.Lock()
		out := q.out
		q.out = nil
		q.mu.Unlock()
		for _, c := range out {
			c.Close()
		}
		return len(out)
	case relay.Reset:
		n := 0
		for _, c := range q.src.Carriers() {
			if !c.Closed.Load() {
				c.Close()
				n++
			}
		}
		return n
	}
	return q.UDP.Kill(m)
}

func (q *udpPath) Close() error {
	q.Kill(relay.Close)
	return q.UDP.Close()
}

// RigConfig describes a rig.
type RigConfig struct {
	Paths   int
	Options rendr.Options
	// Front returns the address path i dials to reach the source at src; nil puts a relay in
	// front of every source (Rig.Relays).
	Front func(i int, src string) string
	// PathOpts are the options of path i (Backup, Tier...); nil means none.
	PathOpts func(i int) []rendr.PathOption
	// ExtraPeers are keys the listener accepts besides the rig's dialer.
	ExtraPeers []rendr.PublicKey
	// ListenOptions, if set, are the listener's options instead of Options.
	ListenOptions *rendr.Options
	// Secure declares every carrier already secure (SecureCarrier, SecureSource): records are
	// not encrypted, and the engine sends payload by reference instead of copying it.
	Secure bool
	// Carrier is "tcp" (the default), "quic" or "gvisor", or a comma-separated list naming path i's
	// carrier at i (mod its length): "tcp,quic" alternates.
	Carrier string
	// Group makes the root of the dialer's graph; nil means Selector.
	Group func(name string, children ...*rendr.Target) *rendr.Target
	// Hooks, if set, gives path i's hooks: every byte the dialer writes on one of its
	// carriers' streams passes up (which may change it) before the carrier takes it, and every
	// byte it reads passes down, with the carrier's index on the path and the offset. It works
	// the same on every carrier kind, as a hostile carrier would. The hooked carrier hides a
	// QUIC carrier's datagrams, so packet flows ride the stream, hooked too.
	Hooks func(i int) (up, down Hook)
}

// hookConn is a dialed carrier with hooks on both directions.
type hookConn struct {
	net.Conn
	idx        int
	up, down   Hook
	upOff      int64
	downOff    int64
	scratch    []byte
	closed     atomic.Bool
	writeMutex sync.Mutex
}

func (c *hookConn) Write(b []byte) (int, error) {
	if c.up == nil {
		return c.Conn.Write(b)
	}
	c.writeMutex.Lock()
	defer c.writeMutex.Unlock()
	c.scratch = append(c.scratch[:0], b...)
	c.up(c.idx, c.upOff, c.scratch)
	n, err := c.Conn.Write(c.scratch)
	c.upOff += int64(n)
	return n, err
}

func (c *hookConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.down != nil {
		c.down(c.idx, c.downOff, b[:n])
	}
	c.downOff += int64(n)
	return n, err
}

func (c *hookConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// hookPkConn is a hookConn over a datagram carrier: each datagram passes the hooks
// whole, at its offset in the run of datagrams written (or read) so far.
type hookPkConn struct {
	*hookConn
	pk transport.Rebinder
}

func (c *hookPkConn) MaxDatagramSize() int  { return c.pk.MaxDatagramSize() }
func (c *hookPkConn) BaseDatagramSize() int { return c.pk.BaseDatagramSize() }
func (c *hookPkConn) SetPeer(a net.Addr)    { c.pk.SetPeer(a) }

func (c *hookPkConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.pk.ReadFrom(b)
	if n > 0 && c.down != nil {
		c.down(c.idx, c.downOff, b[:n])
	}
	c.downOff += int64(n)
	return n, from, err
}

func (c *hookPkConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if a == nil {
		return c.Write(b)
	}
	return c.pk.WriteTo(b, a)
}

// AnyClosed reports whether one of path i's hooked carriers was closed.
func (r *Rig) AnyClosed(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.hooked[i] {
		if c.closed.Load() {
			return true
		}
	}
	return false
}

// RawDialer dials the rig's carrier kind (path 0's) to addr with nothing of rendr on top, from
// 127.0.0.1 so that a source can match the carrier by address (Source.CarrierFrom).
func (r *Rig) RawDialer(addr string) transport.DialFunc {
	switch r.cfg.carrier(0) {
	case "quic":
		return quic.Dialer(addr, r.cliTLS, quic.LocalAddr("127.0.0.1"))
	case "gvisor":
		return gvisor.Dialer(addr, gvisor.LocalAddr("127.0.0.1"))
	case "udpflow":
		return udpflow.Dialer(addr, udpflow.LocalAddr("127.0.0.1"))
	}
	return tcp.Dialer(addr)
}

// carrier is path i's carrier kind.
func (c *RigConfig) carrier(i int) string {
	kinds := strings.Split(c.Carrier, ",")
	if k := kinds[i%len(kinds)]; k != "" {
		return k
	}
	return "tcp"
}

// Rig is a listener with one source per path and a dialer whose paths reach the sources
// through relays (or the config's Front).
type Rig struct {
	T        testing.TB
	Srv, Cli rendr.PrivateKey // the listener's and the dialer's keys
	// Addrs are the sources' addresses, kept so a restarted listener can take them again.
	Addrs  []string
	Srcs   []*Source // the listener's sources, path i's at i
	Relays []PathCtl // what stands in front of each source, path i's at i (none with Front)
	LN     *rendr.Listener
	D      *rendr.Dialer
	Mig    *Migrations // the dialer's migrations

	cfg    RigConfig
	srvTLS *tls.Config   // QUIC sources' identity
	cliTLS *tls.Config   // trusts exactly srvTLS
	hooked [][]*hookConn // path i's carriers, when Hooks is set
	once   sync.Once
	mu     sync.Mutex // guards hooked
}

// NewRig builds the rig cfg describes; the test's cleanup closes it.
func NewRig(t testing.TB, cfg RigConfig) *Rig {
	t.Helper()
	r := &Rig{T: t, cfg: cfg, Srv: rendr.MustNewKey(), Cli: rendr.MustNewKey(), Mig: &Migrations{}}
	t.Cleanup(r.Close)
	r.srvTLS, r.cliTLS = testcert.Must()
	srvTLS, cliTLS := r.srvTLS, r.cliTLS
	r.hooked = make([][]*hookConn, cfg.Paths)
	for i := range cfg.Paths {
		var s *Source
		switch cfg.carrier(i) {
		case "tcp":
			s = Listen(t, "127.0.0.1:0")
		case "quic":
			s = ListenQUIC(t, srvTLS)
		case "gvisor":
			l, err := gvisor.Listen("127.0.0.1:0")
			if err != nil {
				t.Fatalf("listen gvisor: %v", err)
			}
			s = &Source{Listener: l}
		case "udpflow":
			l, err := udpflow.Listen("127.0.0.1:0")
			if err != nil {
				t.Fatalf("listen udpflow: %v", err)
			}
			s = &Source{Listener: l}
		default:
			t.Fatalf("no carrier %q", cfg.carrier(i))
		}
		r.Srcs = append(r.Srcs, s)
		r.Addrs = append(r.Addrs, s.Addr().String())
	}
	r.LN = r.listen(r.Srcs)
	var paths []*rendr.Target
	for i, a := range r.Addrs {
		var dial transport.DialFunc
		switch {
		case cfg.carrier(i) == "quic" || cfg.carrier(i) == "gvisor" || cfg.carrier(i) == "udpflow":
			u, err := relay.NewUDP(a)
			if err != nil {
				t.Fatal(err)
			}
			q := &udpPath{UDP: u, src: r.Srcs[i]}
			r.Relays = append(r.Relays, q)
			switch cfg.carrier(i) {
			case "quic":
				dial = q.dial(quic.Dialer(u.Addr(), cliTLS))
			case "udpflow":
				dial = q.dial(udpflow.Dialer(u.Addr()))
			default:
				dial = q.dial(gvisor.Dialer(u.Addr()))
			}
		case cfg.Front != nil:
			dial = tcp.Dialer(cfg.Front(i, a))
		default:
			rl, err := relay.New(a)
			if err != nil {
				t.Fatal(err)
			}
			r.Relays = append(r.Relays, rl)
			dial = tcp.Dialer(rl.Addr())
		}
		if cfg.Hooks != nil {
			up, down := cfg.Hooks(i)
			inner, i := dial, i
			dial = func(ctx context.Context) (net.Conn, error) {
				c, err := inner(ctx)
				if err != nil {
					return nil, err
				}
				r.mu.Lock()
				hc := &hookConn{Conn: c, idx: len(r.hooked[i]), up: up, down: down}
				r.hooked[i] = append(r.hooked[i], hc)
				r.mu.Unlock()
				if pk, ok := c.(transport.Rebinder); ok {
					return &hookPkConn{hookConn: hc, pk: pk}, nil
				}
				return hc, nil
			}
		}
		var po []rendr.PathOption
		if cfg.PathOpts != nil {
			po = cfg.PathOpts(i)
		}
		if cfg.Secure {
			po = append(po, rendr.SecureCarrier())
		}
		paths = append(paths, rendr.Path(PathName(i), dial, po...))
	}
	opts := cfg.Options
	opts.OnMigrate = r.Mig.Record
	var err error
	group := cfg.Group
	if group == nil {
		group = rendr.Selector
	}
	r.D, err = rendr.NewDialer(rendr.DialerConfig{Key: r.Cli, PeerKey: r.Srv.Public(),
		Root: group("root", paths...), Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *Rig) listen(srcs []*Source) *rendr.Listener {
	r.T.Helper()
	ls := make([]net.Listener, len(srcs))
	for i, s := range srcs {
		ls[i] = s
	}
	opts := r.cfg.Options
	if r.cfg.ListenOptions != nil {
		opts = *r.cfg.ListenOptions
	}
	var direct []net.Listener
	if !r.cfg.Secure {
		direct = ls
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: r.Srv,
		Peers: append([]rendr.PublicKey{r.Cli.Public()}, r.cfg.ExtraPeers...), Options: opts}, direct...)
	if err != nil {
		r.T.Fatal(err)
	}
	if r.cfg.Secure {
		for _, l := range ls {
			if err := ln.AddSource(l, rendr.SecureSource()); err != nil {
				r.T.Fatal(err)
			}
		}
	}
	return ln
}

// Relisten replaces the listener with a new one (same key, same source addresses), as a
// restarted process would. The old one must be closed already.
func (r *Rig) Relisten() {
	r.T.Helper()
	r.Srcs = nil
	for i, a := range r.Addrs {
		r.Srcs = append(r.Srcs, r.listenAgain(r.cfg.carrier(i), a))
	}
	r.LN = r.listen(r.Srcs)
	for i, rl := range r.Relays {
		if q, ok := rl.(*udpPath); ok {
			q.src = r.Srcs[i]
		}
	}
}

// listenAgain opens a source of the given kind on addr, which a closed one just held; the
// kernel may hold the port a moment, so it retries a bounded number of times.
func (r *Rig) listenAgain(kind, addr string) *Source {
	r.T.Helper()
	if kind == "tcp" {
		return Listen(r.T, addr)
	}
	var err error
	for range 100 {
		var l net.Listener
		switch kind {
		case "quic":
			l, err = quic.Listen(addr, r.srvTLS)
		case "udpflow":
			l, err = udpflow.Listen(addr)
		default:
			l, err = gvisor.Listen(addr)
		}
		if err == nil {
			return &Source{Listener: l}
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.T.Fatalf("listen %s %s: %v", kind, addr, err)
	return nil
}

// ExtraSource adds one more watched source to the listener, for strangers to knock on.
func (r *Rig) ExtraSource() *Source {
	r.T.Helper()
	var s *Source
	switch r.cfg.carrier(0) {
	case "quic":
		s = ListenQUIC(r.T, r.srvTLS)
	case "gvisor":
		l, err := gvisor.Listen("127.0.0.1:0")
		if err != nil {
			r.T.Fatal(err)
		}
		s = &Source{Listener: l}
	case "udpflow":
		l, err := udpflow.Listen("127.0.0.1:0")
		if err != nil {
			r.T.Fatal(err)
		}
		s = &Source{Listener: l}
	default:
		s = Listen(r.T, "127.0.0.1:0")
	}
	if err := r.LN.AddSource(s); err != nil {
		r.T.Fatal(err)
	}
	return s
}

// Close tears the rig down; it is idempotent so a pipe's stop and the test's cleanup may
// both call it.
func (r *Rig) Close() {
	r.once.Do(func() {
		if r.D != nil {
			r.D.Close()
		}
		if r.LN != nil {
			r.LN.Close()
		}
		for _, rl := range r.Relays {
			rl.Close()
		}
	})
}

// Open dials a flow and accepts it, bounded by a generous deadline.
func (r *Rig) Open() (*rendr.Conn, *rendr.Conn) {
	r.T.Helper()
	return DialAccept(r.T, r.D, r.LN)
}

// DialAccept dials a flow on d and accepts it on ln, bounded by a generous deadline, and
// closes both when the test ends.
func DialAccept(t testing.TB, d *rendr.Dialer, ln *rendr.Listener) (*rendr.Conn, *rendr.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c1, c2, err := OpenFlow(ctx, d, ln)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c1.Close() })
	t.Cleanup(func() { c2.Close() })
	if c1.FlowID() != c2.FlowID() {
		t.Fatalf("dialed flow %d, accepted flow %d", c1.FlowID(), c2.FlowID())
	}
	return c1, c2
}

// OpenFlow dials a flow on d and accepts it on ln within ctx. On an error nothing is left
// open, and the error says which half failed.
func OpenFlow(ctx context.Context, d *rendr.Dialer, ln *rendr.Listener) (dc, lc *rendr.Conn, err error) {
	dc, err = d.DialContext(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("dial: %w", err)
	}
	lc, err = ln.AcceptContext(ctx)
	if err != nil {
		dc.Close()
		return nil, nil, fmt.Errorf("accept: %w (dialer: %s)", err, Describe(d.Status()))
	}
	return dc, lc, nil
}

// RawDial opens a plain TCP connection, for speaking to a source without rendr.
func RawDial(t testing.TB, r *Rig, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := r.RawDialer(addr)(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ExpectSilentClose reads from c until the peer closes it and fails if any byte arrives or
// nothing happens for within (a bound against hanging, not a measurement).
func ExpectSilentClose(t testing.TB, c net.Conn, within time.Duration) {
	t.Helper()
	if _, ok := c.(transport.PacketCarrier); ok {
		// A datagram carrier never sees its far end close: nothing may arrive for as long as
		// the listener may take to give up (the callers check it did, at the source).
		c.SetReadDeadline(time.Now().Add(HandshakeTimeout + time.Second))
		if n, err := c.Read(make([]byte, 64<<10)); err == nil {
			t.Fatalf("listener sent a %d-byte datagram to an unauthenticated carrier", n)
		}
		return
	}
	c.SetReadDeadline(time.Now().Add(within))
	n, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("carrier still open after %v (read %d bytes)", within, n)
	}
	if n != 0 {
		t.Fatalf("listener sent %d bytes to an unauthenticated carrier", n)
	}
}

// extender forwards transport.HandshakeExtender to a wrapped carrier that has it; one that
// does not sends nothing and takes anything, as a carrier without the interface would.
type extender struct{ c net.Conn }

func (e extender) HelloExtra() []byte {
	if x, ok := e.c.(transport.HandshakeExtender); ok {
		return x.HelloExtra()
	}
	return nil
}

func (e extender) AnswerExtra(hello []byte) ([]byte, error) {
	if x, ok := e.c.(transport.HandshakeExtender); ok {
		return x.AnswerExtra(hello)
	}
	return nil, nil
}

func (e extender) ReplyExtra(reply []byte) error {
	if x, ok := e.c.(transport.HandshakeExtender); ok {
		return x.ReplyExtra(reply)
	}
	return nil
}

func (c *pkCarrier) HelloExtra() []byte                    { return extender{c.pk}.HelloExtra() }
func (c *pkCarrier) AnswerExtra(h []byte) ([]byte, error)  { return extender{c.pk}.AnswerExtra(h) }
func (c *pkCarrier) ReplyExtra(r []byte) error             { return extender{c.pk}.ReplyExtra(r) }
func (c *hookPkConn) HelloExtra() []byte                   { return extender{c.pk}.HelloExtra() }
func (c *hookPkConn) AnswerExtra(h []byte) ([]byte, error) { return extender{c.pk}.AnswerExtra(h) }
func (c *hookPkConn) ReplyExtra(r []byte) error            { return extender{c.pk}.ReplyExtra(r) }

var (
	_ transport.HandshakeExtender = (*pkCarrier)(nil)
	_ transport.HandshakeExtender = (*hookPkConn)(nil)
)

// HandshakeTimeout is the listener's handshake timeout in the adversarial tests: small, so
// silent carriers end quickly.
const HandshakeTimeout = 500 * time.Millisecond

// EachCarrier runs f as a subtest per carrier kind.
func EachCarrier(t *testing.T, f func(t *testing.T, carrier string)) {
	for _, carrier := range CarrierKinds() {
		t.Run(carrier, func(t *testing.T) { f(t, carrier) })
	}
}

// EachCarrierAtOnce is EachCarrier with the carriers' runs side by side, for suites that
// mostly wait (for a listener's handshake timeout) on a rig of their own per run, and check
// no goroutines of the process's.
func EachCarrierAtOnce(t *testing.T, f func(t *testing.T, carrier string)) {
	for _, carrier := range CarrierKinds() {
		t.Run(carrier, func(t *testing.T) {
			t.Parallel()
			f(t, carrier)
		})
	}
}

// CarrierKinds are the carrier kinds the shared suites run over, each a RigConfig.Carrier.
func CarrierKinds() []string { return []string{"tcp", "quic", "gvisor", "udpflow"} }

// UDPRelay is the UDP relay in front of path i, whose carrier runs over UDP (quic, gvisor,
// udpflow); it is nil for a path over TCP.
func (r *Rig) UDPRelay(i int) *relay.UDP {
	if q, ok := r.Relays[i].(*udpPath); ok {
		return q.UDP
	}
	return nil
}

// EchoUDP answers each datagram pc receives with the same bytes, to its sender, from a
// goroutine that ends when pc is closed.
func EchoUDP(pc net.PacketConn) {
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// AcceptTCP accepts ln's TCP connections in a goroutine, until ln is closed, and hands them
// over in order (up to 16 waiting).
func AcceptTCP(ln net.Listener) <-chan *net.TCPConn {
	out := make(chan *net.TCPConn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			out <- c.(*net.TCPConn)
		}
	}()
	return out
}
