package flow

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// doubtRouter is a fakeRouter that is also a Doubter, and notes when it heard each word.
type doubtRouter struct {
	fakeRouter
	mu               sync.Mutex
	doubts, verdicts []time.Time
	since            []time.Time
}

func (r *doubtRouter) Doubt(_ Link, since time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.doubts = append(r.doubts, time.Now())
	r.since = append(r.since, since)
}

func (r *doubtRouter) Stalled(l Link, since time.Time, limit time.Duration) (bool, time.Duration) {
	r.mu.Lock()
	r.verdicts = append(r.verdicts, time.Now())
	r.mu.Unlock()
	return r.fakeRouter.Stalled(l, since, limit)
}

// A Doubter hears of a stall once per stretch without progress, half way to the verdict, with
// the same start the verdict then gives. (The fake routes around at every verdict, which
// starts a new, backed-off stretch.)
func TestDoubterToldHalfWay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := &doubtRouter{}
		link := &fakeLink{id: 1}
		rt.set(link)
		e := New(Config{Dialer: true, StallFloor: 40 * time.Millisecond}, rt)
		defer e.Fail(ErrClosed)
		s, _ := e.Open()
		start := time.Now()
		s.Write([]byte("never acknowledged"))
		time.Sleep(time.Second)
		synctest.Wait()
		rt.mu.Lock()
		defer rt.mu.Unlock()
		if len(rt.verdicts) == 0 || len(rt.doubts) == 0 || len(rt.doubts) > len(rt.verdicts)+1 {
			t.Fatalf("%d doubts, %d verdicts; want one doubt before each verdict", len(rt.doubts), len(rt.verdicts))
		}
		for i, v := range rt.verdicts {
			if i < len(rt.doubts) && !rt.doubts[i].Before(v) {
				t.Fatalf("verdict %d at %v before its doubt at %v", i, v, rt.doubts[i])
			}
		}
		// The link's 10 ms round trip gives the 40 ms floor: told at 20 ms, judged at 40.
		if d, v := rt.doubts[0].Sub(start), rt.verdicts[0].Sub(start); d != 20*time.Millisecond || v != 40*time.Millisecond {
			t.Fatalf("doubt after %v, first verdict after %v; want 20ms and 40ms", d, v)
		}
		if !rt.since[0].Equal(start) {
			t.Fatalf("doubt about a silence since %v, want %v", rt.since[0], start)
		}
	})
}
