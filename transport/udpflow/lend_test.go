package udpflow

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// Receive buffers are lent to connections without a copy when a read is large: one big
// datagram, or a GRO run of many. These tests read what was lent, with ReadPacket and with
// Read, and check that every loan comes back.

// lentBack waits until the socket has no buffer out on loan.
func lentBack(t *testing.T, s *socket) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for s.lent.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d receive buffers still lent", s.lent.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLentLargeDatagrams: datagrams over handoffMin arrive intact through ReadPacket and
// Read alike, the slices ReadPacket returns cannot grow into the buffer beyond them, and the
// loans end once they are read.
func TestLentLargeDatagrams(t *testing.T) {
	for _, batch := range []bool{true, false} {
		t.Run(fmt.Sprint("batch=", batch), func(t *testing.T) {
			var opts []Option
			if !batch {
				opts = append(opts, NoBatching())
			}
			d, c := pair(t, opts...)
			const n = 64
			var sent [][]byte
			for i := range n {
				b := randomBytes(handoffMin + 700*i)
				sent = append(sent, b)
				write(t, d, b)
			}
			c.SetReadDeadline(time.Now().Add(wait))
			for i := range n {
				var got []byte
				if i%2 == 0 {
					b, from, err := c.ReadPacket()
					must(t, err)
					if from != nil {
						t.Fatalf("datagram %d from %v, not the peer", i, from)
					}
					if cap(b) != len(b) {
						t.Fatalf("datagram %d lent with %d bytes of room past its end", i, cap(b)-len(b))
					}
					got = bytes.Clone(b)
				} else {
					buf := make([]byte, maxUDP)
					k, err := c.Read(buf)
					must(t, err)
					got = buf[:k]
				}
				if !bytes.Equal(got, sent[i]) {
					t.Fatalf("datagram %d: %d bytes, want %d, or different", i, len(got), len(sent[i]))
				}
			}
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, _, err := c.ReadPacket(); err == nil {
				// Only to give back the last loan; nothing more was sent.
				t.Fatal("a datagram nobody sent")
			}
			lentBack(t, c.s)
		})
	}
}

// TestLentBounded: a reader that never reads cannot make the socket lend more than maxLent
// buffers; past that, datagrams are copied (and the queue's byte bound drops the rest).
func TestLentBounded(t *testing.T) {
	d, c := pair(t)
	for range 3 * maxLent {
		write(t, d, randomBytes(handoffMin+100))
	}
	time.Sleep(100 * time.Millisecond)
	if n := c.s.lent.Load(); n > maxLent {
		t.Fatalf("%d buffers lent, bound %d", n, maxLent)
	}
	if q := c.queuedBytes(); q > queueBytes {
		t.Fatalf("%d bytes queued, bound %d", q, queueBytes)
	}
	c.Close()
	lentBack(t, c.s) // Close gives back what was queued
}

// TestKeptDatagrams: a lent datagram that is kept stays intact while later ones are read (the
// socket reads into other buffers meanwhile), its buffer goes back only when the pin is let
// go, and a small datagram, copied into a reused queue buffer, cannot be kept.
func TestKeptDatagrams(t *testing.T) {
	d, c := pair(t, NoBatching()) // one datagram per buffer: each keep pins its own
	const n = 16
	var sent [][]byte
	for i := range n {
		b := randomBytes(handoffMin + 1000*i)
		sent = append(sent, b)
		write(t, d, b)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	type kept struct {
		b    []byte
		pin  interface{ Unpin() }
		size int
	}
	var ks []kept
	for i := range n {
		b, _, err := c.ReadPacket()
		must(t, err)
		pin, size := c.Keep()
		if pin == nil || size < len(b) {
			t.Fatalf("datagram %d of %d bytes: kept %v, size %d", i, len(b), pin != nil, size)
		}
		ks = append(ks, kept{b, pin, size})
	}
	write(t, d, []byte("small"))
	b, _, err := c.ReadPacket()
	must(t, err)
	if string(b) != "small" {
		t.Fatalf("read %q", b)
	}
	if pin, size := c.Keep(); pin != nil || size != 0 {
		t.Fatalf("a copied datagram kept (size %d)", size)
	}
	for i, k := range ks {
		if !bytes.Equal(k.b, sent[i]) {
			t.Fatalf("kept datagram %d changed while later ones were read", i)
		}
	}
	if got := c.s.lent.Load(); got != n {
		t.Fatalf("%d buffers lent while %d are kept", got, n)
	}
	for _, k := range ks {
		k.pin.Unpin()
	}
	lentBack(t, c.s)
}

// TestIPv6: over ::1 a connection carries datagrams both ways, small and lent, batched or
// not, and each side sees the other's IPv6 address (the batch reader decodes both families'
// addresses itself).
func TestIPv6(t *testing.T) {
	for _, batch := range []bool{true, false} {
		t.Run(fmt.Sprint("batch=", batch), func(t *testing.T) {
			var opts []Option
			if !batch {
				opts = append(opts, NoBatching())
			}
			l, err := Listen("[::1]:0", opts...)
			if err != nil {
				t.Fatalf("no IPv6 loopback: %v", err)
			}
			defer l.Close()
			d := dialFrom(t, "::1", l.Addr(), opts...)
			small, big := []byte("over ::1"), randomBytes(handoffMin+500)
			write(t, d, small)
			write(t, d, big)
			c := accept(t, l)
			expectRead(t, c, small)
			expectRead(t, c, big)
			write(t, c, small) // the answer: at most three times the first datagram
			write(t, c, big)
			expectRead(t, d, small)
			expectRead(t, d, big)
			if got, want := c.RemoteAddr().String(), d.LocalAddr().String(); got != want {
				t.Fatalf("the listener sees the dialer at %s, want %s", got, want)
			}
		})
	}
}
