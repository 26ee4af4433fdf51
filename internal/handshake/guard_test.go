package handshake

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

// addrConn gives a carrier the remote address a listener would see.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func tcpAddr(s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		panic(err)
	}
	return a
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// guarded runs one handshake from the address from, with jar on the initiator's side, and
// returns both errors and the bytes the responder wrote.
func guarded(t *testing.T, ik, rk Keypair, r *Responder, from string, jar *CookieJar, h Hello) (initErr, respErr error, respWire []byte) {
	t.Helper()
	a, b := net.Pipe()
	rb := &recConn{Conn: addrConn{Conn: b, remote: tcpAddr(from)}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, initErr = Initiate(ctx, a, ik, rk.Public, h, jar)
		a.Close()
	}()
	_, respErr = r.Respond(ctx, rb, okDecide)
	b.Close()
	<-done
	return initErr, respErr, rb.written()
}

// A first message for another responder's key fails mac1: silence, and no DH is done.
func TestMAC1RefusesWithoutDH(t *testing.T) {
	defer goleak.VerifyNone(t)
	ik, rk, other := keypair(t, 1), keypair(t, 100), keypair(t, 150)
	g := &Guard{}
	r := &Responder{Key: rk, Allow: allow(ik.Public), Replay: &Replay{}, Guard: g}
	b := firstMessage(t, ik, other.Public, testHello(ModeNew))
	c := newMemConn(b)
	if _, err := r.Respond(context.Background(), c, okDecide); !errors.Is(err, ErrMAC1) {
		t.Fatalf("Respond: %v, want ErrMAC1", err)
	}
	if w := c.written(); len(w) != 0 {
		t.Fatalf("wrote %x to a message without mac1", w)
	}
	if st := g.Stats(); st.BadMAC1 != 1 || st.Handshakes != 0 {
		t.Fatalf("stats %+v: want one bad mac1 and no handshake", st)
	}
	// The same message with a single bit of mac1 flipped fails too, for the right key.
	b = firstMessage(t, ik, rk.Public, testHello(ModeNew))
	b[len(b)-MACSize-1] ^= 1
	if _, err := r.Respond(context.Background(), newMemConn(b), okDecide); !errors.Is(err, ErrMAC1) {
		t.Fatalf("Respond with a flipped mac1: %v", err)
	}
}

// Under load, a message without a cookie gets a cookie reply, the initiator sends it again
// with mac2 and the handshake completes; the jar spares the next handshake the round trip.
func TestCookieRoundTrip(t *testing.T) {
	defer goleak.VerifyNone(t)
	ik, rk := keypair(t, 1), keypair(t, 100)
	g := &Guard{}
	g.SetLoaded(true)
	r := &Responder{Key: rk, Allow: allow(ik.Public), Replay: &Replay{}, Guard: g}
	var jar CookieJar
	h := testHello(ModeNew)
	ie, re, wire := guarded(t, ik, rk, r, "192.0.2.7:4000", &jar, h)
	if ie != nil || re != nil {
		t.Fatalf("Initiate: %v; Respond: %v", ie, re)
	}
	if wire[0] != answerCookie || len(wire) < 3+cookieReplySize || wire[3+cookieReplySize] != answerHandshake {
		t.Fatalf("responder wrote %x: want a cookie reply, then message 2", wire)
	}
	if st := g.Stats(); st.CookiesSent != 1 || st.Handshakes != 1 {
		t.Fatalf("stats %+v: want one cookie and one handshake", st)
	}
	// The next carrier from the same host (another port) uses the cookie at once.
	h.Time++
	ie, re, wire = guarded(t, ik, rk, r, "192.0.2.7:4001", &jar, h)
	if ie != nil || re != nil {
		t.Fatalf("second handshake: Initiate: %v; Respond: %v", ie, re)
	}
	if wire[0] != answerHandshake {
		t.Fatalf("second handshake got %x first: the jar's cookie was not used", wire[:3])
	}
	// From another address the cookie is worth nothing: a new one is asked for.
	h.Time++
	ie, re, wire = guarded(t, ik, rk, r, "198.51.100.9:4000", &jar, h)
	if ie != nil || re != nil || wire[0] != answerCookie {
		t.Fatalf("from another address: %v, %v, answer type %d; want a new cookie, then success", ie, re, wire[0])
	}
	if st := g.Stats(); st.CookiesSent != 2 || st.Handshakes != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// A cookie reply answers a message without a valid mac2 once per carrier; a second such
// message gets silence. The reply is smaller than the message it answers.
func TestCookieOncePerCarrier(t *testing.T) {
	defer goleak.VerifyNone(t)
	ik, rk := keypair(t, 1), keypair(t, 100)
	g := &Guard{}
	g.SetLoaded(true)
	r := &Responder{Key: rk, Allow: allow(ik.Public), Replay: &Replay{}, Guard: g}
	m := firstMessage(t, ik, rk.Public, testHello(ModeNew))
	c := newMemConn(append(bytes.Clone(m), m...))
	_, err := r.Respond(context.Background(), addrConn{Conn: c, remote: tcpAddr("192.0.2.1:1")}, okDecide)
	if !errors.Is(err, ErrCookie) {
		t.Fatalf("Respond: %v, want ErrCookie", err)
	}
	w := c.written()
	if len(w) != 3+cookieReplySize || w[0] != answerCookie {
		t.Fatalf("wrote %d bytes (%x): want exactly one cookie reply", len(w), w)
	}
	if len(w) >= len(m) {
		t.Fatalf("a %d-byte cookie reply to a %d-byte message amplifies", len(w), len(m))
	}
	if st := g.Stats(); st.Handshakes != 0 {
		t.Fatalf("%d handshakes done without a cookie", st.Handshakes)
	}
}

// Under load, one address gets SourceBurst handshakes, then nothing until its bucket refills;
// other addresses are not affected.
func TestRatePerSource(t *testing.T) {
	defer goleak.VerifyNone(t)
	ik, rk := keypair(t, 1), keypair(t, 100)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	g := &Guard{now: clk.now, SourceRate: 2, SourceBurst: 3}
	g.SetLoaded(true)
	r := &Responder{Key: rk, Allow: allow(ik.Public), Replay: &Replay{}, Guard: g}
	var jar CookieJar
	h := testHello(ModeNew)
	run := func(from string) error {
		h.Time++
		ie, re, _ := guarded(t, ik, rk, r, from, &jar, h)
		if (ie == nil) != (re == nil) {
			t.Fatalf("initiator %v, responder %v", ie, re)
		}
		return re
	}
	for i := range 3 {
		if err := run("192.0.2.7:1"); err != nil {
			t.Fatalf("handshake %d: %v", i, err)
		}
	}
	if err := run("192.0.2.7:2"); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("4th handshake from one address: %v, want ErrRateLimited", err)
	}
	var other CookieJar
	h.Time++
	if ie, re, _ := guarded(t, ik, rk, r, "198.51.100.1:1", &other, h); ie != nil || re != nil {
		t.Fatalf("another address: %v, %v", ie, re)
	}
	// IPv6: one /64 is one source.
	var v6 CookieJar
	for i := range 3 {
		h.Time++
		if _, re, _ := guarded(t, ik, rk, r, fmt.Sprintf("[2001:db8:1:2::%x]:1", i+1), &v6, h); re != nil {
			t.Fatalf("IPv6 handshake %d: %v", i, re)
		}
	}
	h.Time++
	if _, re, _ := guarded(t, ik, rk, r, "[2001:db8:1:2::99]:1", &v6, h); !errors.Is(re, ErrRateLimited) {
		t.Fatalf("4th handshake from one /64: %v, want ErrRateLimited", re)
	}
	clk.add(time.Second) // two tokens back
	if err := run("192.0.2.7:3"); err != nil {
		t.Fatalf("after the bucket refilled: %v", err)
	}
	if st := g.Stats(); st.RateLimited != 2 {
		t.Fatalf("stats %+v: want 2 rate-limited", st)
	}
}

// The load estimate: LoadBurst handshakes at once, then under load until the rate refills.
// Not under load, no cookie is asked for and no source is limited.
func TestLoadEstimate(t *testing.T) {
	defer goleak.VerifyNone(t)
	ik, rk := keypair(t, 1), keypair(t, 100)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	g := &Guard{now: clk.now, LoadRate: 10, LoadBurst: 4, SourceBurst: 100}
	r := &Responder{Key: rk, Allow: allow(ik.Public), Replay: &Replay{}, Guard: g}
	h := testHello(ModeNew)
	for i := range 4 {
		h.Time++
		if _, re, w := guarded(t, ik, rk, r, "192.0.2.7:1", nil, h); re != nil || w[0] != answerHandshake {
			t.Fatalf("handshake %d: %v, answer %d", i, re, w[0])
		}
	}
	h.Time++
	if _, re, w := guarded(t, ik, rk, r, "192.0.2.7:1", nil, h); re != nil || w[0] != answerCookie {
		t.Fatalf("5th handshake: %v, answer type %d; want a cookie first", re, w[0])
	}
	clk.add(time.Second)
	h.Time++
	if _, re, w := guarded(t, ik, rk, r, "192.0.2.7:1", nil, h); re != nil || w[0] != answerHandshake {
		t.Fatalf("after a second: %v, answer %d; want no cookie", re, w[0])
	}
}

// A cookie is honoured under the current and the previous secret: for one to two lives.
func TestCookieRotation(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	g := &Guard{now: clk.now}
	g.SetLoaded(true)
	src := tcpAddr("192.0.2.7:1")
	m := &initMsg{withMAC1: []byte("a first message up to its mac1"), mac2: make([]byte, MACSize)}
	cookie, err := g.admit(src, m, false)
	if err != nil || cookie == nil {
		t.Fatalf("admit without mac2: %v, %v; want a cookie", cookie, err)
	}
	sign := func() { m.mac2 = macOf(cookie, m.withMAC1) }
	sign()
	if c, err := g.admit(src, m, false); err != nil || c != nil {
		t.Fatalf("with its mac2: %v, %v", c, err)
	}
	clk.add(cookieLife + time.Second)
	if c, err := g.admit(src, m, false); err != nil || c != nil {
		t.Fatalf("one rotation later: %v, %v; want still honoured", c, err)
	}
	clk.add(cookieLife + time.Second)
	if c, err := g.admit(src, m, true); !errors.Is(err, ErrCookie) || c != nil {
		t.Fatalf("two rotations later: %v, %v; want refused", c, err)
	}
}

// The initiator opens a cookie only with the mac1 it sent: a cookie reply for another
// message, or from someone without the responder's public key, is refused.
func TestCookieReplyBinding(t *testing.T) {
	rk, other := keypair(t, 100), keypair(t, 150)
	cookie := [MACSize]byte{1, 2, 3}
	mac1 := bytes.Repeat([]byte{7}, MACSize)
	body := sealCookie(rk.Public, &cookie, mac1)
	if got, err := openCookie(rk.Public, body, mac1); err != nil || got != cookie {
		t.Fatalf("open: %x, %v", got, err)
	}
	if _, err := openCookie(rk.Public, body, bytes.Repeat([]byte{8}, MACSize)); err == nil {
		t.Fatal("a cookie reply opened for another message")
	}
	if _, err := openCookie(other.Public, body, mac1); err == nil {
		t.Fatal("a cookie reply opened under another responder's key")
	}
}

// macVectors are the golden vectors of mac1, the cookie, mac2 and the cookie reply's key.
func macVectors() []vector {
	var pub [KeySize]byte
	for i := range pub {
		pub[i] = 0x20 + byte(i)
	}
	msg := bytes.Repeat([]byte{0x42}, 40)
	k1 := mac1Key(pub)
	m1 := mac(k1[:], msg)
	secret := bytes.Repeat([]byte{0x33}, 32)
	src := sourceOf(tcpAddr("192.0.2.7:4000"))
	cookie := mac(secret, src)
	m2 := mac(cookie[:], msg, m1[:])
	ck := cookieKey(pub)
	return []vector{
		{"mac1_key", fmt.Sprintf("responder_public=%x", pub), hex.EncodeToString(k1[:])},
		{"mac1", fmt.Sprintf("key=%x msg=%x", k1, msg), hex.EncodeToString(m1[:])},
		{"cookie", fmt.Sprintf("secret=%x source=%x", secret, src), hex.EncodeToString(cookie[:])},
		{"mac2", fmt.Sprintf("cookie=%x msg_and_mac1=%x%x", cookie, msg, m1), hex.EncodeToString(m2[:])},
		{"cookie_key", fmt.Sprintf("responder_public=%x", pub), hex.EncodeToString(ck[:])},
	}
}

// The zero key and the small-order points of Curve25519 (in their canonical and
// non-canonical encodings) are refused; real keys are not.
func TestCheckPublic(t *testing.T) {
	weak := []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	}
	for _, h := range weak {
		var k [KeySize]byte
		hex.Decode(k[:], []byte(h))
		if err := CheckPublic(k); !errors.Is(err, ErrWeakPublic) {
			t.Errorf("CheckPublic(%s) = %v, want ErrWeakPublic", h, err)
		}
	}
	for seed := range byte(20) {
		if err := CheckPublic(keypair(t, seed+1).Public); err != nil {
			t.Errorf("a real key refused: %v", err)
		}
	}
	if err := CheckPrivate([KeySize]byte{}); !errors.Is(err, ErrZeroPrivate) {
		t.Errorf("CheckPrivate(zero) = %v", err)
	}
}

// panicAddr is an embedder's address whose String panics.
type panicAddr struct{ u *struct{ s string } }

func (panicAddr) Network() string  { return "ws" }
func (a panicAddr) String() string { return a.u.s }

// Under load, the cookie binds whatever address the carrier reports; one that panics, is nil
// or is a typed nil must not take the listener down.
func TestSourceOfOddAddresses(t *testing.T) {
	var nilTCP *net.TCPAddr
	for _, a := range []net.Addr{panicAddr{}, nil, nilTCP} {
		_ = sourceOf(a)
	}
	g := &Guard{}
	g.SetLoaded(true)
	m := &initMsg{withMAC1: []byte("msg"), mac2: make([]byte, MACSize)}
	if c, err := g.admit(panicAddr{}, m, false); err != nil || c == nil {
		t.Fatalf("admit from a panicking address: %v, %v; want a cookie", c, err)
	}
}

// dgConn is one end of an in-memory datagram carrier; drop, when set, decides which
// datagrams this end writes are lost.
type dgConn struct {
	in, out chan []byte
	done    chan struct{}
	once    *sync.Once
	drop    func(n int, b []byte) bool
	mu      sync.Mutex
	sent    int
}

func dgPipe() (*dgConn, *dgConn) {
	a2b, b2a, done, once := make(chan []byte, 16), make(chan []byte, 16), make(chan struct{}), &sync.Once{}
	return &dgConn{in: b2a, out: a2b, done: done, once: once}, &dgConn{in: a2b, out: b2a, done: done, once: once}
}

func (c *dgConn) Read(b []byte) (int, error) {
	select {
	case d := <-c.in:
		return copy(b, d), nil
	case <-c.done:
		return 0, net.ErrClosed
	}
}

func (c *dgConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.sent++
	n := c.sent
	c.mu.Unlock()
	if c.drop != nil && c.drop(n, b) {
		return len(b), nil
	}
	select {
	case c.out <- bytes.Clone(b):
	case <-c.done:
		return 0, net.ErrClosed
	}
	return len(b), nil
}

func (c *dgConn) Close() error                     { c.once.Do(func() { close(c.done) }); return nil }
func (c *dgConn) LocalAddr() net.Addr              { return tcpAddr("192.0.2.2:1") }
func (c *dgConn) RemoteAddr() net.Addr             { return tcpAddr("192.0.2.1:1") }
func (c *dgConn) SetDeadline(time.Time) error      { return nil }
func (c *dgConn) SetReadDeadline(time.Time) error  { return nil }
func (c *dgConn) SetWriteDeadline(time.Time) error { return nil }
func (c *dgConn) MaxDatagramSize() int             { return 1200 }
func (c *dgConn) BaseDatagramSize() int            { return 1200 }

// On a datagram carrier, the first message sent again after a cookie reply is resent by the
// initiator until the answer comes: losing it costs a quarter second, not the handshake.
func TestCookieRetryResentOnDatagrams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ik, rk := keypair(t, 1), keypair(t, 100)
		g := &Guard{}
		g.SetLoaded(true)
		r := &Responder{Key: rk, Allow: allow(ik.Public), Replay: &Replay{}, Guard: g}
		a, b := dgPipe()
		a.drop = func(n int, _ []byte) bool { return n == 2 } // the first message with mac2
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var initErr error
		var took time.Duration
		done := make(chan struct{})
		go func() {
			defer close(done)
			start := time.Now()
			_, initErr = Initiate(ctx, a, ik, rk.Public, testHello(ModeNew), nil)
			took = time.Since(start)
		}()
		_, respErr := r.Respond(ctx, b, okDecide)
		<-done
		a.Close()
		if initErr != nil || respErr != nil {
			t.Fatalf("Initiate: %v; Respond: %v", initErr, respErr)
		}
		a.mu.Lock()
		sent := a.sent
		a.mu.Unlock()
		if sent != 3 || took != 250*time.Millisecond {
			t.Fatalf("%d datagrams sent, handshake took %v: want the lost one resent once, after 250ms", sent, took)
		}
		synctest.Wait()
	})
}

// Under load, a source gets twice its handshake burst of carriers at once, then its rate;
// other sources are not touched, and nothing is refused when not under load.
func TestAdmitCarrier(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	g := &Guard{now: clk.now, SourceRate: 4, SourceBurst: 2}
	a, b := tcpAddr("192.0.2.7:1"), tcpAddr("198.51.100.1:1")
	for range 100 {
		if !g.AdmitCarrier(a) {
			t.Fatal("a carrier refused while not under load")
		}
	}
	g.SetLoaded(true)
	for i := range 4 {
		if !g.AdmitCarrier(a) {
			t.Fatalf("carrier %d of a burst of 4 refused", i)
		}
	}
	if g.AdmitCarrier(a) {
		t.Fatal("the 5th carrier at once admitted")
	}
	if !g.AdmitCarrier(b) {
		t.Fatal("another source refused")
	}
	clk.add(500 * time.Millisecond) // two tokens at 4 a second
	if !g.AdmitCarrier(a) || !g.AdmitCarrier(a) || g.AdmitCarrier(a) {
		t.Fatal("after half a second: want exactly two more")
	}
	if st := g.Stats(); st.CarriersLimited != 2 {
		t.Fatalf("stats %+v: want 2 carriers limited", st)
	}
}
