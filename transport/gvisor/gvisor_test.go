package gvisor_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rendr-go/rendr/transport/gvisor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func pair(t *testing.T, opts ...gvisor.Option) (*gvisor.Listener, net.Conn, net.Conn) {
	t.Helper()
	ln, err := gvisor.Listen("127.0.0.1:0", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := gvisor.Dialer(ln.Addr().String(), opts...)(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return ln, c, s
}

func stream(t *testing.T, w, r net.Conn, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(n), 2))
	sent := sha256.New()
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		for left := n; left > 0; {
			k := min(left, len(buf))
			for i := range buf[:k] {
				buf[i] = byte(rng.Uint32())
			}
			sent.Write(buf[:k])
			if _, err := w.Write(buf[:k]); err != nil {
				errc <- err
				return
			}
			left -= k
		}
		errc <- nil
	}()
	got := sha256.New()
	r.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.CopyN(got, r, int64(n)); err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatal("SHA-256 of the bytes read differs from the bytes written")
	}
}

func TestStreamBothWays(t *testing.T) {
	_, c, s := pair(t)
	stream(t, c, s, 8<<20)
	stream(t, s, c, 8<<20)
}

// TestCloseEndsPeer: closing one end reaches the other as the end of the stream.
func TestCloseEndsPeer(t *testing.T) {
	_, c, s := pair(t)
	c.Close()
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Read(make([]byte, 10)); !errors.Is(err, io.EOF) {
		t.Fatalf("read after the peer closed: %v", err)
	}
}

// TestStrayPacketsStartNothing: datagrams that are not a SYN to the listening stack start no
// stack and get no answer.
func TestStrayPacketsStartNothing(t *testing.T) {
	ln, _, _ := pair(t)
	u, err := net.Dial("udp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for _, b := range [][]byte{{0x45}, bytes.Repeat([]byte{0x45, 0}, 40), []byte("hello, stack")} {
		if _, err := u.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	u.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := u.Read(make([]byte, 100)); err == nil {
		t.Fatalf("a stray datagram got %d bytes back", n)
	}
}
