package testkit

import (
	"testing"
	"time"

	"github.com/rendr-go/rendr/internal/relay"
)

func TestRigCarrierKinds(t *testing.T) {
	cfg := RigConfig{Carrier: "tcp,quic,,udpflow"}
	want := []string{"tcp", "quic", "tcp", "udpflow", "tcp", "quic"}
	for i, w := range want {
		if got := cfg.carrier(i); got != w {
			t.Fatalf("carrier(%d) of %q = %q, want %q", i, cfg.Carrier, got, w)
		}
	}
	if got := (&RigConfig{}).carrier(3); got != "tcp" {
		t.Fatalf("default carrier %q, want tcp", got)
	}
}

// Over each carrier kind, a rig's flow moves exact bytes, its sources see the listener's
// carriers and what it wrote, and killing the active path through its relay moves the flow.
func TestRigEachCarrier(t *testing.T) {
	EachCarrier(t, func(t *testing.T, carrier string) {
		r := NewRig(t, RigConfig{Paths: 2, Carrier: carrier})
		c1, c2 := r.Open()
		if err := Both(c1, c2, 256<<10, 1, nil); err != nil {
			t.Fatal(err)
		}
		WaitUp(t, "dialer", r.D.Status, 2, 20*time.Second)
		// The reader may have had the last bytes before the listener's write of them
		// returned and was counted: wait for the count, bounded.
		var written int64
		Wait(10*time.Second, func() bool {
			written = 0
			for _, s := range r.Srcs {
				for _, c := range s.Carriers() {
					written += c.Written.Load()
				}
			}
			return written >= 256<<10
		})
		if written < 256<<10 {
			t.Fatalf("sources saw %d bytes written by the listener, want at least %d", written, 256<<10)
		}
		a := Active(r.D.Status())
		if a < 0 {
			t.Fatalf("no active path: %s", Describe(r.D.Status()))
		}
		if n := r.Relays[a].Kill(relay.Reset); n == 0 {
			t.Fatalf("killing %s ended no carrier", PathName(a))
		}
		if err := Both(c1, c2, 256<<10, 3, nil); err != nil {
			t.Fatalf("after the kill: %v (migrations %v)", err, r.Mig)
		}
		if !Wait(20*time.Second, func() bool { return r.Mig.Moves() > 0 }) {
			t.Fatalf("no migration after %s was killed: %s", PathName(a), Describe(r.D.Status()))
		}
	})
}
