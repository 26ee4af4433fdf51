package path

import (
	"testing"
	"time"
)

// TestEstimatorRecent: the recent minimum ignores the few slow samples a busy queue or a
// pause adds (which raise srtt), follows a network that grew slower within two spans, and
// forgets a span with no sample.
func TestEstimatorRecent(t *testing.T) {
	var e estimator
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	ms := time.Millisecond
	if e.recent() != 0 {
		t.Fatalf("recent %v before any sample", e.recent())
	}
	// 4ms samples every 50ms for 3s, with a 300ms one every 700ms (a pause).
	for i := range 60 {
		rtt := 4 * ms
		if i%14 == 7 {
			rtt = 300 * ms
		}
		e.sample(at(time.Duration(i)*50*ms), rtt, false)
	}
	if e.recent() != 4*ms || e.srtt <= 8*ms {
		t.Fatalf("with pauses: recent %v srtt %v, want 4ms and srtt raised past 8ms", e.recent(), e.srtt)
	}
	// The network now takes 150ms: shown within two spans, not one sample.
	e.sample(at(3*time.Second), 150*ms, false)
	if e.recent() != 4*ms {
		t.Fatalf("one slow sample moved recent to %v", e.recent())
	}
	for d := 3*time.Second + 50*ms; d <= 5*time.Second+50*ms; d += 50 * ms {
		e.sample(at(d), 150*ms, false)
	}
	if e.recent() != 150*ms {
		t.Fatalf("two spans after the network slowed: recent %v, want 150ms", e.recent())
	}
	// An idle path probed every 1.5s: each sample stands alone once the span before had none.
	e.sample(at(8*time.Second), 20*ms, false)
	if e.recent() != 20*ms {
		t.Fatalf("after a quiet span: recent %v, want the new sample's 20ms", e.recent())
	}
	e.sample(at(9*time.Second+500*ms), 30*ms, false)
	if e.recent() != 20*ms {
		t.Fatalf("one span later: recent %v, want the least of both spans, 20ms", e.recent())
	}
}
