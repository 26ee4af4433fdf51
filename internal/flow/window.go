// Window stage: flow control. The receiving side grants windows per flow (an ACK's limit) and
// per session (MAX_DATA) as the application reads, and grows them, up to MaxWindow and
// MaxSessionWindow, to twice what the application reads per round trip (the session window
// also when a Read waits while the peer is nearly out of credit). The sending side
// spends the peer's session credit, and wakes the flows and writers that waited for credit or
// for room in the send buffers.

package flow

import "time"

// Credit goes back to the peer as the application reads, in steps of an eighth of the window
// (creditStep), and every ACK the flow sends carries the newest limit too: a sender that waited
// for half the window to be read (as this did before) kept only about half of it in flight, so
// one flow moved half a window per round trip on a long path.
//
// A window grows once per round trip (tuneEvery) to twice what the application read in that
// round trip, up to its maximum, as Linux sizes a socket's receive buffer. A flow held back by
// its window reads about a whole window per round trip, so its window doubles each round trip
// until it carries the path's bandwidth-delay product; one held back by the network or by its
// reader reads less and stays where it is: the window follows what the application drains,
// never what the peer would like to send.

// creditStep is the share of a window read before new credit goes out on its own.
const creditStep = 8

// tuneEvery is the round trip over which reads are measured: the slowest link's smoothed
// round trip, at least a millisecond so that loopback scheduling noise does not read as a tiny
// round trip.
func (e *Engine) tuneEvery() time.Duration { return max(e.mu.srtt, time.Millisecond) }

// grownWindow returns the window a reader that read `read` bytes since `since` earns: twice
// what it read per round trip, if that is more than window, up to most. It reports whether a
// round trip has passed (then the caller starts a new measurement).
func grownWindow(window, most, read uint64, since, now time.Time, rtt time.Duration) (uint64, bool) {
	el := now.Sub(since)
	if el < rtt {
		return window, false
	}
	perRTT := uint64(float64(read) * float64(rtt) / float64(el))
	if w := min(2*perRTT, most); w > window {
		window = w
	}
	return window, true
}

// consumedLocked returns n read (or discarded) bytes to the flow and session windows, growing
// a window that the application drains within a round trip.
func (s *Stream) consumedLocked(n uint64) {
	e := s.e
	s.recvRead += n
	if !s.recvDone() {
		now := time.Now()
		if s.tuned.IsZero() {
			s.tuned, s.tunedRead = now, s.recvRead-n
		}
		if w, next := grownWindow(s.window, uint64(e.cfg.MaxWindow), s.recvRead-s.tunedRead, s.tuned, now, e.tuneEvery()); next {
			s.window, s.tuned, s.tunedRead = w, now, s.recvRead
		}
		// The limit never falls: the protocol's initial window may exceed the configured one.
		if end := s.recvRead + s.window; end > s.recvLimit && end-s.recvLimit >= s.window/creditStep {
			s.recvLimit = end
			s.ackPending = true
			e.readyLocked(s)
		}
	}
	e.consumedLocked(n)
}

// freshLimitLocked raises the flow's limit to what the reader has earned by now, for an ACK
// about to go out: credit never waits for a step when a frame goes to the peer anyway.
func (s *Stream) freshLimitLocked() {
	if !s.recvDone() {
		s.recvLimit = max(s.recvLimit, s.recvRead+s.window)
	}
}

// consumedLocked returns n bytes of session credit (read, discarded or never coming).
func (e *Engine) consumedLocked(n uint64) {
	e.mu.recvRead += n
	now := time.Now()
	if e.mu.recvTuned.IsZero() {
		e.mu.recvTuned, e.mu.recvTunedRead = now, e.mu.recvRead-n
	}
	if w, next := grownWindow(e.mu.recvWindow, uint64(e.cfg.MaxSessionWindow), e.mu.recvRead-e.mu.recvTunedRead, e.mu.recvTuned, now, e.tuneEvery()); next {
		e.widenLocked(w)
		e.mu.recvTuned, e.mu.recvTunedRead = now, e.mu.recvRead
	}
	if end := e.mu.recvRead + e.mu.recvWindow; end > e.mu.recvMax && end-e.mu.recvMax >= e.mu.recvWindow/creditStep {
		e.mu.recvMax = end
		e.mu.maxDataPending = true
		e.Kick()
	}
}

// growSessionWindowLocked is called when a Read is about to wait on an empty buffer. If the
// peer has (nearly) no session credit left, bytes for this flow may be held back by flows
// nobody reads (waiting in the accept backlog, or read by no one): grow the session window, up
// to its maximum, so those flows cannot starve the ones being read.
func (e *Engine) growSessionWindowLocked() {
	left := e.mu.recvMax - e.mu.recvUsed
	if left >= uint64(e.cfg.InitialWindow) || e.mu.recvWindow >= uint64(e.cfg.MaxSessionWindow) {
		return
	}
	e.widenLocked(2 * e.mu.recvWindow)
	if m := e.mu.recvRead + e.mu.recvWindow; m > e.mu.recvMax {
		e.mu.recvMax = m
		e.mu.maxDataPending = true
		e.Kick()
	}
}

// widenLocked grows the session receive window to w, up to MaxSessionWindow, if the budget has
// room for what it adds: the peer may fill the whole window before anyone reads, so that is
// memory promised.
func (e *Engine) widenLocked(w uint64) {
	w = min(w, uint64(e.cfg.MaxSessionWindow))
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

// wakeCapLocked wakes writers that waited for the session's send buffers to drain.
func (e *Engine) wakeCapLocked() {
	if len(e.mu.capWait) == 0 || e.mu.sendBuffered >= e.cfg.MaxSessionWindow {
		return
	}
	for _, s := range e.mu.capWait {
		s.capWaiter = false
		signal(s.writeSig)
	}
	clear(e.mu.capWait)
	e.mu.capWait = e.mu.capWait[:0]
}
