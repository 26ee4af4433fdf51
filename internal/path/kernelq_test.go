package path

import (
	"io"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fixedQueue is a kernelQueue whose every reading is info.
func fixedQueue(info kernelInfo) *kernelQueue {
	return &kernelQueue{read: func() (kernelInfo, bool) { return info, true }}
}

func TestKernelQueueArrival(t *testing.T) {
	t0 := time.Unix(100, 0)
	const mss = 1448
	// 20 Mbit/s (2.5 MB/s), 80 ms: the path holds 200 kB in flight without queueing.
	path := kernelInfo{rate: 2.5e6, minRTT: 80 * time.Millisecond, mss: mss}
	for _, c := range []struct {
		name             string
		unacked, notsent int
		queued, n        int
		want             time.Duration
	}{
		{"an idle path: half the round trip", 0, 0, 0, 16 << 10, 40 * time.Millisecond},
		{"its own flight is free", 150_000, 0, 0, 50_000, 40 * time.Millisecond},
		{"a second of queue in the network", 2_700_000, 0, 0, 0, 40*time.Millisecond + time.Second},
		{"unsent and queued bytes wait too", 200_000, 100_000, 150_000, 0, 40*time.Millisecond + 100*time.Millisecond},
	} {
		info := path
		info.unacked, info.notsent = c.unacked, c.notsent
		k := fixedQueue(info)
		got, ok := k.arrival(c.queued, c.n, t0)
		if !ok || absDur(got-c.want) > time.Millisecond {
			t.Errorf("%s: arrival %v, %v; want %v", c.name, got, ok, c.want)
		}
	}
}

// An idle path's delivery rate is what little it was given: the estimate assumes at least
// TCP's initial window per round trip, so that the path is tried and its rate measured.
func TestKernelQueueIdleRateFloor(t *testing.T) {
	k := fixedQueue(kernelInfo{rate: 6000, minRTT: 80 * time.Millisecond, mss: 1448})
	got, ok := k.arrival(0, 16<<10, time.Unix(100, 0))
	// 10 segments per 80 ms: 14480 bytes of flight are free, the rest of 16 KiB waits
	// 1904 bytes / 181 kB/s = 10.5 ms.
	if want := 40*time.Millisecond + 10520*time.Microsecond; !ok || absDur(got-want) > 100*time.Microsecond {
		t.Fatalf("arrival %v, %v; want %v", got, ok, want)
	}
}

// The delivery rate is the highest of recent samples, decaying over about a second: a sample
// taken while the sender had little to give does not make the path look slow.
func TestKernelQueueRateMemory(t *testing.T) {
	info := kernelInfo{rate: 10e6, minRTT: 10 * time.Millisecond, mss: 1448}
	k := &kernelQueue{read: func() (kernelInfo, bool) { return info, true }}
	t0 := time.Unix(100, 0)
	k.sample(t0)
	info.rate = 1e6
	k.sample(t0.Add(10 * time.Millisecond))
	if k.rate < 9.8e6 {
		t.Fatalf("10 ms after a 10 MB/s sample, a 1 MB/s one brought the rate to %.0f", k.rate)
	}
	k.sample(t0.Add(5 * time.Second))
	if k.rate > 1.1e6 {
		t.Fatalf("5 s later the rate is still %.0f; want the recent samples' 1 MB/s", k.rate)
	}
}

// A reading is reused for a millisecond; an older one is taken again.
func TestKernelQueueFreshness(t *testing.T) {
	reads := 0
	k := &kernelQueue{read: func() (kernelInfo, bool) {
		reads++
		return kernelInfo{rate: 1e6, minRTT: 10 * time.Millisecond, mss: 1448}, true
	}}
	t0 := time.Unix(100, 0)
	k.arrival(0, 1, t0)
	k.arrival(0, 1, t0.Add(kernelQueueFresh/2))
	if reads != 1 {
		t.Fatalf("%d readings within %v, want 1", reads, kernelQueueFresh)
	}
	k.arrival(0, 1, t0.Add(2*kernelQueueFresh))
	if reads != 2 {
		t.Fatalf("%d readings after %v, want 2", reads, 2*kernelQueueFresh)
	}
	if _, ok := (&kernelQueue{}).arrival(0, 1, t0); ok {
		t.Fatal("a carrier without TCP_INFO gave an arrival estimate")
	}
}

func absDur(d time.Duration) time.Duration { return max(d, -d) }

// A carrier may have twice what its path delivers per smallest round trip unacknowledged, and
// at least kernelBoundFloor; more only waits in a queue on the way.
func TestKernelQueueBound(t *testing.T) {
	t0 := time.Unix(100, 0)
	// 2.5 MB/s at 80 ms: 200 kB per round trip, a bound of 400 kB.
	info := kernelInfo{rate: 2.5e6, minRTT: 80 * time.Millisecond, mss: 1448}
	for _, c := range []struct {
		unacked int
		over    bool
	}{{0, false}, {400_000, false}, {400_001, true}, {5_000_000, true}} {
		info.unacked = c.unacked
		over, again := fixedQueue(info).over(t0)
		if over != c.over || over && again != 10*time.Millisecond {
			t.Errorf("%d bytes unacknowledged: over %v, again in %v; want %v, 10ms", c.unacked, over, again, c.over)
		}
	}
	// A path that has delivered little yet may still have the floor in flight.
	slow := kernelInfo{rate: 1000, minRTT: 80 * time.Millisecond, mss: 1448, unacked: kernelBoundFloor}
	if over, _ := fixedQueue(slow).over(t0); over {
		t.Errorf("%d bytes unacknowledged on a path not measured yet count as over its bound", kernelBoundFloor)
	}
	if over, _ := (&kernelQueue{}).over(t0); over {
		t.Error("a carrier without TCP_INFO is over its bound")
	}
}

// A stream path whose carrier is over its bound has no space, and tells its handler once it
// is under it again, without any write of its own to notice it.
func TestStreamPathKernelBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		near, far := net.Pipe()
		defer far.Close()
		go io.Copy(io.Discard, far)
		h := newHandler()
		p := New(1, near, nil, nil, Config{}, h)
		var mu sync.Mutex
		info := kernelInfo{rate: 2.5e6, minRTT: 80 * time.Millisecond, mss: 1448, unacked: 1 << 20}
		p.stream.kq = &kernelQueue{read: func() (kernelInfo, bool) {
			mu.Lock()
			defer mu.Unlock()
			return info, true
		}}
		p.Start()
		defer func() { p.Close(nil); p.Wait() }()
		synctest.Wait()
		if n := p.Space(); n != 0 {
			t.Fatalf("1 MiB unacknowledged on a 400 kB bound: space %d, want 0", n)
		}
		h.mu.Lock()
		before := h.mu.writable
		h.mu.Unlock()
		time.Sleep(time.Second) // rechecked every 10 ms, still over
		synctest.Wait()
		if n := p.Space(); n != 0 {
			t.Fatalf("still over the bound: space %d", n)
		}
		mu.Lock()
		info.unacked = 100_000
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		h.mu.Lock()
		after := h.mu.writable
		h.mu.Unlock()
		if after != before+1 {
			t.Fatalf("under the bound again: %d wake-ups, want 1", after-before)
		}
		if n := p.Space(); n <= 0 {
			t.Fatalf("under the bound again: space %d", n)
		}
	})
}

// TestKernelQueueDelivered: the time new bytes were last acknowledged is the last
// acknowledgement's, when the acknowledged count rose since the previous reading, and never
// before that reading; a reading without a rise leaves it. All is whether nothing is
// unacknowledged or unsent.
func TestKernelQueueDelivered(t *testing.T) {
	info := kernelInfo{minRTT: 10 * time.Millisecond, mss: 1448}
	k := &kernelQueue{read: func() (kernelInfo, bool) { return info, true }}
	t0 := time.Unix(100, 0)
	if at, all := k.delivered(t0); !at.IsZero() || !all {
		t.Fatalf("nothing ever sent: %v, %v; want zero and all", at, all)
	}
	info.acked, info.lastAck, info.unacked = 50_000, 3*time.Millisecond, 2896
	if at, all := k.delivered(t0.Add(10 * time.Millisecond)); !at.Equal(t0.Add(7*time.Millisecond)) || all {
		t.Fatalf("50 kB acknowledged 3ms ago, 2896 bytes in flight: %v, %v", at, all)
	}
	// No new bytes acknowledged: the time stays, however recent the last acknowledgement
	// (a window update, a duplicate).
	info.lastAck, info.unacked = 0, 0
	if at, all := k.delivered(t0.Add(20 * time.Millisecond)); !at.Equal(t0.Add(7*time.Millisecond)) || !all {
		t.Fatalf("no new bytes acknowledged: %v, %v", at, all)
	}
	// New bytes, with the last acknowledgement older than the previous reading by its count
	// (its millisecond resolution): not before that reading.
	info.acked, info.lastAck, info.notsent = 60_000, 15*time.Millisecond, 100
	if at, all := k.delivered(t0.Add(30 * time.Millisecond)); !at.Equal(t0.Add(20*time.Millisecond)) || all {
		t.Fatalf("new bytes since the reading at 20ms: %v, %v; want 20ms, not all (bytes unsent)", at, all)
	}
	if at, all := (&kernelQueue{}).delivered(t0); !at.IsZero() || all {
		t.Fatalf("not a kernel socket: %v, %v; want zero and not all", at, all)
	}
}
