package router

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/policy"
	"github.com/rendr-go/rendr/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rig is a Router over fake paths, with the lock a session would hold.
type rig struct {
	t     *testing.T
	mu    sync.Mutex
	r     *Router
	leaf  map[*policy.Node]*fake
	now   time.Time
	moves []status.Migration
	plans [][]byte
	// states lists what OnState was told, "path state why" (under mu).
	states []string
}

func newRig(t *testing.T, dialer bool) *rig {
	g := &rig{t: t, leaf: map[*policy.Node]*fake{}, now: time.Unix(1000, 0)}
	g.r = New(Config{Dialer: dialer, Lock: &g.mu, Log: discard(),
		OnState: func(p Path, why string) {
			g.states = append(g.states, p.Name()+" "+p.Standing().State.String()+" "+why)
		},
		Leaf: func(n *policy.Node) Path {
			if f := g.leaf[n]; f != nil {
				return f
			}
			return nil
		}})
	return g
}

func (g *rig) attach(f *fake) {
	f.clock = &g.now
	g.mu.Lock()
	g.r.AttachLocked(f, g.now)
	g.mu.Unlock()
}

// route asks for the route after d more of virtual time, and returns the names of the paths
// it uses.
func (g *rig) route(d time.Duration) []string {
	g.t.Helper()
	g.now = g.now.Add(d)
	g.mu.Lock()
	_, frame, ev := g.r.RouteLocked(g.now)
	active := g.r.ActiveLocked()
	g.mu.Unlock()
	if ev != nil {
		g.moves = append(g.moves, *ev)
	}
	if frame != nil {
		g.plans = append(g.plans, frame)
	}
	var names []string
	for _, p := range active {
		names = append(names, p.Name())
	}
	return names
}

func (g *rig) lastMove() status.Migration {
	g.t.Helper()
	if len(g.moves) == 0 {
		g.t.Fatal("no migration")
	}
	return g.moves[len(g.moves)-1]
}

func healthy(f *fake) *fake {
	f.q = Quality{SRTT: 10 * time.Millisecond, RTTVar: time.Millisecond, Recent: 9 * time.Millisecond, Samples: 5}
	return f
}

// selector routes the rig with a Selector over two healthy fake paths, the second a tier
// below when backupTier, and returns them (not yet attached).
func (g *rig) selector(first, second string, backupTier bool) (*fake, *fake) {
	n1 := &policy.Node{Kind: policy.KindPath, Name: first}
	n2 := &policy.Node{Kind: policy.KindPath, Name: second}
	if backupTier {
		n2.Tier = 1
	}
	sel := &policy.Node{Kind: policy.KindSelector, Name: "sel", Children: []*policy.Node{n1, n2}}
	sel.Init()
	a, b := healthy(newFake(1, first, status.Connecting)), healthy(newFake(2, second, status.Connecting))
	g.leaf[n1], g.leaf[n2] = a, b
	g.mu.Lock()
	g.r.SetGraphLocked(sel, false)
	g.mu.Unlock()
	return a, b
}

// TestSelectorFailsOverAndBack: a Selector's primary carries traffic; when it is detached the
// backup takes over (death), and the primary is taken up again once it is back and past the
// policy's dwell.
func TestSelectorFailsOverAndBack(t *testing.T) {
	g := newRig(t, true)
	a, b := g.selector("primary", "backup", true)
	g.attach(a)
	g.attach(b)
	if got := g.route(0); len(got) != 1 || got[0] != "primary" {
		t.Fatalf("route %v, want the primary", got)
	}
	if m := g.lastMove(); m.Cause != status.CauseFirst || m.To != "primary" {
		t.Fatalf("first move %+v", m)
	}
	if len(g.plans) != 1 {
		t.Fatalf("%d ROUTE frames for the first route, want 1", len(g.plans))
	}
	g.route(time.Second)
	if len(g.moves) != 1 || len(g.plans) != 1 {
		t.Fatalf("an unchanged route made %d moves and %d ROUTE frames", len(g.moves), len(g.plans))
	}

	g.mu.Lock()
	was, left := g.r.DetachLocked(a)
	g.mu.Unlock()
	if !was || left != 1 || a.rs.State != status.Down {
		t.Fatalf("detach: was %v, %d left, state %v", was, left, a.rs.State)
	}
	if got := g.route(0); len(got) != 1 || got[0] != "backup" {
		t.Fatalf("route %v after the primary died, want the backup", got)
	}
	if m := g.lastMove(); m.Cause != status.CauseDeath || m.From != "primary" || m.To != "backup" {
		t.Fatalf("failover %+v", m)
	}
	if len(g.plans) != 2 {
		t.Fatalf("%d ROUTE frames, want a second one for the new plan", len(g.plans))
	}
	g.attach(a)
	back := false
	for range 200 { // 20 s of virtual time: past any recovery dwell
		if got := g.route(100 * time.Millisecond); got[0] == "primary" {
			back = true
			break
		}
	}
	if !back {
		t.Fatal("the primary was not taken up again")
	}
}

// TestListenerFollowsPeer: the listening side sends where the peer sends; when that path
// goes, on the best path left; and a plan from the peer wins over both.
func TestListenerFollowsPeer(t *testing.T) {
	g := newRig(t, false)
	a, b := healthy(newFake(1, "a", status.Connecting)), healthy(newFake(2, "b", status.Connecting))
	b.q.SRTT, b.q.Recent = 50*time.Millisecond, 49*time.Millisecond
	g.attach(a)
	g.attach(b)
	g.r.PeerSent(b)
	if got := g.route(0); got[0] != "b" || g.lastMove().Cause != status.CauseFirst {
		t.Fatalf("route %v (%+v), want the peer's path b", got, g.moves)
	}
	g.r.PeerSent(a)
	if got := g.route(0); got[0] != "a" || g.lastMove().Cause != status.CausePeer {
		t.Fatalf("route %v (%+v), want a, following the peer", got, g.lastMove())
	}
	g.mu.Lock()
	g.r.DetachLocked(a)
	g.mu.Unlock()
	if got := g.route(0); got[0] != "b" || g.lastMove().Cause != status.CauseDeath {
		t.Fatalf("route %v (%+v), want b after a died", got, g.lastMove())
	}
	c := healthy(newFake(3, "c", status.Connecting))
	g.attach(c)
	plan := wire.AppendRoute(nil, 1, wire.RouteNode{Kind: wire.RouteRace, Kids: []wire.RouteNode{
		{Kind: wire.RouteLeaf, Name: "b"}, {Kind: wire.RouteLeaf, Name: "c"}}})
	g.mu.Lock()
	err := g.r.PeerPlanLocked(1, plan[2:])
	stale := g.r.PeerPlanLocked(1, wire.AppendRoute(nil, 1, wire.RouteNode{Kind: wire.RouteLeaf, Name: "b"})[2:])
	g.mu.Unlock()
	if err != nil || stale != nil {
		t.Fatal(err, stale)
	}
	if got := g.route(0); len(got) != 2 || g.lastMove().Cause != status.CausePeer {
		t.Fatalf("route %v (%+v), want the peer's Race of b and c (a plan of the same Seq ignored)", got, g.lastMove())
	}
	g.mu.Lock()
	bad := g.r.PeerPlanLocked(2, []byte{0xff})
	g.mu.Unlock()
	if bad == nil {
		t.Fatal("a malformed plan was taken")
	}
}

// TestPeerDataSuspectsRoute: on the dialing side, the peer's data arriving on a path outside
// a one-path route, once the peer has had time to see the last move, suspects that route.
func TestPeerDataSuspectsRoute(t *testing.T) {
	g := newRig(t, true)
	a, b := g.selector("a", "b", false)
	g.attach(a)
	g.attach(b)
	g.route(0)
	if g.r.PeerData(a) {
		t.Fatal("data on the route's own path suspected it")
	}
	// The move was stamped with the rig's virtual clock, long before the wall clock's now:
	// the grace after a move is over.
	if !g.r.PeerData(b) || a.rs.State != status.Suspect {
		t.Fatalf("the peer's data on b left the route on a %v", a.rs.State)
	}
	if got := g.route(0); got[0] != "b" {
		t.Fatalf("route %v, want b", got)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestListenerGuessIsNotAMove: a listening side that must send before the peer has sent a
// flow frame guesses the best path by score; when the peer's first frames come on another
// path, following it is still the first choice, not a move. Later changes are moves.
func TestListenerGuessIsNotAMove(t *testing.T) {
	g := newRig(t, false)
	a, b := healthy(newFake(1, "a", status.Connecting)), healthy(newFake(2, "b", status.Connecting))
	b.q.Recent = 20 * time.Millisecond
	g.attach(a)
	g.attach(b)
	if got := g.route(0); got[0] != "a" || g.lastMove().Cause != status.CauseFirst {
		t.Fatalf("route %v (%+v), want the guess a", got, g.moves)
	}
	g.r.PeerSent(b)
	if got := g.route(0); got[0] != "b" || g.lastMove().Cause != status.CauseFirst {
		t.Fatalf("route %v (%+v), want b, the peer's first choice", got, g.lastMove())
	}
	g.r.PeerSent(a)
	if got := g.route(0); got[0] != "a" || g.lastMove().Cause != status.CausePeer {
		t.Fatalf("route %v (%+v), want a, following the peer", got, g.lastMove())
	}
	g.mu.Lock()
	c := g.r.CountsLocked()
	g.mu.Unlock()
	if c.Moves[status.CauseFirst] != 2 || c.Moves[status.CausePeer] != 1 {
		t.Fatalf("moves by cause %v, want 2 first and 1 peer", c.Moves)
	}
}
