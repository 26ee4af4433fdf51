// Reliability matrix rows 8a and 8b: the soak of random kills and holes.

package rendr_test

import (
	"math/rand/v2"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/relay"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/internal/testlink"
)

// Row 8 of the reliability matrix: a soak. A flow runs both ways over a Bond of three paths (two
// stream carriers, one datagram carrier) while random paths are killed or blackholed for random
// times; at the end every byte written must have been read exactly once, in order (the counts
// and SHA-256 of both ends agree: nothing lost, nothing duplicated).
//
// A normal run does 20 s of virtual time over in-memory links (TestReliabilitySoak). With
// RENDR_SOAK set to a duration (RENDR_SOAK=10m), TestReliabilitySoakKernel runs for that long
// over real loopback sockets (TCP and udpflow through relays); without it, it is skipped.

// rlFault is one flap: path i, killed or blackholed, for how long.
type rlFault struct {
	path int
	kill bool
	for_ time.Duration
}

// rlNextFault draws the next fault: any path, a kill one time in three, otherwise a blackhole of
// up to 3 s; the next fault comes after up to 2 s more.
func rlNextFault(rng *rand.Rand, paths int) (f rlFault, gap time.Duration) {
	f = rlFault{path: rng.IntN(paths), kill: rng.IntN(3) == 0,
		for_: time.Duration(100+rng.IntN(2900)) * time.Millisecond}
	return f, time.Duration(200+rng.IntN(1800)) * time.Millisecond
}

func TestReliabilitySoak(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const length = 20 * time.Second
		link := testlink.Config{Delay: 5 * time.Millisecond, Jitter: time.Millisecond, Rate: 8 << 20, Buffer: 256 << 10, Seed: 81}
		plink := testlink.PacketConfig{Delay: 5 * time.Millisecond, Jitter: 2 * time.Millisecond, Loss: 0.01, Seed: 82}
		lb := rlNewLab(t, rendr.Options{HandshakeTimeout: time.Second}, rlBond,
			rlSpec{name: "s0", ab: link, ba: link},
			rlSpec{name: "p1", packet: true, pab: plink, pba: plink},
			rlSpec{name: "s2", ab: link, ba: link})
		dc, lc := lb.open()
		defer dc.Close()
		defer lc.Close()
		lb.mustWait("paths up", 10*time.Second, lb.allUp)
		up := rlStartFlow(dc, lc, 32<<10, 50*time.Millisecond, 83)
		down := rlStartFlow(lc, dc, 32<<10, 50*time.Millisecond, 84)
		rng := rand.New(rand.NewPCG(85, 86))
		end := time.Now().Add(length)
		kills, holes := 0, 0
		for time.Now().Before(end) {
			f, gap := rlNextFault(rng, len(lb.names))
			p := lb.paths[lb.names[f.path]]
			if f.kill {
				p.kill()
				kills++
			} else {
				p.hole(true)
				holes++
				time.Sleep(f.for_)
				p.hole(false)
			}
			time.Sleep(gap)
		}
		up.finish(t, "dialer to listener", time.Minute)
		down.finish(t, "listener to dialer", time.Minute)
		t.Logf("%v of virtual time: %d kills, %d blackholes; %d and %d bytes, each read exactly once; longest gap %v up, %v down; %d migrations; carriers dialed s0 %d, p1 %d, s2 %d",
			length, kills, holes, up.wcount, down.wcount, up.gap(), down.gap(), lb.d.Status().Migrations,
			lb.paths["s0"].dials(), lb.paths["p1"].dials(), lb.paths["s2"].dials())
		if kills == 0 || holes == 0 {
			t.Fatalf("%d kills and %d blackholes: the soak did not flap", kills, holes)
		}
	})
}

func TestReliabilitySoakKernel(t *testing.T) {
	s := os.Getenv("RENDR_SOAK")
	if s == "" {
		t.Skip("the long soak runs only when RENDR_SOAK is set to a duration (RENDR_SOAK=10m)")
	}
	length, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("RENDR_SOAK=%q: %v", s, err)
	}
	r := testkit.NewRig(t, testkit.RigConfig{Paths: 3, Carrier: "tcp,udpflow,tcp", Group: rendr.Bond,
		Options: rendr.Options{HandshakeTimeout: 2 * time.Second}})
	c1, c2 := r.Open()
	testkit.WaitUp(t, "dialer", c1.Status, 3, 20*time.Second)
	seed := testkit.Seed(t)
	up := rlStartFlow(c1, c2, 64<<10, 5*time.Millisecond, seed)
	down := rlStartFlow(c2, c1, 64<<10, 5*time.Millisecond, seed+1)
	rng := rand.New(rand.NewPCG(seed, 87))
	end := time.Now().Add(length)
	kills, holes := 0, 0
	for time.Now().Before(end) {
		f, gap := rlNextFault(rng, len(r.Relays))
		rl := r.Relays[f.path]
		if f.kill {
			rl.Kill([]relay.Mode{relay.Close, relay.Reset}[rng.IntN(2)])
			kills++
		} else {
			rl.Block(true)
			holes++
			time.Sleep(f.for_)
			rl.Block(false)
			// Carriers stalled by the block stay stalled: end them, as a recovered link
			// whose connections timed out would.
			rl.Kill(relay.Reset)
		}
		time.Sleep(gap)
		select {
		case <-up.done:
			t.Fatalf("flow ended during the soak: write %v, read %v", up.werr, up.rerr)
		case <-down.done:
			t.Fatalf("flow ended during the soak: write %v, read %v", down.werr, down.rerr)
		default:
		}
	}
	up.finish(t, "dialer to listener", time.Minute)
	down.finish(t, "listener to dialer", time.Minute)
	t.Logf("%v: %d kills, %d blackholes; %d and %d bytes, each read exactly once; longest gap %v up, %v down; %d migrations",
		length, kills, holes, up.wcount, down.wcount, up.gap(), down.gap(), r.Mig.Moves())
}
