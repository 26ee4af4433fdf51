// Package path runs one live path: a carrier connection after its handshake, with record
// framing, a writer and a reader goroutine, liveness probes, round-trip estimators and death
// classification. It knows nothing of flows; it hands frames to a Handler.
//
// Outbound:
//  1. The engine fills a Record with frames and calls Send, which queues it (bounded by Space).
//  2. The writer goroutine takes every queued record, control records first, seals each in
//     place and writes them in one vectored write.
//
// Inbound:
//  1. The reader goroutine reads one record, opens it in place, and parses its frames.
//  2. PING is answered with PONG, PONG feeds the estimator; every other frame goes to Handler.
//
// Death: an error from the carrier, a record that does not authenticate or parse, or a probe
// left unanswered past its deadline closes the carrier; once both goroutines have exited the
// Handler hears Down exactly once.
//
// This file is the stage both kinds of path share: the queue, probes and lifecycle. What
// differs between a carrier that moves a byte stream (stream.go, with its datagram side in
// dgram.go) and one that moves datagrams only (packet.go, packetio.go) sits behind
// carrierMode.
package path

import (
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"

	"github.com/rendr-go/rendr/internal/deadline"
	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport"
)

// Handler receives what a path reads. Frame calls come from the path's reader goroutine, one
// at a time, and for DATAGRAM frames that came as carrier datagrams from its datagram reader,
// so two may run at once; Writable may come from the writer goroutine; Down comes once, last.
type Handler interface {
	// Frame handles one frame other than PING and PONG. f.Payload is valid only during the
	// call. A non-nil error closes the path with that cause.
	Frame(p *Path, f *wire.Frame) error
	// Writable says the path's queue has room again after Space reported none.
	Writable(p *Path)
	// Measured says a probe was answered and Quality changed: a suspect path may be usable
	// again, and a policy waiting on quality or dwell times may decide now, even on a session
	// with no traffic to make it look.
	Measured(p *Path)
	// Down says the path is gone, and why.
	Down(p *Path, cause error)
}

// SilenceJudge is a Handler that knows the path's siblings: the other paths of its session.
// A path whose probe goes unanswered past its deadline asks it before it declares itself
// dead, because silence on every path at once says nothing against any one of them: the
// peer, or this host, stopped. A Handler that is not one leaves the path to judge alone.
type SilenceJudge interface {
	// HeardElsewhere reports whether the path's silence since since is its own: the peer
	// has been heard on another path while this one stayed silent. When it has not (yet),
	// the judge may probe the others, so that the question has an answer soon; the path
	// asks again later, and is declared dead at DeadCeil whatever the answer.
	HeardElsewhere(p *Path, since time.Time) bool
}

// PauseJudge is a Handler that knows when the peer was last heard on any path of the session.
// A probe answered late whose round trip spans a gap in which the peer was heard on no path
// while it owed an answer measured a pause of the peer (SIGSTOP, a stalled VM), not the path:
// the path leaves it out of its estimate. Taken in, it would raise an idle path's srtt and
// rttvar for seconds (such a path is probed about once a second), and the next pause's answer
// would pass for a prompt one: evidence that the peer was running while it was not.
type PauseJudge interface {
	// Spanned reports whether the peer went unheard on every path of the session, while it
	// owed an answer, for long enough to count as a pause, at some time between sent and at.
	Spanned(sent, at time.Time) bool
}

// spansPauseLocked reports whether a round trip of rtt, from sent to now, is later than the
// estimate allows and spanned a pause of the peer (PauseJudge): then it measured the pause.
func (p *Path) spansPauseLocked(sent, now time.Time, rtt time.Duration) bool {
	e := &p.mu.est
	if e.samples == 0 || rtt <= 2*e.srtt+4*e.rttvar {
		return false
	}
	j, ok := p.h.(PauseJudge)
	return ok && j.Spanned(sent, now)
}

// Config tunes a path. The zero value gives the documented defaults.
type Config struct {
	Name string
	Tier int
	// QueueBytes bounds records queued and not yet written; zero means 256 KiB.
	QueueBytes int
	// ProbeIdle is the probe interval of a path that carries no data; zero means 1s.
	ProbeIdle time.Duration
	// ProbeActive is the probe interval while the path carries data; zero means 50ms.
	ProbeActive time.Duration
	// DeadFloor and DeadCeil clamp the probe deadline 3*srtt+4*rttvar; zero means 400ms and
	// 1.5s. An idle blackholed path is declared dead within ProbeIdle+DeadCeil (2.5s), a busy
	// one within ProbeActive plus the deadline. The floor keeps a sudden latency spike (a
	// cellular link's buffer filling) from reading as death; the engine's stall check moves
	// traffic long before that anyway.
	DeadFloor, DeadCeil time.Duration
	// Datagrams: both ends agreed (in the handshake) to read datagram records from the
	// carrier's datagrams; the carrier must implement transport.Datagrammer.
	Datagrams bool
	// Unvalidated: the peer's address is not proven yet, as on the listening side of a
	// datagram carrier, where a first datagram's source address can be forged. Until a packet
	// from the peer authenticates (its keys need the handshake's answer, which went to that
	// address), a packet path sends it at most three times what it received.
	Unvalidated bool
	// Hold, when set, lets the Handler keep DATA payloads where the path opened them
	// (Path.Hold) within this budget, shared by the paths of one session. Nil: no holds.
	Hold *HoldBudget
}

func (c *Config) defaults() {
	if c.QueueBytes == 0 {
		c.QueueBytes = 256 << 10
	}
	if c.ProbeIdle == 0 {
		c.ProbeIdle = time.Second
	}
	if c.ProbeActive == 0 {
		c.ProbeActive = 50 * time.Millisecond
	}
	if c.DeadFloor == 0 {
		c.DeadFloor = 400 * time.Millisecond
	}
	if c.DeadCeil == 0 {
		c.DeadCeil = 1500 * time.Millisecond
	}
}

// Causes of death. Carrier errors are passed through as they are.
var (
	// ErrSilent: a probe went unanswered past its deadline.
	ErrSilent = errors.New("rendr: path silent")
	// ErrClosed: the path was closed locally.
	ErrClosed = errors.New("rendr: path closed")
)

// Path is one attached path.
type Path struct {
	ID   uint32
	cfg  Config
	conn net.Conn
	h    Handler

	// The carrier's half of the path (mode): pk on a packet path, stream on any other.
	stream streamState // a stream path's record ciphers, reader and datagram side
	pk     *pkState    // nil unless the carrier moves datagrams only (a packet path)

	kick  chan struct{} // wakes the writer
	done  chan struct{} // closed by Close
	wg    sync.WaitGroup
	alive atomic.Int32 // goroutines still running; the last one out calls Down

	// Fields accessed atomically.
	bytesSent, bytesRecv atomic.Int64
	lastData             atomic.Int64  // unix nanos of the last record sent that was not a probe
	lastRecv             atomic.Int64  // unix nanos of the last record received
	rate                 atomic.Uint64 // math.Float64bits of the write rate estimate, bytes/s

	// mu guards the queue, the probe state and the estimator. Lock order: a Handler may hold
	// its own lock while calling Send or Space; Path never calls the Handler with mu held.
	mu struct {
		sync.Mutex
		q, pq        []*Record // data and control (probe) records, oldest first
		qBytes       int
		wantWritable bool
		closed       bool
		cause        error
		pingSeq      uint64
		pongSeq      uint64 // the latest PING to answer, when pongPending
		pongPending  bool
		pingAt       time.Time // zero when no probe is outstanding
		nextPing     time.Time
		est          estimator
		probe        *time.Timer
		probeDue     time.Time // when the probe timer is set to fire
		// The newest probe answered: when it was sent, and when its answer came.
		answeredSent, answeredAt time.Time
	}
}

// New wraps an authenticated carrier. send and recv are the record ciphers; both nil means
// the carrier is already secure and records travel unencrypted. Call Start to run it.
func New(id uint32, conn net.Conn, send, recv *noise.CipherState, cfg Config, h Handler) *Path {
	cfg.defaults()
	p := &Path{
		ID: id, cfg: cfg, conn: conn, h: h,
		kick: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	// The carrier decides the mode, once: one that moves datagrams only makes a packet path.
	if pc, ok := conn.(transport.PacketCarrier); ok {
		p.pk = newPkState(pc, send, recv)
		if cfg.Unvalidated {
			p.pk.unvalidated, p.pk.unvalRecv = true, pc.BaseDatagramSize()
		}
	} else {
		p.stream.init(conn, send, recv, &cfg)
	}
	return p
}

// mode is the path's carrierMode. It follows from pk rather than being kept beside it, so the
// two cannot disagree; it inlines, and no caller runs more often than once per frame.
func (p *Path) mode() carrierMode {
	if p.pk != nil {
		return p.pk
	}
	return &p.stream
}

// carrierMode is what a path does differently over a byte stream (streamState, stream.go)
// and over datagrams only (pkState, packet.go and packetio.go). Path calls it where the two
// differ and nowhere else; a mode runs its own writer and readers. Methods named ...Locked
// are called with p.mu held.
type carrierMode interface {
	// run runs the mode's goroutines (launch) and the probe timer (startProbesLocked).
	run(p *Path)
	// spaceLocked is Space without its side effect.
	spaceLocked(p *Path) int
	// stopLocked stops what the mode runs besides its goroutines, as the path closes.
	stopLocked(p *Path)
	// probeAnsweredLocked takes the round trip of the probe just answered.
	probeAnsweredLocked(p *Path, now time.Time, rtt time.Duration)
	// hold is Hold for a path with a HoldBudget.
	hold(h *HoldBudget) Pin
	// maxRecord is MaxRecord.
	maxRecord(p *Path) int
	// confirmation is Confirmed.
	confirmation() <-chan struct{}
	// packetStats is PacketStats, and whether the path is a packet path.
	packetStats(p *Path) (PacketStats, bool)
}

// Name is the path's configured name.
func (p *Path) Name() string { return p.cfg.Name }

// Tier is the path's priority tier.
func (p *Path) Tier() int { return p.cfg.Tier }

// Conn is the carrier.
func (p *Path) Conn() net.Conn { return p.conn }

// Start runs the reader and writer goroutines and the probe timer. Records sent before Start
// are written first.
func (p *Path) Start() { p.mode().run(p) }

// launch runs the path's goroutines. Each defers exit, so the last one out reports Down.
func (p *Path) launch(routines ...func()) {
	p.wg.Add(len(routines))
	p.alive.Store(int32(len(routines)))
	for _, r := range routines {
		go r()
	}
}

// startProbesLocked arms the probe timer for a first probe at once.
func (p *Path) startProbesLocked() {
	now := time.Now()
	p.mu.nextPing, p.mu.probeDue = now, now
	p.mu.probe = time.AfterFunc(0, p.probe)
}

// armProbeLocked sets the probe timer to fire after d.
func (p *Path) armProbeLocked(now time.Time, d time.Duration) {
	p.mu.probeDue = now.Add(d)
	p.mu.probe.Reset(d)
}

// Space is how many more bytes of records may be queued. When it returns zero or less, the
// Handler hears Writable once the queue drains.
func (p *Path) Space() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.mode().spaceLocked(p)
	if s <= 0 {
		p.mu.wantWritable = true
	}
	return s
}

// queueSpaceLocked is what QueueBytes leaves room for. A packet path's Space is also bounded by
// its congestion window.
func (p *Path) queueSpaceLocked() int { return p.cfg.QueueBytes - p.mu.qBytes }

// Send queues a record of frames and takes ownership of it. It reports false (and releases
// r) when the path is closed.
func (p *Path) Send(r *Record) bool {
	return p.enqueue(r, false)
}

// SendControl queues a record ahead of every data record. Records sent this way before Start
// are the first the peer reads (a JOIN_PROOF).
func (p *Path) SendControl(r *Record) bool {
	return p.enqueue(r, true)
}

func (p *Path) enqueue(r *Record, control bool) bool {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		r.Release()
		return false
	}
	if control {
		p.mu.pq = append(p.mu.pq, r)
	} else {
		p.mu.q = append(p.mu.q, r)
		p.mu.qBytes += r.Len()
		p.lastData.Store(time.Now().UnixNano())
	}
	p.mu.Unlock()
	p.kickWriter()
	return true
}

// Close closes the path with cause (nil means ErrClosed). It does not wait; Down follows.
func (p *Path) Close(cause error) {
	if cause == nil {
		cause = ErrClosed
	}
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return
	}
	p.mu.closed = true
	p.mu.cause = cause
	if p.mu.probe != nil {
		p.mu.probe.Stop()
	}
	p.mode().stopLocked(p)
	q, pq := p.mu.q, p.mu.pq
	p.mu.q, p.mu.pq, p.mu.qBytes = nil, nil, 0
	p.mu.Unlock()
	close(p.done)
	p.conn.Close()
	// The writer may still hold records it took; it releases those itself.
	for _, r := range q {
		r.Release()
	}
	for _, r := range pq {
		r.Release()
	}
}

// Flushed reports whether every queued record has been handed to the carrier.
func (p *Path) Flushed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.mu.q) == 0 && len(p.mu.pq) == 0 && p.mu.qBytes == 0
}

// Wait blocks until the path's goroutines have exited.
func (p *Path) Wait() { p.wg.Wait() }

// Closed is closed when the path is closed.
func (p *Path) Closed() <-chan struct{} { return p.done }

// Cause is why the path closed, or nil while it is open.
func (p *Path) Cause() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.cause
}

// Quality is the path's current estimate. srtt is zero until the first probe is answered.
type Quality struct {
	SRTT, RTTVar, MinRTT time.Duration
	// Recent is the least round trip of the last second or two (see estimator).
	Recent  time.Duration
	Loss    float64
	Samples int
	// ProbeAge is how long the outstanding probe has waited (zero when none is).
	ProbeAge time.Duration
}

// Quality returns the current estimate.
func (p *Path) Quality() Quality {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := Quality{SRTT: p.mu.est.srtt, RTTVar: p.mu.est.rttvar, MinRTT: p.mu.est.minRTT, Recent: p.mu.est.recent(), Loss: p.mu.est.loss, Samples: p.mu.est.samples}
	if !p.mu.pingAt.IsZero() {
		q.ProbeAge = time.Since(p.mu.pingAt)
	}
	return q
}

// Bytes returns carrier bytes sent and received.
func (p *Path) Bytes() (sent, recv int64) { return p.bytesSent.Load(), p.bytesRecv.Load() }

// MaxRecord is what flow.Link asks: the most frame bytes the engine may put in one
// record of a packet path (0 on a stream path).
func (p *Path) MaxRecord() int { return p.mode().maxRecord(p) }

// Packets reports whether the path runs over a datagram carrier, so may lose records.
func (p *Path) Packets() bool { return p.pk != nil }

// Confirmed is closed once the peer acknowledged the records sent with SendControl before
// Start (a JOIN_PROOF), and at least one packet. A stream path is confirmed when it starts:
// its carrier delivers in order or dies.
func (p *Path) Confirmed() <-chan struct{} { return p.mode().confirmation() }

// PacketStats returns the counters of a packet path (zero on a stream path).
func (p *Path) PacketStats() PacketStats {
	k, _ := p.mode().packetStats(p)
	return k
}

// RemoteAddr is the carrier's remote address.
func (p *Path) RemoteAddr() net.Addr { return p.conn.RemoteAddr() }

// Fill writes the path's part of a status snapshot.
func (p *Path) Fill(s *status.Path) {
	q := p.Quality()
	s.ID = p.ID
	s.Name = p.cfg.Name
	s.Tier = p.cfg.Tier
	s.Local, s.Remote = p.conn.LocalAddr(), p.conn.RemoteAddr()
	s.SRTT, s.Jitter, s.MinRTT, s.Loss = q.SRTT, q.RTTVar, q.MinRTT, q.Loss
	s.BytesSent, s.BytesRecv = p.Bytes()
	if k, ok := p.mode().packetStats(p); ok {
		s.Packets = &status.Packets{Sent: k.Sent, Lost: k.Lost, Forged: k.Forged, MTU: k.MTU,
			Window: k.Window, InFlight: k.InFlight, Rebinds: k.Rebinds, Marked: k.Marked, MarkedIn: k.MarkedIn,
			PongsHeld: k.PongsHeld}
	}
}

// Deadline is how long a probe may stay unanswered now before the path is declared dead of
// silence (while the peer is heard on another path).
func (p *Path) Deadline() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.deadlineLocked()
}

// deadlineLocked is how long a probe may stay unanswered.
func (p *Path) deadlineLocked() time.Duration {
	e := &p.mu.est
	if e.samples == 0 {
		return p.cfg.DeadCeil
	}
	return min(max(3*e.srtt+4*e.rttvar, p.cfg.DeadFloor), p.cfg.DeadCeil)
}

// silentSinceLocked is when the path last showed life while a probe is outstanding: the probe
// itself, or any record received after it. A busy carrier can hold a PONG behind megabytes of
// data the peer is still delivering; records arriving meanwhile show the path is alive.
// (A path that stops carrying our direction only is caught by the engine's stall check.)
func (p *Path) silentSinceLocked() time.Time {
	t := p.mu.pingAt
	if r := p.lastRecv.Load(); r > t.UnixNano() {
		return time.Unix(0, r)
	}
	return t
}

// probe runs on the probe timer: it declares death when the outstanding probe is overdue,
// sends the next probe when it is due, and re-arms the timer for whichever comes first.
//
// Silence is held against the path only when it is the path's own. A timer that fires late
// means this process was not running (stopped, a stalled VM, a long pause): answers may wait
// unread, so the verdict waits until the reader has had as long again. And while the peer
// has not been heard on any other path either (SilenceJudge), or while bytes from the peer
// wait unread in the carrier's socket (Unread), the peer or this host stopped, not the path:
// the verdict waits, up to DeadCeil.
func (p *Path) probe() {
	now := time.Now()
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return
	}
	if !p.mu.pingAt.IsZero() {
		if d, since := p.deadlineLocked(), p.silentSinceLocked(); now.Sub(since) >= d {
			if late := deadline.Overslept(p.mu.probeDue, now, d); late > 0 {
				p.armProbeLocked(now, min(late, d))
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
			// Bytes waiting unread in the socket are the peer heard, by a reader this host
			// has not run yet: its silence, not the path's.
			if now.Sub(since) < max(d, p.cfg.DeadCeil) && unread(p.conn) {
				p.mu.Lock()
				if !p.mu.closed {
					p.armProbeLocked(now, max(d/4, time.Millisecond))
				}
				p.mu.Unlock()
				return
			}
			if j, ok := p.h.(SilenceJudge); ok && now.Sub(since) < max(d, p.cfg.DeadCeil) && !j.HeardElsewhere(p, since) {
				p.mu.Lock()
				if !p.mu.closed {
					p.armProbeLocked(now, max(d/4, time.Millisecond))
				}
				p.mu.Unlock()
				return
			}
			p.Close(fmt.Errorf("%w: no probe answer in %v", ErrSilent, now.Sub(since).Round(time.Millisecond)))
			return
		}
	}
	var ping *Record
	if p.mu.pingAt.IsZero() && !now.Before(p.mu.nextPing) {
		ping = p.pingLocked(now)
	}
	next := p.mu.nextPing
	if !p.mu.pingAt.IsZero() {
		next = p.silentSinceLocked().Add(p.deadlineLocked())
	}
	p.armProbeLocked(now, max(next.Sub(now), time.Millisecond))
	p.mu.Unlock()
	if ping != nil {
		p.enqueue(ping, true)
	}
}

// pingLocked makes the next probe, outstanding from now.
func (p *Path) pingLocked(now time.Time) *Record {
	p.mu.pingSeq++
	p.mu.pingAt = now
	ping := NewRecord()
	ping.B = wire.AppendPing(ping.B, p.mu.pingSeq)
	return ping
}

// ProbeNow sends a probe at once unless one is outstanding, and returns when the outstanding
// probe was sent (zero once the path is closed). The session asks it of a path when it needs
// to know soon whether the peer can be heard there; the answer comes as Measured.
func (p *Path) ProbeNow() time.Time {
	now := time.Now()
	p.mu.Lock()
	if p.mu.closed || p.mu.probe == nil {
		p.mu.Unlock()
		return time.Time{}
	}
	if at := p.mu.pingAt; !at.IsZero() {
		p.mu.Unlock()
		return at
	}
	ping := p.pingLocked(now)
	p.armProbeLocked(now, p.deadlineLocked())
	p.mu.Unlock()
	p.enqueue(ping, true)
	return now
}

// Answered is the newest probe answered: when it was sent and when its answer came (zero
// times before the first).
func (p *Path) Answered() (sent, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.answeredSent, p.mu.answeredAt
}

// Heard is when the path last received a record from the peer (zero before the first).
func (p *Path) Heard() time.Time {
	if n := p.lastRecv.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// interval is the probe interval: short while data flowed within the last idle interval.
func (p *Path) interval(now time.Time) time.Duration {
	if now.UnixNano()-p.lastData.Load() < int64(p.cfg.ProbeIdle) {
		return p.cfg.ProbeActive
	}
	return p.cfg.ProbeIdle
}

func (p *Path) pong(seq uint64) {
	if p.measure(seq) {
		p.h.Measured(p)
	}
}

func (p *Path) measure(seq uint64) bool {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.pingAt.IsZero() || seq != p.mu.pingSeq {
		return false // an answer to a probe we gave up on; it proves nothing about the current one
	}
	p.mode().probeAnsweredLocked(p, now, now.Sub(p.mu.pingAt))
	p.mu.answeredSent, p.mu.answeredAt = p.mu.pingAt, now
	p.mu.pingAt = time.Time{}
	p.mu.nextPing = now.Add(p.interval(now))
	if p.mu.probe != nil && !p.mu.closed {
		p.armProbeLocked(now, p.mu.nextPing.Sub(now))
	}
	return true
}

// exit is deferred by both goroutines: whichever leaves last reports Down, so the Handler
// hears it once and only when nothing of the path still runs.
func (p *Path) exit() {
	if p.alive.Add(-1) == 0 {
		p.h.Down(p, p.Cause())
	}
	p.wg.Done()
}

// kickWriter wakes the writer goroutine, or leaves a wake-up for it if it is busy.
func (p *Path) kickWriter() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// gatherSize is the most one gathered write carries.
const gatherSize = 256 << 10

// gatherPool lends writers their gather buffers for one batch each, so an idle path holds none.
var gatherPool = sync.Pool{New: func() any {
	b := make([]byte, 0, gatherSize)
	return &b
}}

// Rate is how fast the carrier has taken bytes while it was the bottleneck, in bytes per
// second; 0 while unknown.
func (p *Path) Rate() float64 { return math.Float64frombits(p.rate.Load()) }

// Silence is how long the path has waited for its peer: since the later of the outstanding
// probe and the last record received, while a probe is outstanding; zero when none is.
func (p *Path) Silence() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.pingAt.IsZero() {
		return 0
	}
	return time.Since(p.silentSinceLocked())
}

// Arrival estimates how long a record of n bytes queued now would take to reach the peer,
// from what the kernel says of a TCP carrier (kernelq.go): ok is false on any other carrier,
// and until the kernel has measured the path.
func (p *Path) Arrival(n int) (time.Duration, bool) {
	if p.pk != nil || p.stream.kq == nil {
		return 0, false
	}
	p.mu.Lock()
	q := p.mu.qBytes
	p.mu.Unlock()
	return p.stream.kq.arrival(q, n, time.Now())
}

// Backlog is the bytes of data records queued and not yet written to the carrier.
func (p *Path) Backlog() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.qBytes
}

// errSplitData is a split record whose parts are not the payload of a DATA frame at its end.
var errSplitData = fmt.Errorf("%w: split record without its DATA header at its end", ErrRecord)

// nextFrame takes the next frame of a record off *frames into f, for the reader of either
// carrier mode. A split record's payload (*parts) belongs to a DATA frame that ends the
// record: that frame is handed to the Handler here, with split true and nothing left after
// it. A record that does not parse, or whose parts have no such frame, is ErrRecord.
func (p *Path) nextFrame(frames *[]byte, parts *[][]byte, f *wire.Frame) (split bool, err error) {
	b := *frames
	if len(*parts) > 0 {
		if h, m, l, ok := wire.DataHeader(b); ok && m == len(b) {
			*f = h
			err = p.splitData(f, l, *parts)
			*frames, *parts = nil, nil
			return true, err
		}
		if len(b) == 0 {
			return false, errSplitData
		}
	}
	h, m, err := wire.Parse(b)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrRecord, err)
	}
	*f, *frames = h, b[m:]
	return false, nil
}

// splitData hands the Handler the DATA frame f whose payload is a split record's parts, as one
// DATA frame per part: the same bytes at the same offsets, the end of stream on the last.
func (p *Path) splitData(f *wire.Frame, length uint64, parts [][]byte) error {
	total := 0
	for _, b := range parts {
		total += len(b)
	}
	if uint64(total) != length {
		return fmt.Errorf("%w: split record of %d payload bytes for a DATA frame of %d", ErrRecord, total, length)
	}
	fin := f.Type == wire.TypeDataFin
	for i, b := range parts {
		f.Type, f.Payload = wire.TypeData, b
		if fin && i == len(parts)-1 {
			f.Type = wire.TypeDataFin
		}
		if err := p.h.Frame(p, f); err != nil {
			return err
		}
		f.Offset += uint64(len(b))
	}
	return nil
}
