package path

// A packet path's congestion control: the CUBIC window and the pacer that spaces packets.

import (
	"math"
	"time"
)

// cubic is a packet path's congestion controller: CUBIC (RFC 9438) on bytes, with slow start
// and NewReno-style recovery (one reduction per round of losses), as QUIC uses it (RFC 9002).
// It is guarded by the path's lock.
type cubic struct {
	mss      float64 // bytes per full packet, for the window's floor and CUBIC's units
	cwnd     float64 // bytes that may be in flight
	ssthresh float64
	recovery time.Time // packets sent before this are of the last congestion event
	// Congestion avoidance.
	wMax  float64   // the window before the last reduction
	k     float64   // seconds from epoch to regain wMax
	epoch time.Time // the start of this avoidance period; zero until its first ACK
	wEst  float64   // the Reno-friendly window estimate
}

const (
	cubicC         = 0.4 // RFC 9438's C, in packets per second cubed
	cubicBeta      = 0.7 // the multiplicative decrease
	initialPackets = 10
	minPackets     = 2
)

func newCubic(mss int) cubic {
	return cubic{mss: float64(mss), cwnd: initialPackets * float64(mss), ssthresh: math.Inf(1)}
}

// setMSS changes the packet size (the path MTU moved).
func (c *cubic) setMSS(mss int) {
	c.mss = float64(mss)
	c.cwnd = max(c.cwnd, minPackets*c.mss)
}

// acked grows the window for n bytes acknowledged of a packet sent at sent, with inflight
// bytes in flight before the acknowledgement.
func (c *cubic) acked(n int, sent, now time.Time, srtt time.Duration, inflight int) {
	if !sent.After(c.recovery) {
		return // acknowledged in recovery: the window stays until a packet sent after it is
	}
	if float64(inflight) < c.cwnd/2 {
		// The sender did not use the window (RFC 9002, 7.8): growing it would measure
		// nothing and let a later burst out at once.
		return
	}
	if c.cwnd < c.ssthresh {
		c.cwnd += float64(n)
		return
	}
	if c.epoch.IsZero() {
		c.epoch = now
		c.wEst = c.cwnd
		c.k = 0
		if c.wMax > c.cwnd {
			c.k = math.Cbrt((c.wMax - c.cwnd) / c.mss / cubicC)
		}
	}
	t := now.Add(srtt).Sub(c.epoch).Seconds()
	target := (cubicC*math.Pow(t-c.k, 3))*c.mss + c.wMax
	target = min(max(target, c.cwnd), 1.5*c.cwnd)
	// Reno-friendly region: grow at least as Reno with CUBIC's beta would (RFC 9438, 4.3).
	alpha := 3 * (1 - cubicBeta) / (1 + cubicBeta)
	c.wEst += alpha * float64(n) / c.cwnd * c.mss
	if c.wEst > target {
		target = c.wEst
	}
	c.cwnd += (target - c.cwnd) / c.cwnd * float64(n)
}

// lost reduces the window once per congestion event: a loss of a packet sent after the last
// reduction began.
func (c *cubic) lost(sent, now time.Time) {
	if !sent.After(c.recovery) {
		return
	}
	c.recovery = now
	if c.cwnd < c.wMax {
		c.wMax = c.cwnd * (1 + cubicBeta) / 2 // fast convergence: give way to a newer flow
	} else {
		c.wMax = c.cwnd
	}
	c.cwnd = max(c.cwnd*cubicBeta, minPackets*c.mss)
	c.ssthresh = c.cwnd
	c.epoch = time.Time{}
}

// collapse is persistent congestion (RFC 9002, 7.6): every packet over a long stretch lost.
func (c *cubic) collapse(now time.Time) {
	c.recovery = now
	c.wMax = c.cwnd
	c.cwnd = minPackets * c.mss
	c.ssthresh = max(c.ssthresh/2, c.cwnd)
	c.epoch = time.Time{}
}

// pacer spaces packets at 1.25 times cwnd per srtt, in bursts of at most paceBurst packets (or
// a millisecond's worth), so a window is not written in one go into a queue that holds a
// fraction of it.
type pacer struct {
	tokens float64 // bytes that may go now
	last   time.Time
}

const (
	paceBurst       = 10 // packets
	paceGranularity = time.Millisecond
)

// allow reports how long to wait before n more bytes may go (0: now), taking them if so.
func (pc *pacer) allow(n int, now time.Time, c *cubic, srtt time.Duration) time.Duration {
	if srtt <= 0 {
		return 0 // nothing measured yet: the initial window goes out as it is
	}
	rate := 1.25 * c.cwnd / srtt.Seconds()
	// A burst is paceBurst packets, or a millisecond's worth where that is more: shorter
	// waits than that cost more in timer wake-ups than they smooth (loopback, fast LANs).
	burst := max(paceBurst*c.mss, rate*paceGranularity.Seconds())
	if !pc.last.IsZero() {
		pc.tokens = min(pc.tokens+now.Sub(pc.last).Seconds()*rate, burst)
	} else {
		pc.tokens = burst
	}
	pc.last = now
	if pc.tokens >= float64(n) || pc.tokens >= burst {
		pc.tokens -= float64(n)
		return 0
	}
	// Rounded up, never 0: 0 means "go now", which would send the packet without taking
	// its tokens, and the next one too, and every one after (the bug a sub-nanosecond
	// deficit made).
	return time.Duration(math.Ceil((float64(n) - pc.tokens) / rate * float64(time.Second)))
}
