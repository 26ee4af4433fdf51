// Path failure: a path killed, blackholed or corrupting is noticed and left with no byte
// lost; all paths down waits for one to return or fails with ErrNoPath; a deep buffer is not
// a death.

package rendr_test

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/path"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/internal/testlink"
	"github.com/rendr-go/rendr/status"
)

func TestSynctestKillActiveRepeatedly(t *testing.T) {
	t.Parallel() // virtual time: its verdict owes nothing to what runs beside it
	synctest.Test(t, func(t *testing.T) {
		lb := testkit.NewMemLab(t, rendr.Options{},
			testkit.LinkSpec{Name: "a", AB: stGoodLink, BA: stGoodLink},
			testkit.LinkSpec{Name: "b", AB: stGoodLink, BA: stGoodLink})
		dc, lc := lb.Open()
		defer dc.Close()
		defer lc.Close()
		m := stWatch(dc)
		lb.MustWait("all paths up", 10*time.Second, lb.AllUp)
		const size, kills = 24 << 20, 6
		up, down := stDuplex(dc, lc, size, 30)
		for i := range kills {
			lb.MustWait("progress", time.Minute, func() bool { return up.read.Load() >= int64(i+1)*(size/(kills+2)) })
			lb.MustWait("all paths up before a kill", 30*time.Second, lb.AllUp)
			name, id := killActive(lb, i%2 == 1)
			lb.MustWait("traffic leaves the killed path", 5*time.Second, func() bool {
				a := lb.Active()
				return a != "" && a != name
			})
			lb.MustWait("killed path re-dialed and up", 30*time.Second, func() bool {
				p := lb.PathStatus(name)
				return p.State == status.Up && p.ID != id
			})
		}
		up.check(t, "up", 5*time.Minute)
		down.check(t, "down", 5*time.Minute)
		if got := dc.Migrations(); got < kills {
			t.Errorf("Migrations() = %d, want at least %d", got, kills)
		}
		deaths := 0
		for _, ev := range m.All() {
			if ev.Cause == status.CauseDeath {
				deaths++
			}
		}
		if deaths < kills {
			t.Errorf("%d migrations caused by death, want %d: %+v", deaths, kills, m.All())
		}
		if d := lb.Paths["a"].Dials() + lb.Paths["b"].Dials(); d < 2+kills {
			t.Errorf("%d carriers dialed, want at least %d", d, 2+kills)
		}
		lb.MustWait("all paths up at the end", 30*time.Second, lb.AllUp)
	})
}

// deadAfter blackholes the active path's live carrier and returns how long (virtual time) it
// took until the path was declared dead: it is Down or re-dialed under a new ID.
func deadAfter(lb *testkit.MemLab) (name string, took time.Duration) {
	lb.T.Helper()
	name = lb.Active()
	if name == "" {
		lb.T.Fatalf("no active path: %s", testkit.Describe(lb.Status()))
	}
	id := lb.PathStatus(name).ID
	lb.Paths[name].Live().Blackhole(true)
	took = lb.MustWait("blackholed path declared dead", 30*time.Second, func() bool {
		p := lb.PathStatus(name)
		return p.ID != id || p.State == status.Down || p.State == status.Connecting
	})
	return name, took
}

func TestSynctestBlackholeActive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb, dc, lc := stTwoGoodPaths(t)
		defer dc.Close()
		defer lc.Close()
		m := stWatch(dc)
		const size = 16 << 20
		up, down := stDuplex(dc, lc, size, 40)
		lb.MustWait("progress", time.Minute, func() bool { return up.read.Load() >= size/4 })
		name, took := deadAfter(lb)
		if took > time.Second {
			t.Errorf("silent path %s declared dead %v after the blackhole while data flows, want within 1s", name, took)
		}
		up.check(t, "up", 5*time.Minute)
		down.check(t, "down", 5*time.Minute)
		evs := m.All()
		if len(evs) == 0 || evs[0].From != name || (evs[0].Cause != status.CauseStall && evs[0].Cause != status.CauseDeath) {
			t.Errorf("migrations %+v, want one away from %s for stall or death first", evs, name)
		}

		// Idle: no data for a while, so the paths probe at the idle rate.
		lb.MustWait("all paths up again", 30*time.Second, lb.AllUp)
		time.Sleep(5 * time.Second)
		name, took = deadAfter(lb)
		if took > 3*time.Second {
			t.Errorf("idle silent path %s declared dead %v after the blackhole, want within 3s", name, took)
		}
		// The session still carries flows after all that.
		dc2, lc2 := lb.Open()
		defer dc2.Close()
		defer lc2.Close()
		up, down = stDuplex(dc2, lc2, 1<<20, 41)
		up.check(t, "up after idle blackhole", time.Minute)
		down.check(t, "down after idle blackhole", time.Minute)
	})
}

func TestSynctestCorruptActive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb, dc, lc := stTwoGoodPaths(t)
		defer dc.Close()
		defer lc.Close()
		const size = 8 << 20
		up, down := stDuplex(dc, lc, size, 50)
		lb.MustWait("progress", time.Minute, func() bool { return up.read.Load() >= size/4 })
		name := lb.Active()
		id := lb.PathStatus(name).ID
		lb.Paths[name].Live().Corrupt(3)
		lb.MustWait("corrupted path dies", 10*time.Second, func() bool { return lb.PathStatus(name).ID != id })
		up.check(t, "up", 5*time.Minute)
		down.check(t, "down", 5*time.Minute)
		if !lb.Logs.Logged(path.ErrRecord) {
			t.Errorf("no path died with a record error (path.ErrRecord); %s", testkit.Describe(lb.Status()))
		}
	})
}

func TestSynctestAllPathsDownThenBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb, dc, lc := stTwoGoodPaths(t)
		defer dc.Close()
		defer lc.Close()
		const size = 8 << 20
		up, down := stDuplex(dc, lc, size, 100)
		lb.MustWait("progress", time.Minute, func() bool { return up.read.Load() >= size/4 })
		for _, p := range lb.Paths {
			p.SetCut(true)
			p.Live().Kill(true)
		}
		lb.MustWait("no path left", 5*time.Second, func() bool { return lb.Active() == "" })
		// A long outage (below ReconnectTimeout) is no error for the flow: it just waits.
		time.Sleep(10 * time.Second)
		select {
		case <-up.done:
			t.Fatalf("transfer ended with no path: write %v, read %v", up.werr, up.rerr)
		case <-down.done:
			t.Fatalf("transfer ended with no path: write %v, read %v", down.werr, down.rerr)
		default:
		}
		for _, p := range lb.Paths {
			p.SetCut(false)
		}
		up.check(t, "up", 5*time.Minute)
		down.check(t, "down", 5*time.Minute)
	})
}

func TestSynctestNoPathTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const reconnect = 3 * time.Second
		lb := testkit.NewMemLab(t, rendr.Options{ReconnectTimeout: reconnect},
			testkit.LinkSpec{Name: "a", AB: stGoodLink, BA: stGoodLink})
		dc, lc := lb.Open()
		defer dc.Close()
		defer lc.Close()
		lb.MustWait("path up", 10*time.Second, lb.AllUp)
		errs := make(chan error, 2)
		for _, c := range []*rendr.Conn{dc, lc} {
			go func() {
				_, err := c.Read(make([]byte, 10))
				errs <- err
			}()
		}
		lb.Paths["a"].SetCut(true)
		start := time.Now()
		lb.Paths["a"].Live().Kill(false)
		for range 2 {
			select {
			case err := <-errs:
				if !errors.Is(err, rendr.ErrNoPath) {
					t.Errorf("Read with no path for ReconnectTimeout = %v, want ErrNoPath", err)
				}
			case <-time.After(2 * reconnect):
				t.Fatalf("flows still waiting %v after the last path died (ReconnectTimeout %v)", 2*reconnect, reconnect)
			}
		}
		if took := time.Since(start); took < reconnect {
			t.Errorf("flows failed %v after the last path died, before ReconnectTimeout (%v)", took, reconnect)
		}
		// The Dialer starts a new session once paths come back.
		lb.Paths["a"].SetCut(false)
		dc2, lc2 := lb.Open()
		defer dc2.Close()
		defer lc2.Close()
		stSend(dc2, lc2, 1<<20, 110).check(t, "new session", time.Minute)
	})
}

// A carrier buffer as deep as a kernel socket's on a slow uplink: under a bulk transfer the
// queue ahead of each probe grows to seconds, but the path keeps delivering, so it is not
// silent and must not be declared dead.
func TestSynctestDeepBufferPathStaysUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := testlink.Config{Delay: 20 * time.Millisecond, Rate: 2e6} // Buffer: the 4 MiB default
		lb := testkit.NewMemLab(t, rendr.Options{}, testkit.LinkSpec{Name: "uplink", AB: slow, BA: slow})
		dc, lc := lb.Open()
		defer dc.Close()
		defer lc.Close()
		stSend(dc, lc, 16<<20, 120).check(t, "transfer", 5*time.Minute)
		if n := lb.Paths["uplink"].Dials(); n != 1 {
			t.Errorf("a path that kept delivering was declared dead and re-dialed %d times: %s", n-1, testkit.Describe(lb.Status()))
		}
	})
}
