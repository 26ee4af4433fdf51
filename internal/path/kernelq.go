package path

// What the kernel knows of a TCP carrier's sending side: for a Bond's scheduler, where a
// record queued now would arrive. The path's own probes cannot say it: they queue behind the
// data in the same byte stream, so their round trip is the queue's length, not the path's, and
// the path's write rate says nothing of the bytes the kernel keeps in flight. On a deep queue
// (a cellular modem holding seconds) TCP's window grows to fill it, and a record sent there
// arrives seconds later, however short the path's own round trip.

import (
	"math"
	"sync"
	"time"
)

// kernelInfo is one reading of a TCP socket's sending state.
type kernelInfo struct {
	rate    float64       // bytes per second the peer acknowledged, last sample
	minRTT  time.Duration // the connection's smallest round trip
	unacked int           // bytes sent and not yet acknowledged
	mss     int           // bytes per segment
	notsent int           // bytes written to the socket and not yet sent
	acked   uint64        // bytes the peer's host has acknowledged, in all
	lastAck time.Duration // how long ago the last acknowledgement came
}

// kernelQueue samples a TCP carrier's state (kernelq_linux.go) and keeps the highest recent
// delivery rate: a sample taken while the sender had little to send is low, and the rate a
// path can deliver is what the scheduler needs.
type kernelQueue struct {
	read func() (kernelInfo, bool) // nil: the carrier is not a kernel TCP socket

	mu   sync.Mutex
	at   time.Time // the last reading
	info kernelInfo
	rate float64 // the decaying maximum of the delivery rate samples, as of at
	// deliveredAt is about when the peer's host last acknowledged new bytes (zero: never).
	deliveredAt time.Time
}

const (
	// kernelQueueFresh is how old a reading may be before Arrival takes a new one: a
	// millisecond is a tenth of a record's time at 100 Mbit/s.
	kernelQueueFresh = time.Millisecond
	// kernelRateMemory is the time constant of the delivery rate's decay: a maximum over
	// about a second, dozens of round trips on any WAN.
	kernelRateMemory = time.Second
	// initialWindow is TCP's initial window in segments (RFC 6928).
	initialWindow = 10
	// kernelBoundFloor is the least a TCP carrier may have unacknowledged whatever its
	// measured rate: TCP's slow start is never held back below it.
	kernelBoundFloor = 256 << 10
)

// refresh takes a new reading if the last is older than kernelQueueFresh.
func (k *kernelQueue) refresh(now time.Time) {
	if k.read == nil {
		return
	}
	k.mu.Lock()
	stale := now.Sub(k.at) >= kernelQueueFresh
	k.mu.Unlock()
	if stale {
		k.sample(now)
	}
}

// sample takes a new reading.
func (k *kernelQueue) sample(now time.Time) {
	if k.read == nil {
		return
	}
	info, ok := k.read()
	if !ok {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.at.IsZero() {
		k.rate *= math.Exp(-now.Sub(k.at).Seconds() / kernelRateMemory.Seconds())
	}
	if info.acked > k.info.acked {
		// New bytes were acknowledged since the last reading: by the last acknowledgement,
		// as near as its millisecond count says, and not before that reading.
		at := now.Add(-info.lastAck)
		if at.Before(k.at) {
			at = k.at
		}
		k.deliveredAt = at
	}
	k.at, k.info, k.rate = now, info, max(k.rate, info.rate)
}

// delivered is about when the peer's host last acknowledged new bytes, and whether it has
// acknowledged every byte written to the socket, from a reading at most kernelQueueFresh old
// (zero and false: not a kernel TCP socket).
func (k *kernelQueue) delivered(now time.Time) (time.Time, bool) {
	if k.read == nil {
		return time.Time{}, false
	}
	k.refresh(now)
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.deliveredAt, k.info.unacked == 0 && k.info.notsent == 0
}

// pathRateLocked is the delivery rate, at least TCP's initial window per smallest round trip.
func (k *kernelQueue) pathRateLocked() float64 {
	return max(k.rate, initialWindow*float64(k.info.mss)/k.info.minRTT.Seconds())
}

// over reports whether the carrier has more bytes unacknowledged than twice what the path
// delivers per smallest round trip (and than kernelBoundFloor), and if so how soon to look
// again. Beyond that bound, as BBR bounds its inflight, bytes only wait in a queue on the
// way: TCP's window grows until a deep buffer (a cellular modem's seconds) is full, and
// everything sent behind it waits that long. A path over its bound takes no more records;
// the samples taken while it stays under it raise the rate, and the bound with it, as long
// as the path carries more, so the bound holds back queueing, not throughput.
func (k *kernelQueue) over(now time.Time) (bool, time.Duration) {
	if k.read == nil {
		return false, 0
	}
	k.refresh(now)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.info.minRTT <= 0 {
		return false, 0
	}
	bound := max(2*k.pathRateLocked()*k.info.minRTT.Seconds(), kernelBoundFloor)
	if float64(k.info.unacked) <= bound {
		return false, 0
	}
	return true, min(max(k.info.minRTT/8, kernelQueueFresh), 10*kernelQueueFresh)
}

// arrival estimates how long n more bytes, behind queued bytes not yet handed to the socket,
// would take to reach the peer: half the smallest round trip, plus the time to deliver, at the
// delivery rate, what waits ahead of them in the path's queues. That is everything this side
// has not had acknowledged (the queued bytes, the socket's unsent and unacknowledged bytes,
// these n) beyond what the path holds in flight without queueing (rate × smallest round
// trip). Counting the path's own capacity as free is what lets a path never loaded yet (its
// rate is what little it was given) be tried: each record it takes then raises its rate. ok
// is false until the kernel has measured the round trip.
func (k *kernelQueue) arrival(queued, n int, now time.Time) (time.Duration, bool) {
	if k.read == nil {
		return 0, false
	}
	k.refresh(now)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.info.minRTT <= 0 {
		return 0, false
	}
	// A path is assumed to carry at least TCP's initial window per round trip, whatever it
	// delivered while idle.
	rate := k.pathRateLocked()
	ahead := float64(queued+k.info.notsent+k.info.unacked+n) - rate*k.info.minRTT.Seconds()
	return k.info.minRTT/2 + time.Duration(max(ahead, 0)/rate*float64(time.Second)), true
}

// Delivered is about when the carrier's far end last acknowledged new bytes of this side's at
// the transport level (TCP's own acknowledgements, which its kernel sends whether or not its
// process reads them), and whether it has acknowledged all this path has written, with none
// queued: zero and false when unknown (only kernel TCP carriers on Linux know). Bytes taken
// there show the path carrying, whatever the peer's process is doing: one that is behind
// (starved of CPU) or stopped with room left in its socket answers late on this path, and not
// because of it. A TCP-terminating middlebox (a proxy) acknowledges too, while its buffer has
// room, even when the hop beyond it died: the Router believes this for a bounded time only.
func (p *Path) Delivered() (at time.Time, all bool) {
	if p.pk != nil || p.stream.kq == nil {
		return time.Time{}, false
	}
	at, all = p.stream.kq.delivered(time.Now())
	return at, all && p.Backlog() == 0
}
