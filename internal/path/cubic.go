package path

// A packet path's congestion control: the CUBIC window and the pacer that spaces packets.

import (
	"math"
	"time"
)

// cubic is a packet path's congestion controller: CUBIC (RFC 9438) on bytes, with slow start
// and NewReno-style recovery (one reduction per round of losses), as QUIC uses it (RFC 9002).
// It is guarded by the path's lock.
//
// Losses and congestion marks (PATH_ACK_CE) are answered differently. A loss means a queue
// overflowed: the window shrinks by CUBIC's beta (to 0.7), once per round of losses. A mark
// means a datagram met a queue that was filling but still had room (transport.CongestionMarker:
// udpflow's receive queue, or ECN), and says how much: the window answers in proportion to the
// share of packets marked, as DCTCP does (RFC 8257). Over each observation round, about one
// round trip, the controller counts the packets acknowledged and the ones newly marked; at
// the round's end it folds the round's marked fraction F into alpha, a moving average
// (alpha += (F - alpha)/16), and, if the round saw marks, shrinks the window once by
// alpha/2: a handful of marks among thousands of packets (a reader that paused for a few
// milliseconds) costs a fraction of a percent, while every packet marked round after round
// (a reader that cannot keep up) halves the window each round trip. A 0.7 cut per marked
// round instead would shrink a fast long path for every pause of the reader, and CUBIC
// regrows slowly at long round trips.
type cubic struct {
	mss      float64 // bytes per full packet, for the window's floor and CUBIC's units
	cwnd     float64 // bytes that may be in flight
	ssthresh float64
	recovery time.Time // packets sent before this are of the last loss event
	// Congestion avoidance.
	wMax  float64   // the window before the last reduction
	k     float64   // seconds from epoch to regain wMax
	epoch time.Time // the start of this avoidance period; zero until its first ACK
	wEst  float64   // the Reno-friendly window estimate
	// Congestion marks (DCTCP). A round ends when a packet sent after it began is
	// acknowledged.
	alpha     float64   // the moving average of the share of packets marked per round; < 0 until a round saw marks
	roundAt   time.Time // this observation round began then (zero: no round yet)
	roundAck  int       // packets acknowledged in this round
	roundMark int       // packets newly marked in this round
}

const (
	cubicC         = 0.4 // RFC 9438's C, in packets per second cubed
	cubicBeta      = 0.7 // the multiplicative decrease on loss
	initialPackets = 10
	minPackets     = 2
	// markGain is DCTCP's g: the weight of one round's marked fraction in alpha (RFC 8257
	// suggests 1/16), so alpha follows a change in marking over about 16 round trips and
	// one unusual round moves it little.
	markGain = 1.0 / 16
)

func newCubic(mss int) cubic {
	return cubic{mss: float64(mss), cwnd: initialPackets * float64(mss), ssthresh: math.Inf(1), alpha: -1}
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

// marked notes that an acknowledgement reported packets newly marked, before its packets
// grow the window (acked) and are counted (ackedRound). In slow start the window stops
// growing at once: it doubles every round trip, and the queue that marked would otherwise get
// one more doubling before the round ends and the window answers.
func (c *cubic) marked() {
	if c.cwnd < c.ssthresh {
		c.ssthresh = c.cwnd
	}
}

// ackedRound counts an acknowledgement of n packets, marked of them newly reported marked,
// the newest sent at newest. The acknowledgement of the first packet sent after the
// observation round began ends that round and opens the next, which it counts in: alpha
// takes the ended round's marked fraction, and a round that saw marks shrinks the window once,
// by alpha/2.
func (c *cubic) ackedRound(n, marked int, newest, now time.Time) {
	if c.roundAt.IsZero() {
		c.roundAt = now
	} else if newest.After(c.roundAt) {
		c.endRound(now)
	}
	c.roundAck += n
	c.roundMark += marked
}

// endRound ends an observation round and starts the next at now.
func (c *cubic) endRound(now time.Time) {
	began, acked, marked := c.roundAt, c.roundAck, c.roundMark
	c.roundAt, c.roundAck, c.roundMark = now, 0, 0
	// More marks than packets acknowledged in a round is possible (a count can report marks
	// on packets whose acknowledgement came earlier and was lost): the fraction stops at 1.
	f := 1.0
	if marked < acked {
		f = float64(marked) / float64(acked)
	}
	switch {
	case c.alpha >= 0:
		c.alpha += markGain * (f - c.alpha)
	case marked > 0:
		// The first round with marks sets alpha to its own fraction. RFC 8257 starts alpha
		// at 1, so that the first marks halve the window as a loss would; here that would
		// make a reader's first pause, a few packets of thousands, cost half the window of
		// a long fast path, which then takes seconds to regrow. The round's fraction is
		// what the queue said: near 1 when the window overshot far (slow start into a
		// slow reader), so the cut is then about half all the same.
		c.alpha = f
	default:
		return // no marks yet: nothing to average
	}
	if marked == 0 || c.recovery.After(began) {
		return // no marks, or a loss already shrank the window in this round
	}
	c.wMax = c.cwnd
	c.cwnd = max(c.cwnd*(1-c.alpha/2), minPackets*c.mss)
	c.ssthresh = c.cwnd
	// CUBIC starts a new epoch from here: the window grows back towards wMax, the window at
	// which the queue began to mark, slowing near it, then probes beyond (RFC 9438, 4.2).
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
