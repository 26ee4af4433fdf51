// Application stage: a Stream's API. Write copies bytes into the send buffer and queues the
// stream for the send stage (send.go); Read takes delivered bytes from the receive buffer, or
// lets the receive stage (recv.go) copy them straight into its waiting buffer; Close,
// CloseRead and CloseWrite queue the frames that end a direction.

package flow

import (
	"context"
	"io"
	"time"

	"github.com/rendr-go/rendr/internal/deadline"
	"github.com/rendr-go/rendr/internal/record"
)

// writeChunk bounds how much one Write copies per lock hold, so a large Write does not keep
// the engine goroutine waiting.
const writeChunk = 64 << 10

// maxUnsent bounds the bytes a flow buffers that it has not sent yet (TCP_NOTSENT_LOWAT in
// spirit): Write waits while more are queued, and wakes when the engine has sent half. The
// flow window still bounds what is sent and unacknowledged. Without it a fast writer fills
// the whole window (up to MaxWindow) before the first of it is sent, and every byte is cold
// in the cache by the time the path's write reads it back; with it, a byte goes out soon
// after Write copied it. It is four of the path's records, so a path never waits on a writer
// that keeps up.
const maxUnsent = 256 << 10

// Stream is one stream flow: an ordered, reliable byte stream with deadlines, half-close and
// back-pressure. All its state is guarded by its engine's lock; it has no goroutine.
type Stream struct {
	e  *Engine
	id uint64

	readSig, writeSig chan struct{}      // capacity 1: "something changed", passed on by waiters
	wlock             chan struct{}      // capacity 1: held by the Write in progress
	rdl, wdl          *deadline.Deadline // nil until first set

	// Guarded by e.mu.
	queued, removed, outstanding bool
	openPending, openAcked       bool          // opened here: OPEN to send; the peer confirmed it (AckOpen)
	openSeen                     bool          // opened by the peer: the OPEN arrived
	settled                      bool          // opened here: the peer refused, rejected or forgot the flow
	taken                        bool          // opened by the peer: queued for Accept, or Confirmed: ACKs say AckOpen
	openWait                     chan struct{} // opened here: closed for WaitOpen's waiters when openAcked or failed
	meta                         []byte
	code                         uint64 // the code of this side's STOP and RESET
	resetCode                    uint64 // the code of the peer's RESET, once resetRecv
	charged                      bool   // holds FlowCost of the engine's Config.Budget
	opening                      bool   // counted in the engine's opening
	local                        bool   // this side opened the flow (its id is in this side's space)

	sbuf                         buffer // bytes from sendBase to the end of what was written
	retx                         spans  // bytes below sendNext to send again: a lossy link lost them, or a rewind sends them first
	ahead                        span   // bytes a rewind sent again first (in retx): sendNext skips them
	sentAt                       [sentMarks]sentMark
	sendBase, sendNext, sendHigh uint64    // acknowledged; next to send; highest ever sent
	peerLimit                    uint64    // the peer's flow window end
	ackedAt                      time.Time // last acknowledgement progress (or when data became outstanding)
	finQueued, finSent, finAcked bool      // finAcked also confirms a RESET
	resetPending, resetSent      bool
	sendErr                      error

	rbuf                   rope     // delivered and not yet read
	ooo                    reorder  // received ahead of a gap, not yet delivered
	direct                 *readReq // a waiting Read's buffer
	recvNext, recvRead     uint64   // delivered offset; read offset
	recvHigh               uint64   // one past the highest offset received
	recvLimit, window      uint64
	tuned                  time.Time // when the current window measurement began
	tunedRead              uint64    // recvRead then
	finRecv, resetRecv     bool
	finOffset              uint64 // the peer's final size, once finRecv
	ackPending             bool
	ackLater               bool   // an ACK is due by the engine's ackAt (delayed, 8.4)
	ackListed              bool   // in the engine's ackLater list (until its next flush)
	ackedNext              uint64 // recvNext as the last ACK sent said
	stopPending, stopSent  bool
	readClosed, appClosed  bool
	err                    error
	sessBlocked, capWaiter bool
	unsentWait             bool         // a Write waits for maxUnsent/2 of the unsent bytes to go out
	pk                     *packetState // packet flows only
	first                  bool         // wants to start the next record (a datagram that did not fit)
}

// ID is the flow id.
func (s *Stream) ID() uint64 { return s.id }

func (s *Stream) sendDone() bool { return s.finAcked }
func (s *Stream) recvDone() bool {
	return s.resetRecv || (s.finRecv && s.recvNext == s.finOffset)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Read reads delivered bytes; it returns io.EOF after the peer's FIN and every byte before it.
//
// While Read waits, its buffer is registered with the stream, and arriving bytes are copied
// straight into it (when nothing is buffered before them): one copy fewer on the receive path,
// and the ACK then literally means "in the application's buffer".
func (s *Stream) Read(p []byte) (int, error) {
	e := s.e
	var req *readReq
	for {
		e.mu.Lock()
		if req != nil {
			// Back from waiting: take our buffer back, and what landed in it.
			if s.direct == req {
				s.direct = nil
			}
			if req.n > 0 {
				s.tookLocked(s.rbuf.len() > 0)
				return req.n, nil
			}
			req = nil
		}
		dl, err := s.readGateLocked()
		if err != nil {
			return 0, err
		}
		if len(p) == 0 && s.rbuf.len() == 0 {
			e.mu.Unlock()
			return 0, nil // nothing asked for: never block (io.Reader convention)
		}
		if s.rbuf.len() > 0 {
			if len(p) == 0 {
				e.mu.Unlock()
				return 0, nil
			}
			n := s.rbuf.read(p)
			s.consumedLocked(uint64(n))
			s.tookLocked(s.rbuf.len() > 0)
			return n, nil
		}
		err = s.readEndLocked()
		var mine chan struct{}
		if err == nil && len(p) > 0 && s.direct == nil {
			req = &readReq{p: p, ready: make(chan struct{}, 1)}
			s.direct = req
			mine = req.ready
		}
		if err == nil {
			s.e.growSessionWindowLocked()
		}
		e.mu.Unlock()
		if err := s.readPause(err, mine, dl); err != nil {
			return 0, err
		}
	}
}

// tookLocked ends a read that took bytes or a datagram: it lets the engine's lock go and,
// when more is left, passes the wake-up on to another reader that may be waiting.
func (s *Stream) tookLocked(more bool) {
	s.e.mu.Unlock()
	if more {
		signal(s.readSig)
	}
}

// readPause ends a round of a read that found nothing, with the engine's lock let go: an
// error that ends the read is passed on to the next blocked reader and returned; otherwise
// it waits for a wake-up: the flow's, the reader's own (mine: bytes landed in its buffer, a
// nil channel for reads that lend none) or the deadline.
func (s *Stream) readPause(err error, mine, dl <-chan struct{}) error {
	if err != nil {
		signal(s.readSig)
		return err
	}
	select {
	case <-s.readSig:
	case <-mine:
	case <-dl:
	}
	return nil
}

// readGateLocked starts every read (Read, ReadDatagram) under the engine's lock: it returns
// the read deadline to wait on, or, with the lock let go, the error that ends the read at
// once: the deadline passed, or the flow is closed for reading.
func (s *Stream) readGateLocked() (dl <-chan struct{}, err error) {
	if s.rdl != nil {
		dl = s.rdl.Wait()
		if deadline.Closed(dl) {
			s.e.mu.Unlock()
			return nil, ErrTimeout
		}
	}
	if s.appClosed || s.readClosed {
		s.e.mu.Unlock()
		signal(s.readSig) // pass the wake-up on to any other blocked read
		return nil, ErrClosed
	}
	return dl, nil
}

// readEndLocked is why a read finds nothing and never will, or nil while more may come: the
// peer reset the flow, it ended (every byte before its FIN delivered; a packet flow's FIN is
// at offset 0), or the session failed.
func (s *Stream) readEndLocked() error {
	switch {
	case s.resetRecv:
		return codeErr(s.resetCode, ErrReset)
	case s.finRecv && s.recvNext == s.finOffset:
		return io.EOF
	}
	return s.err
}

// readReq is a waiting Read's buffer, filled by the receive path under the engine's lock.
type readReq struct {
	p     []byte
	n     int
	ready chan struct{} // signalled when bytes land in p
}

// directLocked copies the start of p into a waiting Read's buffer, when nothing is buffered
// ahead of it, and returns the rest.
func (s *Stream) directLocked(p []byte) []byte {
	if r := s.direct; r != nil && s.rbuf.len() == 0 && r.n < len(r.p) {
		k := copy(r.p[r.n:], p)
		r.n += k
		p = p[k:]
		s.consumedLocked(uint64(k))
		signal(r.ready)
	}
	return p
}

// deliverHeldLocked is deliverLocked for bytes already held by pin. pin passes to the receive
// buffer with them, or is let go when they are copied instead: a waiting Read took them, or
// what it left fits the last chunk.
func (s *Stream) deliverHeldLocked(p []byte, pin record.Pin) {
	p = s.directLocked(p)
	if len(p) <= s.rbuf.room() {
		// It fits the chunk the last small bytes went to: copied there, it keeps no block
		// alive, and the next small bytes need no chunk of their own (deliverLocked).
		s.rbuf.write(p)
		pin.Unpin()
		return
	}
	s.rbuf.writeHeld(p, pin)
}

// deliverLocked hands received bytes to the application: into a waiting Read's buffer when
// nothing is buffered ahead of them, the rest into the receive buffer, by reference when src
// lets a large payload be held where it was received and it does not fit the last chunk. A
// payload that fits is copied there: held instead, payloads arriving large, small, large,
// small... would take a chunk each for the few bytes after every held one, and a peer could
// make a flow's buffer four times its window.
func (s *Stream) deliverLocked(p []byte, src Holder) {
	p = s.directLocked(p)
	if len(p) >= holdMin && src != nil && len(p) > s.rbuf.room() {
		if pin := src.Hold(); pin != nil {
			s.rbuf.writeHeld(p, pin)
			return
		}
	}
	if len(p) > 0 {
		s.rbuf.write(p)
	}
}

// Write writes p, blocking while the flow's send buffer is full (back-pressure from the
// peer's window). It returns only when every byte is buffered or an error stops it.
//
// Concurrent Writes do not interleave: each goes in whole, as on a TCP connection.
func (s *Stream) Write(p []byte) (int, error) {
	if err := s.lockWrite(); err != nil {
		return 0, err
	}
	defer func() { <-s.wlock }()
	e := s.e
	n := 0
	for {
		e.mu.Lock()
		var dl <-chan struct{}
		if s.wdl != nil {
			dl = s.wdl.Wait()
			if deadline.Closed(dl) {
				e.mu.Unlock()
				return n, ErrTimeout
			}
		}
		var err error
		switch {
		case s.appClosed:
			err = ErrClosed
		case s.sendErr != nil:
			err = s.sendErr
		case s.err != nil:
			err = s.err
		case s.finQueued:
			err = ErrWriteClosed
		}
		if err != nil || len(p) == 0 {
			e.mu.Unlock()
			if err != nil {
				signal(s.writeSig) // pass the wake-up on to any other blocked Write
			}
			return n, err
		}
		room := int(s.peerLimit-s.sendBase) + writeChunk - s.sbuf.len()
		room = min(room, e.cfg.MaxSessionWindow-e.mu.sendBuffered)
		if unsent := s.sendBase + uint64(s.sbuf.len()) - s.sendNext; unsent >= maxUnsent {
			room = 0
			s.unsentWait = true // emitLocked wakes us once half of it is sent
		}
		if room > 0 {
			k := min(room, len(p), writeChunk)
			s.sbuf.write(p[:k])
			e.mu.sendBuffered += k
			p = p[k:]
			n += k
			e.readyLocked(s)
			e.mu.Unlock()
			continue
		}
		if !s.capWaiter && e.mu.sendBuffered >= e.cfg.MaxSessionWindow {
			s.capWaiter = true
			e.mu.capWait = append(e.mu.capWait, s)
		}
		e.mu.Unlock()
		select {
		case <-s.writeSig:
		case <-dl:
		}
	}
}

// lockWrite waits for the Write in progress to finish. A channel, not a mutex: a waiter can
// give up when its deadline passes (a Write that holds it returns at the same deadline, or on
// Close, so waiters never wait on a Write that cannot end).
func (s *Stream) lockWrite() error {
	select {
	case s.wlock <- struct{}{}:
		return nil
	default:
	}
	s.e.mu.Lock()
	var dl <-chan struct{}
	if s.wdl != nil {
		dl = s.wdl.Wait()
	}
	s.e.mu.Unlock()
	select {
	case s.wlock <- struct{}{}:
		return nil
	case <-dl:
		return ErrTimeout
	}
}

// whileOpen runs f under the engine's lock, for a call the application makes on s; once the
// application has closed s, it returns ErrClosed instead.
func (s *Stream) whileOpen(f func() error) error {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	if s.appClosed {
		return ErrClosed
	}
	return f()
}

// CloseWrite ends the sending direction: the peer reads io.EOF after every byte written.
func (s *Stream) CloseWrite() error {
	return s.whileOpen(func() error {
		if s.err != nil {
			return s.err
		}
		if !s.finQueued && s.sendErr == nil {
			s.finQueued = true
			s.e.readyLocked(s)
		}
		return nil
	})
}

// CloseRead ends the receiving direction: buffered bytes are dropped, and the peer's writes
// fail with ErrStopped.
func (s *Stream) CloseRead() error {
	return s.whileOpen(func() error {
		s.closeReadLocked()
		signal(s.readSig)
		return nil
	})
}

func (s *Stream) closeReadLocked() {
	if s.readClosed {
		return
	}
	s.readClosed = true
	if n := s.rbuf.len(); n > 0 {
		s.rbuf.reset()
		s.consumedLocked(uint64(n))
	}
	s.dropReorderLocked() // the peer's RESET, which STOP asks for, settles their credit
	if s.pk != nil {
		s.releaseRecvLocked()
	}
	if !s.recvDone() && s.err == nil {
		s.stopPending = true
		s.e.readyLocked(s)
	}
}

// Close closes the flow: bytes already written are still delivered, then the peer reads
// io.EOF (like a TCP close); the receiving direction closes as in CloseRead. Pending and later
// calls return ErrClosed. It never blocks. Closing twice is a no-op.
func (s *Stream) Close() error {
	e := s.e
	e.mu.Lock()
	if s.appClosed {
		e.mu.Unlock()
		return nil
	}
	if !s.finQueued && s.sendErr == nil && s.err == nil {
		s.finQueued = true
		e.readyLocked(s)
	}
	s.closeReadLocked()
	s.appClosed = true
	s.wakeOpenLocked()
	e.maybeRemoveLocked(s)
	e.mu.Unlock()
	signal(s.readSig)
	signal(s.writeSig)
	return nil
}

// Reject turns down a flow the peer opened, before or instead of using it: what it received is
// dropped, the peer is asked to stop sending (STOP) and this side's direction is reset, both
// with code, and later calls return ErrClosed. The peer reads and writes ErrRejected when code
// is CodeRejected. Rejecting a closed flow does nothing.
func (s *Stream) Reject(code uint64) {
	s.e.mu.Lock()
	s.rejectLocked(code)
	s.e.mu.Unlock()
	signal(s.readSig)
	signal(s.writeSig)
}

func (s *Stream) rejectLocked(code uint64) {
	e := s.e
	if s.appClosed {
		return
	}
	s.code = code
	s.closeReadLocked()
	if !s.finAcked && !s.resetSent && !s.resetPending && s.err == nil {
		s.abandonSendLocked()
	}
	if s.sendErr == nil {
		s.sendErr = ErrClosed
	}
	s.appClosed = true
	e.maybeRemoveLocked(s)
}

// abandonSendLocked gives up this side's sending direction, for a STOP from the peer or a
// Reject: what is buffered or queued to send again is dropped, nothing more goes, and a RESET
// at the highest offset sent is queued.
func (s *Stream) abandonSendLocked() {
	e := s.e
	e.mu.sendBuffered -= s.sbuf.len()
	s.sbuf.reset()
	s.retx, s.ahead = s.retx[:0], span{}
	if s.pk != nil {
		s.releaseSendLocked()
	}
	s.sendNext, s.sendBase = s.sendHigh, s.sendHigh
	s.resetPending = true
	e.readyLocked(s)
}

// Meta is the flow's metadata: given to OpenMeta on the dialing side, carried by its OPEN to
// the listening side (nil when none). The caller must not modify it.
func (s *Stream) Meta() []byte { return s.meta }

// Confirm takes a flow held for the listening application (Config.HoldMeta): from now on its
// ACKs say AckOpen, and the dialing side's WaitOpen returns. Confirming a flow that is taken
// already, or closed, does nothing.
func (s *Stream) Confirm() {
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.taken || s.appClosed || s.err != nil || s.local {
		return
	}
	s.taken = true
	s.scheduleAckLocked(false)
}

// WaitOpen waits until the listening side has taken the flow (dialing side): queued it for
// its Accept, or, for a flow with metadata held for it (Config.HoldMeta), confirmed it once
// it was carried on. It returns nil then; the flow's error when it was turned down or ended
// first (ErrRejected, ErrDestRefused, ErrReset...); or ctx's error.
func (s *Stream) WaitOpen(ctx context.Context) error {
	e := s.e
	e.mu.Lock()
	for {
		if s.openAcked {
			e.mu.Unlock()
			return nil
		}
		if err := s.openErrLocked(); err != nil {
			e.mu.Unlock()
			return err
		}
		if s.openWait == nil {
			s.openWait = make(chan struct{})
		}
		w := s.openWait
		e.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
		e.mu.Lock()
	}
}

// openErrLocked is why a flow will never be taken, or nil while it may be.
func (s *Stream) openErrLocked() error {
	switch {
	case s.err != nil:
		return s.err
	case s.resetRecv:
		return codeErr(s.resetCode, ErrReset)
	case s.sendErr != nil:
		return s.sendErr
	case s.appClosed:
		return ErrClosed
	}
	return nil
}

// wakeOpenLocked wakes WaitOpen's waiters to look again.
func (s *Stream) wakeOpenLocked() {
	if s.openWait != nil {
		close(s.openWait)
		s.openWait = nil
	}
}

// SetReadDeadline sets the deadline for pending and future Reads.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.setDeadline(&s.rdl, t, s.readSig)
	return nil
}

// SetWriteDeadline sets the deadline for pending and future Writes.
func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.setDeadline(&s.wdl, t, s.writeSig)
	return nil
}

func (s *Stream) setDeadline(d **deadline.Deadline, t time.Time, sig chan struct{}) {
	s.e.mu.Lock()
	if *d == nil {
		if t.IsZero() {
			s.e.mu.Unlock()
			return
		}
		*d = deadline.New()
	}
	dl := *d
	s.e.mu.Unlock()
	dl.Set(t)
	signal(sig) // waiters re-read the deadline channel, which set may have replaced
}

// SendQueued is how many written bytes the peer has not yet acknowledged.
func (s *Stream) SendQueued() int {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	return s.sbuf.len()
}

func (s *Stream) failLocked(err error) {
	if s.err != nil {
		return
	}
	s.err = err
	s.settleOpenLocked()
	s.wakeOpenLocked()
	s.e.mu.sendBuffered -= s.sbuf.len()
	s.sbuf.reset()
	// Bytes past a gap can never be delivered now; delivered ones stay readable.
	s.dropReorderLocked()
	if s.pk != nil {
		s.releaseSendLocked()
	}
	signal(s.readSig)
	signal(s.writeSig)
}

// dropReorderLocked lets go of the bytes held ahead of a gap.
func (s *Stream) dropReorderLocked() {
	s.e.mu.reorderPieces -= s.ooo.pieces()
	s.ooo.reset()
}
