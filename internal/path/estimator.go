package path

// Round-trip estimation, shared by both kinds of path.

import (
	"time"
)

// estimator tracks round-trip time the way TCP does (RFC 6298): srtt is a 1/8 moving average,
// rttvar (reported as jitter) a 1/4 moving average of the deviation. Probes answered later
// than one probe interval count toward loss, a 1/16 moving average: on a reliable carrier a
// probe is never lost outright without the path dying, so lateness is the signal we have.
//
// recent is the least round trip of the last one to two recentSpans: what the path's network
// takes, without the queue of the path's own traffic or a pause of this host or the peer.
// Those raise a few samples, and so srtt and rttvar for seconds, but leave the least of a
// span alone. The Selector compares paths by it, so a path is not left for carrying the
// traffic (a busy path's probes wait behind its data, an idle one's do not) nor for the
// hosts' pauses; a path whose network grew slower raises it within two spans.
type estimator struct {
	srtt, rttvar, minRTT time.Duration
	loss                 float64
	samples              int
	// The least sample of the span begun at spanAt, and of the span before it (zero when
	// that one had none).
	spanMin, prevMin time.Duration
	spanAt           time.Time
}

// recentSpan is the span of the recent minimum: long enough to hold a sample of an idle path,
// probed every second, short enough that a slower network shows within two.
const recentSpan = time.Second

func (e *estimator) sample(now time.Time, rtt time.Duration, late bool) {
	if rtt <= 0 {
		rtt = time.Microsecond
	}
	switch el := now.Sub(e.spanAt); {
	case e.samples == 0 || el >= 2*recentSpan:
		e.spanMin, e.prevMin, e.spanAt = rtt, 0, now
	case el >= recentSpan:
		e.spanMin, e.prevMin, e.spanAt = rtt, e.spanMin, now
	default:
		e.spanMin = min(e.spanMin, rtt)
	}
	if e.samples == 0 {
		e.srtt, e.rttvar, e.minRTT = rtt, rtt/2, rtt
	} else {
		d := e.srtt - rtt
		if d < 0 {
			d = -d
		}
		e.rttvar = (3*e.rttvar + d) / 4
		e.srtt = (7*e.srtt + rtt) / 8
		e.minRTT = min(e.minRTT, rtt)
	}
	e.samples++
	l := 0.0
	if late {
		l = 1
	}
	e.loss += (l - e.loss) / 16
}

// recent is the least round trip of the last one to two spans (zero before the first sample).
func (e *estimator) recent() time.Duration {
	if e.prevMin > 0 {
		return min(e.spanMin, e.prevMin)
	}
	return e.spanMin
}
