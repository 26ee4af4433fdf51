package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The carrier starts goroutines and timers of its own (the listener's reader, the first
// datagram's copies): once rendr and the listener are closed, none may be left.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRun runs the example with a smaller transfer: the UDP carriers are cut under it, the
// digests must match, and the UDP path must have carried part of the data (a Bond could
// otherwise send it all over TCP and prove nothing about the datagram carrier).
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, 8<<20, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "digests equal") {
		t.Fatalf("output: %s", out.String())
	}
	var sent int64
	var packets, lost uint64
	var paths int
	found := false
	for line := range strings.Lines(out.String()) {
		if _, err := fmt.Sscanf(line, "udp path carried %d bytes in %d packets (%d lost) over %d carriers",
			&sent, &packets, &lost, &paths); err == nil {
			found = true
		}
	}
	if !found || sent < 256<<10 || packets < 100 {
		t.Fatalf("the UDP path carried %d bytes in %d packets over %d carriers\n%s", sent, packets, paths, out.String())
	}
	t.Log(out.String())
}

// TestCarrier checks what rendr's handshake relies on, which loopback seldom exercises: a
// read deadline and Close end a blocked Read with the errors rendr expects; the dialer sends
// its first datagram again until answered; the listener answers a copy with a copy of its
// answer and keeps the copy from rendr; and a closed conn frees its source for a new one.
func TestCarrier(t *testing.T) {
	l, err := dgListen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dc, err := dgDialer(l.Addr().String())(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	buf := make([]byte, dgSize+1)
	read := func(c net.Conn, wait time.Duration) (string, error) {
		c.SetReadDeadline(time.Now().Add(wait))
		n, err := c.Read(buf)
		return string(buf[:n]), err
	}
	accept := func() net.Conn { // Accept has no deadline: a missing conn fails, not hangs
		ch := make(chan net.Conn, 1)
		go func() {
			c, _ := l.Accept()
			ch <- c
		}()
		select {
		case c := <-ch:
			return c
		case <-time.After(2 * time.Second):
			t.Fatal("no conn to accept")
			return nil
		}
	}

	dc.Write([]byte("hello"))
	lc := accept()
	if got, err := read(lc, time.Second); got != "hello" || err != nil {
		t.Fatalf("first datagram: %q, %v", got, err)
	}
	// Unanswered, the dialer sends copies (at 250ms, 500ms...); rendr must not see them.
	var ne net.Error
	if _, err := read(lc, 600*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) ||
		!errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v", err)
	}
	// The answer, then the next copy (at 750ms) is answered again: the dialer reads it twice.
	lc.Write([]byte("answer"))
	time.Sleep(400 * time.Millisecond)
	for i := range 2 {
		if got, err := read(dc, time.Second); got != "answer" || err != nil {
			t.Fatalf("answer %d: %q, %v", i, got, err)
		}
	}
	// A deadline moved into the past ends a blocked Read (rendr aborts a handshake so), and
	// Close ends one with net.ErrClosed.
	go func() {
		time.Sleep(50 * time.Millisecond)
		lc.SetReadDeadline(time.Unix(1, 0))
	}()
	if _, err := read(lc, time.Hour); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the deadline moved back: %v", err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		lc.Close()
	}()
	if _, err := read(lc, time.Hour); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed conn: %v", err)
	}
	// The source is free again: its next datagram starts a new conn.
	dc.Write([]byte("again"))
	lc2 := accept()
	if got, err := read(lc2, time.Second); got != "again" || err != nil {
		t.Fatalf("new conn: %q, %v", got, err)
	}
	dc.Close()
	if _, err := read(dc, time.Hour); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed dialed conn: %v", err)
	}
}
