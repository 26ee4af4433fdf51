// Recovery stage: bytes sent and not yet acknowledged. The engine keeps every byte until the
// peer acknowledges it, and sends it again when it may be lost:
//   - a link leaves the route (routeLocked): every flow rewinds to its acknowledged offset;
//   - acknowledgements stop (fill's stall check): culprit names the link to report to the
//     Router, which may route around it;
//   - one flow's acknowledgements stop while others progress (resendStuckLocked);
//   - a lossy link reports a record lost (Lost): what it carried goes again.

package flow

import (
	"time"

	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
)

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
			e.busySince.Store(e.mu.progress.UnixNano())
		}
		s.ackedAt = time.Now()
		e.mu.outstanding++
	} else {
		e.outstandingDownLocked()
	}
}

// outstandingDownLocked counts one stream fewer with bytes the peer has not acknowledged.
func (e *Engine) outstandingDownLocked() {
	e.mu.outstanding--
	if e.mu.outstanding == 0 {
		e.busySince.Store(0)
	}
}

// BusySince is when bytes the peer has not acknowledged began to be outstanding without a
// break, zero while none are. It takes no lock: a path's reader asks it for every record,
// to tell a peer that went quiet with data owed (paused, or this host not scheduled) from one
// with nothing to answer.
func (e *Engine) BusySince() time.Time {
	if n := e.busySince.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
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
		srtt, rttvar := l.SRTT()
		over := l.Silence() - max(2*srtt+4*rttvar, 5*time.Millisecond)
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
		e.rewindLocked(now)
		e.mu.migrations++
	}
	e.mu.linkIDs = append(e.mu.linkIDs[:0], ids...)
	e.mu.progress = now
}

// rewindLocked makes every flow resend from its acknowledged offset (rewindStreamLocked) and
// re-arms control state the old link may have lost.
func (e *Engine) rewindLocked(now time.Time) {
	e.mu.maxDataPending = true
	e.mu.routePending = len(e.mu.routeFrame) > 0
	// Resent bytes need no session credit: every flow is visited again, blocked or not.
	e.wakeSessWaitLocked()
	for id := range e.mu.refused {
		e.queueRefusalLocked(id)
	}
	flows, bytes := 0, uint64(0)
	for _, s := range e.mu.flows {
		if s.sendNext > s.sendBase {
			flows++
			bytes += s.sendNext - s.sendBase
		}
		s.rewindStreamLocked(now) // all of it goes again, the last half round trip's first
		if !s.finAcked {
			s.finSent = false
			if s.resetSent {
				s.resetPending = true
			}
		}
		if !s.openAcked && s.local {
			s.openPending = true
		}
		if s.stopSent && !s.recvDone() {
			s.stopPending = true
		}
		s.ackPending = s.ackPending || s.recvNext > 0 || s.finRecv || s.resetRecv
		e.readyLocked(s)
	}
	e.mu.rewound += bytes
	e.rewindFlows, e.rewindBytes, e.rewindNew = flows, bytes, true
}

// sentMark says that the flow's bytes from off on were first sent at at (since the engine's
// epoch) or later. A flow keeps sentMarks of them, 16 bytes each.
type sentMark struct {
	at  time.Duration
	off uint64
}

// sentMarks is how many marks a flow keeps, a new one at most every eighth of a round trip,
// and none while no acknowledgement has come for a round trip: they reach back two round
// trips from the last acknowledgement, more than a rewind looks, however long the path was
// silent before it.
const sentMarks = 16

// markSentLocked notes that bytes from s.sendHigh on are being sent first now.
func (s *Stream) markSentLocked(now time.Time) {
	srtt, at := s.e.mu.srtt, now.Sub(s.e.epoch)
	last := s.sentAt[sentMarks-1]
	if last.at != 0 && (at-last.at < max(srtt/8, time.Millisecond) || now.Sub(s.ackedAt) > srtt) {
		return
	}
	copy(s.sentAt[:], s.sentAt[1:])
	s.sentAt[sentMarks-1] = sentMark{at: at, off: s.sendHigh}
}

// rewindStreamLocked makes s send again everything not acknowledged. When the path died just
// after its last acknowledgement, the bytes sent since half a round trip before that go
// first: those were most likely still on their way and lost with it, while the ones before
// them most likely arrived, their acknowledgement still coming back. Sent in order from the
// acknowledged offset, over a path whose congestion window starts small after idling, the
// bytes the receiver has already would take the new path's first flights, before the ones it
// waits for; MPTCP's reinjection, which resends at the data level, has the same in mind. The
// rest follows at once, each byte once, then new bytes.
func (s *Stream) rewindStreamLocked(now time.Time) {
	next := s.sendNext
	s.resendAllLocked()
	if s.pk != nil {
		return
	}
	// Only a path left within half a round trip of its last acknowledgement (a reset, a
	// closed connection) died about when that came: the receiver has what was sent until half
	// a round trip before it. One left later, for a stall, died some time before; where its
	// queues dropped what was in flight is not known within a one-way trip, and a tail begun
	// too late would hold the bytes before it back behind all of it.
	srtt := s.e.mu.srtt
	if now.Sub(s.ackedAt) > srtt/2 {
		return
	}
	cut := s.ackedAt.Sub(s.e.epoch) - srtt/2
	// The tail begins at the first mark at or after the cut, when a mark before the cut says
	// the marks reach back that far; else where it begins is not known, and nothing goes
	// ahead. Begun at the cut, it may leave behind a few bytes the receiver lacks; begun
	// before it, it takes bytes the receiver has, and the new path's first flight (TCP's
	// initial window, ten segments) is soon full of them.
	tail, before := next, false
	for _, m := range s.sentAt {
		if m.at == 0 {
			continue
		}
		if m.at < cut {
			before = true
			continue
		}
		if before {
			tail = m.off
		}
		break
	}
	if tail > s.sendBase && tail < next {
		s.retx.add(tail, next)
		s.ahead = span{tail, next}
	}
}

// resendAllLocked makes every byte from the acknowledged offset on go again, in order.
func (s *Stream) resendAllLocked() {
	s.sendNext, s.ahead = s.sendBase, span{}
	s.retx = s.retx[:0]
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
		s.resendAllLocked()
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

// Lost takes back what a record a lossy link (MaxRecord > 0) lost carried: flow bytes not acknowledged since
// are sent again, before new ones; control frames are sent again with their current values
// (a later ACK or MAX_DATA says more than the lost one did). Datagrams are not resent: packet
// flows never resend.
func (e *Engine) Lost(cs []record.Carried) {
	e.mu.Lock()
	for _, c := range cs {
		switch c.Kind {
		case record.CarriedMaxData:
			e.mu.maxDataPending = true
			continue
		case record.CarriedRoute:
			e.mu.routePending = len(e.mu.routeFrame) > 0
			continue
		}
		s := e.mu.flows[c.Flow]
		if s == nil {
			// Finished and forgotten: only its final ACK is still owed, or the peer would
			// wait for its timeout to learn that everything arrived.
			if c.Kind == record.CarriedAck && c.Fin && len(e.mu.ctrl) < maxCtrl {
				e.mu.ctrl = wire.AppendAck(e.mu.ctrl, c.Flow, c.Off, c.Off, wire.AckFin)
			}
			continue
		}
		switch c.Kind {
		case record.CarriedData:
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
		case record.CarriedOpen:
			s.openPending = s.openPending || !s.openAcked
		case record.CarriedAck:
			s.ackPending = true
		case record.CarriedStop:
			s.stopPending = s.stopPending || (s.stopSent && !s.recvDone())
		case record.CarriedReset:
			s.resetPending = s.resetPending || (s.resetSent && !s.finAcked)
		}
		e.readyLocked(s)
	}
	e.mu.Unlock()
	e.Kick()
}
