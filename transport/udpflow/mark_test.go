package udpflow

import (
	"sync/atomic"
	"testing"
	"time"
)

// testClock is a socket clock that moves only when the test moves it.
type testClock struct{ t atomic.Int64 }

func (c *testClock) now() time.Duration      { return time.Duration(c.t.Load()) }
func (c *testClock) advance(d time.Duration) { c.t.Add(int64(d)) }
func (c *testClock) option() Option          { return func(o *options) { o.clock = c.now } }

// queueUp has c send copies of p until n wait in d's queue.
func queueUp(t *testing.T, d, c *Conn, n int, p []byte) {
	t.Helper()
	// In runs of 50, each queued before the next goes, so a small socket buffer drops none.
	for sent := d.queueLen(); sent < n; {
		for range min(50, n-sent) {
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
}

// readMarks reads n datagrams and returns which were marked.
func readMarks(t *testing.T, d *Conn, n int) []bool {
	t.Helper()
	marks := make([]bool, n)
	for i := range n {
		if _, _, err := d.ReadPacket(); err != nil {
			t.Fatal(err)
		}
		marks[i] = d.Marked()
	}
	return marks
}

// TestMarkedWhileQueueFills: datagrams left waiting for the reader fill the connection's
// queue; each one read while more than markBytes of them remain behind it is marked
// (transport.CongestionMarker), however short the wait, and none after that, so the sender
// hears of the queue before it overflows and stops hearing once the reader has caught up.
func TestMarkedWhileQueueFills(t *testing.T) {
	var clock testClock // stopped: no datagram waits, only the queue's size can mark
	d, c := pair(t, clock.option())
	const n = 1200
	// Sent one by one (no GSO, so no GRO run on arrival): each is copied into a 2 KiB
	// buffer, which is what the queue counts.
	p := randomBytes(2000)
	queueUp(t, d, c, n, p)
	// Marked while at least 2 MiB of 2 KiB buffers (1024) is still behind: the first 176.
	want := n - markBytes/2048
	marked := 0
	for i, m := range readMarks(t, d, n) {
		if m {
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

// TestMarkedWhenQueueStands: a queue far below the size that marks. A reader that paused
// (every datagram waited 50 ms) and catches up at once marks nothing; one that keeps
// datagrams waiting over markDelay for markStand marks what it reads from then on, while
// markMinLen or more wait behind, and stops when the queue is short or the waits are.
func TestMarkedWhenQueueStands(t *testing.T) {
	var clock testClock
	d, c := pair(t, clock.option())
	p := randomBytes(1000)
	count := func(marks []bool) (n int) {
		for _, m := range marks {
			if m {
				n++
			}
		}
		return n
	}

	// A pause, then the reader catches up.
	queueUp(t, d, c, 50, p)
	clock.advance(50 * time.Millisecond)
	if n := count(readMarks(t, d, 50)); n != 0 {
		t.Fatalf("a pause of 50 ms marked %d of 50 datagrams", n)
	}

	// A queue that stands: 60 queued, read 20 a markStand apart.
	queueUp(t, d, c, 60, p)
	clock.advance(markDelay)
	if n := count(readMarks(t, d, 20)); n != 0 {
		t.Fatalf("the queue began to stand: %d of 20 datagrams marked", n)
	}
	clock.advance(markStand)
	if n := count(readMarks(t, d, 20)); n != 20 {
		t.Fatalf("a queue that stood for %v: %d of 20 datagrams marked, want all", markStand, n)
	}
	// 20 left: marked while markMinLen or more are behind.
	marks := readMarks(t, d, 20)
	if n := count(marks[:20-markMinLen]); n != 20-markMinLen {
		t.Fatalf("%d of the next %d datagrams marked, want all", n, 20-markMinLen)
	}
	if n := count(marks[20-markMinLen:]); n != 0 {
		t.Fatalf("%d of the last %d datagrams marked, with fewer than %d behind", n, markMinLen, markMinLen)
	}

	// The queue was short: standing starts over, so waits alone mark nothing at first.
	queueUp(t, d, c, 30, p)
	clock.advance(markDelay)
	if n := count(readMarks(t, d, 30)); n != 0 {
		t.Fatalf("a new standing queue: %d of 30 datagrams marked at once", n)
	}
	write(t, c, []byte("caught up"))
	expectRead(t, d, []byte("caught up"))
	if d.Marked() {
		t.Fatal("a datagram read from an empty queue was marked")
	}
}
