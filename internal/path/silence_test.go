package path

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/testlink"
)

// judging is a handler that is also a SilenceJudge: it says whether the peer was heard
// elsewhere, and counts the questions.
type judging struct {
	*handler
	mu    sync.Mutex
	heard bool
	asked int
}

func (j *judging) HeardElsewhere(*Path, time.Time) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.asked++
	return j.heard
}

// silentPair runs a path over a link to a peer path that answers probes until the link is
// blackholed, with j as the first path's handler; it waits for the first answers. The peer
// path outlives any silence here: it hears of no other path, and its DeadCeil is long.
func silentPair(t *testing.T, j *judging) (*Path, *testlink.Link) {
	d := testlink.Config{Delay: 10 * time.Millisecond}
	a, _, l := startPair(t, Config{}, Config{DeadCeil: time.Minute}, j, &judging{handler: newHandler()}, d, d)
	time.Sleep(2 * time.Second)
	return a, l
}

// TestSilenceOnEveryPathIsNotDeath: while the judge says the peer was heard on no other path,
// a silent path is not declared dead at its deadline (the peer or this host stopped, not the
// path) but at DeadCeil; when the peer was heard elsewhere, at its deadline as before.
func TestSilenceOnEveryPathIsNotDeath(t *testing.T) {
	var cfg Config
	cfg.defaults()
	for _, heard := range []bool{false, true} {
		name := "silent-everywhere"
		if heard {
			name = "heard-elsewhere"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				j := &judging{handler: newHandler(), heard: heard}
				_, l := silentPair(t, j)
				start := time.Now()
				l.Blackhole(true)
				<-j.down
				_, cause, at := j.state()
				if !errors.Is(cause, ErrSilent) {
					t.Fatalf("cause %v, want ErrSilent", cause)
				}
				took := at.Sub(start)
				j.mu.Lock()
				asked := j.asked
				j.mu.Unlock()
				if asked == 0 {
					t.Fatal("the path died without asking the judge")
				}
				// The blackhole may come just after a probe went: up to one idle interval
				// passes before the silence starts.
				if heard && took > cfg.ProbeIdle+cfg.DeadFloor {
					t.Errorf("heard elsewhere: dead after %v, want within %v", took, cfg.ProbeIdle+cfg.DeadFloor)
				}
				if !heard && (took < cfg.DeadCeil || took > cfg.ProbeIdle+cfg.DeadCeil+cfg.DeadCeil/4) {
					t.Errorf("silent everywhere: dead after %v, want DeadCeil (%v) of silence", took, cfg.DeadCeil)
				}
			})
		})
	}
}

// TestLateProbeTimerIsNotEvidence: a probe check that runs long after it was due measured
// this process's own pause: the answer may be waiting unread. The path is not declared dead
// then; it looks again, and the answer, read meanwhile, keeps it up.
func TestLateProbeTimerIsNotEvidence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		j := &judging{handler: newHandler(), heard: true}
		a, l := silentPair(t, j)
		// The next probe's answer waits 600ms, past the 400ms deadline; the probe timer is
		// stopped, as a stopped process's would be, and its check run late by hand.
		a.mu.Lock()
		a.mu.nextPing = time.Now()
		a.armProbeLocked(time.Now(), 0)
		a.mu.Unlock()
		synctest.Wait()
		start := time.Now()
		l.Hold(start.Add(600 * time.Millisecond))
		a.mu.Lock()
		a.mu.probe.Stop()
		a.mu.Unlock()
		time.Sleep(590 * time.Millisecond)
		a.probe()
		time.Sleep(time.Second)
		if downs, cause, _ := j.state(); downs != 0 {
			t.Fatalf("declared dead (%v) by a check 190ms late, with the answer on its way", cause)
		}
		if q := a.Quality(); q.Samples < 3 {
			t.Fatalf("%d probes answered, want the held one and later ones", q.Samples)
		}
	})
}

// pausing is a handler that is also a PauseJudge: it says whether a round trip spanned a
// pause of the peer, and counts the questions.
type pausing struct {
	*handler
	spanned bool
	asked   atomic.Int32
}

func (j *pausing) Spanned(time.Time, time.Time) bool {
	j.asked.Add(1)
	return j.spanned
}

// TestPauseSpanningProbeNotSampled: a probe answered late because the peer stopped (the link
// held, as a SIGSTOP looks from it) is left out of the round-trip estimate when the judge says
// its round trip spanned a pause of the peer, and taken in when it says not. Prompt answers
// are not even asked about.
func TestPauseSpanningProbeNotSampled(t *testing.T) {
	for _, spanned := range []bool{true, false} {
		t.Run(fmt.Sprintf("spanned=%v", spanned), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				j := &pausing{handler: newHandler(), spanned: spanned}
				d := testlink.Config{Delay: 5 * time.Millisecond}
				a, _, l := startPair(t, Config{}, Config{DeadCeil: time.Minute}, j, newHandler(), d, d)
				time.Sleep(3 * time.Second) // idle probes, answered in 10ms
				before := a.Quality()
				if before.Samples < 2 || j.asked.Load() != 0 {
					t.Fatalf("%d samples, the judge asked %d times before any pause", before.Samples, j.asked.Load())
				}
				l.Hold(time.Now().Add(300 * time.Millisecond))
				a.mu.Lock()
				a.mu.nextPing = time.Now()
				a.armProbeLocked(time.Now(), 0)
				a.mu.Unlock()
				time.Sleep(500 * time.Millisecond) // before the next idle probe
				sent, at := a.Answered()
				if rtt := at.Sub(sent); rtt < 300*time.Millisecond {
					t.Fatalf("the probe across the hold took %v", rtt)
				}
				after := a.Quality()
				if j.asked.Load() != 1 {
					t.Fatalf("the judge was asked %d times, want once", j.asked.Load())
				}
				if spanned && (after.Samples != before.Samples || after.SRTT != before.SRTT) {
					t.Errorf("a pause's round trip was sampled: %d samples, srtt %v; before it %d, %v",
						after.Samples, after.SRTT, before.Samples, before.SRTT)
				}
				if !spanned && (after.Samples != before.Samples+1 || after.SRTT < before.SRTT+30*time.Millisecond) {
					t.Errorf("a late answer not across a pause was left out: %d samples, srtt %v; before it %d, %v",
						after.Samples, after.SRTT, before.Samples, before.SRTT)
				}
			})
		})
	}
}
