package testkit

import (
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rendr-go/rendr/internal/relay"
	"github.com/rendr-go/rendr/status"
)

// fakePath records what a plan does to it; a kill or a block moves traffic to the next path,
// as a session's failover would.
type fakePath struct {
	s       *fakeSession
	i       int
	kills   []relay.Mode
	blocked bool
}

func (p *fakePath) Addr() string { return PathName(p.i) }
func (p *fakePath) Close() error { return nil }
func (p *fakePath) Kill(m relay.Mode) int {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	p.kills = append(p.kills, m)
	p.s.moveOff(p.i)
	return 1
}
func (p *fakePath) Block(on bool) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	p.blocked = on
	if on {
		p.s.moveOff(p.i)
	}
}

type fakeSession struct {
	mu     sync.Mutex
	active int
	id     uint32
	n      int
}

// moveOff carries traffic on the next path, under a new id.
func (s *fakeSession) moveOff(i int) {
	if s.active == i {
		s.active = (i + 1) % s.n
		s.id++
	}
}

func (s *fakeSession) status() status.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st status.Session
	for i := range s.n {
		p := status.Path{Name: PathName(i), State: status.Up, ID: uint32(i) << 16}
		if i == s.active {
			p.Active, p.ID = true, p.ID|s.id
		}
		st.Paths = append(st.Paths, p)
	}
	return st
}

func TestKillPlanDrawsEveryMode(t *testing.T) {
	modes := []relay.Mode{relay.Close, relay.Reset, relay.Stall}
	for seed := range uint64(50) {
		p := NewKillPlan(nil, nil, rand.New(rand.NewPCG(seed, 1)), 10, 1000, modes)
		if !slices.IsSorted(p.at) || len(p.at) != 10 {
			t.Fatalf("seed %d: thresholds %v", seed, p.at)
		}
		for _, at := range p.at {
			if at < 50 || at >= 900 {
				t.Fatalf("seed %d: threshold %d outside [5%%, 90%%) of 1000", seed, at)
			}
		}
		for _, m := range modes {
			if !slices.Contains(p.modes, m) {
				t.Fatalf("seed %d: modes %v lack %v", seed, p.modes, m)
			}
		}
	}
}

// Each kill lands on the path carrying traffic once progress has crossed its threshold, a
// stall is released (unblocked, then closed) before the next kill, and none is left blocked.
func TestKillPlanRun(t *testing.T) {
	s := &fakeSession{n: 3}
	var fakes []*fakePath
	var paths []PathCtl
	for i := range s.n {
		f := &fakePath{s: s, i: i}
		fakes = append(fakes, f)
		paths = append(paths, f)
	}
	modes := []relay.Mode{relay.Close, relay.Reset, relay.Stall}
	plan := NewKillPlan(s.status, paths, rand.New(rand.NewPCG(9, 9)), 6, 6000, modes)
	var progress atomic.Int64
	progress.Store(6000)
	plan.Run(&progress, make(chan struct{}))
	plan.Release()
	if plan.Hits() != 6 || len(plan.Events()) != 6 {
		t.Fatalf("%d hits, events %v; want 6", plan.Hits(), plan.Events())
	}
	// Each kill moves traffic to the next path, so the plan must follow it round.
	for k, ev := range plan.Events() {
		if !strings.HasPrefix(ev, PathName(k%3)+"@6000:") {
			t.Fatalf("kill %d: event %q, want it on %s, the path carrying traffic", k, ev, PathName(k%3))
		}
	}
	kills := 0
	for _, f := range fakes {
		if f.blocked {
			t.Fatalf("%s left blocked", PathName(f.i))
		}
		kills += len(f.kills)
	}
	if kills < 6 {
		t.Fatalf("%d kills and releases, want at least 6", kills)
	}
}

func TestKillPlanStops(t *testing.T) {
	s := &fakeSession{n: 2}
	paths := []PathCtl{&fakePath{s: s}, &fakePath{s: s, i: 1}}
	plan := NewKillPlan(s.status, paths, rand.New(rand.NewPCG(1, 1)), 3, 100, []relay.Mode{relay.Close})
	var progress atomic.Int64 // never crosses a threshold
	stop := make(chan struct{})
	close(stop)
	plan.Run(&progress, stop)
	if plan.Hits() != 0 {
		t.Fatalf("%d hits before any threshold", plan.Hits())
	}
}
