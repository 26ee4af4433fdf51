// Send stage: the engine goroutine turns ready streams into records on the route's links.
//
//  1. readyLocked queues a stream that has something to send and kicks routineRun.
//  2. pump asks the Router for a Route; fill notes its links (routeLocked, rewind.go) and asks
//     the route for destinations until no link has room.
//  3. buildLocked fills each record: MAX_DATA, ROUTE and stateless replies first, then
//     round-robin over ready streams; emitLocked adds one stream's control frames, then its
//     datagrams or at most a quantum of its data (bytes a lossy link lost first), within the
//     flow and session windows (window.go).
//  4. The record goes to its link, a copy to every other link of a Race; pinned datagrams go
//     in records for their own link.
//  5. fill then runs the stall check (rewind.go) and says when to look again.
//
// Locking: routineRun and pump run without Engine.mu, so that pump may call the Router; fill
// and untilAck take it, and everything else here runs with it held.

package flow

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/rendr-go/rendr/internal/deadline"
	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
)

// readyLocked queues s to be visited by the engine loop.
func (e *Engine) readyLocked(s *Stream) {
	if !s.queued {
		s.queued = true
		e.mu.ready.push(s)
	}
	e.Kick()
}

// routineRun is the engine goroutine: it pumps when kicked and when the stall check or a
// delayed ACK falls due, until the engine fails or closes.
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
		v := e.fill(rt)
		if e.rewindNew {
			e.rewindNew = false
			if e.cfg.OnRewind != nil {
				e.cfg.OnRewind(e.rewindFlows, e.rewindBytes)
			}
		}
		if v.link == nil {
			if d, ok := e.router.(Doubter); ok && v.doubt != nil {
				d.Doubt(v.doubt, v.since)
			}
			return e.untilAck(v.wait)
		}
		acted, retry := e.router.Stalled(v.link, v.since, v.limit)
		if !acted && retry > 0 {
			e.checkAfter(retry) // the verdict waits for evidence against the link
			return e.untilAck(retry)
		}
		e.verdictTaken()
		if !acted {
			return e.untilAck(v.limit) // nowhere else to go: the data stays, the timeout backs off
		}
	}
	return e.untilAck(10 * time.Millisecond)
}

// stallVerdict is what fill's stall check found: a link to blame, with the last progress and
// the timeout, or else when to look again.
type stallVerdict struct {
	link        Link
	doubt       Link // half way to a verdict against it: for a Doubter
	since       time.Time
	limit, wait time.Duration
}

// checkAfter notes that the stall check is due after d, so that one that runs much later is
// known for a check this process was too stopped to make on time.
func (e *Engine) checkAfter(d time.Duration) {
	e.mu.Lock()
	e.mu.checkDue = time.Now().Add(d)
	e.mu.Unlock()
}

// verdictTaken starts the next stall timeout, backed off: one verdict per timeout, each
// without acknowledged progress since the last doubling the next, as TCP backs off its
// retransmission timer (a path slow to drain a resent window must not bounce traffic).
func (e *Engine) verdictTaken() {
	e.mu.Lock()
	e.mu.progress = time.Now()
	e.mu.stallShift = min(e.mu.stallShift+1, 4)
	e.mu.Unlock()
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
func (e *Engine) fill(rt *Route) (v stallVerdict) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.err != nil {
		return v
	}
	links := rt.links(e.links[:0])
	e.links = links
	if len(links) == 0 {
		return v
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
		zc := len(dests) == 1 && dests[0].ZeroCopy()
		r := record.New()
		e.collect = false
		for _, d := range dests {
			if m := d.MaxRecord(); m > 0 {
				// A record for a lossy link fits its packets and says what it carries;
				// a Race's copies for other links are cut to the same size.
				if m = max(m, minLossyRecord); !e.collect || m < r.Room() {
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
			c := record.New()
			c.B = append(c.B[:0], r.B...)
			c.Carried = append(c.Carried[:0], r.Carried...)
			dead = !d.Send(c) || dead
		}
		if !dests[0].Send(r) || dead {
			return v // a link died; its Down kicks us with a new route
		}
	}
	clear(e.dests)
	// Pinned datagrams for links the route's own choice did not reach this round.
	if len(e.pin) > 1 {
		for _, l := range e.pin {
			for e.mu.pinnedQueued > 0 && l.Space() > 0 {
				r := record.New()
				e.dest, e.pinnedOnly = l, true
				e.collect = false
				if m := l.MaxRecord(); m > 0 {
					r.SetLimit(max(m, minLossyRecord))
					e.collect = true
				}
				e.buildLocked(r, false)
				e.pinnedOnly = false
				if len(r.B) == 2 {
					r.Release()
					break
				}
				if !l.Send(r) {
					return v
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
	defer clear(e.links)
	if e.mu.outstanding == 0 {
		return v
	}
	// Each verdict without acknowledged progress since the last one doubles the next timeout
	// (verdictTaken): a machine starved of CPU, or a path slow to drain a resent window, must
	// not bounce traffic between healthy paths.
	limit := min(max(2*srtt+4*rttvar, e.cfg.StallFloor)<<e.mu.stallShift, e.cfg.StallCeil)
	if now.After(e.mu.resendScan) {
		e.mu.resendScan = now.Add(limit)
		e.resendStuckLocked(now, max(4*limit, minResendAfter))
	}
	v.limit = limit
	if since := now.Sub(e.mu.progress); since < limit {
		v.wait = limit - since
		if since < limit/2 {
			v.wait = limit/2 - since // to tell a Doubter half way
		} else if e.mu.doubted != e.mu.progress {
			e.mu.doubted = e.mu.progress
			v.doubt, v.since = culprit(links), e.mu.progress
		}
		e.mu.checkDue = now.Add(v.wait)
		return v
	}
	// A check made long after it was due measured this process's own pause, in which the
	// acknowledgements may have come and wait unread: look again once the readers have run.
	if late := deadline.Overslept(e.mu.checkDue, now, limit); late > 0 {
		v.wait = min(late, limit)
		e.mu.checkDue = now.Add(v.wait)
		return v
	}
	if v.link = culprit(links); v.link == nil {
		e.mu.progress = now // nobody to blame yet: look again after the (backed-off) timeout
		e.mu.stallShift = min(e.mu.stallShift+1, 4)
		v.wait = limit
		e.mu.checkDue = now.Add(v.wait)
		return v
	}
	v.since = e.mu.progress
	return v
}

// buildLocked fills r with frames: the session window first, then round-robin over ready
// streams, each adding its control frames and at most one quantum of data.
func (e *Engine) buildLocked(r *record.Record, zc bool) {
	if e.mu.maxDataPending && r.Room() >= 9 {
		r.B = wire.AppendMaxData(r.B, e.mu.recvMax)
		e.mu.maxDataPending = false
		e.carriedLocked(r, record.Carried{Kind: record.CarriedMaxData})
	}
	if e.mu.routePending && r.Room() >= len(e.mu.routeFrame) {
		r.B = append(r.B, e.mu.routeFrame...)
		e.mu.routePending = false
		e.carriedLocked(r, record.Carried{Kind: record.CarriedRoute})
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
func (e *Engine) carriedLocked(r *record.Record, c record.Carried) {
	if e.collect {
		r.Carried = append(r.Carried, c)
	}
}

// emitLocked appends s's pending frames to r and reports whether s has more to send.
func (s *Stream) emitLocked(r *record.Record, zc bool) bool {
	e := s.e
	const ctl = 1 + 8 + 8 + 8 + 1 // the largest control frame but an OPEN with metadata
	if r.Room() < 4*ctl+len(s.meta) {
		return true
	}
	if s.openPending {
		r.B = wire.AppendOpen(r.B, s.id, kindOf(s.id), s.meta)
		s.openPending = false
		e.carriedLocked(r, record.Carried{Kind: record.CarriedOpen, Flow: s.id})
	}
	if s.ackLater {
		s.ackPending = true // due soon anyway: it rides this record
	}
	if s.ackPending {
		var flags uint8
		if s.recvDone() {
			flags = wire.AckFin
		}
		if s.taken {
			flags |= wire.AckOpen
		}
		s.freshLimitLocked()
		r.B = wire.AppendAck(r.B, s.id, s.recvNext, max(s.recvLimit, s.recvNext), flags)
		s.ackPending, s.ackLater, s.ackedNext = false, false, s.recvNext
		// Off and Fin let a lost final ACK go again after the flow is forgotten (Lost).
		e.carriedLocked(r, record.Carried{Kind: record.CarriedAck, Flow: s.id, Off: s.recvNext, Fin: flags&wire.AckFin != 0})
	}
	if s.stopPending {
		r.B = wire.AppendStop(r.B, s.id, s.code)
		s.stopPending, s.stopSent = false, true
		e.carriedLocked(r, record.Carried{Kind: record.CarriedStop, Flow: s.id})
	}
	if s.resetPending {
		r.B = wire.AppendReset(r.B, s.id, s.code, s.sendHigh)
		s.resetPending, s.resetSent = false, true
		e.setOutstandingLocked(s)
		e.carriedLocked(r, record.Carried{Kind: record.CarriedReset, Flow: s.id})
	}
	if s.resetSent || s.err != nil {
		return false
	}
	if s.pk != nil && s.emitDatagramsLocked(r) {
		return true // datagrams first; a FIN follows the last of them
	}
	if s.retx.trim(s.sendBase); len(s.retx) > 0 {
		return s.emitRetxLocked(r, zc)
	}
	if s.ahead.hi > s.ahead.lo && s.sendNext >= s.ahead.lo {
		s.sendNext, s.ahead = max(s.sendNext, s.ahead.hi), span{} // sent again first already
	}
	end := s.sendBase + uint64(s.sbuf.len())
	limit := min(end, s.peerLimit)
	if s.sendNext >= limit && !(s.finQueued && !s.finSent && s.sendNext == end) {
		return false // nothing to send, or blocked by the flow window until an ACK
	}
	n := min(limit-s.sendNext, e.quantumLocked())
	if s.ahead.hi > s.ahead.lo {
		n = min(n, s.ahead.lo-s.sendNext)
	}
	room := r.Room() - wire.DataOverhead(s.id, s.sendNext, int(n))
	if room <= 0 {
		return true
	}
	n = s.fitLocked(s.sendNext, min(n, uint64(room)), room, zc)
	// New bytes (beyond sendHigh) spend session credit; resent ones do not.
	if s.sendNext+n > s.sendHigh {
		credit := e.mu.sendMax - e.mu.sendUsed
		fresh := s.sendNext + n - max(s.sendNext, s.sendHigh)
		if fresh > credit {
			n -= fresh - credit
			if !s.sessBlocked {
				s.sessBlocked = true
				e.mu.sessWait = append(e.mu.sessWait, s)
			}
		}
	}
	fin := s.finQueued && s.sendNext+n == end
	if n == 0 && !fin {
		return false
	}
	r.B = wire.AppendDataHeader(r.B, s.id, s.sendNext, fin, int(n))
	s.appendPayloadLocked(r, zc, s.sendNext, n)
	e.carriedLocked(r, record.Carried{Kind: record.CarriedData, Flow: s.id, Off: s.sendNext, Len: uint32(n), Fin: fin})
	s.sendNext += n
	if s.unsentWait && end-s.sendNext <= maxUnsent/2 {
		s.unsentWait = false
		signal(s.writeSig)
	}
	if s.sendNext > s.sendHigh {
		s.markSentLocked(time.Now())
		e.mu.sendUsed += s.sendNext - s.sendHigh
		s.sendHigh = s.sendNext
	}
	if fin {
		s.finSent = true
	}
	e.setOutstandingLocked(s)
	// Resending (below sendHigh) needs no session credit, so a blocked flow goes on resending.
	return s.sendNext < min(end, s.peerLimit) && (!s.sessBlocked || s.sendNext < s.sendHigh)
}

// zeroCopyMin is the smallest payload sent by reference to a link that takes it (ZeroCopy);
// smaller ones are copied, so that a record full of small frames is not cut short.
const zeroCopyMin = 4 << 10

// fitLocked shortens n bytes at offset off, bound for a record with room bytes left, so that
// a packet path can seal them where they lie: it seals a payload kept by reference in parts,
// one per send-buffer piece, each with a tag of its own (record.SplitOverhead), and copies a
// payload whose parts do not fit its packet. Stream paths have no such bound.
func (s *Stream) fitLocked(off, n uint64, room int, zc bool) uint64 {
	if !zc || !s.e.collect || n < zeroCopyMin {
		return n
	}
	over := record.SplitOverhead(s.sbuf.pieces(int(off-s.sendBase), int(n)))
	if int(n)+over > room {
		n = uint64(max(room-over, 0)) // no more pieces than before: one pass is enough
	}
	return n
}

// appendPayloadLocked ends r with the n bytes at offset off of the send buffer: by reference on
// a zero-copy record when they are many, copied otherwise.
func (s *Stream) appendPayloadLocked(r *record.Record, zc bool, off, n uint64) {
	if zc && n >= zeroCopyMin {
		s.sbuf.pin(r, int(off-s.sendBase), int(n)) // the record ends here
		return
	}
	at := len(r.B)
	r.B = r.B[:at+int(n)]
	s.sbuf.readAt(r.B[at:], int(off-s.sendBase))
}

// emitRetxLocked sends again the first of the bytes a lossy link lost. They were sent before,
// so they need no credit of the flow or the session window; a lost FIN goes again with the
// new bytes (finSent, cleared by Lost). It reports whether the flow has more to send.
func (s *Stream) emitRetxLocked(r *record.Record, zc bool) bool {
	x := s.retx.first()
	n := min(x.hi-x.lo, s.e.quantumLocked())
	room := r.Room() - wire.DataOverhead(s.id, x.lo, int(n))
	if room <= 0 {
		return true
	}
	n = s.fitLocked(x.lo, min(n, uint64(room)), room, zc)
	r.B = wire.AppendDataHeader(r.B, s.id, x.lo, false, int(n))
	s.appendPayloadLocked(r, zc, x.lo, n)
	s.e.carriedLocked(r, record.Carried{Kind: record.CarriedData, Flow: s.id, Off: x.lo, Len: uint32(n)})
	s.retx.cut(n)
	s.e.setOutstandingLocked(s)
	return true
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
	if !s.ackListed {
		// Listed once until the flush: an ACK sent meanwhile clears ackLater, not the
		// list, and a stream delayed again must not be listed twice (the list would grow
		// with every frame until the flush).
		s.ackListed = true
		e.mu.ackLater = append(e.mu.ackLater, s)
	}
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
		s.ackListed = false
		if s.ackLater {
			s.ackPending = true
			e.readyLocked(s)
		}
	}
	clear(e.mu.ackLater)
	e.mu.ackLater, e.mu.ackAt = e.mu.ackLater[:0], time.Time{}
	return 0
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
