package udpflow

import (
	"testing"
	"time"
)

// TestMarkedWhileQueueFills: datagrams left waiting for the reader fill the connection's
// queue; each one read while more than markBytes of them remain behind it is marked
// (transport.CongestionMarker), and none after that, so the sender hears of the queue before
// it overflows and stops hearing once the reader has caught up.
func TestMarkedWhileQueueFills(t *testing.T) {
	d, c := pair(t)
	const n = 600
	// Sent one by one (no GSO, so no GRO run on arrival): each is copied into a 2 KiB
	// buffer, which is what the queue counts.
	// In runs of 50, each queued before the next goes, so a small socket buffer drops none.
	p := randomBytes(2000)
	for sent := 0; sent < n; {
		for range 50 {
			write(t, c, p)
			sent++
		}
		deadline := time.Now().Add(wait)
		for d.queueLen() < sent {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d datagrams queued", d.queueLen(), sent)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// Marked while at least 1 MiB of 2 KiB buffers (512) is still behind: the first 88.
	want := n - markBytes/2048
	marked := 0
	for i := range n {
		b, _, err := d.ReadPacket()
		must(t, err)
		if len(b) != len(p) {
			t.Fatalf("datagram %d: %d bytes", i, len(b))
		}
		if d.Marked() {
			if marked != i {
				t.Fatalf("datagram %d marked after %d unmarked", i, i-marked)
			}
			marked++
		}
	}
	if marked != want {
		t.Fatalf("%d of %d datagrams marked, want %d", marked, n, want)
	}
	write(t, c, []byte("caught up"))
	expectRead(t, d, []byte("caught up"))
	if d.Marked() {
		t.Fatal("a datagram read from an empty queue was marked")
	}
}
