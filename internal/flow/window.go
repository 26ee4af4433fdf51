// Window stage: flow control. The receiving side grants windows per flow (an ACK's limit) and
// per session (MAX_DATA) as the application reads, and doubles them, up to MaxWindow and
// MaxSessionWindow, while the application drains them within two round trips (the session
// window also when a Read waits while the peer is nearly out of credit). The sending side
// spends the peer's session credit, and wakes the flows and writers that waited for credit or
// for room in the send buffers.

package flow

import "time"

// tuneIntervalLocked is how soon after the last window update the next must be due for the
// window to double: two round trips, and at least a millisecond so that loopback scheduling
// noise does not read as a tiny round trip.
func (e *Engine) tuneIntervalLocked() time.Duration { return max(2*e.mu.srtt, time.Millisecond) }

// consumedLocked returns n read (or discarded) bytes to the flow and session windows, growing
// a window that the application drains within two round trips.
func (s *Stream) consumedLocked(n uint64) {
	e := s.e
	s.recvRead += n
	if s.recvLimit-s.recvRead < s.window/2 && !s.recvDone() {
		now := time.Now()
		if !s.tuned.IsZero() && now.Sub(s.tuned) < e.tuneIntervalLocked() && s.window < uint64(e.cfg.MaxWindow) {
			s.window = min(2*s.window, uint64(e.cfg.MaxWindow))
		}
		s.tuned = now
		s.recvLimit = s.recvRead + s.window
		s.ackPending = true
		e.readyLocked(s)
	}
	e.consumedLocked(n)
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
