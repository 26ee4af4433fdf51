package path

// Round-trip estimation, shared by both kinds of path.

import (
	"time"
)

// estimator tracks round-trip time the way TCP does (RFC 6298): srtt is a 1/8 moving average,
// rttvar (reported as jitter) a 1/4 moving average of the deviation. Probes answered later
// than one probe interval count toward loss, a 1/16 moving average: on a reliable carrier a
// probe is never lost outright without the path dying, so lateness is the signal we have.
type estimator struct {
	srtt, rttvar, minRTT time.Duration
	loss                 float64
	samples              int
}

func (e *estimator) sample(rtt time.Duration, late bool) {
	if rtt <= 0 {
		rtt = time.Microsecond
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
