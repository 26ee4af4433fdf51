// Limits: keys that prove nothing are refused with an error that says what to do; the bounds
// on sessions per peer, paths per session, handshakes (cookies), memory and carriers refuse
// what exceeds them and count it; a wrong listener key gets no answer.

package rendr_test

import (
	"context"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/transport/tcp"
)

// Keys that prove nothing are refused with an error that says what to do.
func TestKeysRefused(t *testing.T) {
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	l, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var small rendr.PublicKey // a point of order 8
	hex.Decode(small[:], []byte("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"))
	for _, c := range []struct {
		name string
		cfg  rendr.ListenConfig
		want string
	}{
		{"zero private key", rendr.ListenConfig{Peers: []rendr.PublicKey{cli.Public()}}, "ListenConfig.Key is zero"},
		{"zero peer", rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public(), {}}}, "Peers[1] is empty"},
		{"small-order peer", rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{small}}, "small order"},
		{"own key", rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public(), srv.Public()}}, "own public key"},
	} {
		ln, err := rendr.Listen(c.cfg, l)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			if ln != nil {
				ln.Close()
			}
			t.Errorf("%s: Listen = %v, want an error saying %q", c.name, err, c.want)
		}
	}
	root := rendr.Path("p", tcp.Dialer("127.0.0.1:9"))
	for _, c := range []struct {
		name string
		cfg  rendr.DialerConfig
		want string
	}{
		{"zero private key", rendr.DialerConfig{PeerKey: srv.Public(), Root: root}, "DialerConfig.Key is zero"},
		{"zero peer", rendr.DialerConfig{Key: cli, Root: root}, "PeerKey is empty"},
		{"small-order peer", rendr.DialerConfig{Key: cli, PeerKey: small, Root: root}, "small order"},
		{"own key", rendr.DialerConfig{Key: cli, PeerKey: cli.Public(), Root: root}, "own public key"},
	} {
		d, err := rendr.NewDialer(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			if d != nil {
				d.Close()
			}
			t.Errorf("%s: NewDialer = %v, want an error saying %q", c.name, err, c.want)
		}
	}
}

// One peer can hold MaxSessionsPerPeer sessions; the next is refused with ErrLimit and
// counted, while the sessions it has and other peers' go on.
func TestSessionsPerPeerBound(t *testing.T) {
	srv, greedy, other := rendr.MustNewKey(), rendr.MustNewKey(), rendr.MustNewKey()
	ln, addrs := lmListen(t, rendr.ListenConfig{Key: srv, MaxSessionsPerPeer: 2,
		Peers: []rendr.PublicKey{greedy.Public(), other.Public()}}, 1)
	lmEcho(t, ln)
	var held []*rendr.Dialer
	for i := range 2 {
		d := lmDialer(t, greedy, srv.Public(), addrs[0])
		if err := lmRoundTrip(t, d); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		held = append(held, d)
	}
	extra := lmDialer(t, greedy, srv.Public(), addrs[0])
	if err := lmDialRefused(t, extra, func() bool { return ln.Stats().RefusedSessionsPerPeer > 0 }); !errors.Is(err, rendr.ErrLimit) {
		t.Fatalf("third session of one peer: %v, want ErrLimit", err)
	}
	st := ln.Stats()
	if st.RefusedSessionsPerPeer == 0 || st.Sessions != 2 {
		t.Fatalf("stats %+v: want the refusal counted and 2 sessions", st)
	}
	for i, d := range held {
		if err := lmRoundTrip(t, d); err != nil {
			t.Fatalf("held session %d after the refusal: %v", i, err)
		}
	}
	if err := lmRoundTrip(t, lmDialer(t, other, srv.Public(), addrs[0])); err != nil {
		t.Fatalf("another peer: %v", err)
	}
	// A session that ends makes room.
	held[0].Close()
	if !testkit.Wait(10*time.Second, func() bool { return ln.Stats().Sessions == 2 }) {
		t.Fatalf("the closed session was not forgotten: %+v", ln.Stats())
	}
	if err := lmRoundTrip(t, lmDialer(t, greedy, srv.Public(), addrs[0])); err != nil {
		t.Fatalf("after a session ended: %v", err)
	}
}

// A session gets MaxPathsPerSession paths; the others are refused and counted, and the
// flows ride the ones it has.
func TestPathsPerSessionBound(t *testing.T) {
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	ln, addrs := lmListen(t, rendr.ListenConfig{Key: srv, MaxPathsPerSession: 2,
		Peers: []rendr.PublicKey{cli.Public()}}, 4)
	lmEcho(t, ln)
	d := lmDialer(t, cli, srv.Public(), addrs...)
	if err := lmRoundTrip(t, d); err != nil {
		t.Fatal(err)
	}
	if !testkit.Wait(10*time.Second, func() bool { return ln.Stats().RefusedPaths >= 2 }) {
		t.Fatalf("stats %+v: want the two paths past the bound refused", ln.Stats())
	}
	ss := ln.Sessions()
	if len(ss) != 1 || len(ss[0].Paths) > 2 {
		t.Fatalf("listener holds %d sessions, paths %+v", len(ss), ss)
	}
	if err := lmRoundTrip(t, d); err != nil {
		t.Fatal(err)
	}
}

// A dialer whose PeerKey is not the listener's fails mac1: the listener writes nothing and
// does no handshake, and counts it.
func TestWrongListenerKeyCountedSilently(t *testing.T) {
	srv, cli, wrong := rendr.MustNewKey(), rendr.MustNewKey(), rendr.MustNewKey()
	ln, addrs := lmListen(t, rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}}, 1)
	d := lmDialer(t, cli, wrong.Public(), addrs[0])
	if err := lmDialRefused(t, d, func() bool { return ln.Stats().BadMAC1 > 0 }); err == nil {
		t.Fatal("dial with the wrong listener key succeeded")
	}
	st := ln.Stats()
	if st.BadMAC1 == 0 || st.Handshakes != 0 {
		t.Fatalf("stats %+v: want bad mac1 counted and no handshake done", st)
	}
}

// Under load the listener asks for cookies: a dialer with several paths still connects,
// each path paying one more round trip, and its flows work.
func TestCookieUnderLoad(t *testing.T) {
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	ln, addrs := lmListen(t, rendr.ListenConfig{Key: srv, HandshakeRate: 1,
		Peers: []rendr.PublicKey{cli.Public()}}, 3)
	lmEcho(t, ln)
	d := lmDialer(t, cli, srv.Public(), addrs...)
	if err := lmRoundTrip(t, d); err != nil {
		t.Fatal(err)
	}
	if !testkit.Wait(10*time.Second, func() bool { return ln.Stats().Handshakes >= 3 }) {
		t.Fatalf("stats %+v: want every path handshaken", ln.Stats())
	}
	if st := ln.Stats(); st.CookiesSent == 0 {
		t.Fatalf("stats %+v: a listener past its handshake rate sent no cookie", st)
	}
}

// The listener's memory budget: a session that does not fit is refused with ErrLimit and
// counted, the sessions it holds go on, and everything reserved comes back when they end.
func TestMemoryBudget(t *testing.T) {
	srv, a, b := rendr.MustNewKey(), rendr.MustNewKey(), rendr.MustNewKey()
	// One session with its path reserves about 1.4 MiB (README, "Limits"): 2 MiB holds one.
	ln, addrs := lmListen(t, rendr.ListenConfig{Key: srv, MaxMemory: 2 << 20, MaxMemoryPerPeer: 2 << 20,
		Peers: []rendr.PublicKey{a.Public(), b.Public()}}, 2)
	lmEcho(t, ln)
	da := lmDialer(t, a, srv.Public(), addrs[0])
	if err := lmRoundTrip(t, da); err != nil {
		t.Fatal(err)
	}
	used := ln.Stats().MemoryUsed
	if used <= 0 || used > 2<<20 {
		t.Fatalf("one session reserves %d bytes of a 2 MiB budget", used)
	}
	db := lmDialer(t, b, srv.Public(), addrs[0])
	if err := lmDialRefused(t, db, func() bool { return ln.Stats().RefusedMemory > 0 }); !errors.Is(err, rendr.ErrLimit) {
		t.Fatalf("a session past the budget: %v, want ErrLimit", err)
	}
	if st := ln.Stats(); st.RefusedMemory == 0 {
		t.Fatalf("stats %+v: the refusal was not counted", st)
	}
	if err := lmRoundTrip(t, da); err != nil {
		t.Fatalf("the session within the budget, after the refusal: %v", err)
	}
	da.Close()
	db.Close()
	if !testkit.Wait(10*time.Second, func() bool { return ln.Stats().MemoryUsed == 0 }) {
		t.Fatalf("%d bytes still reserved after every session ended", ln.Stats().MemoryUsed)
	}
}

// One peer's share: a peer that spent it is refused, another peer is not.
func TestMemoryBudgetPerPeer(t *testing.T) {
	srv, greedy, other := rendr.MustNewKey(), rendr.MustNewKey(), rendr.MustNewKey()
	ln, addrs := lmListen(t, rendr.ListenConfig{Key: srv, MaxMemory: 64 << 20, MaxMemoryPerPeer: 2 << 20,
		Peers: []rendr.PublicKey{greedy.Public(), other.Public()}}, 1)
	lmEcho(t, ln)
	if err := lmRoundTrip(t, lmDialer(t, greedy, srv.Public(), addrs[0])); err != nil {
		t.Fatal(err)
	}
	greedy2 := lmDialer(t, greedy, srv.Public(), addrs[0])
	if err := lmDialRefused(t, greedy2, func() bool { return ln.Stats().RefusedMemory > 0 }); !errors.Is(err, rendr.ErrLimit) {
		t.Fatalf("the greedy peer's second session: %v, want ErrLimit", err)
	}
	if err := lmRoundTrip(t, lmDialer(t, other, srv.Public(), addrs[0])); err != nil {
		t.Fatalf("another peer: %v", err)
	}
}

// Flows past the budget are refused (the dialer's Conn fails with ErrReset), and those
// already open keep working.
func TestMemoryBudgetFlows(t *testing.T) {
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	// One session (about 1.4 MiB) and room for a few dozen flows of 4 KiB.
	ln, addrs := lmListen(t, rendr.ListenConfig{Key: srv, MaxMemory: 1600 << 10, MaxMemoryPerPeer: 1600 << 10,
		Peers: []rendr.PublicKey{cli.Public()}}, 1)
	var accepted []net.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
		}
	})
	d := lmDialer(t, cli, srv.Public(), addrs[0])
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var conns []*rendr.Conn
	for i := range 200 {
		c, err := d.DialContext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		// A flow refused already says so here; its Read below says so too.
		if _, err := c.Write([]byte{byte(i)}); err != nil && !errors.Is(err, rendr.ErrReset) {
			t.Fatal(err)
		}
	}
	// A refused flow's Read fails with ErrReset; an accepted one's waits (nothing comes
	// back). Every flow must end up one or the other.
	var refusedN atomic.Int64
	var readers sync.WaitGroup
	for _, c := range conns {
		readers.Go(func() {
			if _, err := c.Read(make([]byte, 1)); errors.Is(err, rendr.ErrReset) {
				refusedN.Add(1)
			}
		})
	}
	count := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return len(accepted), int(refusedN.Load())
	}
	if !testkit.Wait(20*time.Second, func() bool { n, r := count(); return n+r == len(conns) }) {
		n, r := count()
		t.Fatalf("%d accepted, %d refused of %d", n, r, len(conns))
	}
	n, refused := count()
	if refused == 0 || n == 0 {
		t.Fatalf("%d accepted, %d refused of %d: want some of each", n, refused, len(conns))
	}
	if st := ln.Stats(); st.MemoryUsed > st.MemoryLimit {
		t.Fatalf("stats %+v: more reserved than the budget", st)
	}
	if ss := ln.Sessions(); len(ss) != 1 || ss[0].Refused != uint64(refused) || ss[0].BudgetDenied < uint64(refused) {
		t.Fatalf("session status %+v: want %d flows refused for the budget", ss, refused)
	}
	// An accepted flow still works.
	mu.Lock()
	first := accepted[0]
	mu.Unlock()
	if _, err := first.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		c.Close()
	}
	readers.Wait()
	mu.Lock()
	for _, c := range accepted {
		c.Close()
	}
	mu.Unlock()
	d.Close()
	ln.Close()
	wg.Wait()
}

// Under load, a host that opens carriers past its rate is closed at accept, then refused in
// the kernel for a while (transport/tcp's socket filter); a dialer from another host gets
// through meanwhile.
func TestCarrierFloodRefusedAtTheSource(t *testing.T) {
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	// MaxHandshakes 8: from one handshake in progress on, the listener is under load.
	ln, addrs := lmListen(t, rendr.ListenConfig{Key: srv, MaxHandshakes: 8,
		Peers: []rendr.PublicKey{cli.Public()}}, 1)
	lmEcho(t, ln)
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	// Carriers that send nothing stay in their handshake: the listener is under load, and
	// the flood's host passes its rate after 32 of them.
	for i := 0; i < 200 && ln.Stats().SourcesRefused == 0; i++ {
		c, err := dialFrom("127.0.0.2", addrs[0], time.Second)
		if err != nil {
			break // the refusal came first: SYNs are dropped now
		}
		flood = append(flood, c)
	}
	if !testkit.Wait(10*time.Second, func() bool { return ln.Stats().SourcesRefused > 0 }) {
		t.Fatalf("stats %+v: the flood's host was never refused", ln.Stats())
	}
	if st := ln.Stats(); st.CarriersLimited == 0 {
		t.Fatalf("stats %+v: no carrier limited", st)
	}
	// That the kernel then drops the host's SYNs is transport/tcp's TestRefuseSource.
	if err := lmRoundTrip(t, lmDialer(t, cli, srv.Public(), addrs[0])); err != nil {
		t.Fatalf("a dialer from another host: %v", err)
	}
}

// dialFrom connects from a local address to addr, bounded by d.
func dialFrom(local, addr string, d time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	return dl.DialContext(ctx, "tcp", addr)
}
