package rendr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr/flow"
	"github.com/rendr-go/rendr/internal/budget"
	"github.com/rendr-go/rendr/internal/handshake"
	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/path"
	"github.com/rendr-go/rendr/policy"
	"github.com/rendr-go/rendr/status"
)

// common is what Dialer and Listener configure alike.
type common struct {
	log       *slog.Logger
	onMigrate func(status.Migration)
	reconnect time.Duration
	hsTimeout time.Duration
	engine    flow.Config
	path      path.Config
	tuning    policy.Tuning
	instance  [16]byte
	key       handshake.Keypair
}

// routeCache bounds how often the policy graph is evaluated when nothing changed: the engine
// asks for a route on every round, and quality moves slowly.
const routeCache = 20 * time.Millisecond

// session is one authenticated peer session: its paths, its flow engine and its policy.
//
// Lock order: session.mu, then the engine's lock (via Stats), then a path's lock. The engine
// calls Route and Stalled without its lock held.
type session struct {
	c       *common
	id      [16]byte // fixed on the listening side; on the dialing side set by each founding attempt, guarded by mu
	peerKey PublicKey
	dialer  bool
	engine  *flow.Engine
	root    *policy.Node // dialing side: the graph that carries traffic, guarded by mu; nil on the listening side
	hold    *path.HoldBudget

	ctx         context.Context // canceled when the session ends
	cancel      context.CancelFunc
	established chan struct{} // closed once the secret is known
	done        chan struct{} // closed when the session ends
	wg          sync.WaitGroup
	onEnd       func(*session)
	// Listening side: the peer's share of the listener's memory budget, and what the
	// session itself holds of it (its paths hold their own), guarded by mu. nil: no budget.
	mem     *budget.Pool
	memBase int64

	lastPeer  atomic.Pointer[link]    // listening side: path the peer last sent flow frames on
	dirty     atomic.Bool             // path set or states changed: re-evaluate the route
	activeSet atomic.Pointer[[]*link] // every path of the route (never modified once stored)
	movedAt   atomic.Int64            // unix nanos of the last route change

	mu struct {
		sync.Mutex
		secret     [32]byte
		peerInst   [16]byte
		founding   bool
		links      map[uint32]*link // attached: routable
		pending    map[uint32]*link // started, not yet attached (a join awaiting its proof)
		nextID     uint32
		active     []*link               // paths carrying traffic now (the route's links)
		rt         *flow.Route           // the route they form
		planSeq    uint64                // dialing side: ROUTE frames sent; listening side: the newest taken
		planSent   []byte                // dialing side: the plan of the last ROUTE frame
		planBuf    []byte                // dialing side: scratch for the plan, so an unchanged one costs nothing
		scratch    []*link               // the links of the route being evaluated, reused
		plan       *wire.RouteNode       // listening side: the peer's newest plan
		full       *policy.Node          // dialing side: the whole graph (root is it, or the part Select chose)
		controlled bool                  // dialing side: the graph was changed (Dialer.Add...) since the last route change
		targets    map[string]*leafState // dialing side: every configured path, by name
		routeAt    time.Time
		migrations int
		err        error
		noPath     *time.Timer
		leaves     map[*policy.Node]*leafState
		watchers   map[*Conn]func(status.Migration)
	}
}

// leafState is the dialing side's record of a configured path between its carriers.
type leafState struct {
	target  *Target
	node    *policy.Node
	stop    chan struct{} // closed when the path is removed from the graph (Dialer.Remove)
	removed bool
	link    *link
	state   status.PathState
	since   time.Time
	// lastErr is why the path last failed: its text goes to status, the error itself into
	// a dial's error, for errors.Is.
	lastErr error
	dials   int
	cookies handshake.CookieJar // the listener's cookie for this path, when it is under load
}

// newSession makes a session; mem is the listening side's share of its memory budget for
// this peer (nil on the dialing side), which the session's flows and receive window draw on.
func newSession(c *common, id [16]byte, peer PublicKey, dialer bool, root *policy.Node, mem *budget.Pool) *session {
	s := &session{c: c, id: id, peerKey: peer, dialer: dialer, root: root, mem: mem,
		established: make(chan struct{}), done: make(chan struct{})}
	s.mu.full = root
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mu.links = make(map[uint32]*link)
	s.mu.pending = make(map[uint32]*link)
	s.mu.leaves = make(map[*policy.Node]*leafState)
	s.mu.targets = make(map[string]*leafState)
	ec := c.engine
	ec.Dialer = dialer
	ec.Budget = mem
	s.engine = flow.New(ec, s)
	// Large payloads stay in the read blocks they arrived in until the application reads
	// them, instead of being copied into the flow's buffer. What that keeps alive beyond
	// the paths' own read buffers is bounded per session, at a quarter of the most the
	// session's flows may buffer; past it, payloads are copied.
	s.hold = &path.HoldBudget{Limit: int64(s.engine.Config().MaxSessionWindow) / 4}
	s.mu.noPath = time.AfterFunc(c.reconnect, func() {
		s.fail(fmt.Errorf("%w: none attached for %v", ErrNoPath, c.reconnect))
	})
	return s
}

// establish records the session secret from the founding path's handshake.
func (s *session) establish(secret [32]byte, peerInst [16]byte) {
	s.mu.Lock()
	s.mu.secret = secret
	s.mu.peerInst = peerInst
	s.mu.Unlock()
	close(s.established)
}

func (s *session) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.err
}

// fail ends the session: flows fail with err, paths close, goroutines stop. Idempotent.
func (s *session) fail(err error) {
	s.mu.Lock()
	if s.mu.err != nil {
		s.mu.Unlock()
		return
	}
	s.mu.err = err
	s.mu.noPath.Stop()
	s.mem.Release(s.memBase)
	s.memBase = 0
	links := make([]*link, 0, len(s.mu.links)+len(s.mu.pending))
	for _, l := range s.mu.links {
		links = append(links, l)
	}
	for _, l := range s.mu.pending {
		links = append(links, l)
	}
	id := s.id
	s.mu.Unlock()
	s.c.log.Debug("rendr: session ended", "session", fmt.Sprintf("%x", id[:4]), "err", err)
	close(s.done)
	s.cancel()
	s.engine.Fail(err)
	for _, l := range links {
		l.p.Close(err)
	}
	if s.onEnd != nil {
		s.onEnd(s)
	}
}

// closeLinger bounds how long closing a session waits for bytes already written to be
// acknowledged, as a TCP close delivers what was written before its FIN.
const closeLinger = 2 * time.Second

// close ends the session locally: it lets written bytes (and FINs of closed flows) reach the
// peer for up to closeLinger while a path is up, then sends CLOSE behind them and tears down.
func (s *session) close() {
	deadline := time.Now().Add(closeLinger)
	for s.pathCount() > 0 && !s.engine.Drained() && time.Now().Before(deadline) {
		select {
		case <-time.After(5 * time.Millisecond):
		case <-s.done:
		}
	}
	s.mu.Lock()
	var r *link
	if len(s.mu.active) > 0 {
		r = s.mu.active[0]
	}
	alive := r != nil && r.state != status.Down // state is guarded by mu: a path may be dying now
	s.mu.Unlock()
	if alive {
		// Behind any data still queued on the path, so the peer reads everything first. A
		// packet path may lose it and nothing would resend it once the session is gone: it
		// goes three times, in three packets (a second CLOSE is ignored).
		copies, sent := 1, true
		if r.p.Packets() {
			copies = 3
		}
		for range copies {
			rec := path.NewRecord()
			rec.B = wire.AppendClose(rec.B, 0)
			sent = sent && r.p.Send(rec)
		}
		if sent {
			flushed := time.Now().Add(100 * time.Millisecond)
			for !r.p.Flushed() && time.Now().Before(flushed) {
				select {
				case <-time.After(2 * time.Millisecond):
				case <-r.p.Closed():
					flushed = time.Time{}
				}
			}
		}
	}
	s.fail(ErrClosed)
	s.wg.Wait()
}

// newLink hands out path ids; 0 is never used.
func (s *session) newLink(name string, tier int, ls *leafState) *link {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.nextID++
	l := &link{s: s, id: s.mu.nextID, name: name, tier: tier, ls: ls}
	l.one = flow.Route{Mode: flow.ModeLink, Link: l}
	return l
}

// track registers a started path so that the session's end closes it, attached or not. The
// caller has set l.p.
func (s *session) track(l *link) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.err != nil {
		return s.mu.err
	}
	s.mu.pending[l.id] = l
	return nil
}

// errPathGone: a path died before it could be attached.
var errPathGone = errors.New("rendr: path ended before it was attached")

// attach makes a tracked path routable.
func (s *session) attach(l *link) error {
	s.mu.Lock()
	if s.mu.err != nil {
		err := s.mu.err
		s.mu.Unlock()
		return err
	}
	if l.ls != nil && l.ls.removed {
		s.mu.Unlock()
		return errRemoved
	}
	if s.mu.pending[l.id] != l {
		// The path died between its start and now (its carrier ended as it started):
		// detach has forgotten it already, and making it Up would bring back a dead path
		// that nothing would ever take down again.
		s.mu.Unlock()
		return errPathGone
	}
	delete(s.mu.pending, l.id)
	l.state, l.since = status.Up, time.Now()
	s.mu.links[l.id] = l
	if ls := l.ls; ls != nil {
		ls.link, ls.state, ls.since = l, status.Up, l.since
	}
	s.mu.noPath.Stop()
	s.mu.Unlock()
	s.dirty.Store(true)
	s.engine.Kick()
	return nil
}

// detach forgets a dead path.
func (s *session) detach(l *link, cause error) {
	s.mu.Lock()
	delete(s.mu.pending, l.id)
	if s.mu.links[l.id] == l {
		delete(s.mu.links, l.id)
		if len(s.mu.links) == 0 && s.mu.err == nil {
			s.mu.noPath.Reset(s.c.reconnect)
		}
	}
	l.state = status.Down
	s.mem.Release(l.mem)
	l.mem = 0
	if ls := l.ls; ls != nil && ls.link == l {
		ls.link, ls.state, ls.since = nil, status.Down, time.Now()
		if cause != nil {
			ls.lastErr = cause
		}
	}
	s.mu.Unlock()
	s.lastPeer.CompareAndSwap(l, nil)
	s.dirty.Store(true)
	s.engine.Kick()
}

// Route implements flow.Router: the dialing side evaluates its target graph, the listening
// side follows the peer.
func (s *session) Route() *flow.Route {
	now := time.Now()
	s.mu.Lock()
	if rt := s.mu.rt; rt != nil && !s.dirty.Load() && now.Sub(s.mu.routeAt) < routeCache && s.activeUpLocked() {
		s.mu.Unlock()
		return rt
	}
	s.dirty.Store(false)
	s.mu.routeAt = now
	s.refreshSuspectsLocked()
	var next []*link
	var rt *flow.Route
	var why status.Cause
	var routeFrame []byte
	if s.dialer {
		ch, cause, _ := s.root.Choose(now, s.lookupLocked)
		rt, next = s.routeOfLocked(ch, s.mu.scratch[:0])
		why = cause
		routeFrame = s.planChangedLocked(ch)
	} else {
		// The peer's plan, when it sent one and any of its paths are here; else follow
		// the peer to the path its traffic arrives on.
		if s.mu.plan != nil {
			rt, next = s.planRouteLocked(*s.mu.plan, s.mu.scratch[:0])
			why = status.CausePeer
		}
		if rt == nil {
			if l, cause := s.followLocked(); l != nil {
				rt, next, why = &l.one, append(s.mu.scratch[:0], l), cause
			}
		}
	}
	s.mu.rt = rt
	ev := s.movedLocked(next, why, now)
	s.mu.scratch = next[:0] // movedLocked keeps a copy when the route moved
	s.mu.controlled = false // a graph change that moved nothing at once is not the cause of later moves
	var watchers []func(status.Migration)
	if ev != nil {
		for _, w := range s.mu.watchers {
			watchers = append(watchers, w)
		}
	}
	s.mu.Unlock()
	if routeFrame != nil {
		s.engine.SetRoute(routeFrame)
	}
	if ev != nil {
		s.c.log.Debug("rendr: migration", "from", ev.From, "to", ev.To, "cause", ev.Cause.String(), "active", ev.Active)
		if s.c.onMigrate != nil {
			s.c.onMigrate(*ev)
		}
		for _, w := range watchers {
			w(*ev)
		}
	}
	return rt
}

// activeUpLocked reports whether every path of the route is Up (else the route is re-evaluated).
func (s *session) activeUpLocked() bool {
	for _, l := range s.mu.active {
		if l.state != status.Up {
			return false
		}
	}
	return true
}

// routeOfLocked turns a policy choice into the engine's route and appends its paths to links.
func (s *session) routeOfLocked(ch *policy.Choice, links []*link) (*flow.Route, []*link) {
	if ch == nil {
		return nil, links
	}
	if ch.Kind == policy.KindPath {
		l := s.mu.leaves[ch.Leaf].link
		return &l.one, append(links, l)
	}
	rt := &flow.Route{Mode: flow.ModeRace}
	if ch.Kind == policy.KindBond {
		rt.Mode = flow.ModeBond
	}
	for _, k := range ch.Kids {
		var kr *flow.Route
		kr, links = s.routeOfLocked(k, links)
		rt.Kids = append(rt.Kids, kr)
	}
	return rt, links
}

// planChangedLocked returns the ROUTE frame that tells the listening side how this side uses
// its paths, when that changed since the last one: it then uses them the same way for its own
// traffic (Race and Bond in both directions). Nil when nothing changed or nothing is usable.
func (s *session) planChangedLocked(ch *policy.Choice) []byte {
	if ch == nil {
		return nil
	}
	s.mu.planBuf = wire.AppendRoute(s.mu.planBuf[:0], 0, planOf(ch))
	plan := s.mu.planBuf[2:]
	if bytes.Equal(plan, s.mu.planSent) {
		return nil
	}
	s.mu.planSent = bytes.Clone(plan)
	s.mu.planSeq++
	return append(wire.AppendVarint([]byte{byte(wire.TypeRoute)}, s.mu.planSeq), plan...)
}

// planOf is a policy choice as a ROUTE frame's plan: leaves by path name.
func planOf(ch *policy.Choice) wire.RouteNode {
	if ch.Kind == policy.KindPath {
		return wire.RouteNode{Kind: wire.RouteLeaf, Name: ch.Leaf.Name}
	}
	n := wire.RouteNode{Kind: wire.RouteRace}
	if ch.Kind == policy.KindBond {
		n.Kind = wire.RouteBond
	}
	for _, k := range ch.Kids {
		n.Kids = append(n.Kids, planOf(k))
	}
	return n
}

// planRouteLocked is the listening side's route from the peer's plan: each leaf is the newest
// Up path of that name; a group keeps the leaves it has, and collapses when one is left.
func (s *session) planRouteLocked(n wire.RouteNode, links []*link) (*flow.Route, []*link) {
	if n.Kind == wire.RouteLeaf {
		var best *link
		for _, l := range s.mu.links {
			if l.name == n.Name && l.state == status.Up && l.joined.Load() && (best == nil || l.id > best.id) {
				best = l
			}
		}
		// A path named twice in a plan is used once: a Race of one path with itself would
		// only make this side send every record on it again and again.
		if best == nil || slices.Contains(links, best) {
			return nil, links
		}
		return &best.one, append(links, best)
	}
	rt := &flow.Route{Mode: flow.ModeRace}
	if n.Kind == wire.RouteBond {
		rt.Mode = flow.ModeBond
	}
	for _, k := range n.Kids {
		var kr *flow.Route
		kr, links = s.planRouteLocked(k, links)
		if kr != nil {
			rt.Kids = append(rt.Kids, kr)
		}
	}
	switch len(rt.Kids) {
	case 0:
		return nil, links
	case 1:
		return rt.Kids[0], links
	}
	return rt, links
}

// peerRoute takes the dialing side's plan from a ROUTE frame (listening side).
func (s *session) peerRoute(f *wire.Frame) error {
	if s.dialer {
		return fmt.Errorf("rendr: unexpected %v from the listening side", f.Type)
	}
	plan, err := wire.DecodeRoute(f.Payload)
	if err != nil {
		return fmt.Errorf("rendr: %v: %w", f.Type, err)
	}
	s.mu.Lock()
	if f.Seq > s.mu.planSeq {
		s.mu.planSeq, s.mu.plan = f.Seq, &plan
	}
	s.mu.Unlock()
	s.dirty.Store(true)
	s.engine.Kick()
	return nil
}

// movedLocked records the paths carrying traffic now and returns the migration event when they
// changed. From and To name the first path that left and the first that joined; Active lists
// every path carrying traffic after the change.
func (s *session) movedLocked(next []*link, why status.Cause, now time.Time) *status.Migration {
	cur := s.mu.active
	var left, joined []*link
	for _, l := range cur {
		if !slices.Contains(next, l) {
			left = append(left, l)
		}
	}
	for _, l := range next {
		if !slices.Contains(cur, l) {
			joined = append(joined, l)
		}
	}
	if len(left) == 0 && len(joined) == 0 {
		return nil
	}
	switch {
	case s.mu.controlled:
		why = status.CauseControl
	case len(cur) == 0:
		why = status.CauseFirst
	case len(left) > 0 && left[0].state == status.Down:
		why = status.CauseDeath
	case len(left) > 0 && left[0].state == status.Suspect:
		why = status.CauseStall
	case len(left) == 0 && why == 0:
		why = status.CauseJoin
	}
	m := &status.Migration{Time: now, Session: s.id, Cause: why}
	if len(left) > 0 {
		m.From, m.FromID = left[0].name, left[0].id
	}
	if len(joined) > 0 {
		m.To, m.ToID = joined[0].name, joined[0].id
	}
	for _, l := range next {
		m.Active = append(m.Active, l.name)
	}
	s.mu.migrations++
	// next is the caller's scratch: the route keeps a copy of its own, never modified. (Its
	// address goes to activeSet: a variable of this branch, so only a move allocates.)
	kept := slices.Clone(next)
	s.mu.active = kept
	s.activeSet.Store(&kept)
	s.movedAt.Store(now.UnixNano())
	return m
}

// followLocked is the listening side's policy: send where the peer sends (its policy chose
// that path), unless that path is not Up; then the best Up path by tier and score.
func (s *session) followLocked() (*link, status.Cause) {
	if lp := s.lastPeer.Load(); lp != nil && lp.state == status.Up && s.mu.links[lp.id] == lp {
		return lp, status.CausePeer
	}
	var best *link
	var bestC policy.Candidate
	for _, l := range s.mu.links {
		if l.state == status.Down || (!l.joined.Load()) {
			continue
		}
		c := l.candidate()
		better := best == nil ||
			(l.state == status.Up && best.state != status.Up) ||
			(l.state == best.state && (l.tier < best.tier || (l.tier == best.tier && c.Score() < bestC.Score())))
		if better {
			best, bestC = l, c
		}
	}
	return best, status.CauseDeath
}

func (s *session) lookupLocked(n *policy.Node) (policy.Candidate, bool) {
	ls := s.mu.leaves[n]
	if ls == nil || ls.link == nil || ls.link.state == status.Down {
		return policy.Candidate{}, false
	}
	return ls.link.candidate(), true
}

// refreshSuspectsLocked returns a suspect path to Up once it has answered two probes since it
// was suspected: it is moving data again. It also suspects a path that carries traffic and
// has not answered a probe within silenceFloor or 3*srtt + 4*rttvar: datagrams are
// never acknowledged, so for packet flows nothing else would notice a blackhole before the
// path is declared dead.
func (s *session) refreshSuspectsLocked() {
	for _, l := range s.mu.links {
		if l.state == status.Suspect && l.p.Quality().Samples >= l.suspectSamples+2 {
			l.state, l.since = status.Up, time.Now()
		}
	}
	if len(s.mu.active) < 2 {
		return // one path: nowhere to move to; the stall check and probes handle it
	}
	for _, l := range s.mu.active {
		if l.state != status.Up {
			continue
		}
		q := l.p.Quality()
		if l.p.Silence() > max(3*q.SRTT+4*q.RTTVar, silenceFloor) {
			s.suspectLocked(l)
			s.c.log.Debug("rendr: path silent", "path", l.name)
		}
	}
}

// silenceFloor is the shortest wait for a probe answer that makes a path of a Race or Bond
// suspect: long enough that a loaded machine's scheduling delays do not move traffic, short
// enough that datagrams stop going into a blackhole well before the path is declared dead.
const silenceFloor = 100 * time.Millisecond

// Stalled implements flow.Router: data on l went unacknowledged too long. The path is
// suspected if another path is Up to take over; with nothing better, traffic stays.
func (s *session) Stalled(fl flow.Link) {
	l, ok := fl.(*link)
	if !ok {
		l = fl.(lossyLink).link
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.state != status.Up {
		return
	}
	for _, o := range s.mu.links {
		if o != l && o.state == status.Up && o.joined.Load() {
			s.suspectLocked(l)
			s.c.log.Debug("rendr: path stalled", "path", l.name)
			return
		}
	}
}

// suspectLocked routes around l until it answers probes again (refreshSuspectsLocked).
func (s *session) suspectLocked(l *link) {
	l.state, l.since = status.Suspect, time.Now()
	l.suspectSamples = l.p.Quality().Samples
	s.dirty.Store(true)
}

// peerData notes flow data from the peer on l (dialing side). The listening side follows our
// route, so data that keeps arriving on another path, longer than a round trip after we last
// moved, means the peer found our route stalled for its traffic (a download: we have nothing
// outstanding, so our own stall check cannot fire). Suspect the route then, as the peer did,
// instead of waiting for the probes to declare it dead.
//
// Over a route of several paths (Race, Bond) the peer's answers may come on any of them; only
// data on a path outside the route counts, and only a route of one path is suspected.
func (s *session) peerData(l *link) {
	set := s.activeSet.Load()
	if set == nil || len(*set) != 1 || slices.Contains(*set, l) {
		return
	}
	cur := (*set)[0]
	q := l.p.Quality()
	grace := max(2*q.SRTT+4*q.RTTVar, 50*time.Millisecond)
	if time.Now().UnixNano()-s.movedAt.Load() < int64(grace) {
		return // the peer has not seen our move yet: its data on the old path is in flight
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.mu.active) != 1 || s.mu.active[0] != cur || cur.state != status.Up || l.state != status.Up {
		return
	}
	s.suspectLocked(cur)
	s.c.log.Debug("rendr: peer moved away from route", "route", cur.name, "peer", l.name)
	s.engine.Kick()
}

// snapshot builds a status.Session.
func (s *session) snapshot() status.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := status.Session{ID: s.id, PeerInstance: s.mu.peerInst, Migrations: s.mu.migrations}
	seen := map[*link]bool{}
	add := func(l *link) {
		var p status.Path
		l.p.Fill(&p)
		p.State, p.Since, p.Active = l.state, l.since, slices.Contains(s.mu.active, l)
		p.Tier = l.tier // the path's own config has the tier it dialed with; SetTier changes this
		out.Paths = append(out.Paths, p)
		seen[l] = true
	}
	if s.mu.full != nil {
		for _, n := range s.mu.full.Leaves() {
			ls := s.mu.leaves[n]
			if ls == nil {
				continue
			}
			if ls.link != nil {
				add(ls.link)
				out.Paths[len(out.Paths)-1].Dials = ls.dials
				out.Paths[len(out.Paths)-1].LastError = errText(ls.lastErr)
				continue
			}
			out.Paths = append(out.Paths, status.Path{Name: ls.target.name, Tier: ls.target.tier,
				State: ls.state, Since: ls.since, LastError: errText(ls.lastErr), Dials: ls.dials})
		}
	}
	for _, l := range s.mu.links {
		if !seen[l] {
			add(l)
		}
	}
	es := s.engine.Stats()
	out.Flows = es.Flows
	out.Refused, out.Violations, out.OpenOverflow, out.BudgetDenied = es.Refused, es.Violations, es.OpenOverflow, es.BudgetDenied
	return out
}

// errText is err's text, "" for none.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// link is one attached (or attaching) path of a session. It is the path's Handler and the
// engine's Link.
type link struct {
	s    *session
	p    *path.Path
	id   uint32
	name string
	tier int
	ls   *leafState // dialing side: the configured path this carrier serves
	hash []byte     // this path's handshake hash, which a JOIN_PROOF must cover
	one  flow.Route // the route of this path alone, made once

	joined atomic.Bool // listening side: the JOIN_PROOF checked out (or the path founded the session)

	// Guarded by s.mu.
	state          status.PathState
	since          time.Time
	suspectSamples int
	mem            int64 // listening side: bytes of the memory budget this path holds
}

// setPath gives the link its path. A packet path's link is a flow.LossyLink to the engine.
func (l *link) setPath(p *path.Path) {
	l.p = p
	if p.Packets() {
		l.one.Link = lossyLink{l}
	}
}

// lossyLink is the engine's view of a packet path: records cut to fit its packets, and
// listing what they carry for Lost.
type lossyLink struct{ *link }

func (l lossyLink) MaxRecord() int { return l.p.MaxRecord() }

// Lost implements path.LossHandler: what a lost packet carried goes again.
func (l *link) Lost(_ *path.Path, cs []path.Carried) { l.s.engine.Lost(cs) }

func (l *link) LinkID() uint32           { return l.id }
func (l *link) Backlog() int             { return l.p.Backlog() }
func (l *link) Rate() float64            { return l.p.Rate() }
func (l *link) Silence() time.Duration   { return l.p.Silence() }
func (l *link) Space() int               { return l.p.Space() }
func (l *link) Send(r *path.Record) bool { return l.p.Send(r) }

// ZeroCopy implements flow.ZeroCopyLink: a path takes payload by reference, writing it as it
// is on a secure carrier and sealing it from the send buffer otherwise.
func (l *link) ZeroCopy() bool { return true }

var (
	_ flow.ZeroCopyLink = (*link)(nil)
	_ flow.Estimator    = (*link)(nil)
	_ flow.Listener     = (*link)(nil)
	_ path.Handler      = (*link)(nil)
	_ path.LossHandler  = (*link)(nil)
	_ flow.LossyLink    = lossyLink{}
)

func (l *link) SRTT() (time.Duration, time.Duration) {
	q := l.p.Quality()
	return q.SRTT, q.RTTVar
}

func (l *link) candidate() policy.Candidate {
	q := l.p.Quality()
	return policy.Candidate{ID: l.id, State: l.state, SRTT: q.SRTT, RTTVar: q.RTTVar, Loss: q.Loss, Samples: q.Samples}
}

var errJoin = errors.New("rendr: path did not prove session membership")

// Frame implements path.Handler.
func (l *link) Frame(p *path.Path, f *wire.Frame) error {
	s := l.s
	if !l.joined.Load() {
		if f.Type == wire.TypeDatagram {
			// From the peer (the path's records authenticate), sent as a carrier datagram
			// that overtook the JOIN_PROOF in the stream: dropped, as a datagram may be.
			return nil
		}
		// A joining path's first frame must prove it belongs to the session.
		if f.Type != wire.TypeJoinProof {
			return errJoin
		}
		// The founding path's handshake may still be finishing on the listening side.
		select {
		case <-s.established:
		case <-s.done:
			return s.err()
		}
		s.mu.Lock()
		secret := s.mu.secret
		s.mu.Unlock()
		if !handshake.VerifyJoin(secret, l.hash, f.MAC) {
			return errJoin
		}
		l.joined.Store(true)
		return s.attach(l)
	}
	switch f.Type {
	case wire.TypeJoinProof:
		if l.p.Packets() {
			// A packet path sends its proof again when it seems lost; the copy of one that
			// arrived after all is harmless, if it is the same proof.
			s.mu.Lock()
			secret := s.mu.secret
			s.mu.Unlock()
			if handshake.VerifyJoin(secret, l.hash, f.MAC) {
				return nil
			}
		}
		return fmt.Errorf("rendr: unexpected %v", f.Type)
	case wire.TypeRoute:
		return s.peerRoute(f)
	case wire.TypeClose:
		s.wg.Add(1)
		go func() { // fail waits for the engine; not from a path's reader
			defer s.wg.Done()
			s.fail(ErrSessionClosed)
		}()
		return nil
	case wire.TypeData, wire.TypeDataFin, wire.TypeOpen, wire.TypeAck:
		// Follow the peer's choice of path, so both directions use the path its policy picked.
		if !s.dialer && s.lastPeer.Load() != l {
			s.lastPeer.Store(l)
			s.dirty.Store(true)
		}
		if s.dialer && f.Type != wire.TypeAck {
			s.peerData(l)
		}
	}
	return s.engine.HandleFrom(f, p)
}

// Measured implements path.Handler: re-evaluate the route, so a suspect path that answers
// again, or a primary path back past its recovery dwell, is taken up without waiting for
// traffic to ask.
func (l *link) Measured(*path.Path) {
	l.s.dirty.Store(true)
	l.s.engine.Kick()
}

// Writable implements path.Handler.
func (l *link) Writable(*path.Path) { l.s.engine.Kick() }

// Down implements path.Handler.
func (l *link) Down(p *path.Path, cause error) {
	l.s.c.log.Debug("rendr: path down", "path", l.name, "cause", cause)
	l.s.detach(l, cause)
	l.s.wg.Done()
}
