// Package flow is rendr's migration engine: it multiplexes a session's flows, keyed by flow
// id, over the links the policy picks (a Route: one link, or Race and Bond groups of them). It
// sequences bytes by offset, keeps every byte until the peer acknowledges delivering it to the
// application's buffer, resends from the last acknowledged offset when a link leaves the route,
// reorders bytes that arrive ahead of a gap and drops duplicates, enforces flow control at flow
// and session level with windows that grow with the bandwidth-delay product, and carries
// half-close and reset. It never opens a socket.
//
// Outbound (stream.go, send.go, route.go):
//  1. Write copies bytes into the stream's send buffer and queues the stream as ready.
//  2. The engine goroutine asks the Router for a Route; if a link of the last round's route is
//     gone, every flow rewinds to its acknowledged offset (that link may have lost anything in
//     flight, mid-frame included) and its control state is re-armed (rewind.go).
//  3. It fills records round-robin over ready streams, control frames first, then DATA within
//     the flow window and the session window (window.go), and hands each to the link(s) the
//     route picks: every link with room for a Race, the one expected to deliver first for a Bond.
//  4. If data stays unacknowledged past the stall timeout, it tells the Router which link looks
//     stalled, and the Router may route around it before the path is declared dead (rewind.go).
//
// Inbound (recv.go, reorder.go): HandleFrom takes one frame from a path's reader and applies it
// under the lock.
//
// Lifecycle (engine.go): New starts the engine goroutine; Open and Accept begin flows, which
// the engine forgets once both directions are finished and the application has closed them;
// Fail ends every flow and stops the engine.
package flow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr/internal/budget"
	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
)

// Link is one path as the engine sees it. What a link can do beyond queueing records is told
// by its answers, which do not change over its life, not by which interfaces it implements.
type Link interface {
	LinkID() uint32
	// Space is how many record bytes may be queued now.
	Space() int
	// Send queues a record and owns it from then on; false means the link is gone.
	Send(r *record.Record) bool
	// SRTT is the link's smoothed round trip (with queueing), zero if unknown.
	SRTT() (srtt, rttvar time.Duration)

	// MaxRecord is 0 for a link that never loses a record (a stream). Otherwise the link
	// may lose records without dying (a datagram path): records for it are at most
	// MaxRecord bytes of frames (at least minLossyRecord) and list what they carry
	// (record.Record.Carried); the link hands the list of each record it declares lost to
	// Engine.Lost, and the engine sends those bytes and frames again, on whatever link the
	// route picks then. Lost takes the engine's lock, which Send is called with: a link must
	// report losses from its own goroutine, never from within Send.
	MaxRecord() int
	// ZeroCopy says the link may take records ending in send-buffer bytes by reference
	// (record.Record.Ext): it writes them as they are (a plain path) or seals them straight
	// from the send buffer (an encrypted path), and lets them go with Record.Release. Other
	// links get copies.
	ZeroCopy() bool
	// Backlog is the bytes queued on the link and not yet handed to its carrier, and Rate
	// how fast the link has been handing bytes to its carrier while it had a backlog, in
	// bytes per second: for Bond scheduling, which goes by the round trip alone while Rate
	// is 0 (unknown).
	Backlog() int
	Rate() float64
	// Arrival estimates how long a record of n bytes queued now would take to reach the
	// peer, counting what the link's carrier holds in the network beyond the path's own
	// round trip (a TCP carrier on a deep queue); ok is false when the link cannot tell, and
	// a Bond then estimates from Backlog, Rate and SRTT.
	Arrival(n int) (at time.Duration, ok bool)
	// Silence is how long the link has waited to hear from the peer (an unanswered probe),
	// 0 if it does not know. Over a route of several links it tells a stalled link from a
	// healthy one whose acknowledgements are merely late.
	Silence() time.Duration
}

// minLossyRecord is the smallest record a lossy link is given, whatever its MaxRecord says:
// smaller ones could not hold a DATA frame beside the control frames a flow may need to send.
const minLossyRecord = 512

// Router chooses links. Its methods are called from the engine goroutine without the
// engine's lock held, and may call back into the engine.
type Router interface {
	// Route returns where to send now, or nil when no link is usable. The engine does not
	// keep it past the round, so a Router may return the same Route while nothing changes.
	Route() *Route
	// Stalled says data sent on l has gone unacknowledged since since, longer than the stall
	// timeout limit. acted says the Router routed around l (or had already): the engine
	// asks for the route again, and backs its timeout off until data moves. Otherwise retry
	// is when to look again (zero: nowhere else to go; the engine backs off all the same).
	Stalled(l Link, since time.Time, limit time.Duration) (acted bool, retry time.Duration)
}

// Doubter is a Router that hears of a stall half way to the verdict: data sent on l has gone
// unacknowledged since since, for half the stall timeout. It may gather its evidence for a
// verdict then (probe the other links), so that the verdict need not wait for it. Once per
// stretch without progress; from the engine goroutine without the engine's lock.
type Doubter interface {
	Doubt(l Link, since time.Time)
}

// Config tunes an engine. The zero value gives the documented defaults.
type Config struct {
	// Dialer is true on the dialing side. Both sides open flows, each in its own id space
	// (ListenerIDs); only the dialing side's may carry metadata.
	Dialer bool
	// RefuseFlows refuses every flow the peer opens, as a full backlog does: a side whose
	// application takes no flows (a Dialer without AcceptFlows).
	RefuseFlows bool
	// InitialWindow is a flow's starting receive window; zero means 256 KiB. It grows to
	// twice what the application reads per round trip, up to MaxWindow (window.go).
	InitialWindow int
	// MaxWindow bounds a flow's receive window; zero means 32 MiB: the bandwidth-delay
	// product of 1 Gbit/s at a 200 ms round trip (25 MB), with room for credit returned in
	// eighths of the window.
	MaxWindow int
	// InitialSessionWindow and MaxSessionWindow do the same for the sum over all flows; zero
	// means 1 MiB and 64 MiB.
	InitialSessionWindow, MaxSessionWindow int
	// MaxFlows bounds the flows open at once in the session; zero means 65536.
	MaxFlows int
	// Backlog bounds flows waiting in Accept (and for their OPEN); zero means 1024. Beyond it,
	// new flows are refused.
	Backlog int
	// CheckMeta decides whether the listening side takes a flow whose OPEN carries metadata
	// (an L3 identity): a non-nil error turns it down with CodeRejected. Nil turns every such
	// flow down. It is called with the engine's lock held, so it must not call the engine.
	CheckMeta func(meta []byte) error
	// HoldMeta: a flow with metadata is taken (its ACKs say AckOpen, so the dialing side's
	// WaitOpen returns) only once the listening application confirms it (Stream.Confirm),
	// when it has carried it on; it turns it down with Stream.Reject. Without it, and for
	// every flow without metadata, a flow is taken when it is queued for Accept.
	HoldMeta bool
	// StallFloor and StallCeil clamp the stall timeout 2*srtt+4*rttvar; zero means 40ms and 1s.
	StallFloor, StallCeil time.Duration
	// Budget, when set, is charged FlowCost for each flow the peer opens (one that does not
	// fit is refused, as at the flow limit) and the growth of the session's receive window
	// beyond InitialSessionWindow (growth that does not fit does not happen). The caller
	// accounts for the initial window itself. Fail gives everything back.
	Budget *budget.Pool
	// OnRewind, if set, is told of each rewind after a link left the route: how many flows
	// and bytes go again. It is called from the engine goroutine without the engine's lock.
	OnRewind func(flows int, bytes uint64)
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
	def(&c.MaxWindow, 32<<20)
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
	epoch  time.Time // when it was made: flows keep times as offsets from it (sentMark)

	links, dests []Link   // scratch for fill, which only the engine goroutine runs
	ids          []uint32 // the same, for routeLocked
	// The last rewind, for Config.OnRewind once the lock is let go (engine goroutine only).
	rewindFlows int
	rewindBytes uint64
	rewindNew   bool
	// While fill builds a record: whether it lists what it carries (a lossy link takes it).
	collect bool
	// While fill builds a record: the links pinned datagrams are spread over (ordered by id;
	// nil when nothing is pinned or the route is one link or a Race), the record's one
	// destination (nil for several), and whether it carries pinned datagrams only.
	pin        []Link
	dest       Link
	pinnedOnly bool

	// busySince mirrors, without the lock, when mu.outstanding last became non-zero (unix
	// nanos; zero while it is zero): BusySince.
	busySince atomic.Int64

	// mu guards everything below and every Stream's state. Lock order: Engine.mu, then a
	// Link's own lock (Space/Send). The engine never calls the Router with mu held.
	mu struct {
		sync.Mutex
		flows    map[uint64]*Stream
		ready    streamQueue // streams with something to send
		sessWait []*Stream   // streams whose data waits for session credit
		own      [2]uint64   // by kind: the last flow id this side opened
		seen     [2]uint64   // by kind: the highest flow id the peer opened that this side has seen
		linkIDs  []uint32    // links of the last round's route
		err      error       // set when the session failed or closed

		sendMax, sendUsed          uint64        // session credit: peer's limit, new bytes sent
		recvMax, recvUsed          uint64        // session limit we gave, new bytes received
		budgetHeld                 int64         // what this engine holds of cfg.Budget
		opening                    int           // flows this side opened whose OPEN has no answer yet
		openRoom                   chan struct{} // closed when opening falls: WaitOpening's wake-up
		budgetDenied               uint64        // reservations cfg.Budget refused
		recvRead, recvWindow       uint64        // bytes consumed by the application; window size
		recvTuned                  time.Time     // when the current window measurement began
		recvTunedRead              uint64        // recvRead then
		maxDataPending             bool
		outstanding                int // streams with bytes or a FIN/RESET not yet acknowledged
		progress                   time.Time
		doubted                    time.Time    // progress when a Doubter last heard of a stall
		stallShift                 uint         // stall timeout backoff: doubled per verdict, reset on progress
		checkDue                   time.Time    // when the stall check is next due
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
		rejectedFlows              uint64              // flows turned down for their metadata
		unopened                   [2]int              // by kind: flows taken whose OPEN has not come yet
		openOverflow               uint64              // frames that would open more flows at once than there is room for
		violations                 uint64              // frames that broke a rule (HandleFrom's errors)
		ackLater                   []*Stream           // streams with a delayed ACK (ackLater), due at ackAt
		ackAt                      time.Time

		// Counters for Stats: bytes sent again after a link left the route, and every
		// packet flow's counters summed.
		rewound uint64
		dg      PacketStats
	}
}

// New returns a running engine. Close stops it.
func New(cfg Config, r Router) *Engine {
	cfg.defaults()
	e := &Engine{cfg: cfg, router: r, kick: make(chan struct{}, 1), done: make(chan struct{}), epoch: time.Now()}
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
func (e *Engine) Open() (*Stream, error) { return e.open(wire.KindStream, nil) }

// OpenMeta starts a new stream flow, or packet flow when packet is true, whose OPEN carries
// meta (at most wire.MaxMeta bytes; nil for none) to the listening side, and again after
// every rewind until the peer confirms it.
func (e *Engine) OpenMeta(packet bool, meta []byte) (*Stream, error) {
	if len(meta) > wire.MaxMeta {
		return nil, fmt.Errorf("rendr: %d bytes of flow metadata, at most %d", len(meta), wire.MaxMeta)
	}
	if packet {
		return e.open(wire.KindPacket, meta)
	}
	return e.open(wire.KindStream, meta)
}

// open starts a new flow of a kind, numbered in this side's id space (docs/wire.md 8.1).
func (e *Engine) open(kind uint8, meta []byte) (*Stream, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.err != nil {
		return nil, e.mu.err
	}
	if len(meta) > 0 && !e.cfg.Dialer {
		return nil, errors.New("rendr: only the dialing side opens flows with metadata")
	}
	if len(e.mu.flows) >= e.cfg.MaxFlows {
		return nil, ErrTooManyFlows
	}
	if e.mu.opening >= MaxOpening {
		return nil, ErrOpening
	}
	s := e.newStreamLocked(e.nextIDLocked(kind))
	s.local = true
	if kind == wire.KindPacket {
		s.pk = newPacketState()
	}
	if len(meta) > 0 {
		s.meta = bytes.Clone(meta)
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

// nextIDLocked allocates the next flow id of a kind in this side's id space: streams are odd,
// packet flows even.
func (e *Engine) nextIDLocked(kind uint8) uint64 {
	hi := &e.mu.own[kind]
	if *hi == 0 {
		*hi = firstID(kind, e.cfg.Dialer)
	} else {
		*hi += 2
	}
	return *hi
}

// ListenerIDs is where the ids of the flows the listening side opens begin (docs/wire.md
// 8.1): the dialing side's flows are numbered from 1, the listening side's from ListenerIDs+1,
// so that neither side's ids can run into the other's. It is even: an id's parity still says
// its kind.
const ListenerIDs = 1 << 61

// byDialer reports whether a flow id is in the dialing side's id space.
func byDialer(id uint64) bool { return id < ListenerIDs }

// ownID reports whether a flow id is in this side's id space: the flow was opened here.
func (e *Engine) ownID(id uint64) bool { return byDialer(id) == e.cfg.Dialer }

// kindOf is the kind of a flow id (docs/wire.md 8.1): streams are odd, packet flows even.
func kindOf(id uint64) uint8 {
	if id%2 == 1 {
		return wire.KindStream
	}
	return wire.KindPacket
}

// firstID is the first flow id of a kind in the id space of the dialing side (dialer) or of
// the listening side.
func firstID(kind uint8, dialer bool) uint64 {
	base := uint64(0)
	if !dialer {
		base = ListenerIDs
	}
	if kind == wire.KindStream {
		return base + 1
	}
	return base + 2
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
	// Rejected counts flows turned down for their metadata (Config.CheckMeta).
	Rejected uint64
	// Rewound counts the bytes sent again because a link left the route (Migrations such
	// rewinds); Datagrams sums the counters of every packet flow the session has had.
	Rewound   uint64
	Datagrams PacketStats
}

// Stats returns the counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Stats{Flows: len(e.mu.flows), Opened: e.mu.opened, Migrations: e.mu.migrations,
		DupBytes: e.mu.dupBytes, GapDrops: e.mu.gapDrops, Reordered: e.mu.reordered, Resends: e.mu.resends,
		LostResent: e.mu.lostResent, Busy: e.mu.outstanding, Refused: e.mu.refusedFlows,
		RefusedPending: len(e.mu.refused), OpenOverflow: e.mu.openOverflow, Violations: e.mu.violations,
		BudgetDenied: e.mu.budgetDenied, BudgetHeld: e.mu.budgetHeld, Rejected: e.mu.rejectedFlows,
		Rewound: e.mu.rewound, Datagrams: e.mu.dg}
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

// maybeRemoveLocked forgets s once the application closed it and both directions finished.
func (e *Engine) maybeRemoveLocked(s *Stream) {
	if s.removed || !s.appClosed || !s.sendDone() || !s.recvDone() {
		return
	}
	if s.local && !s.openAcked && !s.settled && s.err == nil {
		// Done both ways, but the peer never confirmed the OPEN: it may hold the
		// flow without it (everything else came by another path) and wait for it for ever.
		// The OPEN goes again; the flow is forgotten once it is confirmed.
		if !s.openPending {
			s.openPending = true
			e.readyLocked(s)
		}
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
		e.outstandingDownLocked()
	}
	if s.charged {
		s.charged = false
		e.cfg.Budget.Release(FlowCost)
		e.mu.budgetHeld -= FlowCost
	}
	s.settleOpenLocked()
	delete(e.mu.flows, s.id)
}
