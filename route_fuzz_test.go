package rendr

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/rendr-go/rendr/flow"
	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/status"
)

// routeLinks counts each link's leaves in a route, and the route's depth.
func routeLinks(rt *flow.Route, seen map[flow.Link]int, depth int) int {
	if rt == nil {
		return depth
	}
	if rt.Mode == flow.ModeLink {
		seen[rt.Link]++
		return depth
	}
	deepest := depth
	for _, k := range rt.Kids {
		deepest = max(deepest, routeLinks(k, seen, depth+1))
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
		s := &session{}
		s.mu.links = map[uint32]*link{}
		for i := range 6 {
			l := &link{s: s, id: uint32(i + 1), name: fmt.Sprintf("p%d", i%4), state: status.Up}
			if i == 5 {
				l.state = status.Down
			}
			l.joined.Store(true)
			l.one = flow.Route{Mode: flow.ModeLink, Link: l}
			s.mu.links[l.id] = l
		}
		runtime.ReadMemStats(&ms)
		before := ms.TotalAlloc
		rt, links := s.planRouteLocked(plan, nil)
		runtime.ReadMemStats(&ms)
		if grew := ms.TotalAlloc - before; grew > 64<<10 {
			t.Fatalf("resolving a plan allocated %d bytes", grew)
		}
		seen := map[flow.Link]int{}
		if d := routeLinks(rt, seen, 1); d > wire.MaxRouteDepth {
			t.Fatalf("route %d deep", d)
		}
		for l, n := range seen {
			if n > 1 {
				t.Fatalf("path %v carries each record %d times", l.(*link).name, n)
			}
			if l.(*link).state != status.Up {
				t.Fatal("the route uses a path that is down")
			}
		}
		if len(links) != len(seen) {
			t.Fatalf("%d links reported, %d in the route", len(links), len(seen))
		}
	})
}
