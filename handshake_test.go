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
