package netlab

import (
	"testing"
	"time"
)

// The schedule is driven with explicit times, so its arithmetic is checked exactly.
func TestScheduleRateAndQueue(t *testing.T) {
	const delay = 10 * time.Millisecond
	// 8000 bit/s serialise 1000 bytes per second.
	s := newSchedule(DelayConfig{Delay: delay, RateBits: 8000, QueueBytes: 2500}, 0)
	t0 := time.Unix(1000, 0)
	for k, want := range []struct {
		at      time.Duration
		size    int
		release time.Duration
		v       verdict
	}{
		{0, 1000, time.Second + delay, admit},                                         // empty queue
		{0, 1000, 2*time.Second + delay, admit},                                       // 1000 queued + 1000 fit 2500
		{0, 1000, 0, dropQueue},                                                       // 2000 queued + 1000 do not
		{1500 * time.Millisecond, 1000, 3*time.Second + delay, admit},                 // 500 left + 1000 fit
		{10 * time.Second, 100, 10*time.Second + 100*time.Millisecond + delay, admit}, // idle again
	} {
		release, v := s.next(t0.Add(want.at), want.size)
		if v != want.v || (v == admit && !release.Equal(t0.Add(want.release))) {
			t.Fatalf("packet %d: release %v, verdict %d; want %v, %d", k, release.Sub(t0), v, want.release, want.v)
		}
	}

	// An empty queue takes one packet even if it is larger than the queue.
	s = newSchedule(DelayConfig{RateBits: 8000, QueueBytes: 100}, 0)
	if _, v := s.next(t0, 1500); v != admit {
		t.Fatalf("first packet into an empty 100-byte queue: verdict %d, want admit", v)
	}
	if _, v := s.next(t0, 10); v != dropQueue {
		t.Fatalf("second packet into a busy 100-byte queue: verdict %d, want dropQueue", v)
	}
}

func TestScheduleDefaultQueue(t *testing.T) {
	for _, tc := range []struct {
		rate int64
		want int
	}{
		{1_000_000, minQueueBytes},  // 2500 bytes in 20 ms: the floor wins
		{100_000_000, 250_000},      // 20 ms at 100 Mbit/s
		{8_000_000_000, 20_000_000}, // 20 ms at 8 Gbit/s
	} {
		if got := (DelayConfig{RateBits: tc.rate}).queueBytes(); got != tc.want {
			t.Errorf("default queue at %d bit/s = %d, want %d", tc.rate, got, tc.want)
		}
	}
}

func TestScheduleJitterKeepsOrder(t *testing.T) {
	const (
		delay  = 30 * time.Millisecond
		jitter = 20 * time.Millisecond
	)
	s := newSchedule(DelayConfig{Delay: delay, Jitter: jitter, Seed: 7}, 0)
	t0 := time.Unix(1000, 0)
	var last time.Time
	lo, hi := time.Hour, time.Duration(0)
	for k := range 2000 {
		at := t0.Add(time.Duration(k) * time.Millisecond)
		release, v := s.next(at, 100)
		if v != admit {
			t.Fatalf("packet %d: verdict %d without loss or rate", k, v)
		}
		d := release.Sub(at)
		if release.Before(last) {
			t.Fatalf("packet %d leaves at %v, before its predecessor at %v", k, release.Sub(t0), last.Sub(t0))
		}
		// Never earlier than Delay-Jitter; never later than the latest draw of the
		// predecessors, which arrived no later.
		if d < delay-jitter || d > delay+jitter {
			t.Fatalf("packet %d delayed %v, outside %v±%v", k, d, delay, jitter)
		}
		last = release
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo > delay-jitter/2 || hi < delay+jitter/2 {
		t.Fatalf("delays span only %v..%v; the jitter is not applied", lo, hi)
	}
}

func TestScheduleLossSeeded(t *testing.T) {
	const count = 10000
	cfg := DelayConfig{LossPercent: 25, Seed: 42}
	run := func(stream uint64) []bool {
		s := newSchedule(cfg, stream)
		lost := make([]bool, count)
		for k := range lost {
			_, v := s.next(time.Unix(0, 0), 100)
			lost[k] = v == dropLoss
		}
		return lost
	}
	a, b, other := run(0), run(0), run(1)
	n, same := 0, true
	for k := range a {
		if a[k] {
			n++
		}
		same = same && a[k] == other[k]
		if a[k] != b[k] {
			t.Fatalf("same seed and stream differ at packet %d", k)
		}
	}
	if n < count*20/100 || n > count*30/100 {
		t.Fatalf("25%% loss lost %d of %d", n, count)
	}
	if same {
		t.Fatal("the two directions draw the same losses")
	}
}
