package rendrtest

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// patience bounds every wait for a condition: reaching it is a failure, not a measurement.
const patience = 20 * time.Second

// waitFor polls cond until it holds, failing the test after patience.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(patience); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("still waiting for %s after %v", what, patience)
		}
		time.Sleep(time.Millisecond)
	}
}

// target is a TCP listener standing for the relay's target; the test accepts on it itself.
func target(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// relayTo starts a relay to ln, closed when the test ends.
func relayTo(t *testing.T, ln net.Listener) *Relay {
	t.Helper()
	r, err := NewRelay(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// connect dials r and accepts the relayed connection on ln: the client's end and the
// target's end of one connection through the relay.
func connect(t *testing.T, r *Relay, ln *net.TCPListener) (cli, srv *net.TCPConn) {
	t.Helper()
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ln.SetDeadline(time.Now().Add(patience))
	s, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("the relay did not connect to the target: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return c.(*net.TCPConn), s
}

// random returns n random bytes and their SHA-256.
func random(n int) ([]byte, [32]byte) {
	b := make([]byte, n)
	rand.Read(b)
	return b, sha256.Sum256(b)
}

// readN reads exactly n bytes from c, failing after patience; it returns their SHA-256.
func readN(t *testing.T, c net.Conn, n int) [32]byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(patience))
	defer c.SetReadDeadline(time.Time{})
	h := sha256.New()
	if _, err := io.CopyN(h, c, int64(n)); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return [32]byte(h.Sum(nil))
}

// readEnd reads c to its end (patience at most) and returns what ended it: nil for EOF.
func readEnd(c net.Conn) error {
	c.SetReadDeadline(time.Now().Add(patience))
	_, err := io.Copy(io.Discard, c)
	return err
}

// mustPass proves the relay forwards a new connection both ways.
func mustPass(t *testing.T, r *Relay, ln *net.TCPListener) {
	t.Helper()
	cli, srv := connect(t, r, ln)
	up, upSum := random(4 << 10)
	down, downSum := random(4 << 10)
	// Small enough for the sockets' buffers: neither write waits for the reads.
	if _, err := cli.Write(up); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Write(down); err != nil {
		t.Fatal(err)
	}
	if readN(t, srv, len(up)) != upSum || readN(t, cli, len(down)) != downSum {
		t.Fatal("a new connection did not pass intact")
	}
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
