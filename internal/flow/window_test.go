package flow

import (
	"bytes"
	"testing"
	"testing/synctest"
	"time"
)

// streamWindow reads a stream's receive window and the limit its peer may send to.
func streamWindow(s *Stream) (window, limit uint64) {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	return s.window, s.recvLimit
}

// peerLimit is how far the sending side of s may send.
func peerLimit(s *Stream) uint64 {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	return s.peerLimit
}

// Credit goes back once an eighth of the window has been read, not half of it: a sender
// that waits for half the window keeps only about half of it in flight, and on a long path a
// flow then moves half a window per round trip.
func TestCreditReturnedEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		s, _ := r.a.Open()
		go s.Write(payload(1<<20, 1))
		r.settle()
		peer := accept(t, r.b)
		window, _ := streamWindow(peer)
		if got := peerLimit(s); got != window {
			t.Fatalf("before any read the sender may send to %d, want the window %d", got, window)
		}
		read := int(window/creditStep) + 1
		b := make([]byte, read)
		if _, err := peer.Read(b); err != nil {
			t.Fatal(err)
		}
		r.settle()
		if got, want := peerLimit(s), uint64(read)+window; got < want {
			t.Fatalf("after reading %d bytes (an eighth of the %d window) the sender may send to %d, want %d", read, window, got, want)
		}
	})
}

// A window follows what the application reads: twice the bytes read per round trip (the
// rig's links say 10 ms), not the maximum, when the reader sets the pace; and the maximum
// when the window does.
func TestWindowFollowsReadRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const most = 4 << 20
		r := newRig(t, Config{}, Config{MaxWindow: most, MaxSessionWindow: 4 * most})
		s, _ := r.a.Open()
		data := payload(16<<20, 2)
		go func() {
			s.Write(data)
			s.CloseWrite()
		}()
		r.settle()
		peer := accept(t, r.b)
		// 64 KiB at a time, a millisecond apart (plus the rig's own pauses): the window
		// settles at twice what that reads in a round trip.
		start := time.Now()
		got := pacedRead(t, r, peer, 8<<20, 64<<10, time.Millisecond)
		perRTT := float64(len(got)) * float64(10*time.Millisecond) / float64(time.Since(start))
		// Twice the round trip's reads, and the rate of some round trips is above the
		// average: between 1.5 and 3.5 times the average.
		if w, _ := streamWindow(peer); float64(w) < 1.5*perRTT || float64(w) > 3.5*perRTT {
			t.Fatalf("read at %.0f bytes per round trip, the window is %d; want about twice that", perRTT, w)
		}
		// The reader now takes whatever has arrived every 5 ms: the window is the limit, and
		// it grows to the maximum.
		got = append(got, pacedRead(t, r, peer, len(data)-len(got), len(data), 5*time.Millisecond)...)
		if !bytes.Equal(got, data) {
			t.Fatalf("delivered %d of %d bytes, or not these", len(got), len(data))
		}
		if w, _ := streamWindow(peer); w != most {
			t.Fatalf("read as fast as it arrives, the window is %d; want the maximum %d", w, most)
		}
	})
}

func TestGrownWindow(t *testing.T) {
	t0 := time.Unix(0, 0)
	const rtt = 10 * time.Millisecond
	for _, c := range []struct {
		name                string
		window, most, read  uint64
		elapsed             time.Duration
		want                uint64
		measurementFinished bool
	}{
		{"within a round trip nothing changes", 1 << 20, 16 << 20, 8 << 20, rtt - 1, 1 << 20, false},
		{"a window's worth per round trip doubles it", 1 << 20, 16 << 20, 1 << 20, rtt, 2 << 20, true},
		{"read over two round trips counts half", 1 << 20, 16 << 20, 2 << 20, 2 * rtt, 2 << 20, true},
		{"a slow reader keeps the window", 1 << 20, 16 << 20, 100 << 10, rtt, 1 << 20, true},
		{"never past the maximum", 8 << 20, 12 << 20, 8 << 20, rtt, 12 << 20, true},
		{"never shrinks", 4 << 20, 16 << 20, 0, 10 * rtt, 4 << 20, true},
	} {
		w, done := grownWindow(c.window, c.most, c.read, t0, t0.Add(c.elapsed), rtt)
		if w != c.want || done != c.measurementFinished {
			t.Errorf("%s: got %d, %v; want %d, %v", c.name, w, done, c.want, c.measurementFinished)
		}
	}
}
