// Receive stage: a path's reader hands the engine one frame at a time.
//
//  1. HandleFrom takes the engine's lock; handleLocked checks the frame's values.
//  2. MAX_DATA raises the session credit (window.go). Any other frame finds its flow
//     (lookupLocked), which for an id of the peer's space may open new flows or refuse them;
//     a frame for a flow that is gone gets a stateless reply.
//  3. DATA is checked against the flow and session windows, then delivered in order
//     (acceptLocked, stream.go) or held ahead of a gap (reorder.go); ACK lets acknowledged
//     bytes go and raises the peer's flow window; RESET and STOP end a direction; DATAGRAM
//     goes to the packet flow's queue (packet.go).
//  4. An error is a protocol violation: the caller closes the path that carried the frame.

package flow

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
)

// maxCtrl bounds queued stateless replies. They answer retransmissions, so dropping some only
// delays convergence until the peer retransmits again.
const maxCtrl = 16 << 10

// Holder is where a frame came from, when its payload may be kept by reference: Hold keeps
// the frame's memory alive until the returned Pin is let go, or returns nil to say "copy it".
type Holder interface {
	Hold() record.Pin
}

// Handle applies one frame received from the peer. A returned error is a protocol violation by
// the (authenticated) peer: the caller closes the path that carried the frame.
func (e *Engine) Handle(f *wire.Frame) error { return e.HandleFrom(f, nil) }

// HandleFrom is Handle for a frame whose payload src may let the engine keep by reference
// instead of copying it; src is called, if at all, before HandleFrom returns.
func (e *Engine) HandleFrom(f *wire.Frame, src Holder) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.err != nil {
		return nil
	}
	err := e.handleLocked(f, src)
	if err != nil {
		e.mu.violations++
	}
	return err
}

// handleLocked applies f. Whatever its fields say, it costs work and memory bounded by the
// engine's limits and the bytes the frame carries (docs/wire.md, section 10).
func (e *Engine) handleLocked(f *wire.Frame, src Holder) error {
	// wire.Parse never yields these, but a frame may be built elsewhere (a split record's
	// parts): values past the varint range would make the replies that echo them unencodable.
	if f.Flow > wire.MaxVarint || f.Offset > wire.MaxVarint || uint64(len(f.Payload)) > wire.MaxVarint-f.Offset ||
		f.Seq > wire.MaxVarint || f.Limit > wire.MaxVarint || f.Final > wire.MaxVarint {
		return fmt.Errorf("rendr: %v frame with a value past 2^62-1", f.Type)
	}
	switch f.Type {
	case wire.TypeMaxData:
		if f.Limit > e.mu.sendMax {
			e.mu.sendMax = f.Limit
			e.wakeCreditLocked()
		}
		return nil
	case wire.TypeOpen, wire.TypeData, wire.TypeDataFin, wire.TypeAck, wire.TypeReset, wire.TypeStop, wire.TypeDatagram:
	default:
		return fmt.Errorf("rendr: unexpected %v frame", f.Type)
	}
	s, err := e.lookupLocked(f)
	if s == nil || err != nil {
		return err
	}
	// Any frame of the peer's for a flow this side opened says its OPEN arrived (it took the
	// flow or refused it).
	s.settleOpenLocked()
	switch f.Type {
	case wire.TypeOpen:
		return s.openLocked(f)
	case wire.TypeDatagram:
		return s.datagramLocked(f)
	case wire.TypeData, wire.TypeDataFin:
		if s.pk != nil && (len(f.Payload) > 0 || f.Offset > 0) {
			return fmt.Errorf("rendr: stream bytes for packet flow %d", s.id)
		}
		return s.dataLocked(f, src)
	case wire.TypeAck:
		return s.ackLocked(f)
	case wire.TypeReset:
		if !s.resetRecv && !s.recvDone() {
			if f.Final < s.recvHigh || f.Final > s.recvLimit || (s.finRecv && f.Final != s.finOffset) || (s.pk != nil && f.Final != 0) {
				return fmt.Errorf("rendr: flow %d: RESET final size %d does not fit", s.id, f.Final)
			}
			// Bytes up to Final count as sent (8.3, rule 7), so they must fit the session
			// window as DATA would: else the counts would pass the limit we advertised and
			// every later byte of the session would break it.
			if e.mu.recvUsed+(f.Final-s.recvHigh) > e.mu.recvMax {
				return fmt.Errorf("%w: flow %d: RESET final size %d beyond the session window", ErrFlowControl, s.id, f.Final)
			}
			s.resetRecv, s.resetCode = true, f.Code
			s.settled = s.settled || f.Code != CodeClosed
			s.wakeOpenLocked()
			if n := s.rbuf.len(); n > 0 {
				s.rbuf.reset()
				s.consumedLocked(uint64(n))
			}
			s.dropReorderLocked()
			if s.pk != nil {
				s.releaseRecvLocked()
			}
			// Bytes sent but never to arrive spent the peer's session credit, and bytes that
			// arrived ahead of a gap are never delivered: return the credit of both.
			if f.Final > s.recvHigh {
				e.mu.recvUsed += f.Final - s.recvHigh
				s.recvHigh = f.Final
			}
			if n := f.Final - s.recvNext; n > 0 {
				s.recvNext = f.Final
				e.consumedLocked(n)
			}
			signal(s.readSig)
		}
		s.ackPending = true // AckFin confirms the RESET
		e.readyLocked(s)
		e.maybeRemoveLocked(s)
	case wire.TypeStop:
		if !s.finAcked && !s.resetSent && !s.resetPending {
			s.sendErr = codeErr(f.Code, ErrStopped)
			s.settled = s.settled || f.Code != CodeClosed
			s.wakeOpenLocked()
			if f.Code == CodeRefused {
				s.sendErr = ErrReset
				// The peer refused the flow without counting any of its bytes against the
				// session window: give back the credit we spent on them.
				e.mu.sendUsed -= min(s.sendHigh, e.mu.sendUsed)
				e.wakeCreditLocked()
			}
			s.abandonSendLocked()
			signal(s.writeSig)
			e.wakeCapLocked()
		}
	}
	return nil
}

// lookupLocked finds the stream a frame is for. A new id of the peer's id space opens it (and
// every lower id of that space not yet seen, as flows are numbered in order). For a flow that
// no longer exists it queues the stateless reply that lets the peer finish, and returns nil.
func (e *Engine) lookupLocked(f *wire.Frame) (*Stream, error) {
	if s := e.mu.flows[f.Flow]; s != nil {
		return s, nil
	}
	if f.Flow == 0 || f.Flow == ListenerIDs {
		return nil, fmt.Errorf("rendr: frame for flow %d, an id never used", f.Flow)
	}
	kind := kindOf(f.Flow)
	hi := &e.mu.seen[kind]
	own := e.ownID(f.Flow)
	if own {
		hi = &e.mu.own[kind]
	}
	if f.Flow <= *hi {
		if f.Type == wire.TypeDatagram {
			return nil, nil // a datagram for a flow that is gone: nothing to answer
		}
		if _, ok := e.mu.refused[f.Flow]; ok {
			e.refusedLocked(f)
		} else {
			e.statelessLocked(f)
		}
		return nil, nil
	}
	if own {
		return nil, fmt.Errorf("rendr: peer used flow %d, which this side never opened", f.Flow)
	}
	if f.Type == wire.TypeAck {
		// (A STOP may come first: the dialing side closed its reading side, and the
		// record with the OPEN went by a slower path, or was lost.)
		return nil, fmt.Errorf("rendr: %v for flow %d, which was never opened", f.Type, f.Flow)
	}
	if f.Type == wire.TypeOpen && f.Kind != kind {
		return nil, fmt.Errorf("rendr: OPEN of kind %d for flow %d, whose id says kind %d", f.Kind, f.Flow, kind)
	}
	if f.Type == wire.TypeDatagram && kind != wire.KindPacket {
		return nil, fmt.Errorf("rendr: DATAGRAM for stream flow %d", f.Flow)
	}
	if kind == wire.KindPacket && (f.Type == wire.TypeData || f.Type == wire.TypeDataFin) && (len(f.Payload) > 0 || f.Offset > 0) {
		return nil, fmt.Errorf("rendr: stream bytes for packet flow %d", f.Flow)
	}
	first := *hi + 2
	if *hi == 0 {
		first = firstID(kind, !e.cfg.Dialer)
	}
	// Every id from first to f.Flow opens now: as a flow while the backlog and the flow
	// limit have room, refused beyond. The count is checked against that room before any of
	// it is touched, so a frame naming an id far ahead costs no more than the limits allow
	// (the same ids arriving one by one would hit the same limit, 8.1).
	n := (f.Flow-first)/2 + 1
	waiting := len(e.mu.accept[kind]) + e.mu.unopened[kind]
	room := uint64(max(min(e.cfg.MaxFlows-len(e.mu.flows), e.cfg.Backlog-waiting), 0))
	if e.cfg.RefuseFlows {
		room = 0
	}
	if n > room+uint64(max(maxRefused-len(e.mu.refused), 0)) {
		e.mu.openOverflow++
		return nil, fmt.Errorf("rendr: flow %d opens %d flows at once; room for %d, and %d refused of %d", f.Flow, n, room, len(e.mu.refused), maxRefused)
	}
	for id := first; id <= f.Flow; id += 2 {
		if e.cfg.RefuseFlows || len(e.mu.flows) >= e.cfg.MaxFlows || len(e.mu.accept[kind])+e.mu.unopened[kind] >= e.cfg.Backlog {
			*hi = id
			e.refuseLocked(id)
			continue
		}
		if !e.cfg.Budget.Reserve(FlowCost) {
			// The memory budget is full: refused as at the flow limit. The room above
			// counted this id as a flow, so the refused ids may have no place left: then
			// the ids from this one on stay unseen (the peer sends them again after the
			// path's end) rather than be answered as flows that completed.
			e.mu.budgetDenied++
			if len(e.mu.refused) >= maxRefused {
				return nil, fmt.Errorf("rendr: flow %d refused for the memory budget with %d refused already", id, maxRefused)
			}
			*hi = id
			e.refuseLocked(id)
			continue
		}
		*hi = id
		e.mu.budgetHeld += FlowCost
		s := e.newStreamLocked(id)
		s.charged = true
		if kind == wire.KindPacket {
			s.pk = newPacketState()
		}
		s.openAcked = true
		// Answer even if no byte follows (within the ACK delay, with any bytes that do): the
		// dialing side counts the flows whose OPEN has no answer yet (MaxOpening), and an
		// idle flow must not hold its place. Accept has the flow once its OPEN is here
		// (openLocked): the OPEN carries its metadata, and a flow's data, or a later flow's
		// OPEN, may come first over another path.
		s.scheduleAckLocked(true)
		e.mu.unopened[kind]++
	}
	if s := e.mu.flows[f.Flow]; s != nil {
		return s, nil
	}
	if f.Type == wire.TypeDatagram {
		return nil, nil // refused
	}
	e.statelessLocked(f)
	return nil, nil
}

// openLocked takes the OPEN of a flow the peer opened. The first hands the flow to Accept, or
// turns it down when its metadata is not accepted (Config.CheckMeta). One sent again after a
// rewind is answered as well: every ACK of the flow now says AckOpen, so the dialing side
// stops sending it.
func (s *Stream) openLocked(f *wire.Frame) error {
	e := s.e
	kind := kindOf(s.id)
	switch {
	case s.local:
		return fmt.Errorf("rendr: OPEN for flow %d, which this side opened", s.id)
	case f.Kind != kind:
		return fmt.Errorf("rendr: OPEN of kind %d for flow %d, whose id says kind %d", f.Kind, s.id, kind)
	case s.openSeen && !bytes.Equal(f.Payload, s.meta):
		return fmt.Errorf("rendr: flow %d opened again with other metadata", s.id)
	}
	s.scheduleAckLocked(true)
	if s.openSeen {
		return nil
	}
	s.openSeen = true
	e.mu.unopened[kind]--
	if len(f.Payload) > 0 {
		s.meta = bytes.Clone(f.Payload) // the frame's bytes are the record's, reused
		err := errNoMeta
		if e.cfg.CheckMeta != nil {
			err = e.cfg.CheckMeta(s.meta)
		}
		if err != nil {
			e.mu.rejectedFlows++
			s.rejectLocked(CodeRejected)
			return nil
		}
	}
	// In the order the peer opened them, whatever order their OPENs came in.
	q := e.mu.accept[kind]
	i, _ := slices.BinarySearchFunc(q, s.id, func(o *Stream, id uint64) int { return cmp.Compare(o.id, id) })
	e.mu.accept[kind] = slices.Insert(q, i, s)
	s.taken = len(s.meta) == 0 || !e.cfg.HoldMeta
	signal(e.mu.acceptSig[kind])
	return nil
}

var errNoMeta = errors.New("rendr: this side takes no flow metadata")

// maxRefused bounds refused flows awaiting the peer's confirmation. A peer that keeps opening
// flows while this many are refused is broken or hostile: its path is closed. A frame that
// opens several flows at once (an id above the next one, 8.1) is held to the same bound: it
// may open no more than the backlog and flow limit take plus the refused ids still allowed.
const maxRefused = 4096

// refuseLocked turns a new flow away. Only its id is kept, until the peer confirms the
// refusal: without it, a retransmitted DATA_FIN for the flow would get the stateless answer
// meant for flows that completed, and the peer would count undelivered bytes as delivered.
func (e *Engine) refuseLocked(id uint64) {
	if e.mu.refused == nil {
		e.mu.refused = make(map[uint64]struct{})
	}
	e.mu.refused[id] = struct{}{}
	e.mu.refusedFlows++
	e.queueRefusalLocked(id)
}

func (e *Engine) queueRefusalLocked(id uint64) {
	if len(e.mu.ctrl) < maxCtrl {
		e.mu.ctrl = wire.AppendReset(e.mu.ctrl, id, CodeRefused, 0)
		e.mu.ctrl = wire.AppendStop(e.mu.ctrl, id, CodeRefused)
		e.Kick()
	}
}

// refusedLocked answers a frame for a refused flow: the refusal again, until the peer's
// ACK_FIN confirms our RESET (its STOP travelled in the same record, so by then the peer
// knows both); its own RESET is confirmed like any other.
func (e *Engine) refusedLocked(f *wire.Frame) {
	switch f.Type {
	case wire.TypeAck:
		if f.Flags&wire.AckFin != 0 {
			delete(e.mu.refused, f.Flow)
		}
	case wire.TypeReset:
		if len(e.mu.ctrl) < maxCtrl {
			e.mu.ctrl = wire.AppendAck(e.mu.ctrl, f.Flow, f.Final, f.Final, wire.AckFin)
			e.Kick()
		}
	case wire.TypeStop:
	default:
		e.queueRefusalLocked(f.Flow)
	}
}

// statelessLocked answers a retransmission for a flow that is gone: a FIN or RESET is
// confirmed (we only forget a flow after it ended), and data is refused with STOP.
func (e *Engine) statelessLocked(f *wire.Frame) {
	if len(e.mu.ctrl) >= maxCtrl {
		return
	}
	switch f.Type {
	case wire.TypeDataFin:
		end := f.Offset + uint64(len(f.Payload))
		e.mu.ctrl = wire.AppendAck(e.mu.ctrl, f.Flow, end, end, wire.AckFin)
	case wire.TypeReset:
		e.mu.ctrl = wire.AppendAck(e.mu.ctrl, f.Flow, f.Final, f.Final, wire.AckFin)
	case wire.TypeData:
		e.mu.ctrl = wire.AppendStop(e.mu.ctrl, f.Flow, CodeUnknown)
	default:
		return
	}
	e.Kick()
}

func (s *Stream) dataLocked(f *wire.Frame, src Holder) error {
	e := s.e
	start := f.Offset
	end := start + uint64(len(f.Payload))
	if s.finRecv && (end > s.finOffset || (f.Fin() && end != s.finOffset)) {
		return fmt.Errorf("rendr: flow %d: data beyond its end", s.id)
	}
	if end > s.recvLimit {
		return fmt.Errorf("%w: flow %d sent to %d, window ends at %d", ErrFlowControl, s.id, end, s.recvLimit)
	}
	// New bytes in order, with nothing held past a gap, are acknowledged a little later
	// unless many are unacknowledged (8.4): one ACK for many DATA frames, as TCP delays its
	// acknowledgements. Anything else (a gap, a duplicate, a FIN, bytes before a FIN that
	// came first) at once: the sender learns sooner of what it must resend or may forget.
	inOrder := start <= s.recvNext && end > s.recvNext && !f.Fin() && !s.finRecv && s.ooo.pieces() == 0
	s.scheduleAckLocked(inOrder && end-s.ackedNext < min(s.window/8, ackEvery))
	if s.resetRecv {
		return nil
	}
	if f.Fin() && !s.finRecv && end < s.recvHigh {
		return fmt.Errorf("rendr: flow %d: end before data already received", s.id)
	}
	// Bytes beyond the highest offset seen are new: the sender spent session credit on them,
	// whichever path brought them and whether or not bytes before them have arrived. Checked
	// before anything changes, so that a frame over the limit leaves the counts within it.
	if end > s.recvHigh && e.mu.recvUsed+(end-s.recvHigh) > e.mu.recvMax {
		return fmt.Errorf("%w: flow %d sent to %d, beyond the session window", ErrFlowControl, s.id, end)
	}
	if f.Fin() && !s.finRecv {
		s.finRecv, s.finOffset = true, end
	}
	if end > s.recvHigh {
		e.mu.recvUsed += end - s.recvHigh
		s.recvHigh = end
	}
	switch {
	case start > s.recvNext:
		// Ahead of a gap: another path carries the bytes before it. Keep it until they come
		// (a reader that closed keeps nothing: the peer's RESET settles the credit).
		if s.readClosed {
			e.mu.gapDrops++
			break
		}
		budget := min(maxReorderPieces-e.mu.reorderPieces, maxReorderFlow-s.ooo.pieces())
		before := s.ooo.n
		if added, kept := s.ooo.insert(start, f.Payload, src, budget); kept {
			e.mu.reorderPieces += added
			e.mu.reordered += uint64(s.ooo.n - before)
		} else if s.ooo.wouldAdd(start, f.Payload) > 0 {
			e.mu.gapDrops++ // over the bound: the sender resends it when no ACK comes
		} else {
			e.mu.dupBytes += end - start // every byte of it was already held
		}
	case end <= s.recvNext:
		e.mu.dupBytes += end - start
	default:
		skip := s.recvNext - start
		e.mu.dupBytes += skip
		s.acceptLocked(f.Payload[skip:], nil, src)
		// The gap may be closed now: take what was waiting behind it.
		for s.ooo.pieces() > 0 {
			before := s.ooo.pieces()
			seg, dup, ok := s.ooo.next(s.recvNext)
			e.mu.reorderPieces -= before - s.ooo.pieces()
			e.mu.dupBytes += dup
			if !ok {
				break
			}
			s.acceptLocked(seg.b, seg.pin, nil)
		}
	}
	if s.recvNext > 0 || s.recvDone() {
		signal(s.readSig)
	}
	e.maybeRemoveLocked(s)
	return nil
}

// acceptLocked takes p, which starts at recvNext, as delivered: to the application, or dropped
// with its credit returned when nobody will read it. pin, when set, keeps p alive and passes
// to the receive buffer; otherwise src may let p be held.
func (s *Stream) acceptLocked(p []byte, pin record.Pin, src Holder) {
	n := uint64(len(p))
	s.recvNext += n
	if s.readClosed {
		if pin != nil {
			pin.Unpin()
		}
		s.consumedLocked(n) // nobody will read it: drop it, return the credit
		return
	}
	if pin != nil {
		s.deliverHeldLocked(p, pin)
		return
	}
	s.deliverLocked(p, src)
}

func (s *Stream) ackLocked(f *wire.Frame) error {
	e := s.e
	d := f.Delivered()
	if d > s.sendHigh {
		return fmt.Errorf("rendr: flow %d: ACK of %d, only %d sent", s.id, d, s.sendHigh)
	}
	if f.Flags&wire.AckOpen != 0 && !s.openAcked && s.local {
		s.openAcked = true // the OPEN need not go again after a rewind
		s.wakeOpenLocked()
	}
	if d > s.sendBase {
		n := d - s.sendBase
		s.sbuf.discard(int(n))
		e.mu.sendBuffered -= int(n)
		s.sendBase = d
		s.sendNext = max(s.sendNext, d)
		s.retx.trim(d)
		if d >= s.ahead.hi {
			s.ahead = span{}
		} else if d > s.ahead.lo {
			s.ahead.lo = d
		}
		e.mu.progress = time.Now()
		s.ackedAt = e.mu.progress
		e.mu.stallShift = 0
		signal(s.writeSig)
		e.wakeCapLocked()
	}
	if f.Limit > s.peerLimit {
		s.peerLimit = f.Limit
		e.readyLocked(s)
		signal(s.writeSig)
	}
	if f.Flags&wire.AckFin != 0 && !s.finAcked {
		// Our FIN is confirmed once every byte before it is: the final size is where the
		// send buffer ends, as nothing can be written after CloseWrite.
		if s.resetSent || (s.finQueued && s.sbuf.len() == 0 && s.sendBase == d) {
			s.finAcked = true
			e.mu.progress = time.Now()
		}
	}
	e.setOutstandingLocked(s)
	e.maybeRemoveLocked(s)
	return nil
}
