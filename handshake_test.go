// Handshake: a silent carrier times out, a first message arriving in pieces still opens a
// session, and a flood of handshakes does not keep real peers from connecting.

package rendr_test

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/transport/tcp"
)

// waitFor waits for cond, failing the test if it does not come within a minute (a bound for
// a broken build, not a figure).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !testkit.Wait(time.Minute, cond) {
		t.Fatalf("%s: not within a minute", what)
	}
}

// TestSilentCarrierTimesOut: a carrier that never sends its first message is closed at the
// handshake timeout and counted, with nothing sent to it.
func TestSilentCarrierTimesOut(t *testing.T) {
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	ln, addrs := lmListen(t, rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()},
		Options: rendr.Options{HandshakeTimeout: 200 * time.Millisecond}}, 1)
	const n = 3
	var conns []net.Conn
	for range n {
		c, err := net.Dial("tcp", addrs[0])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("RNDR")) // half a preface: never a whole message
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Minute))
		// Closed with the half preface unread, the socket resets: the end all the same.
		if got, err := io.ReadAll(c); len(got) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
			t.Fatalf("a silent carrier read %d bytes and %v; want nothing, then the end", len(got), err)
		}
	}
	waitFor(t, "the timeouts counted", func() bool {
		st := ln.Stats()
		return st.HandshakeTimeouts == n && st.Handshaking == 0
	})
}

// trickle writes each Write one byte at a time, so that a handshake's first message reaches
// the listener in as many pieces as it has bytes.
type trickle struct {
	net.Conn
	n int // writes left to trickle
}

func (c *trickle) Write(b []byte) (int, error) {
	if c.n == 0 {
		return c.Conn.Write(b)
	}
	c.n--
	for i := range b {
		if _, err := c.Conn.Write(b[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(b), nil
}

// TestFirstMessageInPieces: a first message that arrives a byte at a time is waited for, and
// the handshake runs once it is whole.
func TestFirstMessageInPieces(t *testing.T) {
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	ln, addrs := lmListen(t, rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}}, 1)
	lmEcho(t, ln)
	dial := tcp.Dialer(addrs[0])
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root: rendr.Path("slow", func(ctx context.Context) (net.Conn, error) {
			c, err := dial(ctx)
			if err != nil {
				return nil, err
			}
			return &trickle{Conn: c, n: 1}, nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("pieces")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "pieces" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	if st := ln.Stats(); st.Handshakes != 1 || st.HandshakeTimeouts != 0 {
		t.Fatalf("Handshakes %d, HandshakeTimeouts %d; want 1 and 0", st.Handshakes, st.HandshakeTimeouts)
	}
}

// TestHandshakeFloodKeepsPeersConnecting fills the listener's handshake slots with carriers
// that send nothing (a slow-loris flood) and checks that a real peer still connects, that the
// flood got no byte back. Without eviction every slot would stay taken for the handshake
// timeout and the peer could not get in.
func TestHandshakeFloodKeepsPeersConnecting(t *testing.T) {
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	src, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const slots = 4
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()},
		MaxHandshakes: slots, Options: rendr.Options{HandshakeTimeout: time.Minute}}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for range 3 * slots {
		c, err := net.Dial("tcp", src.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, c)
	}

	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root: rendr.Path("p", tcp.Dialer(src.Addr().String()))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		t.Fatalf("a real peer could not connect during the flood: %v", err)
	}
	go func() {
		if s, err := ln.AcceptContext(ctx); err == nil {
			io.Copy(s, s)
			s.Close()
		}
	}()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	c.Close()

	// The flood got nothing: each carrier reads EOF or a reset (evicted), or is still open
	// and silent; never a byte.
	for _, f := range flood {
		f.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, _ := f.Read(make([]byte, 64))
		if n != 0 {
			t.Fatalf("an unauthenticated carrier got %d bytes back", n)
		}
	}
}
