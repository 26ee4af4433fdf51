package gvisor_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rendr-go/rendr/internal/carriertest"
	"github.com/rendr-go/rendr/transport/gvisor"
)

// The address check's control datagrams, spelt out here as the package doc gives them, so the
// tests check the format and not only the code against itself.
const (
	helloSize  = 64
	cookieSize = 1 + 8 + 20
	tokenSize  = 20
)

// helloMsg is a dialer's hello: 0xf1, a nonce, zero padding to size.
func helloMsg(nonce byte, size int) []byte {
	b := make([]byte, size)
	b[0] = 0xf1
	for i := 1; i < 9 && i < size; i++ {
		b[i] = nonce
	}
	return b
}

// synWithToken is the dialer's SYN behind 0xf3 and a token.
func synWithToken(token []byte, port uint16) []byte {
	return append(append([]byte{0xf3}, token...), syn(port, true)...)
}

// udp opens a plain UDP socket towards the listener: a source address of its own.
func udp(t *testing.T, ln *gvisor.Listener) *net.UDPConn {
	t.Helper()
	u, err := net.DialUDP("udp", nil, ln.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// cookie sends a hello from u and returns the token of the cookie that answers it, with the
// bytes u received before the cookie came. The listener answers in the order datagrams come,
// so whatever it sent to u for what u sent earlier is in those bytes. A generous deadline
// guards against a hang only.
func cookie(t *testing.T, u *net.UDPConn, nonce byte) (token []byte, before int) {
	t.Helper()
	if _, err := u.Write(helloMsg(nonce, helloSize)); err != nil {
		t.Fatal(err)
	}
	u.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer u.SetReadDeadline(time.Time{})
	buf := make([]byte, 2048)
	for {
		n, err := u.Read(buf)
		if err != nil {
			t.Fatalf("no cookie for a hello (after %d other bytes): %v", before, err)
		}
		if n == cookieSize && buf[0] == 0xf2 && bytes.Equal(buf[1:9], bytes.Repeat([]byte{nonce}, 8)) {
			return append([]byte(nil), buf[9:n]...), before
		}
		before += n
	}
}

// TestSpoofedSYNsReflectNothing: datagrams from 64 source ports that never prove their
// address (bare SYNs valid and not, short hellos, SYNs with a token made for another port,
// SYNs with a made-up token) get no byte back and start nothing: no stack, no goroutine. A
// hello gets one cookie, smaller than itself. Before the address check, each valid bare SYN
// started a stack that sent 2 to 3 SYN-ACKs back.
func TestSpoofedSYNsReflectNothing(t *testing.T) {
	ln, err := gvisor.Listen("127.0.0.1:0", gvisor.MaxPeers(8))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	goroutines := runtime.NumGoroutine()

	const n = 64
	// A token the listener made for one source, to be replayed from every other one.
	stolen, _ := cookie(t, udp(t, ln), 0xee)
	sent, got := 0, 0
	for i := range n {
		u := udp(t, ln)
		port := uint16(u.LocalAddr().(*net.UDPAddr).Port)
		bogus := append(make([]byte, 4), bytes.Repeat([]byte{byte(i)}, tokenSize-4)...) // issued at 0
		for _, b := range [][]byte{syn(port, true), syn(port, false), helloMsg(1, helloSize-1),
			synWithToken(stolen, port), synWithToken(bogus, port)} {
			if _, err := u.Write(b); err != nil {
				t.Fatal(err)
			}
			sent += len(b)
		}
		// Source by source, so the listener's socket buffer never overflows and every
		// datagram is counted.
		_, before := cookie(t, u, byte(i))
		if before != 0 {
			t.Errorf("source %d got %d bytes back for datagrams that proved nothing", i, before)
		}
		got += before
		sent += helloSize
		got += cookieSize
	}
	t.Logf("sent %d bytes from %d sources, got %d back: ratio %.2f", sent, n, got, float64(got)/float64(sent))
	if got > sent {
		t.Fatalf("got %d bytes back for %d sent", got, sent)
	}

	st := ln.Stats()
	want := gvisor.ListenerStats{Hellos: n + 1, Short: n, Strays: 2 * n, BadTokens: 2 * n}
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
	if g := runtime.NumGoroutine(); g > goroutines {
		t.Fatalf("%d goroutines after the flood, %d before", g, goroutines)
	}
}

// TestProvenHalfOpenGiveWay: sources that prove their address but never finish the handshake
// each get a stack, up to MaxPeers; then the oldest gives way, and a real dialer still gets in.
func TestProvenHalfOpenGiveWay(t *testing.T) {
	ln, err := gvisor.Listen("127.0.0.1:0", gvisor.MaxPeers(4))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for i := range 8 {
		u := udp(t, ln)
		token, _ := cookie(t, u, byte(i))
		if _, err := u.Write(synWithToken(token, uint16(u.LocalAddr().(*net.UDPAddr).Port))); err != nil {
			t.Fatal(err)
		}
		// The proven SYN is answered (a SYN-ACK: an IPv4 packet), so a stack runs for it.
		u.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 2048)
		n, err := u.Read(buf)
		if err != nil || n < 40 || buf[0]>>4 != 4 {
			t.Fatalf("proven SYN %d: %d bytes back (%x), %v", i, n, buf[:min(n, 8)], err)
		}
	}
	st := ln.Stats()
	if st.Started != 8 || st.Evicted != 4 || st.Peers != 4 {
		t.Fatalf("after 8 proven SYNs under MaxPeers(4): %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := gvisor.Dialer(ln.Addr().String())(ctx)
	if err != nil {
		t.Fatalf("a real dialer after 8 half-open stacks: %v", err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	carriertest.Stream(t, c, s, 1<<20, nil)
	if st := ln.Stats(); st.Started != 9 || st.Evicted != 5 || st.Peers > 4 {
		t.Fatalf("after the real dialer: %+v", st)
	}
}

// flood sends datagrams that prove nothing from 32 source ports until stop is closed: bare
// SYNs, short hellos, SYNs with made-up tokens, and hellos whose cookies nobody uses. Its
// sockets never read. It paces itself a little so the machine stays usable; the pace is not
// what the test checks.
func flood(t *testing.T, ln *gvisor.Listener, stop <-chan struct{}, sent *atomic.Int64, wg *sync.WaitGroup) {
	socks := make([]*net.UDPConn, 32)
	for i := range socks {
		socks[i] = udp(t, ln)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		bogus := append(make([]byte, 4), bytes.Repeat([]byte{7}, tokenSize-4)...) // issued at 0
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			u := socks[i%len(socks)]
			port := uint16(u.LocalAddr().(*net.UDPAddr).Port)
			var b []byte
			switch i % 4 {
			case 0:
				b = syn(port, true)
			case 1:
				b = helloMsg(2, 10)
			case 2:
				b = synWithToken(bogus, port)
			case 3:
				b = helloMsg(3, helloSize)
			}
			u.Write(b) // a write may fail on an earlier datagram's ICMP error: keep flooding
			sent.Add(1)
			if i%64 == 63 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
}

// TestDialDuringFlood: a real dialer connects and moves data both ways, exactly, while a
// flood of unproven datagrams runs, and the flood starts no stack.
func TestDialDuringFlood(t *testing.T) {
	ln, err := gvisor.Listen("127.0.0.1:0", gvisor.MaxPeers(4))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stop := make(chan struct{})
	var sent atomic.Int64
	var wg sync.WaitGroup
	flood(t, ln, stop, &sent, &wg)
	defer wg.Wait()
	defer close(stop)
	// The flood is under way before the dial starts.
	for ln.Stats().Strays < 1000 {
		runtime.Gosched()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := gvisor.Dialer(ln.Addr().String())(ctx)
	if err != nil {
		t.Fatalf("dial during a flood: %v", err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before := sent.Load()
	carriertest.Stream(t, c, s, 4<<20, nil)
	carriertest.Stream(t, s, c, 4<<20, nil)
	if sent.Load() == before {
		t.Fatal("the flood stopped before the transfer ended: it proves nothing")
	}
	st := ln.Stats()
	if st.Started != 1 || st.Peers != 1 || st.Strays == 0 || st.Short == 0 || st.BadTokens == 0 || st.Hellos < 2 {
		t.Fatalf("stats after a dial during a flood: %+v", st)
	}
	t.Logf("%d flood datagrams; %+v", sent.Load(), st)
}

// TestDialNoAnswer: a dialer whose hellos get no answer gives up with its context, and a
// cancelled dial returns at once, whatever the hello schedule.
func TestDialNoAnswer(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := gvisor.Dialer(silent.LocalAddr().String())(ctx)
		errc <- err
	}()
	// The hello reaches the silent socket: the dialer is waiting for its answer.
	buf := make([]byte, 2048)
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := silent.ReadFrom(buf)
	if err != nil || n < helloSize || buf[0] != 0xf1 {
		t.Fatalf("first datagram of a dial: %d bytes (%x), %v", n, buf[:min(n, 4)], err)
	}
	if !bytes.Equal(buf[9:n], make([]byte, n-9)) {
		t.Fatalf("hello padding not zero: %x", buf[:n])
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled dial: %v", err)
	}
}
