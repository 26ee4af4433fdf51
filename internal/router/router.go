// Package router decides where a session's traffic goes and says when that changes. It is the
// one home of migration: which paths carry traffic (the policy graph's choice on the dialing
// side; the peer's plan, or the path its traffic arrives on, on the listening side), when a
// path is suspected of a stall and routed around until it answers again, the ROUTE frame that
// tells the listening side how the dialing side uses its paths, and the migration event each
// change makes.
//
// The session owns the paths and the lock: a Router runs under the session's lock (Config.Lock)
// and holds no lock of its own. Methods whose names end in Locked expect that lock held; the
// others take it. The flow engine sends on the Route that RouteLocked returns, and moves a
// flow's unacknowledged bytes to the new route itself.
package router

import (
	"bytes"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr/internal/flow"
	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/policy"
	"github.com/rendr-go/rendr/status"
)

// Standing is a path's state as the Router sees it: Up, Suspect (routed around until it
// answers probes again) or Down. It lives in the session's path, guarded by the session's lock.
type Standing struct {
	State status.PathState
	Since time.Time
	// Spurious and Undone count this path's stall moves that proved spurious, and the moves
	// back (status.Path).
	Spurious, Undone int

	// suspectSamples is the path's probe count when it was suspected: two more answers make
	// it Up again.
	suspectSamples int
	// A stall verdict waiting for evidence (stall.go), and a death by silence (HeardElsewhere).
	stallEv, deathEv evidence
	// A suspicion for a stall, not judged yet: when, and when the probe outstanding then was
	// sent, whose answer judges it.
	stallAt, stallProbe time.Time
	undo                bool    // the stall proved spurious: the policy may go back at once
	widen               backoff // doublings of the path's stall timeout
}

// Path is one path of a session, as the Router needs it.
type Path interface {
	ID() uint32
	Name() string
	Tier() int
	// Joined is false on the listening side until a joining path has proved it belongs to
	// the session; such a path carries nothing.
	Joined() bool
	Quality() Quality
	// Silence is how long the path's outstanding probe has waited for an answer.
	Silence() time.Duration
	// Heard is when the path last received anything from the peer.
	Heard() time.Time
	// Unread reports whether bytes from the peer wait unread in the carrier's socket: heard,
	// though this host has not read them yet.
	Unread() bool
	// Delivered is about when the carrier's far end last acknowledged new bytes at the
	// transport level, and whether it has acknowledged all the path has written (zero and
	// false: unknown): the path carries, whatever the peer's process is doing.
	Delivered() (at time.Time, all bool)
	// ProbeNow sends a probe unless one is outstanding, and returns when the outstanding
	// probe was sent (zero if the path is closed).
	ProbeNow() time.Time
	// Answered is the newest probe answered: when it was sent, and when its answer came.
	Answered() (sent, at time.Time)
	// Alone is the route of this path alone, made once.
	Alone() *flow.Route
	// Standing is the path's state; the Router changes it under the session's lock.
	Standing() *Standing
}

// Quality is what the Router weighs of a path: its round trip and loss as its probes measure
// them, and how many probes it has answered.
type Quality struct {
	SRTT, RTTVar time.Duration
	Recent       time.Duration // the least round trip of the last second or two
	Loss         float64
	Samples      int
}

// Config is what a Router is made with.
type Config struct {
	Dialer bool
	// Lock is the session's lock, which guards the Router.
	Lock sync.Locker
	Log  *slog.Logger
	// Leaf returns the path serving a leaf of the policy graph, or nil while it has none
	// (dialing side; called under Lock).
	Leaf func(*policy.Node) Path
	// Waiting reports whether a leaf with no path still has its head start: a fresh
	// session's path dialing its first carrier, which the policy does not let a backup
	// overtake (dialing side; called under Lock; nil: none has).
	Waiting func(*policy.Node) bool
	// OnState, if set, is told when the Router turns a path Suspect, or Up again, and why
	// (a word or two). It is called under Lock, so it must not call the Router.
	OnState func(p Path, why string)
}

// stateLocked tells Config.OnState of p's new state.
func (r *Router) stateLocked(p Path, why string) {
	if r.c.OnState != nil {
		r.c.OnState(p, why)
	}
}

// cacheFor bounds how often the policy graph is evaluated when nothing changed: the engine
// asks for a route on every round, and quality moves slowly.
const cacheFor = 20 * time.Millisecond

// silenceFloor is the shortest wait for a probe answer that makes a path of a Race or Bond
// suspect: long enough that a loaded machine's scheduling delays do not move traffic, short
// enough that datagrams stop going into a blackhole well before the path is declared dead.
const silenceFloor = 100 * time.Millisecond

// Router decides a session's route. Make it with New.
type Router struct {
	c Config

	dirty     atomic.Bool            // paths or their states changed: evaluate again
	lastPeer  atomic.Pointer[peerOf] // listening side: the path the peer last sent flow frames on
	activeSet atomic.Pointer[[]Path] // every path of the route (never modified once stored)
	movedAt   atomic.Int64           // unix nanos of the last route change

	// Guarded by c.Lock.
	paths      map[uint32]Path // attached: routable
	graph      *policy.Node    // dialing side: the part of the policy graph that carries traffic
	controlled bool            // dialing side: the graph was changed since the last route change
	// Listening side: the route was a guess, made before the peer had ever sent a flow frame
	// or a plan (spoke); the first route the peer's word gives is still its first choice,
	// not a move.
	guess, spoke bool
	active       []Path      // paths carrying traffic now
	rt           *flow.Route // the route they form
	routeAt      time.Time
	scratch      []Path          // the paths of the route being evaluated, reused
	planSeq      uint64          // dialing side: ROUTE frames sent; listening side: the newest taken
	planSent     []byte          // dialing side: the plan of the last ROUTE frame
	planBuf      []byte          // dialing side: scratch for the plan, so an unchanged one costs nothing
	plan         *wire.RouteNode // listening side: the peer's newest plan
	moves        [status.Causes]int
	// Stall moves (stall.go): the last one, the doublings of the least time between two,
	// and how many proved spurious and were moved back.
	lastStall time.Time
	// resumed is when the peer's backlog after a pause it just resumed from may still be
	// draining (stall.go): no path's silence is judged before it.
	resumed time.Time
	// heard is when the peer was last heard on any path, and the last long gap in that
	// (stall.go): a pause of the peer's, or of this host's.
	heard            hearing
	gap              backoff
	spurious, undone int
}

type peerOf struct{ p Path }

// New makes a Router.
func New(c Config) *Router {
	return &Router{c: c, paths: map[uint32]Path{}}
}

// Changed asks for the route to be evaluated again at the engine's next round.
func (r *Router) Changed() { r.dirty.Store(true) }

// SetGraphLocked gives the dialing side the part of its policy graph that carries traffic.
// controlled says the change is the user's doing: the next migration's cause is
// CauseControl.
func (r *Router) SetGraphLocked(graph *policy.Node, controlled bool) {
	r.graph = graph
	r.controlled = r.controlled || controlled
	r.dirty.Store(true)
}

// AttachLocked makes p routable, Up.
func (r *Router) AttachLocked(p Path, now time.Time) {
	*p.Standing() = Standing{State: status.Up, Since: now}
	r.paths[p.ID()] = p
	r.dirty.Store(true)
}

// DetachLocked forgets p, now Down: was says whether it was attached, left how many paths
// are.
func (r *Router) DetachLocked(p Path) (was bool, left int) {
	if r.paths[p.ID()] == p {
		delete(r.paths, p.ID())
		was = true
	}
	st := p.Standing()
	if !st.stallAt.IsZero() {
		r.stallJudgedLocked(st, false, time.Now()) // it died with its stall probe unanswered
	}
	st.State = status.Down
	if lp := r.lastPeer.Load(); lp != nil && lp.p == p {
		r.lastPeer.CompareAndSwap(lp, nil)
	}
	r.dirty.Store(true)
	return was, len(r.paths)
}

// PathsLocked is every attached path, for the caller to read and not keep.
func (r *Router) PathsLocked() map[uint32]Path { return r.paths }

// ActiveLocked is every path carrying traffic now, for the caller to read and not keep.
func (r *Router) ActiveLocked() []Path { return r.active }

// MigrationsLocked counts the route's changes.
func (r *Router) MigrationsLocked() int {
	n := 0
	for _, m := range r.moves {
		n += m
	}
	return n
}

// Counts is what the Router counts of a session's moves.
type Counts struct {
	Moves            [status.Causes]int // by cause
	Spurious, Undone int                // stall moves that proved spurious, and moves back
}

// CountsLocked is what the Router has counted.
func (r *Router) CountsLocked() Counts {
	return Counts{Moves: r.moves, Spurious: r.spurious, Undone: r.undone}
}

// RouteLocked returns where to send now: nil when no path is usable. When the route changed
// it also returns the migration event (Session left for the caller to fill in), and on the
// dialing side, when the plan changed, the ROUTE frame to send.
func (r *Router) RouteLocked(now time.Time) (rt *flow.Route, routeFrame []byte, ev *status.Migration) {
	if r.rt != nil && !r.dirty.Load() && now.Sub(r.routeAt) < cacheFor && r.activeUpLocked() {
		return r.rt, nil, nil
	}
	r.dirty.Store(false)
	r.routeAt = now
	r.refreshSuspectsLocked(now)
	var next []Path
	var why status.Cause
	if r.c.Dialer {
		var ch *policy.Choice
		if r.graph != nil {
			ch, why, _ = r.graph.Choose(now, r.candidateOf)
		}
		if ch != nil {
			var plan wire.RouteNode
			rt, plan, next = r.routeOf(ch, r.scratch[:0])
			routeFrame = r.planChangedLocked(plan)
		}
	} else {
		// The peer's plan, when it sent one and any of its paths are here; else follow
		// the peer to the path its traffic arrives on.
		if r.plan != nil {
			rt, next = r.planRouteLocked(*r.plan, r.scratch[:0])
			why = status.CausePeer
		}
		if rt == nil {
			if p, cause := r.followLocked(); p != nil {
				rt, next, why = p.Alone(), append(r.scratch[:0], p), cause
			}
		}
	}
	r.rt = rt
	ev = r.movedLocked(next, why, now)
	if !r.c.Dialer {
		// Until the peer says where it sends, the route is the best path by score; the
		// peer may well pick another.
		r.spoke = r.spoke || r.plan != nil || r.lastPeer.Load() != nil
		r.guess = !r.spoke && (r.guess || ev != nil)
	}
	r.scratch = next[:0] // movedLocked keeps a copy when the route moved
	r.controlled = false // a graph change that moved nothing at once is not the cause of later moves
	for _, p := range r.paths {
		p.Standing().undo = false // the policy has had its chance to go back
	}
	return rt, routeFrame, ev
}

// activeUpLocked reports whether every path of the route is Up (else it is evaluated again).
func (r *Router) activeUpLocked() bool {
	for _, p := range r.active {
		if p.Standing().State != status.Up {
			return false
		}
	}
	return true
}

// candidateOf is the policy graph's view of the path serving a leaf; false when none is
// usable.
func (r *Router) candidateOf(n *policy.Node) (policy.Candidate, bool) {
	p := r.c.Leaf(n)
	if p == nil || p.Standing().State == status.Down {
		if p == nil && r.c.Waiting != nil && r.c.Waiting(n) {
			return policy.Candidate{Waiting: true}, false
		}
		return policy.Candidate{}, false
	}
	return candidate(p), true
}

func candidate(p Path) policy.Candidate {
	q := p.Quality()
	st := p.Standing()
	return policy.Candidate{ID: p.ID(), State: st.State, RTT: q.Recent, Loss: q.Loss, Samples: q.Samples, Undo: st.undo}
}

// routeOf turns a policy choice, in one walk, into the engine's route and the plan a ROUTE
// frame carries (leaves by path name), and appends its paths to paths.
func (r *Router) routeOf(ch *policy.Choice, paths []Path) (*flow.Route, wire.RouteNode, []Path) {
	if ch.Kind == policy.KindPath {
		p := r.c.Leaf(ch.Leaf)
		return p.Alone(), wire.RouteNode{Kind: wire.RouteLeaf, Name: ch.Leaf.Name}, append(paths, p)
	}
	rt := &flow.Route{Mode: flow.ModeRace}
	plan := wire.RouteNode{Kind: wire.RouteRace}
	if ch.Kind == policy.KindBond {
		rt.Mode, plan.Kind = flow.ModeBond, wire.RouteBond
	}
	for _, k := range ch.Kids {
		kr, kp, more := r.routeOf(k, paths)
		rt.Kids, plan.Kids, paths = append(rt.Kids, kr), append(plan.Kids, kp), more
	}
	return rt, plan, paths
}

// planChangedLocked returns the ROUTE frame that tells the listening side how this side uses
// its paths, when that changed since the last one: it then uses them the same way for its own
// traffic (Race and Bond in both directions). Nil when nothing changed.
func (r *Router) planChangedLocked(plan wire.RouteNode) []byte {
	r.planBuf = wire.AppendRoute(r.planBuf[:0], 0, plan)
	enc := r.planBuf[2:]
	if bytes.Equal(enc, r.planSent) {
		return nil
	}
	r.planSent = bytes.Clone(enc)
	r.planSeq++
	return append(wire.AppendVarint([]byte{byte(wire.TypeRoute)}, r.planSeq), enc...)
}

// PeerPlanLocked takes the dialing side's plan from a ROUTE frame's Seq and payload
// (listening side). Plans older than the newest taken are ignored.
func (r *Router) PeerPlanLocked(seq uint64, payload []byte) error {
	plan, err := wire.DecodeRoute(payload)
	if err != nil {
		return err
	}
	if seq > r.planSeq {
		r.planSeq, r.plan = seq, &plan
	}
	r.dirty.Store(true)
	return nil
}

// planRouteLocked is the listening side's route from the peer's plan: each leaf is the newest
// Up path of that name; a group keeps the leaves it has, and collapses when one is left.
func (r *Router) planRouteLocked(n wire.RouteNode, paths []Path) (*flow.Route, []Path) {
	if n.Kind == wire.RouteLeaf {
		var best Path
		for _, p := range r.paths {
			if p.Name() == n.Name && p.Standing().State == status.Up && p.Joined() && (best == nil || p.ID() > best.ID()) {
				best = p
			}
		}
		// A path named twice in a plan is used once: a Race of one path with itself would
		// only make this side send every record on it again and again.
		if best == nil || slices.Contains(paths, best) {
			return nil, paths
		}
		return best.Alone(), append(paths, best)
	}
	rt := &flow.Route{Mode: flow.ModeRace}
	if n.Kind == wire.RouteBond {
		rt.Mode = flow.ModeBond
	}
	for _, k := range n.Kids {
		var kr *flow.Route
		kr, paths = r.planRouteLocked(k, paths)
		if kr != nil {
			rt.Kids = append(rt.Kids, kr)
		}
	}
	switch len(rt.Kids) {
	case 0:
		return nil, paths
	case 1:
		return rt.Kids[0], paths
	}
	return rt, paths
}

// movedLocked records the paths carrying traffic now and returns the migration event when they
// changed. From and To name the first path that left and the first that joined; Active lists
// every path carrying traffic after the change.
func (r *Router) movedLocked(next []Path, why status.Cause, now time.Time) *status.Migration {
	cur := r.active
	var left, joined []Path
	for _, p := range cur {
		if !slices.Contains(next, p) {
			left = append(left, p)
		}
	}
	for _, p := range next {
		if !slices.Contains(cur, p) {
			joined = append(joined, p)
		}
	}
	if len(left) == 0 && len(joined) == 0 {
		return nil
	}
	undone := slices.IndexFunc(joined, func(p Path) bool { return p.Standing().undo })
	switch {
	case r.controlled:
		why = status.CauseControl
	case undone >= 0:
		why = status.CauseUndo
		joined[undone].Standing().Undone++
		r.undone++
	case len(cur) == 0 || r.guess:
		why = status.CauseFirst
	case len(left) > 0 && left[0].Standing().State == status.Down:
		why = status.CauseDeath
	case len(left) > 0 && left[0].Standing().State == status.Suspect:
		why = status.CauseStall
	case len(left) == 0 && why == 0:
		why = status.CauseJoin
	}
	m := &status.Migration{Time: now, Cause: why}
	if len(left) > 0 {
		m.From, m.FromID = left[0].Name(), left[0].ID()
	}
	if len(joined) > 0 {
		m.To, m.ToID = joined[0].Name(), joined[0].ID()
	}
	for _, p := range next {
		m.Active = append(m.Active, p.Name())
	}
	r.moves[why]++
	if why == status.CauseStall {
		r.lastStall = now
	}
	// next is the caller's scratch: the route keeps a copy of its own, never modified. (Its
	// address goes to activeSet: a variable of this branch, so only a move allocates.)
	kept := slices.Clone(next)
	r.active = kept
	r.activeSet.Store(&kept)
	r.movedAt.Store(now.UnixNano())
	return m
}

// followLocked is the listening side's policy: send where the peer sends (its policy chose
// that path), unless that path is not Up; then the best Up path by tier and score.
func (r *Router) followLocked() (Path, status.Cause) {
	if lp := r.lastPeer.Load(); lp != nil && lp.p.Standing().State == status.Up && r.paths[lp.p.ID()] == lp.p {
		return lp.p, status.CausePeer
	}
	var best Path
	var bestC policy.Candidate
	for _, p := range r.paths {
		st := p.Standing().State
		if st == status.Down || !p.Joined() {
			continue
		}
		c := candidate(p)
		better := best == nil ||
			(st == status.Up && best.Standing().State != status.Up) ||
			(st == best.Standing().State && (p.Tier() < best.Tier() || (p.Tier() == best.Tier() && c.Score() < bestC.Score())))
		if better {
			best, bestC = p, c
		}
	}
	if best != nil && best.Tier() > 0 && !r.spoke {
		// The peer has not said where it sends yet, and a backup may only be up first
		// because the peer's primary has a head start: wait for its word (its first route
		// comes at once with a ROUTE frame) rather than guess a metered link.
		return nil, 0
	}
	return best, status.CauseDeath
}

// PeerSent notes flow frames from the peer on p (listening side): both directions follow the
// path the peer's policy picked.
func (r *Router) PeerSent(p Path) {
	if lp := r.lastPeer.Load(); lp == nil || lp.p != p {
		r.lastPeer.Store(&peerOf{p})
		r.dirty.Store(true)
	}
}
