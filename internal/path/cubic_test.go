package path

import (
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/wire"
)

// ccRig drives a packet path's congestion controller through onAck alone, in virtual time
// (run it inside synctest.Test): it records packets as sent, and acknowledges them with the
// count of marked ones the peer would report.
type ccRig struct {
	t    *testing.T
	p    *Path
	k    *pkState
	next uint64 // the next packet number
	ce   uint64 // packets the peer has counted as marked
}

const rigMSS = 1200

func newCCRig(t *testing.T) *ccRig {
	_, a, _ := newPktLink(11, pktConfig{}, pktConfig{}, rigMSS, rigMSS)
	p := &Path{h: newPktHandler(), kick: make(chan struct{}, 1)}
	p.pk = newPkState(a, nil, nil)
	p.pk.timer = time.NewTimer(time.Hour)
	t.Cleanup(func() { p.pk.timer.Stop() })
	return &ccRig{t: t, p: p, k: p.pk}
}

// avoid puts the controller in congestion avoidance with a window of w packets.
func (r *ccRig) avoid(w int) {
	r.k.cc.cwnd = float64(w * rigMSS)
	r.k.cc.ssthresh = r.k.cc.cwnd
}

func (r *ccRig) window() float64 { return r.k.cc.cwnd / rigMSS }

// round sends a window's worth of packets (at least 10), waits a round trip of rtt, and
// acknowledges them ten at a time, the peer having marked those for which marked says so.
// It returns how many it sent.
func (r *ccRig) round(rtt time.Duration, marked func(i int) bool) int {
	r.t.Helper()
	time.Sleep(time.Millisecond) // sent after the round that the last acknowledgement began
	n := max(int(r.k.cc.cwnd)/rigMSS, 10)
	first := r.next
	for range n {
		r.p.trackLocked(&pkItem{pn: r.next, size: rigMSS}, time.Now(), nil)
		r.next++
	}
	r.k.next = r.next
	time.Sleep(rtt)
	for lo := first; lo < r.next; lo += 10 {
		hi := min(lo+10, r.next) - 1
		for pn := lo; pn <= hi; pn++ {
			if marked(int(pn - first)) {
				r.ce++
			}
		}
		r.ack(lo, hi, r.ce)
	}
	return n
}

// ack delivers a PATH_ACK (a PATH_ACK_CE when ce > 0) of packets lo to hi.
func (r *ccRig) ack(lo, hi, ce uint64) {
	r.t.Helper()
	f, _, err := wire.Parse(wire.AppendPathAck(nil, 0, []wire.AckRange{{Lo: lo, Hi: hi}}, ce))
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.p.onAck(&f); err != nil {
		r.t.Fatal(err)
	}
}

func never(int) bool { return false }

// TestMarksSparseCutLittle: one packet in a thousand marked every round trip is a queue
// that barely filled: over ten round trips the window loses far less than 5%, though the
// marks are heard (alpha follows the fraction). A loss afterwards still cuts by CUBIC's 0.7.
func TestMarksSparseCutLittle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rtt = 50 * time.Millisecond
		r := newCCRig(t)
		r.avoid(1000)
		r.round(rtt, never)
		w0 := r.window()
		for i := range 10 {
			r.round(rtt, func(i int) bool { return i == 500 })
			if w := r.window(); w < 0.95*w0 {
				t.Fatalf("round %d: window %.1f packets, was %.1f: sparse marks cut it by %.0f%%",
					i, w, w0, 100*(1-w/w0))
			}
		}
		if a := r.k.cc.alpha; a < 0.0005 || a > 0.002 {
			t.Errorf("alpha %v after a round trip in a thousand marked, want about 0.001", a)
		}
		if r.k.marked != 10 || r.k.lostPackets != 0 {
			t.Errorf("%d marked, %d lost: want 10 and 0", r.k.marked, r.k.lostPackets)
		}
		r.round(rtt, never) // ends the last marked round
		// A loss: packet first is never acknowledged, the ones after it are.
		time.Sleep(time.Millisecond)
		first := r.next
		for range 20 {
			r.p.trackLocked(&pkItem{pn: r.next, size: rigMSS}, time.Now(), nil)
			r.next++
		}
		r.k.next = r.next
		time.Sleep(rtt)
		w := r.k.cc.cwnd
		r.ack(first+1, r.next-1, r.ce)
		if r.k.lostPackets != 1 {
			t.Fatalf("%d packets lost, want 1", r.k.lostPackets)
		}
		// The acknowledgement grows the window a little before the loss is found.
		if got := r.k.cc.cwnd / w; got < cubicBeta || got > cubicBeta*1.005 {
			t.Errorf("a loss took the window from %.0f to %.0f (×%.3f), want ×%v", w, r.k.cc.cwnd, got, cubicBeta)
		}
	})
}

// TestMarksPersistentHalve: every packet marked, round after round, is a reader that cannot
// keep up: the window halves about once per round trip, and slow start, if it was on, is
// over.
func TestMarksPersistentHalve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rtt = 10 * time.Millisecond
		r := newCCRig(t)
		r.avoid(1000)
		r.round(rtt, never)
		w := r.window()
		always := func(int) bool { return true }
		r.round(rtt, always) // its round ends with the first acknowledgement of the next
		for i := range 4 {
			r.round(rtt, always)
			got := r.window() / w
			t.Logf("round %d: window %.1f packets (×%.2f)", i, r.window(), got)
			if got < 0.4 || got > 0.6 {
				t.Fatalf("round %d: window %.1f after %.1f (×%.2f): want about half", i, r.window(), w, got)
			}
			w = r.window()
		}
		if r.k.lostPackets != 0 {
			t.Errorf("%d lost: marks are not losses", r.k.lostPackets)
		}
	})
}

// TestMarksFirstInSlowStart: the first marks of a path in slow start end slow start at once,
// before the acknowledgement carrying them grows the window, and cut it at the round's end
// by half the fraction marked: 3 packets in 100 cost about 1.5%, not half the window.
func TestMarksFirstInSlowStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rtt = 20 * time.Millisecond
		r := newCCRig(t)
		r.k.cc.cwnd = 100 * rigMSS
		r.round(rtt, never) // a round of slow start: the window grows
		if !math.IsInf(r.k.cc.ssthresh, 1) || r.window() <= 100 {
			t.Fatalf("window %.0f packets, ssthresh %v: want slow start to have grown it", r.window(), r.k.cc.ssthresh)
		}
		// The next round: 3 marked among the first ten acknowledged.
		time.Sleep(time.Millisecond)
		first := r.next
		n := int(r.window())
		for range n {
			r.p.trackLocked(&pkItem{pn: r.next, size: rigMSS}, time.Now(), nil)
			r.next++
		}
		r.k.next = r.next
		time.Sleep(rtt)
		w := r.k.cc.cwnd
		r.ack(first, first+9, r.ce+3)
		r.ce += 3
		// Congestion avoidance may grow it by a few bytes; slow start would by ten packets.
		if r.k.cc.cwnd < w || r.k.cc.cwnd > w+rigMSS || r.k.cc.ssthresh != w {
			t.Fatalf("first marks: window %.0f, ssthresh %.0f; want both %.0f (slow start over, no cut yet)",
				r.k.cc.cwnd, r.k.cc.ssthresh, w)
		}
		r.ack(first+10, r.next-1, r.ce)
		grown := r.k.cc.cwnd // congestion avoidance grows it a little
		r.round(rtt, never)  // its first acknowledgement ends the marked round
		f := 3.0 / float64(n)
		if got, want := r.k.cc.cwnd/grown, 1-f/2; got < want-0.002 || got > want+0.002 {
			t.Errorf("the marked round cut the window by ×%.4f, want about ×%.4f (3 marked of %d)", got, want, n)
		}
		if math.IsInf(r.k.cc.ssthresh, 1) || r.k.cc.ssthresh > w {
			t.Errorf("ssthresh %v after marks in slow start", r.k.cc.ssthresh)
		}
	})
}
