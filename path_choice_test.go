// Path choice: a Selector picks the better path and priority tiers, a Race keeps latency
// flat and loses nothing, a Bond adds its paths up, and nested graphs compose.

package rendr_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/internal/testlink"
	"github.com/rendr-go/rendr/status"
)

// stLatency writes n chunks, one every interval, each stamped with its send time and sequence
// number, and returns the one-way delay of each as the reader saw it. A chunk lost, repeated
// or out of order fails the test.
func stLatency(t *testing.T, w, r net.Conn, n int, every time.Duration) []time.Duration {
	t.Helper()
	const size = 512
	defer stPaced(w, n, size, every)()
	delays := make([]time.Duration, 0, n)
	b := make([]byte, size)
	r.SetReadDeadline(time.Now().Add(time.Duration(n)*every + time.Minute))
	for i := range n {
		if _, err := io.ReadFull(r, b); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if seq := binary.BigEndian.Uint64(b); seq != uint64(i) {
			t.Fatalf("chunk %d arrived as number %d", i, seq)
		}
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(b[8:])))
		delays = append(delays, time.Since(sent))
	}
	return delays
}

// TestSynctestRaceFlatLatency: a Race over a good path and one that loses 30% and is then
// blackholed delivers every chunk, in order, with a p99 one-way latency within 10% of the
// good path alone.
func TestSynctestRaceFlatLatency(t *testing.T) {
	t.Parallel() // virtual time: its verdict owes nothing to what runs beside it
	const chunks, every = 1500, 4 * time.Millisecond
	var alone, lossy, raced time.Duration
	synctest.Test(t, func(t *testing.T) {
		lb := testkit.NewMemLab(t, rendr.Options{}, testkit.LinkSpec{Name: "good", AB: stGoodLink, BA: stGoodLink})
		dc, lc := lb.Open()
		lb.MustWait("path up", 10*time.Second, lb.AllUp)
		alone = p99(stLatency(t, dc, lc, chunks, every))
	})
	// What the Race saves us from: the lossy path alone.
	synctest.Test(t, func(t *testing.T) {
		lb := testkit.NewMemLab(t, rendr.Options{}, testkit.LinkSpec{Name: "lossy", AB: stLossy, BA: stLossy})
		dc, lc := lb.Open()
		lb.MustWait("path up", 10*time.Second, lb.AllUp)
		lossy = p99(stLatency(t, dc, lc, chunks/3, every))
	})
	if lossy < 10*alone {
		t.Fatalf("p99 on the lossy path alone is %v, on the good one %v: the lossy path is not lossy enough to test anything", lossy, alone)
	}
	synctest.Test(t, func(t *testing.T) {
		lb := stRaceLab(t)
		dc, lc := lb.Open()
		lb.MustWait("paths up", 10*time.Second, lb.AllUp)
		go func() {
			time.Sleep(chunks * every / 2)
			lb.Paths["lossy"].Live().Blackhole(true)
		}()
		raced = p99(stLatency(t, dc, lc, chunks, every))
		if got := len(lb.Status().Paths); got != 2 {
			t.Fatalf("%d paths in status", got)
		}
	})
	t.Logf("p99 one-way latency: good path alone %v, lossy path alone %v, raced with the lossy path (later blackholed) %v", alone, lossy, raced)
	if raced > alone+alone/10 {
		t.Fatalf("p99 latency %v under Race, more than 10%% above the good path alone (%v)", raced, alone)
	}
	// The listening side races its own traffic too: the dialing side's ROUTE frame tells it
	// how the paths are used.
	var down time.Duration
	synctest.Test(t, func(t *testing.T) {
		lb := stRaceLab(t)
		dc, lc := lb.Open()
		lb.MustWait("paths up", 10*time.Second, lb.AllUp)
		lb.MustWait("the listening side racing", 10*time.Second, func() bool { return len(listenerActive(lb)) == 2 })
		go func() {
			time.Sleep(chunks * every / 2)
			lb.Paths["lossy"].Live().Blackhole(true)
		}()
		down = p99(stLatency(t, lc, dc, chunks, every))
	})
	t.Logf("p99 one-way latency, listener to dialer under Race: %v", down)
	if down > alone+alone/10 {
		t.Fatalf("p99 latency %v from the listening side under Race, more than 10%% above the good path alone (%v)", down, alone)
	}
}

// TestSynctestRaceLossless: bulk streams both ways under a Race whose second path loses 30%,
// is blackholed, and comes back: every byte arrives once, in order.
func TestSynctestRaceLossless(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := stRaceLab(t)
		dc, lc := lb.Open()
		lb.MustWait("paths up", 10*time.Second, lb.AllUp)
		up, down := stDuplex(dc, lc, 8<<20, 41)
		time.Sleep(300 * time.Millisecond)
		lb.Paths["lossy"].Live().Blackhole(true)
		time.Sleep(3 * time.Second)
		lb.Paths["lossy"].Live().Blackhole(false)
		up.check(t, "up", 2*time.Minute)
		down.check(t, "down", 2*time.Minute)
	})
}

// TestSynctestBondAddsUp: a Bond over paths of unequal rate and round trip moves one flow
// faster than its fastest path could alone, with every path carrying a share; a child killed
// mid-transfer and later restored loses nothing.
func TestSynctestBondAddsUp(t *testing.T) {
	t.Parallel() // virtual time: its verdict owes nothing to what runs beside it
	fast := testlink.Config{Delay: 5 * time.Millisecond, Rate: 4 << 20, Buffer: 256 << 10, Seed: 11}
	slow := testlink.Config{Delay: 20 * time.Millisecond, Rate: 2 << 20, Buffer: 256 << 10, Seed: 12}
	mid := testlink.Config{Delay: 10 * time.Millisecond, Rate: 3 << 20, Buffer: 256 << 10, Seed: 13}
	for _, tc := range []struct {
		name  string
		specs []testkit.LinkSpec
		kill  string
	}{
		{"2 paths", []testkit.LinkSpec{{Name: "fast", AB: fast, BA: fast}, {Name: "slow", AB: slow, BA: slow}}, "slow"},
		{"3 paths", []testkit.LinkSpec{{Name: "fast", AB: fast, BA: fast}, {Name: "slow", AB: slow, BA: slow},
			{Name: "mid", AB: mid, BA: mid}}, "fast"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				lb := testkit.NewMemLabGraph(t, rendr.Options{}, func(p map[string]*rendr.Target) *rendr.Target {
					var kids []*rendr.Target
					for _, s := range tc.specs {
						kids = append(kids, p[s.Name])
					}
					return rendr.Bond("bond", kids...)
				}, tc.specs...)
				dc, lc := lb.Open()
				lb.MustWait("paths up", 10*time.Second, lb.AllUp)
				const n = 24 << 20
				start := time.Now()
				s := stSend(dc, lc, n, 51)
				s.check(t, "bond", 5*time.Minute)
				took := time.Since(start)
				alone := time.Duration(float64(n) / float64(fast.Rate) * float64(time.Second))
				t.Logf("%d MiB in %v over the bond; %v on the fastest path alone at its line rate", n>>20, took, alone)
				if took >= alone {
					t.Fatalf("the bond took %v, no faster than the fastest path alone (%v)", took, alone)
				}
				for _, p := range lb.Status().Paths {
					if p.BytesSent < n/10 {
						t.Fatalf("path %s sent %d bytes of %d: the bond did not use it", p.Name, p.BytesSent, n)
					}
				}
				// The other way: the listening side bonds its traffic as the dialing side's
				// ROUTE frame says.
				start = time.Now()
				s = stSend(lc, dc, n, 53)
				s.check(t, "bond download", 5*time.Minute)
				if took := time.Since(start); took >= alone {
					t.Fatalf("the download took %v over the bond, no faster than the fastest path alone (%v)", took, alone)
				}
				// Again on a new flow, with one child killed mid-transfer and restored.
				dc, lc = lb.Open()
				s = stSend(dc, lc, n, 52)
				time.Sleep(500 * time.Millisecond)
				lb.Paths[tc.kill].SetCut(true)
				lb.Paths[tc.kill].Live().Kill(true)
				time.Sleep(2 * time.Second)
				lb.Paths[tc.kill].SetCut(false)
				s.check(t, "bond with a kill", 5*time.Minute)
				lb.MustWait("killed path back", 30*time.Second, lb.AllUp)
			})
		})
	}
}

// TestSynctestNestedGraph: Race(Selector(a, b), Bond(c, d)) with kills in every branch, both
// ways, SHA-exact.
func TestSynctestNestedGraph(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		specs := []testkit.LinkSpec{{Name: "a", AB: stGoodLink, BA: stGoodLink}, {Name: "b", AB: stPoorLink, BA: stPoorLink},
			{Name: "c", AB: stGoodLink, BA: stGoodLink}, {Name: "d", AB: stPoorLink, BA: stPoorLink}}
		lb := testkit.NewMemLabGraph(t, rendr.Options{}, func(p map[string]*rendr.Target) *rendr.Target {
			return rendr.Race("root", rendr.Selector("sel", p["a"], p["b"]), rendr.Bond("bond", p["c"], p["d"]))
		}, specs...)
		dc, lc := lb.Open()
		lb.MustWait("paths up", 10*time.Second, lb.AllUp)
		up, down := stDuplex(dc, lc, 8<<20, 61)
		for i, name := range []string{"a", "c", "b", "d", "a", "c"} {
			time.Sleep(400 * time.Millisecond)
			lb.Paths[name].Live().Kill(i%2 == 0)
		}
		up.check(t, "up", 2*time.Minute)
		down.check(t, "down", 2*time.Minute)
		lb.MustWait("all paths back", 30*time.Second, lb.AllUp)
	})
}

func TestSynctestSelectorPicksBetterPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := testkit.NewMemLab(t, rendr.Options{Dwell: 500 * time.Millisecond},
			testkit.LinkSpec{Name: "poor", AB: stPoorLink, BA: stPoorLink},
			testkit.LinkSpec{Name: "good", AB: stGoodLink, BA: stGoodLink})
		// The session starts with the first flow. Let both paths attach and measure their
		// round trips before traffic starts.
		dc, lc := lb.Open()
		defer dc.Close()
		defer lc.Close()
		lb.MustWait("both paths up and measured", 10*time.Second, func() bool {
			if !lb.AllUp() {
				return false
			}
			for _, p := range lb.Status().Paths {
				if p.SRTT == 0 {
					return false
				}
			}
			return true
		})
		time.Sleep(2 * time.Second) // a few idle probes each
		up, down := stDuplex(dc, lc, 8<<20, 10)
		up.check(t, "up", time.Minute)
		down.check(t, "down", time.Minute)
		if a := lb.Active(); a != "good" {
			t.Fatalf("active path %q, want good; %s", a, testkit.Describe(lb.Status()))
		}
		good, poor := lb.PathStatus("good"), lb.PathStatus("poor")
		if good.BytesSent < 4<<20 || poor.BytesSent > good.BytesSent {
			t.Errorf("carrier bytes sent: good %d, poor %d; the transfer should have used the good path", good.BytesSent, poor.BytesSent)
		}

		// The good path gets worse, gradually (a sudden jump would look like a stall): once it
		// has been clearly worse for Dwell, traffic moves for quality.
		dc2, lc2 := lb.Open()
		defer dc2.Close()
		defer lc2.Close()
		m := stWatch(dc2)
		stop := stTrickle(dc2, lc2) // keeps the engine asking where to send, however slow
		gp := lb.Paths["good"]
		for d := stGoodLink.Delay; d <= 100*time.Millisecond; d += 5 * time.Millisecond {
			bad := stGoodLink
			bad.Delay, bad.Jitter = d, 0
			gp.SetShape(bad, bad)
			time.Sleep(100 * time.Millisecond)
		}
		lb.MustWait("traffic moves to the better path", 20*time.Second, func() bool { return lb.Active() == "poor" })
		if err := stop(); err != nil {
			t.Fatalf("trickle: %v", err)
		}
		evs := m.All()
		if len(evs) == 0 || evs[0].From != "good" || evs[0].To != "poor" || evs[0].Cause != status.CauseQuality {
			t.Errorf("migrations %+v, want good->poor for quality first", evs)
		}
	})
}

func TestSynctestPriorityTiers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const recover = 400 * time.Millisecond
		// The backup is the faster link: tiers, not scores, keep traffic on the primary.
		slow := testlink.Config{Delay: 20 * time.Millisecond, Rate: 20 << 20, Buffer: 256 << 10}
		lb := testkit.NewMemLab(t, rendr.Options{RecoverDwell: recover, Dwell: 300 * time.Millisecond},
			testkit.LinkSpec{Name: "primary", AB: slow, BA: slow},
			testkit.LinkSpec{Name: "backup", AB: stGoodLink, BA: stGoodLink, Opts: []rendr.PathOption{rendr.Backup()}})
		dc, lc := lb.Open()
		defer dc.Close()
		defer lc.Close()
		m := stWatch(dc)
		stop := stTrickle(dc, lc)
		lb.MustWait("all paths up", 10*time.Second, lb.AllUp)
		lb.MustWait("primary active", 5*time.Second, func() bool { return lb.Active() == "primary" })
		if _, ok := testkit.WaitUntil(5*time.Second, time.Millisecond, func() bool { return lb.Active() != "primary" }); ok {
			t.Fatalf("traffic left the primary while it was up: %s", testkit.Describe(lb.Status()))
		}

		// The primary dies and cannot come back for a while: the backup carries traffic.
		seen := len(m.All())
		lb.Paths["primary"].SetCut(true)
		lb.Paths["primary"].Live().Kill(true)
		lb.MustWait("backup active", 5*time.Second, func() bool { return lb.Active() == "backup" })
		time.Sleep(2 * time.Second)
		if a := lb.Active(); a != "backup" {
			t.Fatalf("active %q while the primary is cut", a)
		}

		// The primary returns: traffic goes back to it once it has been up for RecoverDwell.
		lb.Paths["primary"].SetCut(false)
		lb.MustWait("primary up again", 10*time.Second, func() bool { return lb.PathStatus("primary").State == status.Up })
		back, ok := testkit.WaitUntil(5*time.Second, time.Millisecond, func() bool { return lb.Active() == "primary" })
		if !ok {
			t.Fatalf("traffic did not return to the primary: %s", testkit.Describe(lb.Status()))
		}
		if back < recover-2*time.Millisecond || back > recover+100*time.Millisecond {
			t.Errorf("traffic returned to the primary %v after it came up, want after RecoverDwell (%v)", back, recover)
		}
		if err := stop(); err != nil {
			t.Fatalf("trickle: %v", err)
		}
		var causes []status.Cause
		for _, ev := range m.All()[seen:] {
			causes = append(causes, ev.Cause)
		}
		want := []status.Cause{status.CauseDeath, status.CauseRecovery}
		if len(causes) != len(want) || causes[0] != want[0] || causes[1] != want[1] {
			t.Errorf("migration causes %v, want %v", causes, want)
		}
	})
}

// stTrickle keeps a little data moving on a flow, so the engine keeps asking the policy where
// to send, and checks every byte arrives.
func stTrickle(dc, lc *rendr.Conn) (stop func() error) {
	quit := make(chan struct{})
	werr := make(chan error, 1)
	rerr := make(chan error, 1)
	go func() {
		var seq byte
		for {
			select {
			case <-quit:
				werr <- dc.CloseWrite()
				return
			case <-time.After(5 * time.Millisecond):
			}
			b := make([]byte, 512)
			for i := range b {
				b[i] = seq
				seq++
			}
			if _, err := dc.Write(b); err != nil {
				werr <- err
				return
			}
		}
	}()
	go func() {
		var seq byte
		buf := make([]byte, 4096)
		for {
			n, err := lc.Read(buf)
			for _, c := range buf[:n] {
				if c != seq {
					rerr <- errors.New("trickle: byte out of sequence")
					return
				}
				seq++
			}
			if err == io.EOF {
				rerr <- nil
				return
			}
			if err != nil {
				rerr <- err
				return
			}
		}
	}()
	return func() error {
		close(quit)
		return errors.Join(<-werr, <-rerr)
	}
}
