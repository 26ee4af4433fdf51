package udpflow

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rendr-go/rendr/transport"
)

// Every Conn and Listener starts reader goroutines and timers; all must be gone after Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds anything that should happen: a guard against hanging, never a speed threshold.
// quiet is how long a test listens for what must not arrive: loopback delivers within the
// sending call, so anything sent is already queued by then.
const (
	wait  = 5 * time.Second
	quiet = 150 * time.Millisecond
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func listen(t *testing.T, opts ...Option) *Listener {
	t.Helper()
	l, err := Listen("127.0.0.1:0", opts...)
	must(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

// dial dials addr from 127.0.0.1, not the wildcard address.
func dial(t *testing.T, addr net.Addr, opts ...Option) *Conn {
	t.Helper()
	return dialFrom(t, "127.0.0.1", addr, opts...)
}

// dialFrom dials addr from the local address ip.
func dialFrom(t *testing.T, ip string, addr net.Addr, opts ...Option) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	nc, err := Dialer(addr.String(), append([]Option{LocalAddr(ip)}, opts...)...)(ctx)
	must(t, err)
	t.Cleanup(func() { nc.Close() })
	return nc.(*Conn)
}

// rawSocket is a plain UDP socket that plays the other side and sees the exact bytes.
func rawSocket(t *testing.T) *net.UDPConn {
	t.Helper()
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	u.SetReadBuffer(4 << 20) // a whole batch arrives before the test reads it
	t.Cleanup(func() { u.Close() })
	return u
}

func addrOf(u *net.UDPConn) *net.UDPAddr { return u.LocalAddr().(*net.UDPAddr) }

func send(t *testing.T, u *net.UDPConn, b []byte, to net.Addr) {
	t.Helper()
	_, err := u.WriteTo(b, to)
	must(t, err)
}

func write(t *testing.T, c *Conn, p []byte) {
	t.Helper()
	if n, err := c.Write(p); err != nil || n != len(p) {
		t.Fatalf("Write of %d bytes: %d, %v", len(p), n, err)
	}
}

// readRaw reads one datagram within d; ok is false when none came.
func readRaw(t *testing.T, u *net.UDPConn, d time.Duration) (b []byte, from *net.UDPAddr, ok bool) {
	t.Helper()
	buf := make([]byte, maxUDP+1)
	u.SetReadDeadline(time.Now().Add(d))
	n, from, err := u.ReadFromUDP(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, nil, false
	}
	must(t, err)
	return buf[:n], from, true
}

func mustReadRaw(t *testing.T, u *net.UDPConn) ([]byte, *net.UDPAddr) {
	t.Helper()
	b, from, ok := readRaw(t, u, wait)
	if !ok {
		t.Fatal("raw socket: no datagram")
	}
	return b, from
}

// readFlow is readRaw skipping the dialer's hello copies, which a slow handshake may
// legitimately leave queued on a raw socket.
func readFlow(t *testing.T, u *net.UDPConn, d time.Duration) ([]byte, bool) {
	t.Helper()
	end := time.Now().Add(d)
	for {
		b, _, ok := readRaw(t, u, time.Until(end))
		if !ok || len(b) == 0 || b[0] != flagHello {
			return b, ok
		}
	}
}

func expectRaw(t *testing.T, u *net.UDPConn, want []byte) {
	t.Helper()
	if got, ok := readFlow(t, u, wait); !ok || !bytes.Equal(got, want) {
		t.Fatalf("raw socket got %d bytes % .16x, want %d bytes % .16x", len(got), got, len(want), want)
	}
}

func expectNothing(t *testing.T, u *net.UDPConn, why string) {
	t.Helper()
	if b, ok := readFlow(t, u, quiet); ok {
		t.Fatalf("%s: got % .16x", why, b)
	}
}

// readConn reads one datagram from c, failing the test if none comes.
func readConn(t *testing.T, c *Conn) ([]byte, net.Addr) {
	t.Helper()
	buf := make([]byte, c.MaxDatagramSize()+1)
	c.SetReadDeadline(time.Now().Add(wait))
	defer c.SetReadDeadline(time.Time{})
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("ReadFrom: %v", err)
	}
	return buf[:n], from
}

// expectFrom reads want from c, sent from `from` (nil: the current peer).
func expectFrom(t *testing.T, c *Conn, want []byte, from *net.UDPAddr) {
	t.Helper()
	got, addr := readConn(t, c)
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes %.20q, want %d bytes %.20q", len(got), got, len(want), want)
	}
	if from == nil && addr != nil || from != nil && (addr == nil || addr.String() != from.String()) {
		t.Fatalf("ReadFrom address %v, want %v", addr, from)
	}
}

func expectRead(t *testing.T, c *Conn, want []byte) { t.Helper(); expectFrom(t, c, want, nil) }

func isErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: %v, want %v", what, err, target)
	}
}

// async runs f in a goroutine; expectErr waits, bounded, for it to end with target.
func async(f func() error) chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func expectErr(t *testing.T, ch chan error, target error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		isErr(t, err, target, what)
	case <-time.After(wait):
		t.Fatalf("%s still blocked", what) // goleak names the goroutine
	}
}

// accept takes the next connection, bounded by wait. If none comes, the listener's cleanup
// ends the Accept goroutine.
func accept(t *testing.T, l *Listener) *Conn {
	t.Helper()
	var nc net.Conn
	expectErr(t, async(func() (err error) { nc, err = l.Accept(); return err }), nil, "Accept")
	t.Cleanup(func() { nc.Close() })
	return nc.(*Conn)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func randomID() (id [8]byte) {
	rand.Read(id[:])
	return id
}

// helloDatagram is what a dialer's first datagram must be.
func helloDatagram(id [8]byte, payload []byte) []byte {
	b := make([]byte, max(helloSize, headerSize+2+len(payload)))
	b[0] = flagHello
	copy(b[1:], id[:])
	binary.BigEndian.PutUint16(b[headerSize:], uint16(len(payload)))
	copy(b[headerSize+2:], payload)
	return b
}

func datagram(flags byte, id [8]byte, payload []byte) []byte {
	return append(append([]byte{flags}, id[:]...), payload...)
}

// dialRaw dials a raw socket playing the listener and completes the handshake.
func dialRaw(t *testing.T, opts ...Option) (*Conn, *net.UDPConn) {
	t.Helper()
	raw := rawSocket(t)
	c := dial(t, addrOf(raw), opts...)
	write(t, c, []byte("client hello"))
	_, from := mustReadRaw(t, raw)
	send(t, raw, datagram(flagReply, c.ID(), []byte("server reply")), from)
	expectRead(t, c, []byte("server reply"))
	return c, raw
}

// acceptRaw has a raw socket play the dialer toward l and completes the handshake.
func acceptRaw(t *testing.T, l *Listener) (*Conn, *net.UDPConn) {
	t.Helper()
	raw := rawSocket(t)
	id := randomID()
	send(t, raw, helloDatagram(id, []byte("client hello")), l.Addr())
	c := accept(t, l)
	if c.ID() != id {
		t.Fatalf("accepted id %x, want %x", c.ID(), id)
	}
	expectRead(t, c, []byte("client hello"))
	write(t, c, []byte("server reply"))
	expectRaw(t, raw, datagram(flagReply, id, []byte("server reply")))
	return c, raw
}

// pair is a dialed and an accepted connection, handshake done.
func pair(t *testing.T, opts ...Option) (dialed, accepted *Conn) {
	t.Helper()
	l := listen(t, opts...)
	d := dial(t, l.Addr(), opts...)
	write(t, d, []byte("client hello"))
	c := accept(t, l)
	expectRead(t, c, []byte("client hello"))
	write(t, c, []byte("server reply"))
	expectRead(t, d, []byte("server reply"))
	return d, c
}

func TestRoundTrip(t *testing.T) {
	l := listen(t)
	d := dial(t, l.Addr())
	var up, down [][]byte
	for _, n := range []int{1, d.BaseDatagramSize(), 8000, d.MaxDatagramSize()} {
		up, down = append(up, randomBytes(n)), append(down, randomBytes(n))
	}
	for _, p := range up {
		write(t, d, p)
	}
	c := accept(t, l)
	for _, p := range up {
		expectRead(t, c, p)
	}
	for _, p := range down {
		write(t, c, p)
	}
	for _, p := range down {
		expectRead(t, d, p)
	}
	// The addresses, as "dialed remote, accepted remote, accepted local".
	got := fmt.Sprint(d.RemoteAddr(), c.RemoteAddr(), c.LocalAddr())
	if want := fmt.Sprint(l.Addr(), d.LocalAddr(), l.Addr()); got != want || c.ID() != d.ID() {
		t.Fatalf("addresses %s, want %s; ids %x, %x", got, want, d.ID(), c.ID())
	}
}

// The first datagram is the hello: flags, id, the payload's length, the payload, and zero
// padding to 1200 bytes when it is shorter.
func TestHelloOnWire(t *testing.T) {
	for _, n := range []int{0, 100, helloSize - headerSize - 2, helloSize - headerSize} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			raw := rawSocket(t)
			d := dial(t, addrOf(raw))
			p := randomBytes(n)
			write(t, d, p)
			b, from := mustReadRaw(t, raw)
			if want := max(helloSize, headerSize+2+n); len(b) != want {
				t.Fatalf("hello of %d bytes, want %d", len(b), want)
			}
			if !bytes.Equal(b, helloDatagram(d.ID(), p)) {
				t.Fatalf("hello % .16x, want flags 01, id %x, length %d, payload, zeros", b, d.ID(), n)
			}
			if from.String() != d.LocalAddr().String() {
				t.Fatalf("hello from %v, dialer at %v", from, d.LocalAddr())
			}
		})
	}
}

// A dialer that hears nothing sends its hello again, and stops once the reply comes.
func TestHelloResend(t *testing.T) {
	raw := rawSocket(t)
	d := dial(t, addrOf(raw))
	write(t, d, []byte("client hello"))
	first, from := mustReadRaw(t, raw)
	// Copies are due at about 250 ms and 750 ms; 3 s only guards against a hang.
	end := time.Now().Add(3 * time.Second)
	for copies := 0; copies < 2; copies++ {
		b, _, ok := readRaw(t, raw, time.Until(end))
		if !ok || !bytes.Equal(b, first) {
			t.Fatalf("after %d copies: % .16x (ok %v), want another copy of the hello", copies, b, ok)
		}
	}
	send(t, raw, datagram(flagReply, d.ID(), []byte("server reply")), from)
	expectRead(t, d, []byte("server reply"))
	// The next copy would have been due 1 s after the second.
	if b, _, ok := readRaw(t, raw, 1500*time.Millisecond); ok {
		t.Fatalf("datagram after the reply: % .16x", b)
	}
}

// The dialer sends its hello again at most 6 times. Driven by hand rather than waiting out
// the ~16 s of backoff: the state is set as Write sets it, without starting the timer.
func TestHelloResendLimit(t *testing.T) {
	raw := rawSocket(t)
	d := dial(t, addrOf(raw))
	h := helloDatagram(d.ID(), []byte("client hello"))
	d.mu.Lock()
	d.wrote, d.first, d.tries = true, h, 5
	d.mu.Unlock()
	d.resendHello() // the sixth copy goes
	if b, _ := mustReadRaw(t, raw); !bytes.Equal(b, h) {
		t.Fatal("sixth copy differs from the hello")
	}
	d.resendHello() // a seventh does not
	if _, _, ok := readRaw(t, raw, quiet); ok {
		t.Fatal("a seventh copy of the hello was sent")
	}
}

// Before the reply a dialer takes nothing but the reply; after it, no second reply; and
// never a datagram of another id.
func TestDialerFilters(t *testing.T) {
	raw := rawSocket(t)
	d := dial(t, addrOf(raw))
	write(t, d, []byte("client hello"))
	_, from := mustReadRaw(t, raw)
	other := randomID()
	for _, b := range [][]byte{
		datagram(0, d.ID(), []byte("before the reply")),
		helloDatagram(d.ID(), []byte("hello to a dialer")),
		datagram(flagReply, other, []byte("reply of another id")),
		{flagReply, 1, 2},
		datagram(flagReply, d.ID(), []byte("reply")),
		datagram(flagReply, d.ID(), []byte("second reply")),
		datagram(0, other, []byte("data of another id")),
		datagram(0x40, d.ID(), []byte("unknown flags")),
		datagram(0, d.ID(), []byte("data")),
	} {
		send(t, raw, b, from)
	}
	// Datagrams are handled in order: "data" read right after "reply" shows that every one
	// between was dropped, and nothing may be queued behind it.
	expectRead(t, d, []byte("reply"))
	expectRead(t, d, []byte("data"))
	if n := d.queueLen(); n != 0 {
		t.Fatalf("%d more datagrams queued", n)
	}
}

// A listener's connection answers copies of the first hello with its reply, at most 8 times
// and only copies of that hello; Read never sees them, nor a reply sent to it.
func TestListenerEcho(t *testing.T) {
	l := listen(t)
	raw := rawSocket(t)
	id := randomID()
	h := helloDatagram(id, []byte("client hello"))
	send(t, raw, h, l.Addr())
	c := accept(t, l)
	expectRead(t, c, []byte("client hello"))
	// sync sends a data datagram and reads it: what was sent before it has been handled,
	// and none of it reached Read.
	n := 0
	sync := func() {
		t.Helper()
		n++
		p := fmt.Appendf(nil, "sync %d", n)
		send(t, raw, datagram(0, id, p), l.Addr())
		expectRead(t, c, p)
	}

	send(t, raw, h, l.Addr())
	sync()
	expectNothing(t, raw, "copy before the connection wrote anything")

	write(t, c, []byte("server reply"))
	reply := datagram(flagReply, id, []byte("server reply"))
	expectRaw(t, raw, reply)

	send(t, raw, helloDatagram(id, []byte("another hello")), l.Addr())
	send(t, raw, datagram(flagReply, id, []byte("a reply to a listener")), l.Addr())
	sync()
	expectNothing(t, raw, "hello of the same id with another payload")

	for range maxEchoes {
		send(t, raw, h, l.Addr())
		expectRaw(t, raw, reply)
	}
	send(t, raw, h, l.Addr())
	sync()
	expectNothing(t, raw, fmt.Sprintf("echo beyond %d", maxEchoes))
}

// Only a whole hello of an unknown id starts a connection.
func TestListenerIgnoresJunk(t *testing.T) {
	junkID := randomID()
	fill := randomBytes(helloSize - headerSize)
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"short hello", helloDatagram(junkID, []byte("x"))[:helloSize-1]},
		{"data", datagram(0, junkID, fill)},
		{"reply", datagram(flagReply, junkID, fill)},
		{"unknown flags", datagram(0x03, junkID, fill)},
		{"shorter than a header", []byte{flagHello, 1, 2, 3, 4, 5, 6, 7}},
		{"empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := listen(t)
			raw := rawSocket(t)
			send(t, raw, tc.b, l.Addr())
			// The listener handles datagrams in order: once a valid hello sent after the junk
			// is accepted, the junk was handled, and must have left nothing behind.
			id := randomID()
			send(t, raw, helloDatagram(id, []byte("valid")), l.Addr())
			c := accept(t, l)
			if c.ID() != id {
				t.Fatalf("accepted id %x, want the valid hello's %x", c.ID(), id)
			}
			expectRead(t, c, []byte("valid"))
			l.mu.Lock()
			conns := len(l.conns)
			l.mu.Unlock()
			if conns != 1 || len(l.accept) != 0 {
				t.Fatalf("%d connections, %d waiting for Accept; want 1, 0", conns, len(l.accept))
			}
		})
	}
}

// Two dialers on one listener: each accepted connection carries one dialer's datagrams.
func TestDemultiplex(t *testing.T) {
	l := listen(t)
	dialed := map[string]*Conn{"A": dial(t, l.Addr()), "B": dial(t, l.Addr())}
	accepted := map[string]*Conn{}
	for name, d := range dialed {
		write(t, d, []byte(name))
		c := accept(t, l)
		if got, _ := readConn(t, c); string(got) != name || c.ID() != d.ID() {
			t.Fatalf("dialer %s: accepted a connection with %q, id %x", name, got, c.ID())
		}
		accepted[name] = c
	}
	const rounds = 10
	for i := range rounds {
		for name := range dialed {
			write(t, dialed[name], fmt.Appendf(nil, "up %s %d", name, i))
			write(t, accepted[name], fmt.Appendf(nil, "down %s %d", name, i))
		}
	}
	for name := range dialed {
		for i := range rounds {
			expectRead(t, accepted[name], fmt.Appendf(nil, "up %s %d", name, i))
			expectRead(t, dialed[name], fmt.Appendf(nil, "down %s %d", name, i))
		}
		if accepted[name].queueLen()+dialed[name].queueLen() != 0 {
			t.Fatalf("%s: datagrams left over", name)
		}
	}
}

// A connection follows its id to a new address: ReadFrom names the address, WriteTo reaches
// it, and after SetPeer it is the peer.
func TestAddressChange(t *testing.T) {
	for _, side := range []struct {
		name  string
		setup func(t *testing.T) (*Conn, *net.UDPConn)
	}{
		{"accepted", func(t *testing.T) (*Conn, *net.UDPConn) { return acceptRaw(t, listen(t)) }},
		{"dialed", func(t *testing.T) (*Conn, *net.UDPConn) { return dialRaw(t) }},
	} {
		t.Run(side.name, func(t *testing.T) {
			c, a := side.setup(t)
			b := rawSocket(t)
			at := c.LocalAddr()
			data := func(s string) []byte { return datagram(0, c.ID(), []byte(s)) }

			send(t, b, data("from b"), at)
			expectFrom(t, c, []byte("from b"), addrOf(b))
			send(t, a, data("from a"), at)
			expectFrom(t, c, []byte("from a"), nil)

			_, err := c.WriteTo([]byte("challenge"), addrOf(b))
			must(t, err)
			expectRaw(t, b, data("challenge"))
			if c.RemoteAddr().String() != addrOf(a).String() {
				t.Fatalf("RemoteAddr %v moved before SetPeer", c.RemoteAddr())
			}

			c.SetPeer(addrOf(b))
			if c.RemoteAddr().String() != addrOf(b).String() {
				t.Fatalf("RemoteAddr %v after SetPeer(%v)", c.RemoteAddr(), addrOf(b))
			}
			write(t, c, []byte("moved"))
			expectRaw(t, b, data("moved"))
			expectNothing(t, a, "old address after SetPeer")
			send(t, b, data("b is the peer"), at)
			expectFrom(t, c, []byte("b is the peer"), nil)
			send(t, a, data("a is not"), at)
			expectFrom(t, c, []byte("a is not"), addrOf(a))
		})
	}
}

// WriteBatch delivers each datagram whole and on its own, with its header, in order: a run
// of one size ending shorter (one GSO send), a run over the kernel's segment and byte limits,
// and mixed sizes; with and without batching, to a raw socket and to udpflow (GRO) readers.
func TestWriteBatch(t *testing.T) {
	batches := []struct {
		name  string
		sizes []int // -1: MaxDatagramSize
	}{
		{"run", append(slices.Repeat([]int{1000}, 20), 300)},
		{"long run", slices.Repeat([]int{1000}, 150)},
		{"many small", slices.Repeat([]int{100}, 200)}, // over the kernel's segment limit
		{"mixed", []int{1, 1191, 1191, 1191, 8000, 300, 300, 0, -1, 1000, 1000, 5}},
	}
	type recv func(t *testing.T) []byte
	directions := []struct {
		name  string
		setup func(t *testing.T, opts []Option) (*Conn, recv)
	}{
		{"dialed to raw", func(t *testing.T, opts []Option) (*Conn, recv) {
			d, raw := dialRaw(t, opts...)
			return d, func(t *testing.T) []byte {
				t.Helper()
				b, ok := readFlow(t, raw, wait)
				if !ok || len(b) < headerSize || b[0] != 0 || [8]byte(b[1:headerSize]) != d.ID() {
					t.Fatalf("raw socket got % .16x, want a data datagram of id %x", b, d.ID())
				}
				return b[headerSize:]
			}
		}},
		{"dialed to accepted", func(t *testing.T, opts []Option) (*Conn, recv) {
			d, c := pair(t, opts...)
			return d, func(t *testing.T) []byte { b, _ := readConn(t, c); return b }
		}},
		{"accepted to dialed", func(t *testing.T, opts []Option) (*Conn, recv) {
			d, c := pair(t, opts...)
			return c, func(t *testing.T) []byte { b, _ := readConn(t, d); return b }
		}},
	}
	for _, mode := range []struct {
		name string
		opts []Option
	}{{"batching", nil}, {"no batching", []Option{NoBatching()}}} {
		for _, dir := range directions {
			for _, batch := range batches {
				t.Run(mode.name+"/"+dir.name+"/"+batch.name, func(t *testing.T) {
					c, recv := dir.setup(t, mode.opts)
					var ps [][]byte
					for _, n := range batch.sizes {
						if n < 0 {
							n = c.MaxDatagramSize()
						}
						ps = append(ps, randomBytes(n))
					}
					must(t, c.WriteBatch(ps))
					for i, want := range ps {
						if got := recv(t); !bytes.Equal(got, want) {
							t.Fatalf("datagram %d: %d bytes %.8x, want %d bytes %.8x",
								i, len(got), got, len(want), want)
						}
					}
				})
			}
		}
	}
}

// The first write is the hello whichever call makes it; one refused as too large does not
// use the hello up.
func TestFirstWrite(t *testing.T) {
	raw := rawSocket(t)
	d := dial(t, addrOf(raw))
	_, err := d.Write(make([]byte, d.MaxDatagramSize()+1))
	isErr(t, err, transport.ErrDatagramTooLarge, "oversized first Write")
	ps := [][]byte{[]byte("one"), []byte("two"), []byte("three")}
	must(t, d.WriteBatch(ps))
	if b, _ := mustReadRaw(t, raw); !bytes.Equal(b, helloDatagram(d.ID(), ps[0])) {
		t.Fatalf("first datagram % .16x is not the hello", b)
	}
	for _, p := range ps[1:] {
		expectRaw(t, raw, datagram(0, d.ID(), p))
	}
}

// overhead is what a UDP payload carries beside Write's bytes: the 9-byte header, plus the
// hello's 2-byte length, which MaxDatagramSize and BaseDatagramSize leave room for so that a
// first Write of either size fits too (conn.go, MaxDatagramSize).
const overhead = headerSize + 2

// MaxDatagram caps the UDP payload (never below 1200 bytes), and MaxDatagramSize is the cap
// less the overhead: the largest datagram Write takes, the first included, whose padded hello
// stays within the cap (transport.PacketCarrier). Anything larger is refused with
// ErrDatagramTooLarge by every write call, which then sends nothing.
func TestDatagramSizes(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		cap  int
	}{
		{"default", nil, maxUDP},
		{"1500", []Option{MaxDatagram(1500)}, 1500},
		{"below the base", []Option{MaxDatagram(100)}, baseSize},
		{"above UDP", []Option{MaxDatagram(100000)}, maxUDP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit, base := tc.cap-overhead, baseSize-overhead
			first := rawSocket(t)
			fresh := dial(t, addrOf(first), tc.opts...)
			if _, err := fresh.Write(make([]byte, limit)); err != nil {
				t.Fatalf("first Write of MaxDatagramSize (%d): %v", limit, err)
			}
			if b, _ := mustReadRaw(t, first); len(b) > tc.cap {
				t.Fatalf("first datagram of %d bytes, over the %d-byte cap", len(b), tc.cap)
			}

			d, raw := dialRaw(t, tc.opts...)
			c, _ := acceptRaw(t, listen(t, tc.opts...))
			for _, conn := range []*Conn{fresh, d, c} {
				if conn.MaxDatagramSize() != limit || conn.BaseDatagramSize() != base {
					t.Fatalf("MaxDatagramSize %d, BaseDatagramSize %d; want %d, %d",
						conn.MaxDatagramSize(), conn.BaseDatagramSize(), limit, base)
				}
			}
			tooLarge := make([]byte, limit+1)
			for name, f := range map[string]func() error{
				"Write":      func() error { _, err := d.Write(tooLarge); return err },
				"WriteTo":    func() error { _, err := d.WriteTo(tooLarge, addrOf(raw)); return err },
				"WriteBatch": func() error { return d.WriteBatch([][]byte{{1}, tooLarge}) },
			} {
				isErr(t, f(), transport.ErrDatagramTooLarge, name)
			}
			expectNothing(t, raw, "refused writes") // not even WriteBatch's small first one
			p := randomBytes(limit)
			write(t, d, p)
			expectRaw(t, raw, datagram(0, d.ID(), p))
		})
	}
}

func TestReadDeadline(t *testing.T) {
	d, raw := dialRaw(t)
	read := func() chan error {
		return async(func() error { _, err := d.Read(make([]byte, 100)); return err })
	}
	for _, dl := range []time.Duration{20 * time.Millisecond, -time.Second} {
		d.SetReadDeadline(time.Now().Add(dl))
		expectErr(t, read(), os.ErrDeadlineExceeded, fmt.Sprintf("Read with a deadline %v away", dl))
	}
	// A deadline set while Read is blocked applies to it.
	d.SetReadDeadline(time.Time{})
	r := read()
	d.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	expectErr(t, r, os.ErrDeadlineExceeded, "Read blocked when its deadline was set")
	// Cleared, Read waits for data again, well past the old deadline.
	d.SetReadDeadline(time.Time{})
	r = read()
	select {
	case err := <-r:
		t.Fatalf("Read without a deadline returned %v with no data", err)
	case <-time.After(quiet):
	}
	send(t, raw, datagram(0, d.ID(), []byte("after")), d.LocalAddr())
	expectErr(t, r, nil, "Read after the deadline was cleared")
}

// Closing a connection, or the listener that made it, ends a blocked Read with
// net.ErrClosed, and writes after it fail the same way. Closing a listener ends Accept too.
func TestClose(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) (c *Conn, close func() error)
	}{
		{"dialed", func(t *testing.T) (*Conn, func() error) { c, _ := dialRaw(t); return c, c.Close }},
		{"accepted", func(t *testing.T) (*Conn, func() error) {
			c, _ := acceptRaw(t, listen(t))
			return c, c.Close
		}},
		{"listener", func(t *testing.T) (*Conn, func() error) {
			l := listen(t)
			c, _ := acceptRaw(t, l)
			// An Accept blocked with nothing to take ends too, and later ones fail at once.
			acc := async(func() error { _, err := l.Accept(); return err })
			return c, func() error {
				l.Close()
				expectErr(t, acc, net.ErrClosed, "blocked Accept")
				_, err := l.Accept()
				isErr(t, err, net.ErrClosed, "Accept after Close")
				return nil
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, close := tc.setup(t)
			read := async(func() error { _, err := c.Read(make([]byte, 100)); return err })
			close()
			expectErr(t, read, net.ErrClosed, "Read")
			_, err := c.Write([]byte("x"))
			isErr(t, err, net.ErrClosed, "Write")
			isErr(t, c.WriteBatch([][]byte{{1}}), net.ErrClosed, "WriteBatch")
		})
	}
}
