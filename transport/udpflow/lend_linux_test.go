package udpflow

import (
	"bytes"
	"testing"
	"time"
)

// TestLentGRORun: a batch of equal datagrams goes as one GSO send and, on a kernel with UDP
// GRO, arrives as one run in one buffer, lent to its datagrams in place. Each arrives intact
// and in order, and the loan ends with the last one.
func TestLentGRORun(t *testing.T) {
	d, c := pair(t)
	var sent [][]byte
	for range 40 {
		sent = append(sent, randomBytes(1400))
	}
	must(t, d.WriteBatch(sent))
	if c.s.bat != nil && c.s.bat.gro.Load() && c.s.bat.gso.Load() {
		// The run arrives whole: lent, not copied datagram by datagram.
		deadline := time.Now().Add(wait)
		for c.s.lent.Load() == 0 && c.queueLen() < len(sent) {
			if time.Now().After(deadline) {
				t.Fatal("the batch never arrived")
			}
			time.Sleep(time.Millisecond)
		}
		if c.s.lent.Load() == 0 {
			t.Fatal("a GRO run was copied, not lent")
		}
	}
	c.SetReadDeadline(time.Now().Add(wait))
	for i := range sent {
		b, _, err := c.ReadPacket()
		must(t, err)
		if cap(b) != len(b) {
			t.Fatalf("datagram %d lent with %d bytes of room past its end", i, cap(b)-len(b))
		}
		if !bytes.Equal(b, sent[i]) {
			t.Fatalf("datagram %d differs", i)
		}
	}
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	c.ReadPacket() // gives the last loan back; times out
	lentBack(t, c.s)
}
