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
	if q := c.queued.Load(); q > queueBytes {
		t.Fatalf("%d bytes queued, bound %d", q, queueBytes)
	}
	c.Close()
	lentBack(t, c.s) // Close gives back what was queued
}
