// Restart: a listener or a dialer that restarts with the same key is recognised by the other
// end; the old flow fails with ErrPeerRestarted and is never resumed, new flows work, and a
// path joining during founding is not taken for a restart.

package rendr_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/relay"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport/tcp"
	"github.com/rendr-go/rendr/transport/udpflow"
)

// rtExpectRestarted waits (bounded by a deadline, not measured) for c's Read to fail, and
// checks that the failure, and a later Write's, is ErrPeerRestarted.
func rtExpectRestarted(t *testing.T, side string, c *rendr.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if !errors.Is(err, rendr.ErrPeerRestarted) {
		t.Fatalf("%s: old flow's Read = %d, %v; want ErrPeerRestarted", side, n, err)
	}
	c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte("x")); !errors.Is(err, rendr.ErrPeerRestarted) {
		t.Fatalf("%s: old flow's Write = %v; want ErrPeerRestarted", side, err)
	}
}

// TestRestartListener: the listening process dies without a word (its paths go silent) and
// comes back with the same key on the same ports. The idle flow must fail with
// ErrPeerRestarted, never be resumed by the new instance, and the same Dialer must open new
// flows on it.
func TestRestartListener(t *testing.T) { testkit.EachCarrier(t, testRestartListener) }

func testRestartListener(t *testing.T, carrier string) {
	r := testkit.NewRig(t, testkit.RigConfig{Paths: 2, Carrier: carrier, Options: rendr.Options{HandshakeTimeout: time.Second}})
	c1, c2 := r.Open()
	if err := testkit.Both(c1, c2, 64<<10, 1, nil); err != nil {
		t.Fatal(err)
	}
	oldSession := c1.Status().ID

	// A crash: nothing the old listener says on its way out may reach the dialer (a clean
	// Close would send CLOSE, which is ErrSessionClosed, not a restart).
	for _, rl := range r.Relays {
		rl.Block(true)
	}
	r.LN.Close()
	r.Relisten()
	for _, rl := range r.Relays {
		rl.Block(false)
		rl.Kill(relay.Close) // the stalled carriers of the dead process end
	}

	rtExpectRestarted(t, "dialer", c1)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n1, err := r.D.DialContext(ctx)
	if err != nil {
		t.Fatalf("dial after the listener restarted: %v", err)
	}
	n2, err := r.LN.AcceptContext(ctx)
	if err != nil {
		t.Fatalf("accept on the restarted listener: %v", err)
	}
	if n1.Status().ID == oldSession {
		t.Fatal("the new flow runs on the old session")
	}
	n1.SetDeadline(time.Now().Add(30 * time.Second))
	n2.SetDeadline(time.Now().Add(30 * time.Second))
	if err := testkit.Both(n1, n2, 256<<10, 2, nil); err != nil {
		t.Fatalf("new flow: %v", err)
	}
	if len(r.LN.Sessions()) != 1 {
		t.Fatalf("restarted listener has %d sessions, want 1", len(r.LN.Sessions()))
	}
	n1.Close()
	n2.Close()
	c2.Close()
}

// TestRestartDialer: the dialing process dies without a word (its carriers are reset and its
// paths go dark) and a new process with the same key dials again. Once the new session is up,
// the listener's old flow must fail with ErrPeerRestarted, and the new flow must work.
func TestRestartDialer(t *testing.T) { testkit.EachCarrierAtOnce(t, testRestartDialer) }

func testRestartDialer(t *testing.T, carrier string) {
	r := testkit.NewRig(t, testkit.RigConfig{Paths: 2, Carrier: carrier, Options: rendr.Options{HandshakeTimeout: time.Second}})
	c1, c2 := r.Open()
	if err := testkit.Both(c1, c2, 64<<10, 3, nil); err != nil {
		t.Fatal(err)
	}
	oldSession := c2.Status().ID

	// A crash: the old dialer's carriers die and its paths stay dark (its Close, which would
	// send CLOSE, comes only at cleanup).
	for _, rl := range r.Relays {
		rl.Block(true)
		rl.Kill(relay.Reset)
	}
	if !testkit.Wait(20*time.Second, func() bool {
		for _, s := range r.LN.Sessions() {
			if s.ID == oldSession {
				return len(s.Paths) == 0
			}
		}
		return false
	}) {
		t.Fatalf("the listener kept paths of the crashed dialer: %v", r.LN.Sessions())
	}

	var paths []*rendr.Target
	for i, a := range r.Addrs {
		paths = append(paths, rendr.Path(testkit.PathName(i), r.RawDialer(a)))
	}
	d2, err := rendr.NewDialer(rendr.DialerConfig{Key: r.Cli, PeerKey: r.Srv.Public(),
		Root: rendr.Selector("root", paths...)})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n1, err := d2.DialContext(ctx)
	if err != nil {
		t.Fatalf("dial from the restarted dialer: %v", err)
	}
	n2, err := r.LN.AcceptContext(ctx)
	if err != nil {
		t.Fatalf("accept from the restarted dialer: %v", err)
	}

	rtExpectRestarted(t, "listener", c2)

	if n2.Status().ID == oldSession {
		t.Fatal("the new flow was accepted into the old session")
	}
	n1.SetDeadline(time.Now().Add(30 * time.Second))
	n2.SetDeadline(time.Now().Add(30 * time.Second))
	if err := testkit.Both(n1, n2, 256<<10, 4, nil); err != nil {
		t.Fatalf("new flow: %v", err)
	}
	n1.Close()
	n2.Close()
	c1.Close()
}

// rtSlowFirstReply holds up the listener for a moment right after it wrote the reply to the
// first handshake on a source: the dialer has its answer and joins its other paths while the
// listener is still between answering and registering the session.
type rtSlowFirstReply struct {
	net.Listener
	hold  time.Duration
	first *atomic.Bool // shared by the sources of one listener
}

type rtSlowReplyConn struct {
	net.Conn
	hold time.Duration
	once atomic.Bool
}

func (s *rtSlowFirstReply) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil || !s.first.CompareAndSwap(false, true) {
		return c, err
	}
	return &rtSlowReplyConn{Conn: c, hold: s.hold}, nil
}

func (c *rtSlowReplyConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.once.CompareAndSwap(false, true) {
		time.Sleep(c.hold)
	}
	return n, err
}

// TestJoinDuringFoundingIsNotARestart: a path that joins the session while the listener is
// still registering it (its reply to the founding path is already on the wire) must not be
// taken for a restarted listener. A session that fails here would fail every flow with
// ErrPeerRestarted although both ends are alive.
func TestJoinDuringFoundingIsNotARestart(t *testing.T) {
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	l0, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l1, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Only the founding path dials before the session is established, so the first carrier
	// either source accepts is the founding one.
	var first atomic.Bool
	hold := 300 * time.Millisecond
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}},
		&rtSlowFirstReply{Listener: l0, hold: hold, first: &first},
		&rtSlowFirstReply{Listener: l1, hold: hold, first: &first})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(), Root: rendr.Selector("root",
		rendr.Path("p0", tcp.Dialer(l0.Addr().String())),
		rendr.Path("p1", tcp.Dialer(l1.Addr().String())))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c1, err := d.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c2, err := ln.AcceptContext(ctx)
	if err != nil {
		t.Fatalf("accept: %v (dialer: %s)", err, testkit.Describe(d.Status()))
	}
	defer c2.Close()
	// Wait for the joining path's verdict: attached, or the session failed (a zero-length
	// Write reports the session's error and sends nothing).
	testkit.Wait(20*time.Second, func() bool {
		up := 0
		for _, p := range c1.Status().Paths {
			if p.State == status.Up {
				up++
			}
		}
		_, err := c1.Write(nil)
		return up == 2 || err != nil
	})
	if _, err := c1.Write(nil); err != nil {
		t.Fatalf("the session failed while its second path joined: %v", err)
	}
	testkit.WaitUp(t, "dialer", c1.Status, 2, 20*time.Second)
	c1.SetDeadline(time.Now().Add(20 * time.Second))
	c2.SetDeadline(time.Now().Add(20 * time.Second))
	if err := testkit.Both(c1, c2, 64<<10, 5, nil); err != nil {
		t.Fatal(err)
	}
}

// A udpflow path whose listener restarted learns it from a stateless reset, at once, instead
// of by probe timeouts: the reset tokens travel in the handshake's carrier data.
func TestUDPFlowStatelessResetAfterRestart(t *testing.T) {
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	var resetKey [32]byte
	copy(resetKey[:], "a reset key kept across restarts")
	ul, err := udpflow.Listen("127.0.0.1:0", udpflow.StatelessResetKey(resetKey))
	if err != nil {
		t.Fatal(err)
	}
	addr := ul.Addr().String()
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}}, ul)
	if err != nil {
		t.Fatal(err)
	}
	lmEcho(t, ln)
	// ProbeIdle of a minute: a reset is the only way this path can die quickly.
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root:    rendr.Path("udp", udpflow.Dialer(addr)),
		Options: rendr.Options{ProbeIdle: time.Minute, HandshakeTimeout: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	ln.Close() // closes ul too; nothing tells the dialer
	ul2, err := udpflow.Listen(addr, udpflow.StatelessResetKey(resetKey))
	if err != nil {
		t.Fatal(err)
	}
	defer ul2.Close()
	go func() { // the restarted listener's socket: it knows no connection
		for {
			c, err := ul2.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	c.Write([]byte("after")) // a data datagram for an id ul2 does not know
	if !testkit.Wait(10*time.Second, func() bool {
		for _, p := range d.Status().Paths {
			if strings.Contains(p.LastError, "stateless reset") {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("the path did not learn of the restart by a reset: %+v", d.Status().Paths)
	}
	if st := ul2.Stats(); st.Resets == 0 {
		t.Fatalf("restarted listener stats %+v: no reset sent", st)
	}
}
