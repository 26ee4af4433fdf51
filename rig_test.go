// The loopback rig of the real-carrier tests: listener, dialer and relays over loopback
// sockets for each carrier kind, and sources that watch what the listener sends.

package rendr_test

import (
	"context"
	"crypto/tls"
	"errors"
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
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/gvisor"
	"github.com/rendr-go/rendr/transport/quic"
	"github.com/rendr-go/rendr/transport/tcp"
	"github.com/rendr-go/rendr/transport/udpflow"
)

// rtSource wraps a carrier source so a test can see every carrier the listener accepted, how
// many bytes the listener wrote back on it, and whether the listener closed it. Strangers must
// get zero bytes.
type rtSource struct {
	net.Listener
	mu struct {
		sync.Mutex
		carriers []*rtCarrier
	}
}

type rtCarrier struct {
	net.Conn
	written atomic.Int64
	closed  atomic.Bool
}

func (c *rtCarrier) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// CloseWrite passes a half-close to the carrier, when it has one.
func (c *rtCarrier) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("carrier cannot half-close")
}

func (c *rtCarrier) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// rtDgCarrier is an rtCarrier over a carrier that carries datagrams too (QUIC): the wrapper
// must not hide them.
type rtDgCarrier struct {
	*rtCarrier
	transport.Datagrammer
}

func (s *rtSource) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &rtCarrier{Conn: c}
	s.mu.Lock()
	s.mu.carriers = append(s.mu.carriers, rc)
	s.mu.Unlock()
	if dg, ok := c.(transport.Datagrammer); ok {
		return &rtDgCarrier{rtCarrier: rc, Datagrammer: dg}, nil
	}
	if pk, ok := c.(transport.Rebinder); ok {
		return &rtPkCarrier{rtCarrier: rc, pk: pk}, nil
	}
	return rc, nil
}

// rtPkCarrier is an rtCarrier over a datagram carrier (udpflow): the wrapper keeps its
// datagram methods, and counts what they write too.
type rtPkCarrier struct {
	*rtCarrier
	pk transport.Rebinder
}

func (c *rtPkCarrier) MaxDatagramSize() int  { return c.pk.MaxDatagramSize() }
func (c *rtPkCarrier) BaseDatagramSize() int { return c.pk.BaseDatagramSize() }
func (c *rtPkCarrier) SetPeer(a net.Addr)    { c.pk.SetPeer(a) }

func (c *rtPkCarrier) ReadFrom(b []byte) (int, net.Addr, error) { return c.pk.ReadFrom(b) }

func (c *rtPkCarrier) WriteTo(b []byte, a net.Addr) (int, error) {
	n, err := c.pk.WriteTo(b, a)
	c.written.Add(int64(n))
	return n, err
}

func (c *rtPkCarrier) WriteBatch(b [][]byte) error {
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
			c.written.Add(int64(len(d)))
		}
	}
	return err
}

func (s *rtSource) carriers() []*rtCarrier {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*rtCarrier(nil), s.mu.carriers...)
}

// carrierFrom finds the carrier whose remote end is local (the test's own socket).
func (s *rtSource) carrierFrom(local net.Addr) *rtCarrier {
	for _, c := range s.carriers() {
		if c.RemoteAddr().String() == local.String() {
			return c
		}
	}
	return nil
}

// rtListen opens a tuned loopback TCP source wrapped in an rtSource. addr may name a port to
// take again after a restart; the kernel may hold it a moment, so it retries a bounded number
// of times.
func rtListen(t testing.TB, addr string) *rtSource {
	t.Helper()
	var err error
	for range 100 {
		var l net.Listener
		if l, err = tcp.Listen(addr); err == nil {
			return &rtSource{Listener: l}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("listen %s: %v", addr, err)
	return nil
}

// rtListenQUIC opens a loopback QUIC source wrapped in an rtSource.
func rtListenQUIC(t testing.TB, tlsConf *tls.Config) *rtSource {
	t.Helper()
	l, err := quic.Listen("127.0.0.1:0", tlsConf)
	if err != nil {
		t.Fatalf("listen quic: %v", err)
	}
	return &rtSource{Listener: l}
}

// rtUDPPath controls one path of a rig whose carrier runs over UDP.
type rtUDPPath struct {
	*relay.UDP
	src *rtSource
	mu  sync.Mutex
	out []net.Conn // carriers dialed through this path
}

func (q *rtUDPPath) dial(d transport.DialFunc) transport.DialFunc {
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

func (q *rtUDPPath) Kill(m relay.Mode) int {
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
		for _, c := range q.src.carriers() {
			if !c.closed.Load() {
				c.Close()
				n++
			}
		}
		return n
	}
	return q.UDP.Kill(m)
}

func (q *rtUDPPath) Close() error {
	q.Kill(relay.Close)
	return q.UDP.Close()
}

// rtRigConfig describes a rig.
type rtRigConfig struct {
	Paths   int
	Options rendr.Options
	// Front returns the address path i dials to reach the source at src; nil puts a relay in
	// front of every source (Rig.relays).
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
	Hooks func(i int) (up, down rtHook)
}

// rtHook sees (and may change) bytes crossing a hooked carrier.
type rtHook func(conn int, off int64, b []byte)

// rtHookConn is a dialed carrier with hooks on both directions.
type rtHookConn struct {
	net.Conn
	idx        int
	up, down   rtHook
	upOff      int64
	downOff    int64
	scratch    []byte
	closed     atomic.Bool
	writeMutex sync.Mutex
}

func (c *rtHookConn) Write(b []byte) (int, error) {
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

func (c *rtHookConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.down != nil {
		c.down(c.idx, c.downOff, b[:n])
	}
	c.downOff += int64(n)
	return n, err
}

func (c *rtHookConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// rtHookPkConn is an rtHookConn over a datagram carrier: each datagram passes the hooks
// whole, at its offset in the run of datagrams written (or read) so far.
type rtHookPkConn struct {
	*rtHookConn
	pk transport.Rebinder
}

func (c *rtHookPkConn) MaxDatagramSize() int  { return c.pk.MaxDatagramSize() }
func (c *rtHookPkConn) BaseDatagramSize() int { return c.pk.BaseDatagramSize() }
func (c *rtHookPkConn) SetPeer(a net.Addr)    { c.pk.SetPeer(a) }

func (c *rtHookPkConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.pk.ReadFrom(b)
	if n > 0 && c.down != nil {
		c.down(c.idx, c.downOff, b[:n])
	}
	c.downOff += int64(n)
	return n, from, err
}

func (c *rtHookPkConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if a == nil {
		return c.Write(b)
	}
	return c.pk.WriteTo(b, a)
}

// anyClosed reports whether one of path i's hooked carriers was closed.
func (r *rtRig) anyClosed(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.hooked[i] {
		if c.closed.Load() {
			return true
		}
	}
	return false
}

// rawDialer dials the rig's carrier kind (path 0's) to addr with nothing of rendr on top, from
// 127.0.0.1 so that a source can match the carrier by address (rtSource.carrierFrom).
func (r *rtRig) rawDialer(addr string) transport.DialFunc {
	switch r.cfg.carrier(0) {
	case "quic":
		return quic.NewDialer(addr, r.cliTLS, quic.LocalAddr("127.0.0.1")).Dial
	case "gvisor":
		return gvisor.Dialer(addr, gvisor.LocalAddr("127.0.0.1"))
	case "udpflow":
		return udpflow.NewDialer(addr, udpflow.LocalAddr("127.0.0.1")).Dial
	}
	return tcp.Dialer(addr)
}

// carrier is path i's carrier kind.
func (c *rtRigConfig) carrier(i int) string {
	kinds := strings.Split(c.Carrier, ",")
	if k := kinds[i%len(kinds)]; k != "" {
		return k
	}
	return "tcp"
}

// rtRig is a listener with one source per path and a dialer whose paths reach the sources
// through relays (or the config's Front).
type rtRig struct {
	t        testing.TB
	cfg      rtRigConfig
	srv, cli rendr.PrivateKey
	srvTLS   *tls.Config     // QUIC sources' identity
	cliTLS   *tls.Config     // trusts exactly srvTLS
	hooked   [][]*rtHookConn // path i's carriers, when Hooks is set
	addrs    []string        // source addresses, kept so a restarted listener can take them again
	srcs     []*rtSource
	relays   []testkit.PathCtl
	ln       *rendr.Listener
	d        *rendr.Dialer
	mig      *testkit.Migrations // the dialer's migrations
	once     sync.Once
	mu       sync.Mutex // guards hooked
}

func rtNewRig(t testing.TB, cfg rtRigConfig) *rtRig {
	t.Helper()
	r := &rtRig{t: t, cfg: cfg, srv: rendr.MustNewKey(), cli: rendr.MustNewKey(), mig: &testkit.Migrations{}}
	t.Cleanup(r.close)
	r.srvTLS, r.cliTLS = testcert.Must()
	srvTLS, cliTLS := r.srvTLS, r.cliTLS
	r.hooked = make([][]*rtHookConn, cfg.Paths)
	for i := range cfg.Paths {
		var s *rtSource
		switch cfg.carrier(i) {
		case "tcp":
			s = rtListen(t, "127.0.0.1:0")
		case "quic":
			s = rtListenQUIC(t, srvTLS)
		case "gvisor":
			l, err := gvisor.Listen("127.0.0.1:0")
			if err != nil {
				t.Fatalf("listen gvisor: %v", err)
			}
			s = &rtSource{Listener: l}
		case "udpflow":
			l, err := udpflow.Listen("udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatalf("listen udpflow: %v", err)
			}
			s = &rtSource{Listener: l}
		default:
			t.Fatalf("no carrier %q", cfg.carrier(i))
		}
		r.srcs = append(r.srcs, s)
		r.addrs = append(r.addrs, s.Addr().String())
	}
	r.ln = r.listen(r.srcs)
	var paths []*rendr.Target
	for i, a := range r.addrs {
		var dial transport.DialFunc
		switch {
		case cfg.carrier(i) == "quic" || cfg.carrier(i) == "gvisor" || cfg.carrier(i) == "udpflow":
			u, err := relay.NewUDP(a)
			if err != nil {
				t.Fatal(err)
			}
			q := &rtUDPPath{UDP: u, src: r.srcs[i]}
			r.relays = append(r.relays, q)
			switch cfg.carrier(i) {
			case "quic":
				dial = q.dial(quic.NewDialer(u.Addr(), cliTLS).Dial)
			case "udpflow":
				dial = q.dial(udpflow.NewDialer(u.Addr()).Dial)
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
			r.relays = append(r.relays, rl)
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
				hc := &rtHookConn{Conn: c, idx: len(r.hooked[i]), up: up, down: down}
				r.hooked[i] = append(r.hooked[i], hc)
				r.mu.Unlock()
				if pk, ok := c.(transport.Rebinder); ok {
					return &rtHookPkConn{rtHookConn: hc, pk: pk}, nil
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
		paths = append(paths, rendr.Path(testkit.PathName(i), dial, po...))
	}
	opts := cfg.Options
	opts.OnMigrate = r.mig.Record
	var err error
	group := cfg.Group
	if group == nil {
		group = rendr.Selector
	}
	r.d, err = rendr.NewDialer(rendr.DialerConfig{Key: r.cli, PeerKey: r.srv.Public(),
		Root: group("root", paths...), Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rtRig) listen(srcs []*rtSource) *rendr.Listener {
	r.t.Helper()
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
	ln, err := rendr.Listen(rendr.ListenConfig{Key: r.srv,
		Peers: append([]rendr.PublicKey{r.cli.Public()}, r.cfg.ExtraPeers...), Options: opts}, direct...)
	if err != nil {
		r.t.Fatal(err)
	}
	if r.cfg.Secure {
		for _, l := range ls {
			if err := ln.AddSource(l, rendr.SecureSource()); err != nil {
				r.t.Fatal(err)
			}
		}
	}
	return ln
}

// relisten replaces the listener with a new one (same key, same source addresses), as a
// restarted process would. The old one must be closed already.
func (r *rtRig) relisten() {
	r.t.Helper()
	r.srcs = nil
	for i, a := range r.addrs {
		r.srcs = append(r.srcs, r.listenAgain(r.cfg.carrier(i), a))
	}
	r.ln = r.listen(r.srcs)
	for i, rl := range r.relays {
		if q, ok := rl.(*rtUDPPath); ok {
			q.src = r.srcs[i]
		}
	}
}

// listenAgain opens a source of the given kind on addr, which a closed one just held; the
// kernel may hold the port a moment, so it retries a bounded number of times.
func (r *rtRig) listenAgain(kind, addr string) *rtSource {
	r.t.Helper()
	if kind == "tcp" {
		return rtListen(r.t, addr)
	}
	var err error
	for range 100 {
		var l net.Listener
		switch kind {
		case "quic":
			l, err = quic.Listen(addr, r.srvTLS)
		case "udpflow":
			l, err = udpflow.Listen("udp4", addr)
		default:
			l, err = gvisor.Listen(addr)
		}
		if err == nil {
			return &rtSource{Listener: l}
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatalf("listen %s %s: %v", kind, addr, err)
	return nil
}

// extraSource adds one more watched source to the listener, for strangers to knock on.
func (r *rtRig) extraSource() *rtSource {
	r.t.Helper()
	var s *rtSource
	switch r.cfg.carrier(0) {
	case "quic":
		s = rtListenQUIC(r.t, r.srvTLS)
	case "gvisor":
		l, err := gvisor.Listen("127.0.0.1:0")
		if err != nil {
			r.t.Fatal(err)
		}
		s = &rtSource{Listener: l}
	case "udpflow":
		l, err := udpflow.Listen("udp4", "127.0.0.1:0")
		if err != nil {
			r.t.Fatal(err)
		}
		s = &rtSource{Listener: l}
	default:
		s = rtListen(r.t, "127.0.0.1:0")
	}
	if err := r.ln.AddSource(s); err != nil {
		r.t.Fatal(err)
	}
	return s
}

// close tears the rig down; it is idempotent so a pipe's stop and the test's cleanup may
// both call it.
func (r *rtRig) close() {
	r.once.Do(func() {
		if r.d != nil {
			r.d.Close()
		}
		if r.ln != nil {
			r.ln.Close()
		}
		for _, rl := range r.relays {
			rl.Close()
		}
	})
}

// open dials a flow and accepts it, bounded by a generous deadline.
func (r *rtRig) open() (*rendr.Conn, *rendr.Conn) {
	r.t.Helper()
	return rtDialAccept(r.t, r.d, r.ln)
}

// rtDialAccept dials a flow on d and accepts it on ln, bounded by a generous deadline, and
// closes both when the test ends.
func rtDialAccept(t testing.TB, d *rendr.Dialer, ln *rendr.Listener) (*rendr.Conn, *rendr.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c1, err := d.DialContext(ctx)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c1.Close() })
	c2, err := ln.AcceptContext(ctx)
	if err != nil {
		t.Fatalf("accept: %v (dialer: %s)", err, testkit.Describe(d.Status()))
	}
	t.Cleanup(func() { c2.Close() })
	if c1.FlowID() != c2.FlowID() {
		t.Fatalf("dialed flow %d, accepted flow %d", c1.FlowID(), c2.FlowID())
	}
	return c1, c2
}

// rtRawDial opens a plain TCP connection, for speaking to a source without rendr.
func rtRawDial(t testing.TB, r *rtRig, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := r.rawDialer(addr)(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rtExpectSilentClose reads from c until the peer closes it and fails if any byte arrives or
// nothing happens for within (a bound against hanging, not a measurement).
func rtExpectSilentClose(t testing.TB, c net.Conn, within time.Duration) {
	t.Helper()
	if _, ok := c.(transport.PacketCarrier); ok {
		// A datagram carrier never sees its far end close: nothing may arrive for as long as
		// the listener may take to give up (the callers check it did, at the source).
		c.SetReadDeadline(time.Now().Add(rtHandshakeTimeout + time.Second))
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

// rtExtender forwards transport.HandshakeExtender to a wrapped carrier that has it; one that
// does not sends nothing and takes anything, as a carrier without the interface would.
type rtExtender struct{ c net.Conn }

func (e rtExtender) HelloExtra() []byte {
	if x, ok := e.c.(transport.HandshakeExtender); ok {
		return x.HelloExtra()
	}
	return nil
}

func (e rtExtender) AnswerExtra(hello []byte) ([]byte, error) {
	if x, ok := e.c.(transport.HandshakeExtender); ok {
		return x.AnswerExtra(hello)
	}
	return nil, nil
}

func (e rtExtender) ReplyExtra(reply []byte) error {
	if x, ok := e.c.(transport.HandshakeExtender); ok {
		return x.ReplyExtra(reply)
	}
	return nil
}

func (c *rtPkCarrier) HelloExtra() []byte                    { return rtExtender{c.pk}.HelloExtra() }
func (c *rtPkCarrier) AnswerExtra(h []byte) ([]byte, error)  { return rtExtender{c.pk}.AnswerExtra(h) }
func (c *rtPkCarrier) ReplyExtra(r []byte) error             { return rtExtender{c.pk}.ReplyExtra(r) }
func (c *rtHookPkConn) HelloExtra() []byte                   { return rtExtender{c.pk}.HelloExtra() }
func (c *rtHookPkConn) AnswerExtra(h []byte) ([]byte, error) { return rtExtender{c.pk}.AnswerExtra(h) }
func (c *rtHookPkConn) ReplyExtra(r []byte) error            { return rtExtender{c.pk}.ReplyExtra(r) }

var (
	_ transport.HandshakeExtender = (*rtPkCarrier)(nil)
	_ transport.HandshakeExtender = (*rtHookPkConn)(nil)
)

// The listener's handshake timeout in these tests: small, so silent carriers end quickly.
const rtHandshakeTimeout = 500 * time.Millisecond

// rtEachCarrier runs f as a subtest per carrier kind.
func rtEachCarrier(t *testing.T, f func(t *testing.T, carrier string)) {
	for _, carrier := range rtCarriers {
		t.Run(carrier, func(t *testing.T) { f(t, carrier) })
	}
}

// rtCarriers are the carriers the shared suites run over.
var rtCarriers = []string{"tcp", "quic", "gvisor", "udpflow"}
