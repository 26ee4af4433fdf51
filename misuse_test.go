// An embedder's mistakes get an error that says what to do, never a panic in a background
// goroutine.

package rendr_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/internal/testlink"
	"github.com/rendr-go/rendr/status"
)

// TestSynctestNilConnection: a dial function that returns neither a connection nor an error
// fails the dial with an error that names the path and the broken contract (it used to crash
// the process from the handshake's goroutine); a source whose Accept does the same is taken
// for a failed accept, and the listener carries on and closes.
func TestSynctestNilConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: rendr.MustNewKey(), PeerKey: rendr.MustNewKey().Public(),
			Root: rendr.Path("broken", func(context.Context) (net.Conn, error) { return nil, nil })})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = d.DialContext(ctx)
		if err == nil || !strings.Contains(err.Error(), `path "broken": its dial function returned neither a connection nor an error`) {
			t.Fatalf("dial over a dial function returning (nil, nil): %v", err)
		}

		src := &nilSource{closed: make(chan struct{})}
		ln, err := rendr.Listen(rendr.ListenConfig{Key: rendr.MustNewKey(), Peers: []rendr.PublicKey{rendr.MustNewKey().Public()}}, src)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second) // the source's nil carriers, backed off
		synctest.Wait()
		if n := src.count(); n < 2 {
			t.Fatalf("the listener stopped accepting after %d nil carriers", n)
		}
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// nilSource is a net.Listener whose Accept returns (nil, nil) until it is closed.
type nilSource struct {
	mu     sync.Mutex
	n      int
	once   sync.Once
	closed chan struct{}
}

func (s *nilSource) Accept() (net.Conn, error) {
	select {
	case <-s.closed:
		return nil, net.ErrClosed
	default:
	}
	s.mu.Lock()
	s.n++
	s.mu.Unlock()
	return nil, nil
}

func (s *nilSource) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *nilSource) Close() error   { s.once.Do(func() { close(s.closed) }); return nil }
func (s *nilSource) Addr() net.Addr { return &net.TCPAddr{} }

// TestGraphAndSourceMistakes: a tier below 0 or above MaxTier, by Tier or SetTier, is refused
// with an error that names the target and the range; a name too long is named by its start,
// not echoed whole; a source passed twice, or a nil one, is refused, and a Listen refused so
// closes what it had started.
func TestGraphAndSourceMistakes(t *testing.T) {
	dial := func(context.Context) (net.Conn, error) { return nil, net.ErrClosed }
	key, peer := rendr.MustNewKey(), rendr.MustNewKey().Public()
	for _, tier := range []int{-1, rendr.MaxTier + 1} {
		_, err := rendr.NewDialer(rendr.DialerConfig{Key: key, PeerKey: peer,
			Root: rendr.Selector("up", rendr.Path("a", dial), rendr.Path("b", dial, rendr.Tier(tier)))})
		if err == nil || !strings.Contains(err.Error(), `target "b": tier`) || !strings.Contains(err.Error(), "0 (primary) to 255") {
			t.Errorf("Tier(%d): %v", tier, err)
		}
	}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: key, PeerKey: peer, Root: rendr.Selector("up", rendr.Path("a", dial), rendr.Path("b", dial))})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SetTier("b", -1); err == nil || !strings.Contains(err.Error(), "tier -1") {
		t.Errorf("SetTier(-1): %v", err)
	}
	if err := d.SetTier("b", 1); err != nil {
		t.Errorf("SetTier(1): %v", err)
	}
	d.Close()
	long := strings.Repeat("x", 5000)
	_, err = rendr.NewDialer(rendr.DialerConfig{Key: key, PeerKey: peer, Root: rendr.Path(long, dial)})
	if err == nil || len(err.Error()) > 200 || !strings.Contains(err.Error(), "5000 bytes") {
		t.Errorf("a 5,000-byte name: %d bytes of error: %.200v", len(fmt.Sprint(err)), err)
	}

	src, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := rendr.ListenConfig{Key: rendr.MustNewKey(), Peers: []rendr.PublicKey{peer}}
	if _, err := rendr.Listen(cfg, src, src); err == nil || !strings.Contains(err.Error(), "source 1") ||
		!strings.Contains(err.Error(), "a source already") || strings.Count(err.Error(), "rendr:") != 1 {
		t.Errorf("a source passed twice: %v", err)
	}
	if _, err := src.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("after a refused Listen its source is open: %v", err)
	}
	ln, err := rendr.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := ln.AddSource(nil); err == nil || !strings.Contains(err.Error(), "nil") {
		t.Errorf("AddSource(nil): %v", err)
	}
}

// TestSynctestDialRefused: Dial without a deadline to a peer whose every path is refused ends
// after one reconnect timeout (it used to try three sessions, three times as long), with an
// error that says "rendr:" once and what the paths met, matching both ErrNoPath and the
// refusal with errors.Is; a dial with a deadline says the same of its deadline.
func TestSynctestDialRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refused := func(context.Context) (net.Conn, error) {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
		}
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: rendr.MustNewKey(), PeerKey: rendr.MustNewKey().Public(),
			Root: rendr.Path("down", refused), Options: rendr.Options{ReconnectTimeout: 10 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		start := time.Now()
		_, err = d.Dial()
		took := time.Since(start)
		if err == nil || strings.Count(err.Error(), "rendr:") != 1 || !strings.Contains(err.Error(), "connection refused") ||
			!errors.Is(err, rendr.ErrNoPath) || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("Dial to a refusing peer: %v", err)
		}
		// Two refusals of its one path, the wait between them included: as net.Dial fails.
		if took > time.Second {
			t.Fatalf("Dial to a refusing peer took %v of virtual time; two refusals take a tenth of a second", took)
		}
		if !strings.Contains(err.Error(), "nothing listens") {
			t.Fatalf("Dial to a refusing peer does not say nothing listens there: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start = time.Now()
		_, err = d.DialContext(ctx)
		if err == nil || strings.Count(err.Error(), "rendr:") != 1 || !errors.Is(err, rendr.ErrNoPath) ||
			!errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
			t.Fatalf("DialContext with a deadline to a refusing peer: %v after %v", err, time.Since(start))
		}

		// A session that was up keeps trying when its paths are refused: there, a refusal is
		// a peer restarting, and the flows wait for it.
		src := testlink.Listen("a")
		var refusing atomic.Bool
		var live atomic.Pointer[testlink.Link]
		dial := func(ctx context.Context) (net.Conn, error) {
			if refusing.Load() {
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
			}
			c, l, err := src.Dial(ctx, stGoodLink, stGoodLink)
			if err == nil {
				live.Store(l)
			}
			return c, err
		}
		srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
		ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}}, src)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		d2, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(), Root: rendr.Path("a", dial),
			Options: rendr.Options{ReconnectTimeout: 10 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		defer d2.Close()
		dc, lc, err := testkit.OpenFlow(ctx, d2, ln)
		if err != nil {
			t.Fatal(err)
		}
		refusing.Store(true)
		live.Load().Kill(false)
		time.Sleep(5 * time.Second) // dozens of refusals
		refusing.Store(false)
		up, down := stDuplex(dc, lc, 1<<20, 5)
		up.check(t, "up after the refusals ended", time.Minute)
		down.check(t, "down after the refusals ended", time.Minute)
	})
}

// TestWrongKey: a dialer whose key the listener does not list hears nothing back (the
// listener answers strangers nothing), yet its error says what it saw and what to check, not
// "EOF"; the listener warns once, at WARN, with the refused key, however often the dialer
// tries within the warning's pace.
func TestWrongKey(t *testing.T) {
	src, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	lk, stranger := rendr.MustNewKey(), rendr.MustNewKey()
	ln, err := rendr.Listen(rendr.ListenConfig{Key: lk, Peers: []rendr.PublicKey{rendr.MustNewKey().Public()},
		Options: rendr.Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: stranger, PeerKey: lk.Public(),
		Root: rendr.Path("lo", func(ctx context.Context) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, "tcp", src.Addr().String())
		})})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = d.DialContext(ctx)
	if err == nil || !strings.Contains(err.Error(), "without answering the handshake") || !strings.Contains(err.Error(), "ListenConfig.Peers") {
		t.Fatalf("a dialer the listener does not know: %v", err)
	}
	if refused := ln.Stats().UnknownKey; refused < 2 {
		t.Fatalf("%d handshakes refused; want the dialer to have tried more than once", refused)
	}
	out := logs.String()
	if n := strings.Count(out, "this key is not in ListenConfig.Peers"); n != 1 || !strings.Contains(out, stranger.Public().String()) || !strings.Contains(out, "WARN") {
		t.Fatalf("the listener's log (%d warnings, want 1 naming %s):\n%s", n, stranger.Public(), out)
	}
}

// TestPrivateKeyNotPrinted: no fmt verb, no printing of a configuration holding a key, and no
// log line shows a private key, in base64, hex or bytes; MarshalText still writes it, for a
// configuration file.
func TestPrivateKeyNotPrinted(t *testing.T) {
	k := rendr.MustNewKey()
	text, _ := k.MarshalText()
	raw := [32]byte(k)
	secrets := []string{string(text), fmt.Sprintf("%x", raw[:]), fmt.Sprintf("%X", raw[:]), fmt.Sprint(raw), fmt.Sprintf("%v", raw[:])}
	var logs strings.Builder
	slog.New(slog.NewTextHandler(&logs, nil)).Info("text", "key", k, "cfg", rendr.DialerConfig{Key: k})
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("json", "key", k)
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		outs = append(outs, fmt.Sprintf(verb, k), fmt.Sprintf(verb, rendr.DialerConfig{Key: k}))
	}
	outs = append(outs, fmt.Sprint(k), fmt.Sprintln(&k), logs.String())
	for _, out := range outs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Fatalf("a private key shows in %q", out)
			}
		}
	}
	if want := "PrivateKey(public " + k.Public().String() + ")"; fmt.Sprint(k) != want {
		t.Errorf("printed as %q, want %q", fmt.Sprint(k), want)
	}
	var back rendr.PrivateKey
	if err := back.UnmarshalText(text); err != nil || back != k {
		t.Errorf("MarshalText and UnmarshalText do not round-trip: %v", err)
	}
}

// TestCloseIsNoMigration: closing a Dialer with two kernel TCP paths up and a flow open
// reports no migration to OnMigrate on either side (the closing paths' routes used to be
// reported as deaths), while the session's first choice was.
func TestCloseIsNoMigration(t *testing.T) {
	var mu sync.Mutex
	var moves []status.Migration
	d, ln := pair(t, 2, rendr.Options{OnMigrate: func(m status.Migration) {
		mu.Lock()
		moves = append(moves, m)
		mu.Unlock()
	}})
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	if !testkit.Wait(time.Minute, func() bool { return testkit.AllUp(d.Status(), 2) }) {
		t.Fatalf("the two paths did not come up: %s", testkit.Describe(d.Status()))
	}
	mu.Lock()
	before := len(moves)
	mu.Unlock()
	if before == 0 {
		t.Fatal("no first choice reported")
	}
	d.Close()
	// The listener's session ends once the Dialer's close reaches it.
	if !testkit.Wait(time.Minute, func() bool { return len(ln.Sessions()) == 0 }) {
		t.Fatal("the listener's session did not end after the Dialer closed")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, m := range moves[before:] {
		t.Errorf("closing the Dialer reported a migration: %+v", m)
	}
}

// TestClosedSaysWhat: a call on a closed Dialer or Listener, and a flow of a session its own
// side closed, say which was closed ("rendr: dialer closed"), not "flow closed", and still
// match ErrClosed and net.ErrClosed. A flow the listener never accepted ends on the dialing
// side as every flow of a closed session does, with ErrSessionClosed: not io.EOF, which reads
// as the listener's clean end of a reply, nor ErrStopped.
func TestClosedSaysWhat(t *testing.T) {
	d, ln := pair(t, 1, rendr.Options{})
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	accepted, err := d.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := accepted.Write([]byte("accepted")); err != nil {
		t.Fatal(err)
	}
	lc, err := ln.AcceptContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	never, err := d.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := never.Write([]byte("never accepted")); err != nil {
		t.Fatal(err)
	}
	// The listener's session has the second flow queued for Accept once its first bytes are
	// acknowledged.
	testkit.MustWait(t, "the second flow's bytes acknowledged", 10*time.Second, d.Status, func() bool {
		return never.Status().Flows == 2 && lc.Status().Flows == 2
	})
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	closedAs := func(what string, err error, want string) {
		t.Helper()
		if err == nil || err.Error() != want || !errors.Is(err, rendr.ErrClosed) || !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s: %v, want %q matching ErrClosed and net.ErrClosed", what, err, want)
		}
	}
	_, err = ln.Accept()
	closedAs("Accept on a closed Listener", err, "rendr: listener closed")
	_, err = lc.Read(make([]byte, 64))
	if err != nil && !errors.Is(err, rendr.ErrClosed) {
		t.Errorf("the listener's own flow after its Close: %v", err)
	}
	_, err = lc.Write([]byte("x"))
	closedAs("Write on a flow of a closed Listener", err, "rendr: listener closed")
	if err := ln.AddSource(nil); err == nil {
		t.Error("AddSource on a closed Listener: no error")
	}

	for name, c := range map[string]*rendr.Conn{"accepted": accepted, "never accepted": never} {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); !errors.Is(err, rendr.ErrSessionClosed) {
			t.Errorf("%s flow, read after the listener closed: %v, want ErrSessionClosed", name, err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, rendr.ErrSessionClosed) {
			t.Errorf("%s flow, write after the listener closed: %v, want ErrSessionClosed", name, err)
		}
	}

	d2, ln2 := pair(t, 1, rendr.Options{})
	c, err := d2.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d2.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = c.Write([]byte("x"))
	closedAs("Write on a flow of a closed Dialer", err, "rendr: dialer closed")
	_, err = d2.DialContext(ctx)
	closedAs("DialContext on a closed Dialer", err, "rendr: dialer closed")
	closedAs("Select on a closed Dialer", d2.Select(""), "rendr: dialer closed")
	closedAs("Redial on a closed Dialer", d2.Redial("p0"), "rendr: dialer closed")
	ln2.Close()
}

// TestDialNetwork: DialNetwork opens a stream flow for "tcp", a packet flow for "udp", and
// refuses any other network by name; on a closed Dialer it returns a nil net.Conn, not a nil
// *Conn inside a non-nil interface.
func TestDialNetwork(t *testing.T) {
	d, ln := pair(t, 1, rendr.Options{})
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialNetwork(ctx, "tcp", "ignored:1")
	if _, ok := c.(*rendr.Conn); err != nil || !ok {
		t.Fatalf("tcp: %T, %v", c, err)
	}
	pc, err := d.DialNetwork(ctx, "udp6", "ignored:1")
	if _, ok := pc.(*rendr.PacketConn); err != nil || !ok {
		t.Fatalf("udp6: %T, %v", pc, err)
	}
	if _, err := ln.AcceptContext(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ln.AcceptPacket(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DialNetwork(ctx, "unix", "/x"); err == nil || !strings.Contains(err.Error(), `"unix"`) {
		t.Fatalf("unix: %v", err)
	}
	d.Close()
	for _, network := range []string{"tcp", "udp"} {
		c, err := d.DialNetwork(ctx, network, "x:1")
		if c != nil || !errors.Is(err, rendr.ErrClosed) {
			t.Fatalf("%s on a closed Dialer: %#v, %v", network, c, err)
		}
	}
}
