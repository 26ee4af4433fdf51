// Package flow is rendr's migration engine: it multiplexes a session's flows, keyed by flow
// id, over the links the policy picks (a Route: one link, or Race and Bond groups of them). It
// sequences bytes by offset, keeps every byte until the peer acknowledges delivering it to the
// application's buffer, resends from the last acknowledged offset when a link leaves the route,
// reorders bytes that arrive ahead of a gap and drops duplicates, enforces flow control at flow
// and session level with windows that grow with the bandwidth-delay product, and carries
// half-close and reset. It never opens a socket.
//
// Outbound (engine.go, route.go):
//  1. Write copies bytes into the stream's send buffer and queues the stream as ready.
//  2. The engine goroutine asks the Router for a Route; if a link of the last round's route is
//     gone, every flow rewinds to its acknowledged offset (that link may have lost anything in
//     flight, mid-frame included) and its control state is re-armed.
//  3. It fills records round-robin over ready streams, control frames first, then DATA within
//     the flow window and the session window, and hands each to the link(s) the route picks:
//     every link with room for a Race, the one expected to deliver first for a Bond.
//  4. If data stays unacknowledged past the stall timeout, it tells the Router which link looks
//     stalled, and the Router may route around it before the path is declared dead.
//
// Inbound (recv.go, reorder.go): HandleFrom takes one frame from a path's reader and applies it
// under the lock.
package flow

import (
	"cmp"
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/rendr-go/rendr/internal/budget"
	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/path"
)

// Link is one path as the engine sees it.
type Link interface {
	LinkID() uint32
	// Space is how many record bytes may be queued now.
	Space() int
	// Send queues a record and owns it from then on; false means the link is gone.
	Send(r *path.Record) bool
	// SRTT is the link's smoothed round trip (with queueing), zero if unknown.
	SRTT() (srtt, rttvar time.Duration)
}

// LossyLink is a Link that may lose records without dying: a datagram path. Records for it
// are at most MaxRecord bytes of frames (at least minLossyRecord) and list what they carry
// (path.Record.Carried); the link hands the list of each record it declares lost to
// Engine.Lost, and the engine sends those bytes and frames again, on whatever link the route
// picks then. Lost takes the engine's lock, which Send is called with: a link must report
// losses from its own goroutine, never from within Send.
type LossyLink interface {
	Link
	MaxRecord() int
}

// minLossyRecord is the smallest record a LossyLink is given, whatever its MaxRecord says:
// smaller ones could not hold a DATA frame beside the control frames a flow may need to send.
const minLossyRecord = 512

// ZeroCopyLink is a Link that may take records ending in send-buffer bytes by reference
// (path.Record.Ext) when ZeroCopy is true: the link writes them as they are (a plain path) or
// seals them straight from the send buffer (an encrypted path), and lets them go with
// Record.Release. Checked with a type assertion; other links get copies.
type ZeroCopyLink interface {
	Link
	ZeroCopy() bool
}

// Router chooses links. Its methods are called from the engine goroutine without the
// engine's lock held, and may call back into the engine.
type Router interface {
	// Route returns where to send now, or nil when no link is usable. The engine does not
	// keep it past the round, so a Router may return the same Route while nothing changes.
	Route() *Route
	// Stalled says data sent on l has gone unacknowledged for too long.
	Stalled(l Link)
}

// Config tunes an engine. The zero value gives the documented defaults.
type Config struct {
	// Dialer is true on the side that opens flows.
	Dialer bool
	// InitialWindow is a flow's starting receive window; zero means 256 KiB. It grows
	// (doubling) while the application drains it within two round trips, up to MaxWindow.
	InitialWindow int
	// MaxWindow bounds a flow's receive window; zero means 16 MiB.
	MaxWindow int
	// InitialSessionWindow and MaxSessionWindow do the same for the sum over all flows; zero
	// means 1 MiB and 64 MiB.
	InitialSessionWindow, MaxSessionWindow int
	// MaxFlows bounds the flows open at once in the session; zero means 65536.
	MaxFlows int
	// Backlog bounds flows waiting in Accept; zero means 1024. Beyond it, new flows are refused.
	Backlog int
	// StallFloor and StallCeil clamp the stall timeout 2*srtt+4*rttvar; zero means 40ms and 1s.
	StallFloor, StallCeil time.Duration
	// Budget, when set, is charged FlowCost for each flow the peer opens (one that does not
	// fit is refused, as at the flow limit) and the growth of the session's receive window
	// beyond InitialSessionWindow (growth that does not fit does not happen). The caller
	// accounts for the initial window itself. Fail gives everything back.
	Budget *budget.Pool
}

// FlowCost is what a flow the peer opens reserves of Config.Budget: a Stream's state with
// its signals and buffers' headers, measured, with room to spare.
const FlowCost = 4 << 10

func (c *Config) defaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.InitialWindow, 256<<10)
	def(&c.MaxWindow, 16<<20)
	def(&c.InitialSessionWindow, 1<<20)
	def(&c.MaxSessionWindow, 64<<20)
	def(&c.MaxFlows, 65536)
	def(&c.Backlog, 1024)
	c.MaxWindow = max(c.MaxWindow, c.InitialWindow)
	c.MaxSessionWindow = max(c.MaxSessionWindow, c.InitialSessionWindow)
	if c.StallFloor == 0 {
		c.StallFloor = 40 * time.Millisecond
	}
	if c.StallCeil == 0 {
		c.StallCeil = time.Second
	}
}

// Protocol constants both sides assume before hearing from each other (docs/wire.md).
const (
	// PeerInitialWindow is the flow window a sender may use before the first ACK.
	PeerInitialWindow = 256 << 10
	// PeerInitialSessionWindow is the session window before the first MAX_DATA.
	PeerInitialSessionWindow = 1 << 20
	// ackEvery and ackDelay bound a delayed ACK (8.4): it goes once this many delivered
	// bytes are unacknowledged (or an eighth of the flow's window, if less), or this long
	// after the first of them arrived, whichever is sooner.
	ackEvery = 1 << 20
	ackDelay = time.Millisecond
	// dataQuantum is the most one flow sends per turn (quantumLocked).
	dataQuantum = 32 << 10
)

// Engine multiplexes the flows of one session.
type Engine struct {
	cfg    Config
	router Router
	kick   chan struct{}
	done   chan struct{}
	wg     sync.WaitGroup

	links, dests []Link   // scratch for fill, which only the engine goroutine runs
	ids          []uint32 // the same, for routeLocked
	// While fill builds a record: whether it lists what it carries (a lossy link takes it).
	collect bool
	// While fill builds a record: the links pinned datagrams are spread over (ordered by id;
	// nil when nothing is pinned or the route is one link or a Race), the record's one
	// destination (nil for several), and whether it carries pinned datagrams only.
	pin        []Link
	dest       Link
	pinnedOnly bool

	// mu guards everything below and every Stream's state. Lock order: Engine.mu, then a
	// Link's own lock (Space/Send). The engine never calls the Router with mu held.
	mu struct {
		sync.Mutex
		flows    map[uint64]*Stream
		ready    streamQueue // streams with something to send
		sessWait []*Stream   // streams whose data waits for session credit
		nextID   [2]uint64   // by kind: last flow id opened locally (dialer) or seen (listener)
		linkIDs  []uint32    // links of the last round's route
		err      error       // set when the session failed or closed

		sendMax, sendUsed          uint64        // session credit: peer's limit, new bytes sent
		recvMax, recvUsed          uint64        // session limit we gave, new bytes received
		budgetHeld                 int64         // what this engine holds of cfg.Budget
		opening                    int           // dialing side: flows whose OPEN has no answer yet
		openRoom                   chan struct{} // closed when opening falls: WaitOpening's wake-up
		budgetDenied               uint64        // reservations cfg.Budget refused
		recvRead, recvWindow       uint64        // bytes consumed by the application; window size
		recvTuned                  time.Time
		maxDataPending             bool
		outstanding                int // streams with bytes or a FIN/RESET not yet acknowledged
		progress                   time.Time
		stallShift                 uint         // stall timeout backoff: doubled per verdict, reset on progress
		accept                     [2][]*Stream // by kind: flows the peer opened, not yet accepted
		acceptSig                  [2]chan struct{}
		migrations                 int
		dupBytes, gapDrops, opened uint64
		resendScan                 time.Time // when resendStuckLocked looks next
		pinnedQueued               int       // pinned datagrams waiting to be sent, all flows
		dgQueued                   int       // buffer bytes of datagrams waiting to be read, all flows (at most MaxSessionWindow)
		resends                    uint64    // flows that resent on their own (resendStuckLocked)
		lostResent                 uint64    // bytes queued again because a lossy link lost them
		routeFrame                 []byte    // the last ROUTE frame given to SetRoute
		routePending               bool      // routeFrame is to be sent
		reorderPieces              int       // pieces held ahead of gaps, over all flows
		reordered                  uint64    // bytes that arrived ahead of a gap and were kept
		sendBuffered               int       // bytes in all send buffers
		capWait                    []*Stream // writers waiting for sendBuffered to drop
		srtt                       time.Duration
		ctrl                       []byte              // stateless replies for flows that no longer exist
		refused                    map[uint64]struct{} // refused flows the peer has not yet confirmed
		refusedFlows               uint64              // flows ever refused
		openOverflow               uint64              // frames that would open more flows at once than there is room for
		violations                 uint64              // frames that broke a rule (HandleFrom's errors)
		ackLater                   []*Stream           // streams with a delayed ACK (ackLater), due at ackAt
		ackAt                      time.Time
	}
}

// New returns a running engine. Close stops it.
func New(cfg Config, r Router) *Engine {
	cfg.defaults()
	e := &Engine{cfg: cfg, router: r, kick: make(chan struct{}, 1), done: make(chan struct{})}
	e.mu.flows = make(map[uint64]*Stream)
	e.mu.sendMax = PeerInitialSessionWindow
	e.mu.recvWindow = uint64(cfg.InitialSessionWindow)
	e.mu.recvMax = PeerInitialSessionWindow
	if uint64(cfg.InitialSessionWindow) > e.mu.recvMax {
		e.mu.recvMax = uint64(cfg.InitialSessionWindow)
		e.mu.maxDataPending = true
	}
	e.mu.acceptSig = [2]chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}
	e.wg.Add(1)
	go e.routineRun()
	return e
}

// SetRoute sends frame, a ROUTE frame, to the peer at the next opportunity, and again after
// every rewind (the link that carried it may have lost it). Only the latest frame is kept.
func (e *Engine) SetRoute(frame []byte) {
	e.mu.Lock()
	e.mu.routeFrame = append(e.mu.routeFrame[:0], frame...)
	e.mu.routePending = true
	e.mu.Unlock()
	e.Kick()
}

// Config returns the engine's configuration with its defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// Kick wakes the engine: a link became writable or the route may have changed.
func (e *Engine) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Open starts a new flow (dialer side). It costs no round trip: the OPEN frame goes out with
// the flow's first bytes, and the peer's initial windows are known in advance.
func (e *Engine) Open() (*Stream, error) { return e.open(wire.KindStream) }

// open starts a new flow of a kind (dialer side).
func (e *Engine) open(kind uint8) (*Stream, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.err != nil {
		return nil, e.mu.err
	}
	if !e.cfg.Dialer {
		return nil, errors.New("rendr: only the dialing side opens flows")
	}
	if len(e.mu.flows) >= e.cfg.MaxFlows {
		return nil, ErrTooManyFlows
	}
	if e.mu.opening >= MaxOpening {
		return nil, ErrOpening
	}
	s := e.newStreamLocked(e.nextIDLocked(kind))
	if kind == wire.KindPacket {
		s.pk = newPacketState()
	}
	s.openPending = true
	s.opening = true
	e.mu.opening++
	e.readyLocked(s)
	return s, nil
}

// MaxOpening bounds the flows the dialing side has opened that the listening side has not
// yet answered (taken or refused). The listening side holds the ids of refused flows until
// the refusal is confirmed, at most 4096 (docs/wire.md 8.1): a dialer that opened flows
// faster than its peer answers would pass that and lose its path. At the bound, Open returns
// ErrOpening and WaitOpening waits for room.
const MaxOpening = 1024

// WaitOpening waits until Open may be called without ErrOpening, the engine fails, or ctx
// ends.
func (e *Engine) WaitOpening(ctx context.Context) error {
	for {
		e.mu.Lock()
		if e.mu.err != nil {
			err := e.mu.err
			e.mu.Unlock()
			return err
		}
		if e.mu.opening < MaxOpening {
			e.mu.Unlock()
			return nil
		}
		if e.mu.openRoom == nil {
			e.mu.openRoom = make(chan struct{})
		}
		room := e.mu.openRoom
		e.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// settleOpenLocked notes that s's OPEN no longer waits for an answer: one came, or the flow
// ended.
func (s *Stream) settleOpenLocked() {
	if !s.opening {
		return
	}
	s.opening = false
	e := s.e
	e.mu.opening--
	if e.mu.openRoom != nil {
		close(e.mu.openRoom)
		e.mu.openRoom = nil
	}
}

// nextIDLocked allocates the next flow id of a kind: streams are odd, packet flows even.
func (e *Engine) nextIDLocked(kind uint8) uint64 {
	hi := &e.mu.nextID[kind]
	if *hi == 0 {
		*hi = firstID(kind)
	} else {
		*hi += 2
	}
	return *hi
}

// kindOf is the kind of a flow id (docs/wire.md 8.1): streams are odd, packet flows even.
func kindOf(id uint64) uint8 {
	if id%2 == 1 {
		return wire.KindStream
	}
	return wire.KindPacket
}

// firstID is the first flow id of a kind.
func firstID(kind uint8) uint64 {
	if kind == wire.KindStream {
		return 1
	}
	return 2
}

// Accept waits for a stream flow the peer opened.
func (e *Engine) Accept(ctx context.Context) (*Stream, error) {
	return e.accept(ctx, wire.KindStream)
}

func (e *Engine) accept(ctx context.Context, kind uint8) (*Stream, error) {
	for {
		e.mu.Lock()
		if q := e.mu.accept[kind]; len(q) > 0 {
			s := q[0]
			q[0] = nil
			e.mu.accept[kind] = q[1:]
			if len(q) == 1 {
				e.mu.accept[kind] = nil
			}
			e.mu.Unlock()
			return s, nil
		}
		err := e.mu.err
		sig := e.mu.acceptSig[kind]
		e.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-sig:
		case <-e.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Fail ends every flow with err (the session is gone) and stops the engine. Bytes already
// delivered to a flow's buffer can still be read; then reads return err.
func (e *Engine) Fail(err error) {
	e.mu.Lock()
	if e.mu.err == nil {
		e.mu.err = err
		// Everything the budget holds for this session goes back at once: the flows that
		// remain are failed and will take nothing more.
		e.cfg.Budget.Release(e.mu.budgetHeld)
		e.mu.budgetHeld = 0
		for _, s := range e.mu.flows {
			s.charged = false
		}
		for _, s := range e.mu.flows {
			s.failLocked(err)
		}
		e.mu.ready.reset()
		e.mu.sessWait = nil
		for k := range e.mu.accept {
			for _, s := range e.mu.accept[k] {
				s.failLocked(err)
				// Never accepted, so never read: what it received goes now. It may hold a
				// carrier's buffers (a packet path's lent datagrams), which must go back.
				s.rbuf.reset()
				if s.pk != nil {
					s.releaseRecvLocked()
				}
			}
			e.mu.accept[k] = nil
		}
	}
	e.mu.Unlock()
	select {
	case <-e.done:
	default:
		close(e.done)
	}
	e.wg.Wait()
}

// Err is the error the engine failed with, or nil.
func (e *Engine) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.mu.err
}

// Done is closed when the engine has failed or closed.
func (e *Engine) Done() <-chan struct{} { return e.done }

// Stats is a snapshot of engine counters.
type Stats struct {
	Flows      int    // open now
	Opened     uint64 // flows ever opened or accepted
	Migrations int    // link changes that caused a rewind
	DupBytes   uint64 // received bytes dropped as duplicates (already delivered)
	GapDrops   uint64 // DATA frames ahead of a gap dropped: the reader had closed, or too many pieces waited
	Reordered  uint64 // received bytes kept ahead of a gap until the bytes before them came
	Resends    uint64 // times a flow resent its unacknowledged bytes after no acknowledgement came
	LostResent uint64 // bytes queued to be sent again because a lossy link reported them lost
	Busy       int    // flows with unacknowledged data
	// Refused counts flows the listening side turned away (accept backlog or flow limit
	// full); RefusedPending is how many of them wait for the peer to confirm (at most 4096).
	Refused        uint64
	RefusedPending int
	// OpenOverflow counts frames that named a flow id so far ahead that opening every id
	// below it would pass the room the limits leave (docs/wire.md 8.1): each closed its path.
	OpenOverflow uint64
	// Violations counts frames Handle rejected as protocol errors, OpenOverflow's included.
	Violations uint64
	// BudgetDenied counts flows refused and window growths skipped because Config.Budget was
	// full; BudgetHeld is what the engine holds of it now.
	BudgetDenied uint64
	BudgetHeld   int64
}

// Stats returns the counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Stats{Flows: len(e.mu.flows), Opened: e.mu.opened, Migrations: e.mu.migrations,
		DupBytes: e.mu.dupBytes, GapDrops: e.mu.gapDrops, Reordered: e.mu.reordered, Resends: e.mu.resends,
		LostResent: e.mu.lostResent, Busy: e.mu.outstanding, Refused: e.mu.refusedFlows,
		RefusedPending: len(e.mu.refused), OpenOverflow: e.mu.openOverflow, Violations: e.mu.violations,
		BudgetDenied: e.mu.budgetDenied, BudgetHeld: e.mu.budgetHeld}
}

// Drained reports whether everything written has been acknowledged and nothing is left to
// send: no unacknowledged bytes, FINs or RESETs, no stream waiting to send a frame, and no
// delayed ACK owed.
func (e *Engine) Drained() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.mu.outstanding == 0 && e.mu.sendBuffered == 0 && e.mu.ready.len() == 0 && e.mu.ackAt.IsZero()
}

// Idle reports whether no flow is open.
func (e *Engine) Idle() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.mu.flows) == 0
}

func (e *Engine) newStreamLocked(id uint64) *Stream {
	s := &Stream{e: e, id: id,
		peerLimit: PeerInitialWindow,
		window:    uint64(e.cfg.InitialWindow),
		recvLimit: PeerInitialWindow,
		readSig:   make(chan struct{}, 1),
		writeSig:  make(chan struct{}, 1),
		wlock:     make(chan struct{}, 1),
	}
	if s.window > s.recvLimit {
		s.recvLimit = s.window
		s.ackPending = true
	}
	e.mu.flows[id] = s
	e.mu.opened++
	return s
}

// readyLocked queues s to be visited by the engine loop.
func (e *Engine) readyLocked(s *Stream) {
	if !s.queued {
		s.queued = true
		e.mu.ready.push(s)
	}
	e.Kick()
}

// scheduleAckLocked makes an ACK for s due: now, or, when later is set, by ackDelay from the
// first delayed one, unless one goes sooner.
func (s *Stream) scheduleAckLocked(later bool) {
	e := s.e
	if !later || s.ackPending {
		s.ackPending = true
		e.readyLocked(s)
		return
	}
	if s.ackLater {
		return
	}
	s.ackLater = true
	e.mu.ackLater = append(e.mu.ackLater, s)
	if e.mu.ackAt.IsZero() {
		e.mu.ackAt = time.Now().Add(ackDelay)
		e.Kick() // to set the engine's timer
	}
}

// delayedAcksLocked makes the delayed ACKs due once their time has come; it returns how long
// until then otherwise (0: none waiting).
func (e *Engine) delayedAcksLocked(now time.Time) time.Duration {
	if e.mu.ackAt.IsZero() {
		return 0
	}
	if d := e.mu.ackAt.Sub(now); d > 0 {
		return d
	}
	for _, s := range e.mu.ackLater {
		if s.ackLater {
			s.ackPending = true
			e.readyLocked(s)
		}
	}
	clear(e.mu.ackLater)
	e.mu.ackLater, e.mu.ackAt = e.mu.ackLater[:0], time.Time{}
	return 0
}

// setOutstandingLocked keeps e.mu.outstanding in step with s: a stream is outstanding while
// it has sent bytes, a FIN or a RESET the peer has not acknowledged.
func (e *Engine) setOutstandingLocked(s *Stream) {
	o := s.sendHigh > s.sendBase || (s.finSent && !s.finAcked) || (s.resetSent && !s.finAcked)
	if o == s.outstanding {
		return
	}
	s.outstanding = o
	if o {
		if e.mu.outstanding == 0 {
			e.mu.progress = time.Now()
		}
		s.ackedAt = time.Now()
		e.mu.outstanding++
	} else {
		e.mu.outstanding--
	}
}

// tuneIntervalLocked is how soon after the last window update the next must be due for the
// window to double: two round trips, and at least a millisecond so that loopback scheduling
// noise does not read as a tiny round trip.
func (e *Engine) tuneIntervalLocked() time.Duration { return max(2*e.mu.srtt, time.Millisecond) }

// growSessionWindowLocked is called when a Read is about to wait on an empty buffer. If the
// peer has (nearly) no session credit left, bytes for this flow may be held back by flows
// nobody reads (waiting in the accept backlog, or read by no one): grow the session window, up
// to its maximum, so those flows cannot starve the ones being read.
func (e *Engine) growSessionWindowLocked() {
	left := e.mu.recvMax - e.mu.recvUsed
	if left >= uint64(e.cfg.InitialWindow) || e.mu.recvWindow >= uint64(e.cfg.MaxSessionWindow) {
		return
	}
	e.widenLocked()
	if m := e.mu.recvRead + e.mu.recvWindow; m > e.mu.recvMax {
		e.mu.recvMax = m
		e.mu.maxDataPending = true
		e.Kick()
	}
}

// widenLocked doubles the session receive window, up to MaxSessionWindow, if the budget has
// room for what it adds: the peer may fill the whole window before anyone reads, so that is
// memory promised.
func (e *Engine) widenLocked() {
	w := min(2*e.mu.recvWindow, uint64(e.cfg.MaxSessionWindow))
	if w <= e.mu.recvWindow {
		return
	}
	if !e.cfg.Budget.Reserve(int64(w - e.mu.recvWindow)) {
		e.mu.budgetDenied++
		return
	}
	e.mu.budgetHeld += int64(w - e.mu.recvWindow)
	e.mu.recvWindow = w
}

// consumedLocked returns n bytes of session credit (read, discarded or never coming).
func (e *Engine) consumedLocked(n uint64) {
	e.mu.recvRead += n
	if e.mu.recvMax-e.mu.recvRead < e.mu.recvWindow/2 {
		now := time.Now()
		if !e.mu.recvTuned.IsZero() && now.Sub(e.mu.recvTuned) < e.tuneIntervalLocked() && e.mu.recvWindow < uint64(e.cfg.MaxSessionWindow) {
			e.widenLocked()
		}
		e.mu.recvTuned = now
		e.mu.recvMax = e.mu.recvRead + e.mu.recvWindow
		e.mu.maxDataPending = true
		e.Kick()
	}
}

// removeLocked forgets s once both directions are finished and the application closed it.
func (e *Engine) maybeRemoveLocked(s *Stream) {
	if s.removed || !s.appClosed || !s.sendDone() || !s.recvDone() {
		return
	}
	s.removed = true
	if s.ackLater {
		// Its last delivery's ACK was to wait: it goes now, before the flow is forgotten
		// (a removed stream still sends what its ready turn holds).
		s.ackPending = true
		e.readyLocked(s)
	}
	if s.pk != nil {
		s.releaseSendLocked()
		s.releaseRecvLocked()
	}
	if s.outstanding {
		s.outstanding = false
		e.mu.outstanding--
	}
	if s.charged {
		s.charged = false
		e.cfg.Budget.Release(FlowCost)
		e.mu.budgetHeld -= FlowCost
	}
	s.settleOpenLocked()
	delete(e.mu.flows, s.id)
}

func (e *Engine) routineRun() {
	defer e.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-e.kick:
		case <-timer.C:
		case <-e.done:
			return
		}
		wait := e.pump()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if wait > 0 {
			timer.Reset(wait)
		}
	}
}

// pump sends what it can and returns when the stall check should run again (0: no need).
func (e *Engine) pump() time.Duration {
	for range 4 { // a stall verdict changes the route: try again, a bounded number of times
		rt := e.router.Route()
		if rt == nil {
			return 0 // the Router kicks us when a link appears
		}
		stalled, wait := e.fill(rt)
		if stalled == nil {
			return e.untilAck(wait)
		}
		e.router.Stalled(stalled)
	}
	return e.untilAck(10 * time.Millisecond)
}

// untilAck is wait (0: none), or less when a delayed ACK falls due sooner.
func (e *Engine) untilAck(wait time.Duration) time.Duration {
	e.mu.Lock()
	ack := e.delayedAcksLocked(time.Now())
	e.mu.Unlock()
	if ack > 0 && (wait == 0 || ack < wait) {
		return ack
	}
	return wait
}

// fill sends on rt and returns the link that looks stalled, if any, or else when to check
// again.
func (e *Engine) fill(rt *Route) (stalled Link, wait time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.err != nil {
		return nil, 0
	}
	links := rt.links(e.links[:0])
	e.links = links
	if len(links) == 0 {
		return nil, 0
	}
	now := time.Now()
	e.delayedAcksLocked(now)
	e.routeLocked(links, now)
	e.pin = e.pin[:0]
	if e.mu.pinnedQueued > 0 && rt.Mode != ModeRace {
		for _, l := range links {
			if !slices.Contains(e.pin, l) {
				e.pin = append(e.pin, l)
			}
		}
		slices.SortFunc(e.pin, func(a, b Link) int { return cmp.Compare(a.LinkID(), b.LinkID()) })
	}
	defer func() { clear(e.pin); e.dest, e.collect = nil, false }()
	for {
		dests := rt.pick(e.dests[:0])
		e.dests = dests
		if len(dests) == 0 {
			break
		}
		e.dest = nil
		if len(dests) == 1 {
			e.dest = dests[0]
		}
		// A record for one link may end in send-buffer bytes by reference; copies for
		// several (a Race) are built whole and cloned.
		zc := false
		if z, ok := dests[0].(ZeroCopyLink); ok && len(dests) == 1 {
			zc = z.ZeroCopy()
		}
		r := path.NewRecord()
		e.collect = false
		for _, d := range dests {
			if l, ok := d.(LossyLink); ok {
				// A record for a lossy link fits its packets and says what it carries;
				// a Race's copies for other links are cut to the same size.
				if m := max(l.MaxRecord(), minLossyRecord); !e.collect || m < r.Room() {
					r.SetLimit(m)
				}
				e.collect = true
			}
		}
		e.buildLocked(r, zc)
		if len(r.B) == 2 {
			r.Release()
			if e.wakeCreditLocked() {
				continue // credit left over: the next flows waiting for it
			}
			break
		}
		dead := false
		for _, d := range dests[1:] {
			c := path.NewRecord()
			c.B = append(c.B[:0], r.B...)
			c.Carried = append(c.Carried[:0], r.Carried...)
			dead = !d.Send(c) || dead
		}
		if !dests[0].Send(r) || dead {
			return nil, 0 // a link died; its Down kicks us with a new route
		}
	}
	clear(e.dests)
	// Pinned datagrams for links the route's own choice did not reach this round.
	if len(e.pin) > 1 {
		for _, l := range e.pin {
			for e.mu.pinnedQueued > 0 && l.Space() > 0 {
				r := path.NewRecord()
				e.dest, e.pinnedOnly = l, true
				e.collect = false
				if ll, ok := l.(LossyLink); ok {
					r.SetLimit(max(ll.MaxRecord(), minLossyRecord))
					e.collect = true
				}
				e.buildLocked(r, false)
				e.pinnedOnly = false
				if len(r.B) == 2 {
					r.Release()
					break
				}
				if !l.Send(r) {
					return nil, 0
				}
			}
		}
	}
	// The round trip sizes window growth too, so a side that only receives needs it as well.
	// Over several links the slowest sets both: data on it takes longest to be acknowledged.
	var srtt, rttvar time.Duration
	for _, l := range links {
		s, v := l.SRTT()
		srtt, rttvar = max(srtt, s), max(rttvar, v)
	}
	e.mu.srtt = srtt
	if e.mu.outstanding == 0 {
		clear(e.links)
		return nil, 0
	}
	// Each verdict without acknowledged progress since the last one doubles the next timeout,
	// as TCP backs off its retransmission timer: a machine starved of CPU, or a path slow to
	// drain a resent window, must not bounce traffic between healthy paths.
	limit := min(max(2*srtt+4*rttvar, e.cfg.StallFloor)<<e.mu.stallShift, e.cfg.StallCeil)
	if now.After(e.mu.resendScan) {
		e.mu.resendScan = now.Add(limit)
		e.resendStuckLocked(now, max(4*limit, minResendAfter))
	}
	if since := now.Sub(e.mu.progress); since < limit {
		clear(e.links)
		return nil, limit - since
	}
	e.mu.progress = now // one verdict per timeout, even if the Router keeps the route
	e.mu.stallShift = min(e.mu.stallShift+1, 4)
	stalled = culprit(links)
	clear(e.links)
	if stalled == nil {
		return nil, limit // nobody to blame yet: look again after the (backed-off) timeout
	}
	return stalled, 0
}

// quantumLocked is how many bytes the flow being emitted may send in this turn: dataQuantum,
// so that flows waiting their turn get the link in turn, and a Bond can spread one flow
// finely over stream paths (their carriers coalesce records anyway). A flow alone on a
// packet path (buildLocked took it off the ready queue, and none is left) may fill the
// record: each packet costs a system call, a seal and part of an acknowledgement, so its
// datagrams should be as large as the path MTU allows, not cut at the quantum.
func (e *Engine) quantumLocked() uint64 {
	if e.collect && e.mu.ready.len() == 0 {
		return math.MaxUint64
	}
	return dataQuantum
}

// carriedLocked notes in r what it carries, when the record is for a lossy link.
func (e *Engine) carriedLocked(r *path.Record, c path.Carried) {
	if e.collect {
		r.Carried = append(r.Carried, c)
	}
}

// Lost takes back what a record a LossyLink lost carried: flow bytes not acknowledged since
// are sent again, before new ones; control frames are sent again with their current values
// (a later ACK or MAX_DATA says more than the lost one did). Datagrams are not resent: packet
// flows never resend.
func (e *Engine) Lost(cs []path.Carried) {
	e.mu.Lock()
	for _, c := range cs {
		switch c.Kind {
		case path.CarriedMaxData:
			e.mu.maxDataPending = true
			continue
		case path.CarriedRoute:
			e.mu.routePending = len(e.mu.routeFrame) > 0
			continue
		}
		s := e.mu.flows[c.Flow]
		if s == nil {
			// Finished and forgotten: only its final ACK is still owed, or the peer would
			// wait for its timeout to learn that everything arrived.
			if c.Kind == path.CarriedAck && c.Fin && len(e.mu.ctrl) < maxCtrl {
				e.mu.ctrl = wire.AppendAck(e.mu.ctrl, c.Flow, c.Off, c.Off, wire.AckFin)
			}
			continue
		}
		switch c.Kind {
		case path.CarriedData:
			if s.resetSent || s.err != nil {
				continue // the peer is told the flow is over; its bytes are not owed
			}
			if lo, hi := max(c.Off, s.sendBase), c.Off+uint64(c.Len); hi > lo && lo < s.sendNext {
				hi = min(hi, s.sendNext) // a rewind since may be sending these again already
				s.retx.add(lo, hi)
				e.mu.lostResent += hi - lo
			}
			if c.Fin && !s.finAcked {
				s.finSent = false
			}
		case path.CarriedOpen:
			s.openPending = s.openPending || !s.openAcked
		case path.CarriedAck:
			s.ackPending = true
		case path.CarriedStop:
			s.stopPending = s.stopPending || (s.stopSent && !s.recvDone())
		case path.CarriedReset:
			s.resetPending = s.resetPending || (s.resetSent && !s.finAcked)
		}
		e.readyLocked(s)
	}
	e.mu.Unlock()
	e.Kick()
}

// minResendAfter is the shortest time a flow waits for an acknowledgement before it sends its
// unacknowledged bytes again on its own.
const minResendAfter = 200 * time.Millisecond

// resendStuckLocked makes every flow whose acknowledgements have not moved for after send its
// unacknowledged bytes again, as TCP does on a retransmission timeout. Rewinds after a path
// change resend what a dead path lost; this covers what a receiver dropped while every path
// stayed healthy (bytes ahead of a gap beyond its bound), which the session-wide stall check
// cannot see while other flows make progress.
func (e *Engine) resendStuckLocked(now time.Time, after time.Duration) {
	for _, s := range e.mu.flows {
		if !s.outstanding || now.Sub(s.ackedAt) < after || s.sendNext == s.sendBase && (s.finAcked || !s.finSent) {
			continue
		}
		s.sendNext = s.sendBase
		s.retx = s.retx[:0]
		if !s.finAcked {
			s.finSent = false
			if s.resetSent {
				s.resetPending = true
			}
		}
		s.ackedAt = now
		e.mu.resends++
		e.readyLocked(s)
	}
}

// culprit picks the link to blame when acknowledgements stop. Over one link, that link. Over
// several, the one that has gone longest without an answer to its probes, if that is longer
// than its own round trip allows (2*srtt + 4*rttvar, at least 5ms): a link whose probes are
// answered is carrying traffic, and acknowledgements may be late for reasons of the peer's
// own route. Nil when no link is to blame.
func culprit(links []Link) Link {
	if len(links) == 1 {
		return links[0]
	}
	var best Link
	var worst time.Duration
	for _, l := range links {
		ln, ok := l.(Listener)
		if !ok {
			continue
		}
		srtt, rttvar := l.SRTT()
		over := ln.Silence() - max(2*srtt+4*rttvar, 5*time.Millisecond)
		if over > worst {
			best, worst = l, over
		}
	}
	return best
}

// routeLocked notes the links of this round. When a link that carried traffic in the last
// round is gone from the route, anything in flight on it may be lost, mid-frame included:
// every flow rewinds and resends from its acknowledged offset over what remains.
func (e *Engine) routeLocked(links []Link, now time.Time) {
	has := func(ids []uint32, id uint32) bool {
		for _, x := range ids {
			if x == id {
				return true
			}
		}
		return false
	}
	ids := e.ids[:0] // engine goroutine only, like links and dests
	for _, l := range links {
		if id := l.LinkID(); !has(ids, id) {
			ids = append(ids, id)
		}
	}
	e.ids = ids
	lost, gained := false, false
	for _, id := range e.mu.linkIDs {
		lost = lost || !has(ids, id)
	}
	for _, id := range ids {
		gained = gained || !has(e.mu.linkIDs, id)
	}
	if !lost && !gained {
		return
	}
	if lost {
		e.rewindLocked()
		e.mu.migrations++
	}
	e.mu.linkIDs = append(e.mu.linkIDs[:0], ids...)
	e.mu.progress = now
}

// wakeSessWaitLocked queues again every flow that waited for session credit: credit came
// back, or what they send next needs none.
func (e *Engine) wakeSessWaitLocked() {
	for _, s := range e.mu.sessWait {
		s.sessBlocked = false
		e.readyLocked(s)
	}
	clear(e.mu.sessWait)
	e.mu.sessWait = e.mu.sessWait[:0]
}

// wakeCreditLocked queues again, in the order they blocked, as many flows waiting for
// session credit as there are bytes of it (all of them when the credit is larger), and
// reports whether it woke any. Each flow woken sends at least a byte of new data or gives up
// its place (it was reset), so a peer raising its MAX_DATA by a byte at a time costs a flow's
// turn per frame, not a turn of every waiting flow; and fill calls it again whenever a round
// ends with credit left, so flows woken in vain never leave the others waiting.
func (e *Engine) wakeCreditLocked() bool {
	n := len(e.mu.sessWait)
	if credit := e.mu.sendMax - e.mu.sendUsed; credit < uint64(n) {
		n = int(credit)
	}
	if n == 0 {
		return false
	}
	for i, s := range e.mu.sessWait[:n] {
		s.sessBlocked = false
		e.readyLocked(s)
		e.mu.sessWait[i] = nil
	}
	e.mu.sessWait = e.mu.sessWait[n:]
	if len(e.mu.sessWait) == 0 {
		e.mu.sessWait = nil // let go of the array
	}
	return true
}

// rewindLocked makes every flow resend from its acknowledged offset and re-arms control state
// the old link may have lost.
func (e *Engine) rewindLocked() {
	e.mu.maxDataPending = true
	e.mu.routePending = len(e.mu.routeFrame) > 0
	// Resent bytes need no session credit: every flow is visited again, blocked or not.
	e.wakeSessWaitLocked()
	for id := range e.mu.refused {
		e.queueRefusalLocked(id)
	}
	for _, s := range e.mu.flows {
		s.sendNext = s.sendBase
		s.retx = s.retx[:0] // all of it goes again from sendBase
		if !s.finAcked {
			s.finSent = false
			if s.resetSent {
				s.resetPending = true
			}
		}
		if !s.openAcked && e.cfg.Dialer {
			s.openPending = true
		}
		if s.stopSent && !s.recvDone() {
			s.stopPending = true
		}
		s.ackPending = s.ackPending || s.recvNext > 0 || s.finRecv || s.resetRecv
		e.readyLocked(s)
	}
}

// buildLocked fills r with frames: the session window first, then round-robin over ready
// streams, each adding its control frames and at most one quantum of data.
func (e *Engine) buildLocked(r *path.Record, zc bool) {
	if e.mu.maxDataPending && r.Room() >= 9 {
		r.B = wire.AppendMaxData(r.B, e.mu.recvMax)
		e.mu.maxDataPending = false
		e.carriedLocked(r, path.Carried{Kind: path.CarriedMaxData})
	}
	if e.mu.routePending && r.Room() >= len(e.mu.routeFrame) {
		r.B = append(r.B, e.mu.routeFrame...)
		e.mu.routePending = false
		e.carriedLocked(r, path.Carried{Kind: path.CarriedRoute})
	}
	if len(e.mu.ctrl) > 0 {
		// Whole frames, as many as fit: a small record (a datagram link's) takes a part.
		k := 0
		for k < len(e.mu.ctrl) {
			_, n, err := wire.Parse(e.mu.ctrl[k:])
			if err != nil || n > r.Room()-(len(e.mu.ctrl[:k])) {
				break
			}
			k += n
		}
		r.B = append(r.B, e.mu.ctrl[:k]...)
		if k == len(e.mu.ctrl) {
			e.mu.ctrl = nil
		} else {
			e.mu.ctrl = e.mu.ctrl[k:]
		}
	}
	var first *Stream
	for n := e.mu.ready.len(); n > 0 && r.Room() > 64; n-- {
		s := e.mu.ready.pop()
		if e.pinnedOnly && (s.pk == nil || s.pk.send.n == 0) {
			e.mu.ready.push(s) // this record carries pinned datagrams only
			continue
		}
		s.queued = false
		more := s.emitLocked(r, zc)
		if !more {
			continue
		}
		s.queued = true
		if s.first && first == nil {
			first = s // leads the next record, after this round
			continue
		}
		e.mu.ready.push(s)
	}
	if first != nil {
		first.first = false
		e.mu.ready.pushFront(first)
	}
}

// streamQueue is a FIFO of streams that keeps reusing its array: the engine pops each ready
// stream and pushes it back while it has more to send, many times a second.
type streamQueue struct {
	s    []*Stream
	head int
}

func (q *streamQueue) len() int { return len(q.s) - q.head }

func (q *streamQueue) push(x *Stream) {
	if q.head > 0 && len(q.s) == cap(q.s) {
		n := copy(q.s, q.s[q.head:])
		clear(q.s[n:])
		q.s, q.head = q.s[:n], 0
	}
	q.s = append(q.s, x)
}

func (q *streamQueue) pushFront(x *Stream) {
	if q.head > 0 {
		q.head--
		q.s[q.head] = x
		return
	}
	q.s = append(q.s, nil)
	copy(q.s[1:], q.s)
	q.s[0] = x
}

func (q *streamQueue) pop() *Stream {
	x := q.s[q.head]
	q.s[q.head] = nil
	q.head++
	if q.head == len(q.s) {
		q.s, q.head = q.s[:0], 0
	}
	return x
}

func (q *streamQueue) reset() {
	clear(q.s)
	q.s, q.head = nil, 0
}
