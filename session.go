// Session: one authenticated peer session's life (establish, attach, detach, fail, close,
// status) and its paths as the engine and the router see them.

package rendr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr/internal/budget"
	"github.com/rendr-go/rendr/internal/flow"
	"github.com/rendr-go/rendr/internal/handshake"
	"github.com/rendr-go/rendr/internal/path"
	"github.com/rendr-go/rendr/internal/router"
	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/policy"
	"github.com/rendr-go/rendr/status"
)

// common is what Dialer and Listener configure alike.
type common struct {
	log       *slog.Logger
	onMigrate func(status.Migration)
	trace     func(status.Event) // Options.Trace; nil: no event is built (events.go)
	reconnect time.Duration
	hsTimeout time.Duration
	engine    flow.Config
	path      path.Config
	tuning    policy.Tuning
	instance  [16]byte
	key       handshake.Keypair
}

// session is one authenticated peer session: its paths, its flow engine and its router, which
// decides where traffic goes (internal/router) under the session's lock.
//
// Lock order: session.mu, then the engine's lock (via Stats), then a path's lock. The engine
// calls Route and Stalled without its lock held.
type session struct {
	c *common
	// id is fixed on the listening side. On the dialing side each founding attempt sets it,
	// under mu, and it is read under mu there.
	id      [16]byte
	peerKey PublicKey
	dialer  bool
	engine  *flow.Engine
	router  *router.Router // its state is guarded by mu (its Config.Lock)
	hold    *path.HoldBudget

	ctx         context.Context // canceled when the session ends
	cancel      context.CancelFunc
	established chan struct{} // closed once the secret is known
	done        chan struct{} // closed when the session ends
	wg          sync.WaitGroup
	onEnd       func(*session)
	// Listening side: the peer's share of the listener's memory budget (nil: no budget);
	// mu.memBase is what the session itself holds of it (its paths hold their own).
	mem *budget.Pool

	mu struct {
		sync.Mutex
		secret   [32]byte
		peerInst [16]byte
		founding bool
		everUp   bool             // a path has been attached
		closing  bool             // close has begun: routes from now on are no migrations
		pending  map[uint32]*link // started, not yet attached (a join awaiting its proof)
		nextID   uint32
		full     *policy.Node          // dialing side: the whole graph (the router routes on it, or the part Select chose)
		targets  map[string]*leafState // dialing side: every configured path, by name
		err      error
		noPath   *time.Timer
		leaves   map[*policy.Node]*leafState
		watchers map[*Conn]func(status.Migration)
		memBase  int64
		// Dialing side: until headStart, paths of a lower tier that have not settled keep
		// traffic off backups; headTimer routes again when it ends.
		headStart time.Time
		headTimer *time.Timer
		events    []status.Event // made under mu, for Options.Trace once mu is let go (events.go)
	}
}

// leafState is the dialing side's record of a configured path between its carriers.
type leafState struct {
	target  *Target
	node    *policy.Node
	stop    chan struct{} // closed when the path is removed from the graph (Dialer.Remove)
	kick    chan struct{} // Dialer.Redial: end the wait before the next dial (one pending)
	removed bool
	link    *link
	state   status.PathState
	since   time.Time
	// lastErr is why the path last failed: its text goes to status, the error itself into
	// a dial's error, for errors.Is.
	lastErr error
	dials   int
	cookies handshake.CookieJar // the listener's cookie for this path, when it is under load
	// silentAt is when the path's last carrier was declared dead of silence, with the
	// deadline it was given: a new carrier attached within it means the path was slow, not
	// dead (zero when the last death was for another cause).
	silentAt  time.Time
	silentFor time.Duration
	// settled: the path has had a carrier, or failed to get its first one. Until then, and
	// within the session's head start, the policy keeps traffic off backups (policy.Lookup).
	settled bool
	// refusals counts the path's attempts refused in a row ("connection refused"), reset
	// when a dial connects: a session that never came up ends when every path has
	// refusedTries (Dialer.routineLeaf).
	refusals int
}

// newSession makes a session; mem is the listening side's share of its memory budget for
// this peer (nil on the dialing side), which the session's flows and receive window draw on.
func newSession(c *common, id [16]byte, peer PublicKey, dialer bool, root *policy.Node, mem *budget.Pool) *session {
	s := &session{c: c, id: id, peerKey: peer, dialer: dialer, mem: mem,
		established: make(chan struct{}), done: make(chan struct{})}
	s.mu.full = root
	s.router = router.New(router.Config{Dialer: dialer, Lock: &s.mu.Mutex, Log: c.log, OnState: s.routerStateLocked(),
		Leaf: func(n *policy.Node) router.Path {
			if ls := s.mu.leaves[n]; ls != nil && ls.link != nil {
				return ls.link
			}
			return nil
		},
		Waiting: func(n *policy.Node) bool {
			ls := s.mu.leaves[n]
			return ls != nil && !ls.settled && !ls.removed && time.Now().Before(s.mu.headStart)
		}})
	if root != nil {
		s.router.SetGraphLocked(root, false) // not shared yet
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mu.pending = make(map[uint32]*link)
	s.mu.leaves = make(map[*policy.Node]*leafState)
	s.mu.targets = make(map[string]*leafState)
	ec := c.engine
	ec.Dialer = dialer
	ec.Budget = mem
	ec.OnRewind = s.rewound()
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
	if s.mu.headTimer != nil {
		s.mu.headTimer.Stop()
	}
	s.mem.Release(s.mu.memBase)
	s.mu.memBase = 0
	attached := s.router.PathsLocked()
	links := make([]*link, 0, len(attached)+len(s.mu.pending))
	for _, p := range attached {
		links = append(links, p.(*link))
	}
	for _, l := range s.mu.pending {
		links = append(links, l)
	}
	id := s.id
	s.mu.Unlock()
	s.c.log.Debug("rendr: session ended", "session", fmt.Sprintf("%x", id[:4]), "err", err)
	if s.c.trace != nil {
		s.c.emit(status.Event{Kind: status.SessionEnded, Dialer: s.dialer, Session: id, Err: errText(err)})
	}
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

// close ends the session locally with err (what its flows fail with): it lets written bytes
// (and FINs of closed flows) reach the peer for up to closeLinger while a path is up, then
// sends CLOSE behind them and tears down.
func (s *session) close(err error) {
	deadline := time.Now().Add(closeLinger)
	for s.pathCount() > 0 && !s.engine.Drained() && time.Now().Before(deadline) {
		select {
		case <-time.After(5 * time.Millisecond):
		case <-s.done:
		}
	}
	drained := s.engine.Drained()
	s.mu.Lock()
	s.mu.closing = true
	// The CLOSE goes behind any data still queued on the active path, so that the peer reads
	// everything first. With nothing left unacknowledged it goes on every path: each path's
	// end then comes behind a CLOSE, and the peer never takes the first carrier to end for a
	// path's death.
	var to []*link
	if active := s.router.ActiveLocked(); len(active) > 0 {
		to = append(to, active[0].(*link))
	}
	if drained {
		for _, p := range s.router.PathsLocked() {
			if l := p.(*link); !slices.Contains(to, l) {
				to = append(to, l)
			}
		}
	}
	// guarded by mu: a path may be dying now
	to = slices.DeleteFunc(to, func(l *link) bool { return l.rs.State == status.Down })
	s.mu.Unlock()
	var sent []*link
	for _, r := range to {
		// A packet path may lose it and nothing would resend it once the session is gone:
		// it goes three times, in three packets (a second CLOSE is ignored).
		copies, ok := 1, true
		if r.p.Packets() {
			copies = 3
		}
		for range copies {
			rec := path.NewRecord()
			rec.B = wire.AppendClose(rec.B, 0)
			ok = ok && r.p.Send(rec)
		}
		if ok {
			sent = append(sent, r)
		}
	}
	flushed := time.Now().Add(100 * time.Millisecond)
	for _, r := range sent {
	wait:
		for !r.p.Flushed() && time.Now().Before(flushed) {
			select {
			case <-time.After(2 * time.Millisecond):
			case <-r.p.Closed():
				break wait
			}
		}
	}
	s.fail(err)
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
	now := time.Now()
	s.mu.everUp = true
	s.router.AttachLocked(l, now)
	if ls := l.ls; ls != nil {
		ls.link, ls.state, ls.since, ls.settled = l, status.Up, now, true
		if !ls.silentAt.IsZero() && now.Sub(ls.silentAt) <= ls.silentFor {
			s.router.SpuriousDeathLocked(l)
		}
		ls.silentAt = time.Time{}
	}
	s.mu.noPath.Stop()
	id := s.id
	s.mu.Unlock()
	if s.c.trace != nil {
		s.c.emit(status.Event{Kind: status.PathUp, Dialer: s.dialer, Session: id, Path: l.name, PathID: l.id,
			Remote: addrText(l.p.RemoteAddr()), SRTT: l.p.Quality().SRTT})
	}
	s.engine.Kick()
	return nil
}

// detach forgets a dead path.
func (s *session) detach(l *link, cause error) {
	s.mu.Lock()
	delete(s.mu.pending, l.id)
	if was, left := s.router.DetachLocked(l); was && left == 0 && s.mu.err == nil {
		s.mu.noPath.Reset(s.c.reconnect)
	}
	s.mem.Release(l.mem)
	l.mem = 0
	if ls := l.ls; ls != nil && ls.link == l {
		ls.link, ls.state, ls.since = nil, status.Down, time.Now()
		if cause != nil {
			ls.lastErr = cause
		}
		ls.silentAt = time.Time{}
		if errors.Is(cause, path.ErrSilent) {
			ls.silentAt, ls.silentFor = ls.since, l.p.Deadline()
		}
	}
	s.mu.Unlock()
	s.engine.Kick()
}

// Route implements flow.Router: where the router sends now. A change is told to the peer
// (a ROUTE frame, dialing side) and to OnMigrate and the flows' watchers.
func (s *session) Route() *flow.Route {
	s.mu.Lock()
	rt, routeFrame, ev := s.router.RouteLocked(time.Now())
	if s.mu.err != nil || s.mu.closing {
		// The session is ending (closing, closed by the peer, or failed): its paths close
		// one after another, the peer's too once its CLOSE arrived, and the routes among
		// them are no migrations to report (a Dialer's Close is no death).
		ev = nil
	}
	var watchers []func(status.Migration)
	events := s.takeEventsLocked()
	if ev != nil {
		ev.Session = s.id
		for _, w := range s.mu.watchers {
			watchers = append(watchers, w)
		}
	}
	s.mu.Unlock()
	if routeFrame != nil {
		s.engine.SetRoute(routeFrame)
	}
	s.c.emitAll(events)
	if ev != nil {
		s.c.log.Debug("rendr: migration", "from", ev.From, "to", ev.To, "cause", ev.Cause.String(), "active", ev.Active)
		if s.c.trace != nil {
			s.c.emitMigration(s.dialer, ev)
		}
		if s.c.onMigrate != nil {
			s.c.onMigrate(*ev)
		}
		for _, w := range watchers {
			w(*ev)
		}
	}
	return rt
}

// peerRoute takes the dialing side's plan from a ROUTE frame (listening side).
func (s *session) peerRoute(f *wire.Frame) error {
	if s.dialer {
		return fmt.Errorf("rendr: unexpected %v from the listening side", f.Type)
	}
	s.mu.Lock()
	err := s.router.PeerPlanLocked(f.Seq, f.Payload)
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("rendr: %v: %w", f.Type, err)
	}
	s.engine.Kick()
	return nil
}

// Stalled implements flow.Router: data on l went unacknowledged since since, past limit.
func (s *session) Stalled(l flow.Link, since time.Time, limit time.Duration) (bool, time.Duration) {
	return s.router.Stalled(l.LinkID(), since, limit, time.Now())
}

// Doubt implements flow.Doubter: half way to a stall verdict against l, the other paths are
// probed.
func (s *session) Doubt(l flow.Link, since time.Time) {
	s.router.Doubt(l.LinkID(), since, time.Now())
}

// HeardElsewhere implements path.SilenceJudge: a path dies of silence only when the peer was
// heard on another path meanwhile, or at its DeadCeil.
func (l *link) HeardElsewhere(_ *path.Path, since time.Time) bool {
	return l.s.router.HeardElsewhere(l.id, since, time.Now())
}

// Spanned implements path.PauseJudge: a round trip that spans a pause of the peer on every
// path measured the pause.
func (l *link) Spanned(sent, at time.Time) bool {
	return l.s.router.Spanned(sent, at, l.s.engine.BusySince())
}

// snapshot builds a status.Session.
func (s *session) snapshot() status.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	rc := s.router.CountsLocked()
	out := status.Session{ID: s.id, PeerInstance: s.mu.peerInst, Migrations: s.router.MigrationsLocked(),
		Moves: rc.Moves, Spurious: rc.Spurious, Undone: rc.Undone}
	seen := map[*link]bool{}
	add := func(l *link) {
		var p status.Path
		l.p.Fill(&p)
		p.State, p.Since, p.Active = l.rs.State, l.rs.Since, slices.Contains(s.router.ActiveLocked(), router.Path(l))
		p.Tier = l.tier // the path's own config has the tier it dialed with; SetTier changes this
		p.Spurious, p.Undone = l.rs.Spurious, l.rs.Undone
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
	for _, p := range s.router.PathsLocked() {
		if l := p.(*link); !seen[l] {
			add(l)
		}
	}
	es := s.engine.Stats()
	out.Flows = es.Flows
	out.Refused, out.Violations, out.OpenOverflow, out.BudgetDenied = es.Refused, es.Violations, es.OpenOverflow, es.BudgetDenied
	out.Rejected = es.Rejected
	out.Rewinds, out.Resent = es.Migrations, es.Rewound+es.LostResent
	out.Drops = status.Drops{SendQueue: es.Datagrams.SendDrops, RecvQueue: es.Datagrams.RecvDrops,
		Duplicate: es.Datagrams.Duplicates, TooOld: es.Datagrams.TooOld, Late: es.Datagrams.Late,
		Oversize: es.Datagrams.Oversize, DupBytes: es.DupBytes, GapFrames: es.GapDrops}
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
	rs  router.Standing
	mem int64 // listening side: bytes of the memory budget this path holds
}

// setPath gives the link its path.
func (l *link) setPath(p *path.Path) { l.p = p }

// MaxRecord implements flow.Link: a packet path's records fit its packets and list what they
// carry for Lost; a stream path's (0) do neither.
func (l *link) MaxRecord() int { return l.p.MaxRecord() }

// Lost implements path.LossHandler: what a lost packet carried goes again.
func (l *link) Lost(_ *path.Path, cs []path.Carried) { l.s.engine.Lost(cs) }

func (l *link) LinkID() uint32                      { return l.id }
func (l *link) Backlog() int                        { return l.p.Backlog() }
func (l *link) Arrival(n int) (time.Duration, bool) { return l.p.Arrival(n) }
func (l *link) Rate() float64                       { return l.p.Rate() }
func (l *link) Silence() time.Duration              { return l.p.Silence() }
func (l *link) Space() int                          { return l.p.Space() }
func (l *link) Send(r *path.Record) bool            { return l.p.Send(r) }

// ZeroCopy implements flow.Link: a path takes payload by reference, writing it as it is on a
// secure carrier and sealing it from the send buffer otherwise.
func (l *link) ZeroCopy() bool { return true }

var (
	_ flow.Link         = (*link)(nil)
	_ path.Handler      = (*link)(nil)
	_ path.LossHandler  = (*link)(nil)
	_ path.SilenceJudge = (*link)(nil)
	_ path.PauseJudge   = (*link)(nil)
	_ router.Path       = (*link)(nil)
)

func (l *link) SRTT() (time.Duration, time.Duration) {
	q := l.p.Quality()
	return q.SRTT, q.RTTVar
}

// The router's view of the path (router.Path).
func (l *link) ID() uint32   { return l.id }
func (l *link) Name() string { return l.name }
func (l *link) Tier() int    { return l.tier }
func (l *link) Joined() bool { return l.joined.Load() }
func (l *link) Quality() router.Quality {
	q := l.p.Quality()
	return router.Quality{SRTT: q.SRTT, RTTVar: q.RTTVar, Recent: q.Recent, Loss: q.Loss, Samples: q.Samples}
}
func (l *link) Heard() time.Time               { return l.p.Heard() }
func (l *link) Unread() bool                   { return l.p.Unread() }
func (l *link) Delivered() (time.Time, bool)   { return l.p.Delivered() }
func (l *link) ProbeNow() time.Time            { return l.p.ProbeNow() }
func (l *link) Answered() (sent, at time.Time) { return l.p.Answered() }
func (l *link) Alone() *flow.Route             { return &l.one }
func (l *link) Standing() *router.Standing     { return &l.rs }

var errJoin = errors.New("rendr: path did not prove session membership")

// Frame implements path.Handler.
func (l *link) Frame(p *path.Path, f *wire.Frame) error {
	s := l.s
	s.router.Heard(p.Heard(), s.engine.BusySince())
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
		if !s.dialer {
			s.router.PeerSent(l)
		}
		if s.dialer && f.Type != wire.TypeAck && s.router.PeerData(l) {
			s.engine.Kick()
		}
	}
	return s.engine.HandleFrom(f, p)
}

// Measured implements path.Handler: re-evaluate the route, so a suspect path that answers
// again, or a primary path back past its recovery dwell, is taken up without waiting for
// traffic to ask.
func (l *link) Measured(*path.Path) {
	sent, at := l.Answered()
	l.s.router.HeardAnswer(l.Quality(), sent, at, l.s.engine.BusySince())
	l.s.router.Changed()
	l.s.engine.Kick()
}

// Writable implements path.Handler.
func (l *link) Writable(*path.Path) { l.s.engine.Kick() }

// Down implements path.Handler.
func (l *link) Down(p *path.Path, cause error) {
	l.s.c.log.Debug("rendr: path down", "path", l.name, "cause", cause)
	if l.s.c.trace != nil {
		l.s.pathDown(l, cause)
	}
	l.s.detach(l, cause)
	l.s.wg.Done()
}

// routeAgain has the route evaluated again at once: what the policy may use changed with no
// path attaching or dying (a head start ended).
func (s *session) routeAgain() {
	s.router.Changed()
	s.engine.Kick()
}
