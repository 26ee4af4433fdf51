package netlab

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
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

func TestHoldBytes(t *testing.T) {
	for _, tc := range []struct {
		cfg  DelayConfig
		want int
	}{
		{DelayConfig{Delay: time.Second}, defaultHoldBytes},
		{DelayConfig{Delay: 5 * time.Millisecond, RateBits: 40_000_000}, minHoldBytes},
		// 12.5 MB in flight and 25 MB of queue, a quarter more, two reads of room.
		{DelayConfig{Delay: 100 * time.Millisecond, RateBits: 1_000_000_000, QueueBytes: 25_000_000}, 46_875_000 + 2*maxRead},
		{DelayConfig{Delay: 10 * time.Second, RateBits: 1_000_000_000}, maxHoldBytes},
	} {
		if got := tc.cfg.holdBytes(); got != tc.want {
			t.Errorf("%+v: holdBytes %d, want %d", tc.cfg, got, tc.want)
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

// fakeTUN stands in for a TUN device in a line: Read hands out the frames sent on in, Write
// records each frame with the time it came.
type fakeTUN struct {
	in        chan []byte
	closed    chan struct{}
	closeOnce sync.Once
	keep      bool // record copies of the frames, not just their count

	mu      sync.Mutex
	frames  [][]byte
	times   []time.Time
	written int
}

func newFakeTUN(keep bool) *fakeTUN {
	return &fakeTUN{in: make(chan []byte), closed: make(chan struct{}), keep: keep}
}

func (f *fakeTUN) Read(b []byte) (int, error) {
	select {
	case p := <-f.in:
		return copy(b, p), nil
	case <-f.closed:
		return 0, os.ErrClosed
	}
}

func (f *fakeTUN) Write(b []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.keep {
		f.frames = append(f.frames, bytes.Clone(b))
		f.times = append(f.times, time.Now())
	}
	f.written++
	return len(b), nil
}

func (f *fakeTUN) Close() error {
	f.closeOnce.Do(func() { close(f.closed) })
	return nil
}

func (f *fakeTUN) got() ([][]byte, []time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.frames), slices.Clone(f.times)
}

// The rate stage of a line with offloads takes a super-packet's bytes on the wire, all its
// segments' headers included, and the frame crosses whole.
func TestLineSuperPacketRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const delay = 10 * time.Millisecond
		// 8 Mbit/s serialise a byte per microsecond.
		cfg := DelayConfig{Delay: delay, RateBits: 8_000_000, QueueBytes: 1 << 20}
		cli, srv := newFakeTUN(true), newFakeTUN(true)
		n := newDelayNode(cfg, OffloadTCPUDP, cli, srv)
		n.start()
		defer n.stop()
		tso := vnetFrame(vnetGSOTCPv4, 1448, 32, 44*1448, true)
		tso[len(tso)-1] = 7
		uso := vnetFrame(vnetGSOUDPL4, 1200, 8, 10*1200, true)
		t0 := time.Now()
		cli.in <- tso
		cli.in <- uso
		time.Sleep(time.Second)
		frames, times := srv.got()
		if len(frames) != 2 || !bytes.Equal(frames[0], tso) || !bytes.Equal(frames[1], uso) {
			t.Fatalf("%d frames out, want the two super-packets unchanged", len(frames))
		}
		for k, want := range []time.Duration{44*1500*time.Microsecond + delay, (44*1500+10*1228)*time.Microsecond + delay} {
			if got := times[k].Sub(t0); got != want {
				t.Errorf("super-packet %d left after %v, want %v", k, got, want)
			}
		}
		st := n.stats().ToServer
		want := LineStats{Forwarded: 54, ForwardedBytes: 44*1500 + 10*1228, Reads: 2, Writes: 2}
		if st != want {
			t.Errorf("counters %+v, want %+v", st, want)
		}
		if n.stats().Offload != OffloadTCPUDP {
			t.Errorf("node reports offload %v", n.stats().Offload)
		}
	})
}

// Frames of every size cross a line in order and intact while its ring wraps many times.
func TestLineRingWraps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cli, srv := newFakeTUN(true), newFakeTUN(true)
		cfg := DelayConfig{Delay: time.Millisecond, Jitter: time.Millisecond, Seed: 1}
		n := newDelayNode(cfg, OffloadNone, cli, srv)
		n.start()
		defer n.stop()
		if size := len(n.up.ring.buf); size != defaultHoldBytes {
			t.Fatalf("ring of %d bytes, want %d", size, defaultHoldBytes)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		var sent [][]byte
		for k := range 2000 {
			f := make([]byte, 1+rng.IntN(maxRead-1))
			binary.BigEndian.PutUint32(f, uint32(k))
			f[len(f)-1] = byte(k)
			cli.in <- f
			sent = append(sent, f)
			// Slower than the line, so nothing is dropped.
			time.Sleep(time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond)
		frames, _ := srv.got()
		if len(frames) != len(sent) {
			t.Fatalf("%d frames out of %d, counters %+v", len(frames), len(sent), n.stats().ToServer)
		}
		for k := range sent {
			if !bytes.Equal(frames[k], sent[k]) {
				t.Fatalf("frame %d differs", k)
			}
		}
	})
}

// A line whose ring is full drops what does not fit and keeps what does.
func TestLineRingFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cli, srv := newFakeTUN(true), newFakeTUN(true)
		n := newDelayNode(DelayConfig{Delay: time.Second}, OffloadNone, cli, srv)
		n.up.ring = newRing(4 * maxRead)
		n.start()
		defer n.stop()
		big := make([]byte, 60000)
		for range 10 {
			cli.in <- big
		}
		// The big ones filled all but 22184 bytes at the end of the ring; a small one
		// still fits there.
		small := []byte("small")
		cli.in <- small
		synctest.Wait()
		if st := n.stats().ToServer; st.Dropped != 6 || st.Reads != 11 {
			t.Fatalf("counters %+v; want 6 drops of 11 reads", st)
		}
		time.Sleep(2 * time.Second)
		frames, _ := srv.got()
		if len(frames) != 5 || !bytes.Equal(frames[4], small) {
			t.Fatalf("%d frames out, want 4 big ones and the small one last", len(frames))
		}
		if st := n.stats().ToServer; st.Forwarded != 5 || st.Writes != 5 {
			t.Fatalf("counters %+v; want 5 forwarded", st)
		}
	})
}

// A line holds at most cap(held) packets, whatever the room in its ring.
func TestLineHeldBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cli, srv := newFakeTUN(false), newFakeTUN(false)
		cfg := DelayConfig{Delay: time.Second}
		if got := cfg.heldPackets(); got != defaultHoldBytes>>10 {
			t.Fatalf("heldPackets = %d, want %d", got, defaultHoldBytes>>10)
		}
		n := newDelayNode(cfg, OffloadNone, cli, srv)
		n.start()
		defer n.stop()
		for range cfg.heldPackets() + 10 {
			cli.in <- []byte("p")
		}
		synctest.Wait()
		// The writer holds one more, waiting for its release.
		if st := n.stats().ToServer; st.Dropped != 9 {
			t.Fatalf("counters %+v; want 9 drops", st)
		}
	})
}

// With a line moving frames, reading and writing one allocates nothing.
func TestLineAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("counts allocations process-wide")
	}
	cli, srv := newFakeTUN(false), newFakeTUN(false)
	n := newDelayNode(DelayConfig{Delay: time.Microsecond}, OffloadNone, cli, srv)
	n.start()
	defer n.stop()
	frame := make([]byte, 1500)
	const count = 20000
	for range 1000 { // the spare buffer and the runtime's first timers
		cli.in <- frame
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range count {
		cli.in <- frame
	}
	runtime.ReadMemStats(&after)
	if a := after.Mallocs - before.Mallocs; a > count/100 {
		t.Fatalf("%d allocations for %d frames", a, count)
	}
}

func BenchmarkLine(b *testing.B) {
	cli, srv := newFakeTUN(false), newFakeTUN(false)
	n := newDelayNode(DelayConfig{}, OffloadNone, cli, srv)
	n.start()
	defer n.stop()
	frame := make([]byte, 1500)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		cli.in <- frame
	}
}
