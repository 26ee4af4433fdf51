package gvisor

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// rawSYN builds the IPv4 SYN a dialing stack sends first, with valid checksums.
func rawSYN(port uint16) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: dialerIP, DstAddr: listenerIP})
	ip.SetChecksum(^ip.CalculateChecksum())
	seg := header.TCP(b[header.IPv4MinimumSize:])
	seg.Encode(&header.TCPFields{SrcPort: port, DstPort: listenerPort, SeqNum: 1000,
		DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, dialerIP, listenerIP, header.TCPMinimumSize)
	seg.SetChecksum(^seg.CalculateChecksum(xsum))
	return b
}

// TestCheck: each kind of first datagram gets the verdict it should, at the edges of the
// padding and of the token's life.
func TestCheck(t *testing.T) {
	g, other := newGate(), newGate()
	const key = "127.0.0.1:4000"
	const t0 = 1000
	tok := g.token(nil, key, t0)
	syn := rawSYN(4000)
	wrap := func(tok []byte, pkt []byte) []byte { return append(append([]byte{kindSYN}, tok...), pkt...) }
	var nonce [nonceSize]byte
	copy(nonce[:], "abcdefgh")
	badSYN := bytes.Clone(syn)
	badSYN[len(badSYN)-1] ^= 1 // the urgent pointer: the TCP checksum no longer holds

	for _, c := range []struct {
		name string
		b    []byte
		now  uint32
		want verdict
	}{
		{"empty", nil, t0, dropStray},
		{"bare SYN", syn, t0, dropStray},
		{"short hello", hello(nonce)[:helloSize-1], t0, dropShort},
		{"hello", hello(nonce), t0, answer},
		{"padded hello", append(hello(nonce), make([]byte, 1000)...), t0, answer},
		{"token cut short", wrap(tok[:tokenSize-1], nil), t0, dropStray},
		{"fresh token", wrap(tok, syn), t0, admit},
		{"token at its last second", wrap(tok, syn), t0 + uint32(tokenLife/time.Second), admit},
		{"token a second too old", wrap(tok, syn), t0 + uint32(tokenLife/time.Second) + 1, dropExpired},
		{"token from the future", wrap(tok, syn), t0 - 1, dropExpired},
		{"token for another source", wrap(g.token(nil, "127.0.0.1:4001", t0), syn), t0, dropBadMAC},
		{"token of another listener", wrap(other.token(nil, key, t0), syn), t0, dropBadMAC},
		{"token with its time changed", wrap(append([]byte{0, 0, 3, 0xe9}, tok[4:]...), syn), t0 + 1, dropBadMAC},
		{"token and no SYN", wrap(tok, nil), t0, dropBadSYN},
		{"token and a bad checksum", wrap(tok, badSYN), t0, dropBadSYN},
	} {
		v, out := g.check(c.b, key, c.now, nil)
		if v != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, v, c.want)
			continue
		}
		switch v {
		case answer:
			want := append(append([]byte{kindCookie}, nonce[:]...), g.token(nil, key, c.now)...)
			if !bytes.Equal(out, want) || len(out) != cookieSize || len(out) > len(c.b) {
				t.Errorf("%s: answer %x, want %x", c.name, out, want)
			}
		case admit:
			if !bytes.Equal(out, syn) {
				t.Errorf("%s: admitted %x, want the SYN", c.name, out)
			}
		default:
			if out != nil {
				t.Errorf("%s: dropped with %d bytes out", c.name, len(out))
			}
		}
	}
}

// TestWithToken: the dialer puts its token before a SYN, and before nothing else.
func TestWithToken(t *testing.T) {
	tok := bytes.Repeat([]byte{9}, tokenSize)
	syn := rawSYN(5)
	if got := withToken(syn, tok); !bytes.Equal(got, append(append([]byte{kindSYN}, tok...), syn...)) {
		t.Fatalf("SYN wrapped as %x", got)
	}
	ack := bytes.Clone(syn)
	header.TCP(ack[header.IPv4MinimumSize:]).SetFlags(uint8(header.TCPFlagAck))
	for _, b := range [][]byte{ack, syn[:30], nil, {0x45}} {
		if got := withToken(b, tok); !bytes.Equal(got, b) {
			t.Fatalf("%x wrapped as %x", b, got)
		}
	}
}

// recorder is a PacketConn that receives nothing and counts what is written to it.
type recorder struct {
	mu      sync.Mutex
	written int
	closed  chan struct{}
	once    sync.Once
}

var _ net.PacketConn = (*recorder)(nil)

func (r *recorder) ReadFrom([]byte) (int, net.Addr, error) {
	<-r.closed
	return 0, nil, net.ErrClosed
}

func (r *recorder) WriteTo(b []byte, _ net.Addr) (int, error) {
	r.mu.Lock()
	r.written += len(b)
	r.mu.Unlock()
	return len(b), nil
}

func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.written
}

func (r *recorder) Close() error                     { r.once.Do(func() { close(r.closed) }); return nil }
func (r *recorder) LocalAddr() net.Addr              { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9} }
func (r *recorder) SetDeadline(time.Time) error      { return nil }
func (r *recorder) SetReadDeadline(time.Time) error  { return nil }
func (r *recorder) SetWriteDeadline(time.Time) error { return nil }

func recordingListener(tb testing.TB) (*Listener, *recorder) {
	rec := &recorder{closed: make(chan struct{})}
	l, err := Listen("127.0.0.1:0", ListenPacket(func(string, string) (net.PacketConn, error) { return rec, nil }))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return l, rec
}

// TestManySourcesNoState: first datagrams from 10000 sources, none of which proves its
// address, leave no entry in the peer map, no stack and no goroutine, and are answered with
// fewer bytes than they brought.
func TestManySourcesNoState(t *testing.T) {
	l, rec := recordingListener(t)
	goroutines := runtime.NumGoroutine()
	var nonce [nonceSize]byte
	in := 0
	scratch := make([]byte, 0, cookieSize)
	for i := range 10000 {
		from := &net.UDPAddr{IP: net.IPv4(127, 0, byte(i>>8), byte(i)), Port: 1024 + i}
		for _, b := range [][]byte{rawSYN(uint16(i)), hello(nonce), append([]byte{kindSYN}, make([]byte, tokenSize+40)...)} {
			l.handle(b, from, scratch)
			in += len(b)
		}
	}
	if out := rec.total(); out > in || out != 10000*cookieSize {
		t.Fatalf("%d bytes out for %d in", out, in)
	}
	l.mu.RLock()
	n := len(l.peers)
	l.mu.RUnlock()
	if st := l.Stats(); n != 0 || st.Started != 0 || st.Strays != 10000 || st.Hellos != 10000 || st.BadTokens != 10000 {
		t.Fatalf("%d peers; stats %+v", n, st)
	}
	if g := runtime.NumGoroutine(); g > goroutines {
		t.Fatalf("%d goroutines, %d before", g, goroutines)
	}
}

// FuzzFirstDatagram: whatever a source without a stack sends, the listener writes back no
// more than it got, and starts a stack only for a SYN behind a token it made for that source.
func FuzzFirstDatagram(f *testing.F) {
	l, rec := recordingListener(f)
	from := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000}
	key := from.String()
	var nonce [nonceSize]byte
	syn := rawSYN(4000)
	tok := l.gate.token(nil, key, l.gate.now())
	f.Add(hello(nonce))
	f.Add(hello(nonce)[:helloSize-1])
	f.Add(syn)
	f.Add(append(append([]byte{kindSYN}, tok...), syn...))
	f.Add(append(append([]byte{kindSYN}, make([]byte, tokenSize)...), syn...))
	f.Add([]byte{kindCookie})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		// The verdict before and after handle: a token can expire between them.
		v1, _ := l.gate.check(b, key, l.gate.now(), nil)
		before := rec.total()
		l.handle(b, from, make([]byte, 0, cookieSize))
		v2, _ := l.gate.check(b, key, l.gate.now(), nil)
		st := l.Stats()
		if v1 != admit && v2 != admit {
			if out := rec.total() - before; out > len(b) {
				t.Fatalf("%d bytes back for %d", out, len(b))
			}
			if st.Peers != 0 {
				t.Fatalf("%d stacks after verdict %d", st.Peers, v2)
			}
			return
		}
		// Only a SYN behind the seeded token gets here, and whatever its stack sends goes to
		// a proven source. End the stack, so the next input again meets a source without one.
		if st.Peers > 1 {
			t.Fatalf("%d stacks after one admitted SYN", st.Peers)
		}
		l.mu.Lock()
		for _, p := range l.peers {
			p.gl.Close()
		}
		l.mu.Unlock()
		for l.Stats().Peers != 0 {
			runtime.Gosched()
		}
	})
}

// scripted is a dialer's socket as prove sees it: what prove writes goes to out, what the
// test sends on in is read, and a read with nothing to read ends at the deadline (virtual
// time, under synctest).
type scripted struct {
	start time.Time
	from  net.Addr
	in    chan inbound
	out   chan []byte

	mu       sync.Mutex
	deadline time.Time
	sentAt   []time.Duration
}

type inbound struct {
	b    []byte
	from net.Addr
}

var _ net.PacketConn = (*scripted)(nil)

func newScripted(from net.Addr) *scripted {
	return &scripted{start: time.Now(), from: from, in: make(chan inbound), out: make(chan []byte, helloTries)}
}

func (s *scripted) ReadFrom(b []byte) (int, net.Addr, error) {
	s.mu.Lock()
	timer := time.NewTimer(time.Until(s.deadline))
	s.mu.Unlock()
	defer timer.Stop()
	select {
	case m := <-s.in:
		return copy(b, m.b), m.from, nil
	case <-timer.C:
		return 0, nil, os.ErrDeadlineExceeded
	}
}

func (s *scripted) WriteTo(b []byte, _ net.Addr) (int, error) {
	s.mu.Lock()
	s.sentAt = append(s.sentAt, time.Since(s.start))
	s.mu.Unlock()
	s.out <- bytes.Clone(b)
	return len(b), nil
}

func (s *scripted) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	s.deadline = t
	s.mu.Unlock()
	return nil
}

func (s *scripted) Close() error                     { return nil }
func (s *scripted) LocalAddr() net.Addr              { return s.from }
func (s *scripted) SetDeadline(t time.Time) error    { return s.SetReadDeadline(t) }
func (s *scripted) SetWriteDeadline(time.Time) error { return nil }

// TestProveGivesUp: towards a silent address, the dialer sends helloTries hellos on its
// schedule (250 ms, doubling to 2 s), all alike, and then gives up, in virtual time.
func TestProveGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		raddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7}
		s := newScripted(raddr)
		if _, err := prove(context.Background(), s, raddr); !errors.Is(err, errNoCookie) {
			t.Fatalf("prove towards silence: %v", err)
		}
		ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
		want := []time.Duration{0, ms(250), ms(750), ms(1750), ms(3750), ms(5750), ms(7750), ms(9750),
			ms(11750), ms(13750)}
		if !slices.Equal(s.sentAt, want) {
			t.Fatalf("hellos sent at %v, want %v", s.sentAt, want)
		}
		if took := time.Since(s.start); took != ms(15750) {
			t.Fatalf("gave up after %v", took)
		}
		first := <-s.out
		for range helloTries - 1 {
			if h := <-s.out; len(h) != helloSize || h[0] != kindHello || !bytes.Equal(h, first) {
				t.Fatalf("hello %x, the first %x", h, first)
			}
		}
	})
}

// TestProveTakesItsCookie: the dialer ignores whatever is not the cookie for its own hello (a
// cookie for another nonce, from another address, of another size) and takes the token of
// the one that is, without sending its hello again.
func TestProveTakesItsCookie(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		raddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7}
		elsewhere := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8}
		s := newScripted(raddr)
		token := bytes.Repeat([]byte{5}, tokenSize)
		var got []byte
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			got, err = prove(context.Background(), s, raddr)
		}()
		h := <-s.out
		if len(h) != helloSize || h[0] != kindHello || !bytes.Equal(h[1+nonceSize:], make([]byte, helloSize-1-nonceSize)) {
			t.Fatalf("hello %x", h)
		}
		nonce := h[1 : 1+nonceSize]
		other := bytes.Clone(nonce)
		other[0] ^= 1
		cookie := func(n, tok []byte) []byte { return append(append([]byte{kindCookie}, n...), tok...) }
		for _, m := range []inbound{
			{cookie(other, bytes.Repeat([]byte{6}, tokenSize)), raddr},
			{cookie(nonce, bytes.Repeat([]byte{7}, tokenSize)), elsewhere},
			{cookie(nonce, token)[:cookieSize-1], raddr},
			{append(cookie(nonce, bytes.Repeat([]byte{8}, tokenSize)), 0), raddr},
			{cookie(nonce, token), raddr},
		} {
			s.in <- m
		}
		<-done
		if err != nil || !bytes.Equal(got, token) {
			t.Fatalf("prove: %x, %v", got, err)
		}
		if len(s.out) != 0 {
			t.Fatalf("%d hellos more", len(s.out))
		}
	})
}
