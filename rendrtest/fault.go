package rendrtest

// What the two relays share: directions, options and the rate limiter.

import (
	"time"
)

// Dir names one or both directions through a relay.
type Dir uint8

const (
	// Up is from the relay's clients (the side that dials the relay) to its target.
	Up Dir = 1 << iota
	// Down is from the target back to the clients.
	Down
	// Both is Up and Down.
	Both = Up | Down
)

func (d Dir) String() string {
	switch d {
	case 0:
		return "none"
	case Up:
		return "up"
	case Down:
		return "down"
	case Both:
		return "both"
	}
	return "Dir(?)"
}

// dirs are the single directions, by index: Up is 0, Down is 1.
var dirs = [2]Dir{Up, Down}

// Option changes how a relay is made.
type Option func(*options)

type options struct {
	listen      string
	dialTimeout time.Duration
	seed        uint64
}

// ListenAddr makes the relay listen on address rather than on a free port of 127.0.0.1.
func ListenAddr(address string) Option { return func(o *options) { o.listen = address } }

// DialTimeout bounds how long a TCP relay waits for the target to accept each connection it
// forwards (5s by default); a connection the target does not take in time is reset. A
// UDPRelay ignores it.
func DialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// Seed seeds the pseudo-random choices of a UDPRelay's Loss, so that a test loses the same
// datagrams each run (for the same traffic); the default seed is 1. A TCP relay ignores it.
func Seed(s uint64) Option { return func(o *options) { o.seed = s } }

func buildOptions(opts []Option) options {
	o := options{listen: "127.0.0.1:0", dialTimeout: 5 * time.Second, seed: 1}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// bucket caps a rate in bytes per second. It lets a burst of burstFor(rate) bytes pass at
// once and goes into debt for a chunk larger than what it holds: the chunk then waits until
// the debt is paid. So over any span t, at most burst + rate·t bytes pass.
type bucket struct {
	rate   float64 // bytes per second; 0 means no cap
	burst  float64
	tokens float64
	last   time.Time
}

// burstFor is the burst of a rate: 20 ms of it, at least 1 KiB and at most 256 KiB.
func burstFor(rate int64) int64 { return min(max(rate/50, 1<<10), 256<<10) }

func (b *bucket) set(rate int64, now time.Time) {
	*b = bucket{}
	if rate > 0 {
		b.rate = float64(rate)
		b.burst = float64(burstFor(rate))
		b.tokens = b.burst
		b.last = now
	}
}

// reserve takes n bytes and says how long to wait before sending them.
func (b *bucket) reserve(now time.Time, n int) time.Duration {
	if b.rate == 0 {
		return 0
	}
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// wait sleeps for d unless stop or changed closes first; it reports whether d passed.
func wait(d time.Duration, changed, stop <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-changed:
	case <-stop:
	}
	return false
}
