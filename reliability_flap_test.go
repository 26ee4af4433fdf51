// Reliability matrix row 2: a path that blackholes and recovers again and again.

package rendr_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/internal/testlink"
)

// Row 2 of the reliability matrix: one path of two blackholes for 5 s and recovers for 2 s,
// five times over, while a flow carries a paced stream both ways. Under a Selector and under a
// Bond, every byte must arrive exactly once, in order, with no EOF before the writer's
// half-close and no reset. Virtual time: the 35 s of flapping take a few seconds of wall time.
func TestReliabilityFlappingPath(t *testing.T) {
	const (
		holeFor, upFor = 5 * time.Second, 2 * time.Second
		cycles         = 5
	)
	link := testlink.Config{Delay: 5 * time.Millisecond, Jitter: time.Millisecond, Rate: 8 << 20, Buffer: 256 << 10, Seed: 21}
	for _, g := range []struct {
		name   string
		root   func([]*rendr.Target) *rendr.Target
		steady []rendr.PathOption
	}{
		// The steady path is the Selector's backup, so traffic goes back to the flapping path
		// each time it recovers and every blackhole hits the path carrying the flow.
		{"selector", rlSelector, []rendr.PathOption{rendr.Backup()}},
		{"bond", rlBond, nil},
	} {
		t.Run(g.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				lb := rlNewLab(t, rendr.Options{HandshakeTimeout: time.Second, RecoverDwell: 200 * time.Millisecond}, g.root,
					rlSpec{name: "flaps", ab: link, ba: link},
					rlSpec{name: "steady", ab: link, ba: link, opts: g.steady})
				dc, lc := lb.open()
				defer dc.Close()
				defer lc.Close()
				lb.mustWait("both paths up", 10*time.Second, lb.allUp)
				// 16 KiB at most every 50 ms each way: about 160 kB/s, well within either path
				// alone, so the flow never waits for credit the outage holds back.
				up := rlStartFlow(dc, lc, 16<<10, 50*time.Millisecond, 1)
				down := rlStartFlow(lc, dc, 16<<10, 50*time.Millisecond, 2)
				p := lb.paths["flaps"]
				for range cycles {
					time.Sleep(upFor)
					p.hole(true)
					time.Sleep(holeFor)
					p.hole(false)
				}
				time.Sleep(upFor)
				up.finish(t, "dialer to listener", time.Minute)
				down.finish(t, "listener to dialer", time.Minute)
				st := lb.d.Status()
				t.Logf("%s: %d and %d bytes moved; longest gap %v up, %v down; %d migrations; carriers dialed: flaps %d, steady %d",
					g.name, up.wcount, down.wcount, up.gap(), down.gap(), st.Migrations, p.dials(), lb.paths["steady"].dials())
				// Each blackhole must be noticed: the path is given up and dialed again.
				if p.dials() < cycles+1 {
					t.Errorf("the flapping path was dialed %d times over %d blackholes, want at least %d (%s)", p.dials(), cycles, cycles+1, testkit.Describe(st))
				}
				// Under the Selector each blackhole moves the flow off the path and each
				// recovery moves it back.
				if g.steady != nil && st.Migrations < 2*cycles {
					t.Errorf("%d migrations over %d blackholes, want at least %d", st.Migrations, cycles, 2*cycles)
				}
				if n := lb.paths["steady"].dials(); n != 1 {
					t.Errorf("the steady path was dialed %d times, want 1", n)
				}
			})
		})
	}
}
