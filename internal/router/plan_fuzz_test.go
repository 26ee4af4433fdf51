package router

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/rendr-go/rendr/internal/flow"
	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/status"
)

// fake is a path for the router's tests: what the Router asks, set by the test.
type fake struct {
	id      uint32
	name    string
	tier    int
	joined  bool
	q       Quality
	silence time.Duration
	one     flow.Route
	rs      Standing
	// heard is when the fake last received; probes counts ProbeNow calls, and probeAt is
	// its outstanding probe (zero: none); answeredSent and answeredAt are Answered.
	heard, probeAt           time.Time
	probes                   int
	answeredSent, answeredAt time.Time
	clock                    *time.Time // the rig's virtual time, once attached
	unread                   bool       // bytes wait unread in its socket
	delivered                time.Time  // when its carrier last took new bytes
	deliveredAll             bool       // its carrier took all it was given
}

// answer has the fake answer its outstanding probe (one sent 1ms before, when none is) at
// at, after rtt, and hear the peer then.
func (f *fake) answer(at time.Time, rtt time.Duration) {
	f.answeredSent, f.answeredAt, f.heard, f.probeAt = at.Add(-rtt), at, at, time.Time{}
}

func newFake(id uint32, name string, st status.PathState) *fake {
	f := &fake{id: id, name: name, joined: true, rs: Standing{State: st}}
	f.one = flow.Route{Mode: flow.ModeLink}
	return f
}

func (f *fake) ID() uint32                   { return f.id }
func (f *fake) Name() string                 { return f.name }
func (f *fake) Tier() int                    { return f.tier }
func (f *fake) Joined() bool                 { return f.joined }
func (f *fake) Quality() Quality             { return f.q }
func (f *fake) Silence() time.Duration       { return f.silence }
func (f *fake) Heard() time.Time             { return f.heard }
func (f *fake) Unread() bool                 { return f.unread }
func (f *fake) Delivered() (time.Time, bool) { return f.delivered, f.deliveredAll }
func (f *fake) ProbeNow() time.Time {
	f.probes++
	if f.probeAt.IsZero() {
		f.probeAt = time.Now()
		if f.clock != nil {
			f.probeAt = *f.clock
		}
	}
	return f.probeAt
}
func (f *fake) Answered() (time.Time, time.Time) { return f.answeredSent, f.answeredAt }
func (f *fake) Alone() *flow.Route               { return &f.one }
func (f *fake) Standing() *Standing              { return &f.rs }

// routeLeaves counts each leaf of a route (by the route of its path alone), and the route's
// depth.
func routeLeaves(rt *flow.Route, seen map[*flow.Route]int, depth int) int {
	if rt == nil {
		return depth
	}
	if rt.Mode == flow.ModeLink {
		seen[rt]++
		return depth
	}
	deepest := depth
	for _, k := range rt.Kids {
		deepest = max(deepest, routeLeaves(k, seen, depth+1))
	}
	return deepest
}

// FuzzRoutePlan feeds ROUTE plans, as an authenticated peer may send any, to the listening
// side's use of them: whatever the plan names, each path carries a record at most once,
// the route is no deeper than the plan's bound, and resolving it costs bounded memory.
func FuzzRoutePlan(f *testing.F) {
	leaf := func(n string) wire.RouteNode { return wire.RouteNode{Kind: wire.RouteLeaf, Name: n} }
	race := func(k ...wire.RouteNode) wire.RouteNode { return wire.RouteNode{Kind: wire.RouteRace, Kids: k} }
	bond := func(k ...wire.RouteNode) wire.RouteNode { return wire.RouteNode{Kind: wire.RouteBond, Kids: k} }
	same := make([]wire.RouteNode, 16)
	for i := range same {
		same[i] = leaf("p0")
	}
	for _, n := range []wire.RouteNode{
		leaf("p0"), race(leaf("p0"), leaf("p1")), bond(leaf("p1"), race(leaf("p2"), leaf("p3"))),
		race(same...), bond(race(same[:4]...), race(same[:4]...)), race(leaf("gone"), leaf("p3")),
	} {
		f.Add(wire.AppendRoute(nil, 1, n)[2:]) // the plan: after the type and the Seq varint
	}
	var ms runtime.MemStats
	f.Fuzz(func(t *testing.T, b []byte) {
		plan, err := wire.DecodeRoute(b)
		if err != nil {
			return
		}
		r := New(Config{})
		byRoute := map[*flow.Route]*fake{}
		for i := range 6 {
			f := newFake(uint32(i+1), fmt.Sprintf("p%d", i%4), status.Up)
			if i == 5 {
				f.rs.State = status.Down
			}
			r.paths[f.id] = f
			byRoute[&f.one] = f
		}
		runtime.ReadMemStats(&ms)
		before := ms.TotalAlloc
		rt, paths := r.planRouteLocked(plan, nil)
		runtime.ReadMemStats(&ms)
		if grew := ms.TotalAlloc - before; grew > 64<<10 {
			t.Fatalf("resolving a plan allocated %d bytes", grew)
		}
		seen := map[*flow.Route]int{}
		if d := routeLeaves(rt, seen, 1); d > wire.MaxRouteDepth {
			t.Fatalf("route %d deep", d)
		}
		for leaf, n := range seen {
			f := byRoute[leaf]
			if n > 1 {
				t.Fatalf("path %v carries each record %d times", f.name, n)
			}
			if f.rs.State != status.Up {
				t.Fatal("the route uses a path that is down")
			}
		}
		if len(paths) != len(seen) {
			t.Fatalf("%d paths reported, %d in the route", len(paths), len(seen))
		}
	})
}
