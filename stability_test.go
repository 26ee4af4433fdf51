// Stability: traffic moves only for a real fault. A peer that stops and resumes, every path at
// once, moves nothing and kills nothing; a path that merely slows is left once and not
// bounced; a move for a stall that proves spurious is counted and undone.

package rendr_test

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/status"
)

// stSteadyFlows opens flows flows on lb, each moving 16 KiB every 100ms both ways (as the
// applications of a busy host do, well within the paths' capacity) for the given time, and
// returns the streams to check once every path is up and they have run for a second.
func stSteadyFlows(lb *testkit.MemLab, flows int, d time.Duration) []*stStream {
	var out []*stStream
	n := int64(d/(100*time.Millisecond)) * (16 << 10)
	for i := range flows {
		dc, lc := lb.Open()
		lb.T.Cleanup(func() { dc.Close(); lc.Close() })
		out = append(out, stSendPaced(dc, lc, n, uint64(2*i), 16<<10, 100*time.Millisecond),
			stSendPaced(lc, dc, n, uint64(2*i+1), 16<<10, 100*time.Millisecond))
	}
	lb.MustWait("all paths up", 10*time.Second, lb.AllUp)
	time.Sleep(time.Second)
	return out
}

// onlyFirstMoves fails the test when a side's session moved traffic for any cause but the
// first choice of a path, or counted a spurious stall.
func onlyFirstMoves(t *testing.T, side string, st status.Session) {
	t.Helper()
	if st.Migrations != st.Moves[status.CauseFirst] || st.Spurious != 0 {
		t.Errorf("%s: %d migrations, %v by cause, %d spurious; want only the first choice: %s",
			side, st.Migrations, st.Moves, st.Spurious, testkit.Describe(st))
	}
}

// TestSynctestPausedPeerMovesNothing: every link of the session holds everything for 200ms
// and then delivers it at once, ten times, then for 700ms (past the paths' 400ms silence
// deadline) three times, half a second apart, while twenty flows move data both ways: to
// each side, the peer stopped and resumed. Nothing moves and no path dies, on either side,
// and every byte arrives. (The busy path's probes span most pauses and the idle one's few:
// a policy that compared smoothed round trips would leave the busy path.)
func TestSynctestPausedPeerMovesNothing(t *testing.T) {
	t.Parallel() // virtual time: its verdict owes nothing to what runs beside it
	synctest.Test(t, func(t *testing.T) {
		lb := stTwoLinks(t)
		streams := stSteadyFlows(lb, 20, 25*time.Second)
		pause := func(d time.Duration) {
			until := time.Now().Add(d)
			for _, p := range lb.Paths {
				p.Live().Hold(until)
			}
			time.Sleep(d + 500*time.Millisecond)
		}
		for range 10 {
			pause(200 * time.Millisecond)
		}
		for range 3 {
			pause(700 * time.Millisecond)
		}
		for i, s := range streams {
			if s.read.Load() >= s.n {
				t.Fatalf("stream %d ended during the pauses: make the flows longer", i)
			}
		}
		for i, s := range streams {
			s.check(t, fmt.Sprint("stream ", i), time.Minute)
		}
		t.Logf("after 10 pauses of 200ms and 3 of 700ms: dialer %s", testkit.Describe(lb.Status()))
		onlyFirstMoves(t, "dialer", lb.Status())
		for _, st := range lb.LN.Sessions() {
			onlyFirstMoves(t, "listener", st)
		}
		for name, p := range lb.Paths {
			if d := p.Dials(); d != 1 {
				t.Errorf("path %s dialed %d carriers, want 1: a pause killed it", name, d)
			}
		}
	})
}

// TestSynctestSlowPathLeftOnce: the active path's round trip jumps from about 4ms to 150ms
// (a queue filling) while the other stays fast. Traffic leaves it at most once, and does not
// come back while the difference lasts.
func TestSynctestSlowPathLeftOnce(t *testing.T) {
	t.Parallel() // virtual time: its verdict owes nothing to what runs beside it
	synctest.Test(t, func(t *testing.T) {
		lb := stTwoLinks(t)
		streams := stSteadyFlows(lb, 10, 15*time.Second)
		slow := lb.Active()
		fast := map[string]string{"a": "b", "b": "a"}[slow]
		before := lb.Status().Migrations
		jumped := stGoodLink
		jumped.Delay = 75 * time.Millisecond
		lb.Paths[slow].SetShape(jumped, jumped)
		time.Sleep(12 * time.Second)
		st := lb.Status()
		t.Logf("%d moves after the round trip of %s went to 150ms: %s", st.Migrations-before, slow, testkit.Describe(st))
		if moves := st.Migrations - before; moves > 1 || lb.Active() != fast && moves == 1 {
			t.Errorf("after the %s path slowed: %d moves, active %s; want at most one, to %s: %s",
				slow, moves, lb.Active(), fast, testkit.Describe(st))
		}
		for i, s := range streams {
			s.check(t, fmt.Sprint("stream ", i), time.Minute)
		}
		if d := lb.Paths[slow].Dials(); d != 1 {
			t.Errorf("the slowed path was declared dead and dialed again (%d carriers)", d)
		}
	})
}

// TestSynctestSpuriousStallUndone: the primary holds everything for 120ms. The stall check
// moves traffic to the backup, whose round trip is 60ms, once the backup has answered; the
// primary then answers the probe it had outstanding well before the backup could have carried
// a round trip. The move is counted spurious, on the session and the path, and undone:
// traffic is back on the primary, and every byte arrives.
func TestSynctestSpuriousStallUndone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		far := stGoodLink
		far.Delay = 30 * time.Millisecond
		lb := testkit.NewMemLab(t, rendr.Options{},
			testkit.LinkSpec{Name: "primary", AB: stGoodLink, BA: stGoodLink},
			testkit.LinkSpec{Name: "backup", AB: far, BA: far, Opts: []rendr.PathOption{rendr.Backup()}})
		streams := stSteadyFlows(lb, 10, 5*time.Second)
		lb.MustWait("primary active", 5*time.Second, func() bool { return lb.Active() == "primary" })
		lb.Paths["primary"].Live().Hold(time.Now().Add(120 * time.Millisecond))
		lb.MustWait("the stall undone", 10*time.Second, func() bool {
			return lb.Status().Undone > 0 && lb.Active() == "primary"
		})
		st := lb.Status()
		t.Logf("primary held 120ms, backup 60ms round trip: %s", testkit.Describe(st))
		p := testkit.PathStatus(st, "primary")
		if st.Spurious < 1 || p.Spurious < 1 || p.Undone < 1 || st.Moves[status.CauseStall] < 1 || st.Moves[status.CauseUndo] < 1 {
			t.Errorf("primary spurious %d undone %d: %s", p.Spurious, p.Undone, testkit.Describe(st))
		}
		for i, s := range streams {
			s.check(t, fmt.Sprint("stream ", i), time.Minute)
		}
		if d := lb.Paths["primary"].Dials(); d != 1 {
			t.Errorf("the primary was declared dead and dialed again (%d carriers)", d)
		}
	})
}

// TestSynctestSpuriousDeathCounted: a path that holds everything for 3 s, while the other is
// heard, is declared dead of silence; its next carrier comes up at once, well within the
// deadline the dead one had, so the death is counted spurious (the path was slow, not dead).
// A path cut for 2 s, whose carriers cannot come back meanwhile, is not counted.
func TestSynctestSpuriousDeathCounted(t *testing.T) {
	t.Parallel() // virtual time: its verdict owes nothing to what runs beside it
	synctest.Test(t, func(t *testing.T) {
		lb := stTwoLinks(t)
		streams := stSteadyFlows(lb, 4, 12*time.Second)
		held := lb.Active()
		lb.Paths[held].Live().Hold(time.Now().Add(3 * time.Second))
		lb.MustWait("the held path dialed again and up", 10*time.Second, func() bool {
			return lb.Paths[held].Dials() == 2 && lb.PathStatus(held).State == status.Up
		})
		if st := lb.Status(); st.Spurious != 1 || lb.PathStatus(held).Spurious != 1 {
			t.Errorf("held path: session spurious %d, path %d; want 1 and 1: %s", st.Spurious, lb.PathStatus(held).Spurious, testkit.Describe(st))
		}
		cut := lb.Active()
		dials := lb.Paths[cut].Dials()
		lb.Paths[cut].SetCut(true)
		lb.Paths[cut].Live().Blackhole(true)
		time.Sleep(2 * time.Second)
		lb.Paths[cut].SetCut(false)
		lb.MustWait("the cut path back", 10*time.Second, func() bool {
			return lb.Paths[cut].Dials() > dials && lb.PathStatus(cut).State == status.Up
		})
		if st := lb.Status(); st.Spurious != 1 {
			t.Errorf("after a cut path came back: session spurious %d, want still 1: %s", st.Spurious, testkit.Describe(st))
		}
		for i, s := range streams {
			s.check(t, fmt.Sprint("stream ", i), time.Minute)
		}
	})
}

// TestSynctestBusyPathKept: two equal links of 4 MiB/s with a 4ms round trip, and ten flows
// moving 1.6 MiB/s each way in bursts of 160 KiB every 100ms: the active link's queue holds up
// to 40ms of data most of the time, so its probes often wait behind it, while the idle link's
// never do. Traffic stays on the path it started on: the queue would follow it to the other.
func TestSynctestBusyPathKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		busy := stGoodLink
		busy.Rate = 4 << 20
		lb := testkit.NewMemLab(t, rendr.Options{},
			testkit.LinkSpec{Name: "a", AB: busy, BA: busy},
			testkit.LinkSpec{Name: "b", AB: busy, BA: busy})
		streams := stSteadyFlows(lb, 10, 12*time.Second)
		time.Sleep(10 * time.Second)
		st := lb.Status()
		t.Logf("after 10s of 1.6 MiB/s each way on one of two 4 MiB/s paths: %s", testkit.Describe(st))
		onlyFirstMoves(t, "dialer", st)
		for i, s := range streams {
			s.check(t, fmt.Sprint("stream ", i), time.Minute)
		}
	})
}
