// Listening side: sources and carriers, the handshake's admission and bounds, sessions by
// peer, and Accept.

package rendr

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr/internal/budget"
	"github.com/rendr-go/rendr/internal/flow"
	"github.com/rendr-go/rendr/internal/handshake"
	"github.com/rendr-go/rendr/internal/pending"
	"github.com/rendr-go/rendr/internal/rate"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport"
)

// ListenConfig configures a Listener.
type ListenConfig struct {
	Key   PrivateKey  // this side's static key
	Peers []PublicKey // the keys allowed to connect
	// MaxHandshakes bounds handshakes in progress at once; carriers beyond it are closed
	// unanswered, so a flood costs bounded memory. Zero means 256. From an eighth of it on,
	// the listener counts as under load (docs/wire.md 3.9): first messages need a cookie and
	// each source address gets a bounded rate.
	MaxHandshakes int
	// HandshakeRate is how many handshakes a second the listener does before it counts as
	// under load even when they finish quickly; zero means 128 (in bursts of up to 256).
	HandshakeRate int
	// MaxSessionsPerPeer bounds the sessions one peer key holds at once; zero means 16.
	// MaxSessions bounds them for all peers; zero means 1024. MaxPathsPerSession bounds the
	// paths of one session, attached or joining; zero means 32. Past a bound the new session
	// or path is refused: the dialing side gets ErrLimit, the listener counts it (Stats), and
	// nothing already open is touched.
	MaxSessionsPerPeer, MaxSessions, MaxPathsPerSession int
	// MaxMemory is the listener's memory budget, in bytes, for everything its peers can make
	// it hold: each session reserves a fixed cost and the receive window it promises, each
	// path its buffers, each flow its state, and a session's receive window grows only by
	// what it can reserve. MaxMemoryPerPeer bounds one peer key's share, so one peer cannot
	// take the budget from the others. A session or path that does not fit is refused with
	// ErrLimit; a flow, with ErrReset; a window that does not fit stays as it is. Zero means
	// 2 GiB, and an eighth of MaxMemory. The README lists what each thing reserves.
	MaxMemory, MaxMemoryPerPeer int64
	// AcceptIdentities takes flows that carry an L3 identity (Dialer.DialIdentity); the
	// accepted Conn or PacketConn reports it (Identity). Without it such flows are turned
	// down when they arrive: the dialing side reads and writes ErrRejected, the session's
	// status counts them (Rejected), and the session goes on. An identity that is not
	// in its canonical encoding is turned down the same way.
	AcceptIdentities bool
	// Egress carries the flows that carry an L3 identity on to where they were going
	// (DirectEgress dials the destination from this host), instead of handing them to
	// Accept: AcceptIdentities is implied. The flow is spliced to the connection it returns,
	// each end of stream passed on as a half-close, and the dialing side's WaitAccepted
	// returns once it is made, or says why it was not (docs/egress.md). EgressTimeout
	// bounds each Egress call (zero means 30s). MaxEgress bounds the flows carried on at
	// once, for all peers (zero means 1024; each holds two goroutines, a socket and 64 KiB
	// of buffers for a stream flow, 128 KiB for a packet flow): past it new ones are turned
	// down (ErrRejected) and counted. A packet flow's connection closes after EgressUDPIdle
	// without a datagram either way (zero means 2 minutes, and 30 s for port 53).
	Egress        Egress
	EgressTimeout time.Duration
	MaxEgress     int
	EgressUDPIdle time.Duration
	Options
}

// What the memory budget charges, measured on the listening side (heap after GC, a session
// with one TCP path, one flow): a session's fixed state, a path's buffers, a flow's state.
// A session also reserves the receive window it promises its peer before any MAX_DATA.
const (
	sessionCost = 64 << 10
	pathCost    = 320 << 10
)

// Listener accepts flows from its peers' Dialers. It is a net.Listener. Carrier connections
// come from its sources; a source is any net.Listener (kernel TCP, a TLS listener, an
// in-memory listener...).
type Listener struct {
	c        *common
	resp     handshake.Responder
	peers    map[PublicKey]bool
	accept   chan *Conn
	acceptPk chan *PacketConn
	done     chan struct{}
	ctx      context.Context // canceled by Close: aborts handshakes in progress
	cancel   context.CancelFunc
	maxHS    int
	lim      listenLimits
	mem      *budget.Pool // the whole budget; each peer's share is in mu.peerMem
	guard    handshake.Guard
	// warnUnknown paces the warnings of handshakes from keys not in Peers.
	warnUnknown warnLimit
	wg          sync.WaitGroup
	stats       listenStats
	// egressLim is the Egress and its bounds (nil Egress: flows with identity go to Accept).
	egressLim   egressLimits
	egressStats egressStats

	mu struct {
		sync.Mutex
		sessions map[[16]byte]*session
		// sessionUp is closed (and forgotten) when a session is established: DialPeer waits
		// on it for its peer's.
		sessionUp chan struct{}
		sources   []net.Listener
		closed    bool
		hs        map[net.Conn]time.Time // handshakes in progress, by start time
		perPeer   map[PublicKey]int      // sessions by peer key
		peerMem   map[PublicKey]*budget.Pool
		joining   map[*session]int // joins past decide, not yet tracked by their session
		// pend holds stream carriers until their first message is whole (pendingSet).
		pend      *pending.Set
		pendTried bool
	}
}

// SourceOption configures a source.
type SourceOption func(*sourceOpts)

type sourceOpts struct{ secure bool }

// SecureSource declares that carriers from this source are already encrypted and
// authenticated, so paths that ask for it (SecureCarrier) skip rendr's record encryption.
func SecureSource() SourceOption { return func(o *sourceOpts) { o.secure = true } }

// Listen starts a Listener on the given sources. More can be added with AddSource. The
// Listener owns its sources: Close closes them.
func Listen(cfg ListenConfig, sources ...net.Listener) (*Listener, error) {
	if len(cfg.Peers) == 0 {
		return nil, errors.New("rendr: ListenConfig.Peers is empty: no one could connect")
	}
	if err := cfg.Key.check("ListenConfig.Key"); err != nil {
		return nil, err
	}
	own := cfg.Key.Public()
	for i, p := range cfg.Peers {
		if err := p.check(fmt.Sprintf("ListenConfig.Peers[%d]", i)); err != nil {
			return nil, err
		}
		if p == own {
			return nil, fmt.Errorf("rendr: ListenConfig.Peers[%d] is the listener's own public key: list the dialers' keys", i)
		}
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = 256
	}
	l := &Listener{
		c:      cfg.Options.common(cfg.Key),
		peers:  map[PublicKey]bool{},
		accept: make(chan *Conn), acceptPk: make(chan *PacketConn),
		done:  make(chan struct{}),
		maxHS: cfg.MaxHandshakes,
		lim:   cfg.limits(),
	}
	l.guard.LoadRate, l.guard.LoadBurst = cfg.HandshakeRate, 2*cfg.HandshakeRate
	l.egressLim = cfg.egressLimits()
	if cfg.AcceptIdentities || cfg.Egress != nil {
		l.c.engine.CheckMeta = checkIdentity
	}
	// Carried flows are taken once their connection is made; the dialing side waits for that.
	l.c.engine.HoldMeta = cfg.Egress != nil
	for _, p := range cfg.Peers {
		l.peers[p] = true
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.mu.sessions = map[[16]byte]*session{}
	l.mu.hs = map[net.Conn]time.Time{}
	l.mu.perPeer = map[PublicKey]int{}
	l.mu.peerMem = map[PublicKey]*budget.Pool{}
	l.mem = budget.New(l.lim.memory, nil)
	l.mu.joining = map[*session]int{}
	l.resp = handshake.Responder{Key: l.c.key, Replay: &handshake.Replay{}, Guard: &l.guard,
		Allow: func(k [32]byte) bool { return l.peers[PublicKey(k)] }}
	for i, src := range sources {
		if err := l.addSource(src, sourceOpts{}); err != nil {
			l.Close() // and the sources added before it
			return nil, fmt.Errorf("rendr: Listen: source %d: %w", i, err)
		}
	}
	return l, nil
}

// AddSource starts accepting carriers from src. A nil source, or one added already, is an
// error.
func (l *Listener) AddSource(src net.Listener, opts ...SourceOption) error {
	var o sourceOpts
	for _, f := range opts {
		f(&o)
	}
	if err := l.addSource(src, o); err != nil {
		if errors.Is(err, ErrClosed) {
			return err
		}
		return fmt.Errorf("rendr: AddSource: %w", err)
	}
	return nil
}

// addSource is AddSource, its errors without the "rendr: " of the caller's.
func (l *Listener) addSource(src net.Listener, o sourceOpts) error {
	if src == nil {
		return errors.New("the source is nil")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed {
		return errListenerClosed
	}
	// Compared only when its type can be: a listener that is a struct value with a func or
	// slice in it cannot be added twice by mistake anyway, being a copy each time.
	if reflect.TypeOf(src).Comparable() && slices.Contains(l.mu.sources, src) {
		return fmt.Errorf("%v is a source already: each carrier would be accepted by two loops", src.Addr())
	}
	l.mu.sources = append(l.mu.sources, src)
	l.wg.Add(1)
	go l.routineSource(src, o)
	return nil
}

func (l *Listener) routineSource(src net.Listener, o sourceOpts) {
	defer l.wg.Done()
	delay := time.Duration(0)
	for {
		c, err := src.Accept()
		if err == nil && c == nil {
			// A source of the embedder's that broke the net.Listener contract: treated
			// as a failed accept (logged once, backed off), never handled as a carrier.
			err = errors.New("rendr: a source's Accept returned neither a connection nor an error")
		}
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off instead of spinning.
			if delay == 0 {
				l.c.log.Warn("rendr: a source's Accept failed; retrying with backoff", "err", err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(delay):
			case <-l.done:
				return
			}
			continue
		}
		delay = 0
		if !l.guard.AdmitCarrier(c.RemoteAddr()) {
			// Past its rate under load: if the source can, it refuses the host's next
			// carriers itself for a while (transport/tcp drops their SYNs in the kernel),
			// so a flood stops costing an accept and a close each.
			if r, ok := src.(transport.SourceRefuser); ok {
				r.RefuseSource(c.RemoteAddr(), refuseFor)
				l.stats.sourcesRefused.Add(1)
			}
			c.Close()
			continue
		}
		start, ok := l.admit(c)
		if !ok {
			c.Close()
			continue
		}
		l.wg.Add(1)
		// A stream carrier waits for its whole first message in the listener's pending set,
		// without a goroutine (a few hundred bytes, not a stack): most carriers that stay
		// silent are a slow-loris flood's. It gets its goroutine once the handshake can read
		// that message without waiting.
		if !pending.Watchable(c) {
			go l.routineHandshake(c, o, start)
			continue
		}
		if p := l.pendingSet(); p != nil && p.Add(c, func(ready bool) {
			if ready {
				go l.routineHandshake(c, o, start)
				return
			}
			if l.ctx.Err() == nil { // not the listener's Close
				l.stats.hsTimeouts.Add(1)
			}
			c.Close()
			l.handshakeOver(c)
			l.wg.Done()
		}) {
			continue
		}
		go l.routineHandshake(c, o, start)
	}
}

// pendingSet is the listener's set of stream carriers waiting for their first message, made
// at the first carrier it can watch (its poller is a goroutine in a system call, which an
// in-memory listener under testing/synctest must never start); nil where the platform has
// none (the carrier's goroutine waits then).
func (l *Listener) pendingSet() *pending.Set {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed || l.mu.pendTried {
		return l.mu.pend
	}
	l.mu.pendTried = true
	p, err := pending.New(pending.Config{Head: handshake.FirstHead, Need: handshake.FirstNeed, Timeout: l.c.hsTimeout})
	if err != nil {
		if !errors.Is(err, errors.ErrUnsupported) {
			l.c.log.Warn("rendr: carriers will wait for their first message in a goroutine each", "err", err)
		}
		return nil
	}
	l.mu.pend = p
	return p
}

// handshakeOver forgets a carrier whose handshake ended, one way or another.
func (l *Listener) handshakeOver(c net.Conn) {
	l.mu.Lock()
	delete(l.mu.hs, c)
	l.loadLocked()
	l.mu.Unlock()
}

// admit bounds handshakes in progress. At the limit it closes the oldest one to make room: a
// real peer finishes its handshake within a round trip, so the oldest is almost always a
// connection that sent nothing (a slow-loris flood), and evicting it keeps real peers
// connecting while memory stays flat. Evicted handshakes release their place once their
// goroutine sees the close; if that many are still unwinding, the new carrier is dropped.
func (l *Listener) admit(c net.Conn) (start time.Time, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.mu.hs) >= 2*l.maxHS {
		return time.Time{}, false
	}
	if len(l.mu.hs) >= l.maxHS {
		var oldest net.Conn
		var at time.Time
		for hc, t := range l.mu.hs {
			if oldest == nil || t.Before(at) {
				oldest, at = hc, t
			}
		}
		l.stats.evicted.Add(1)
		if l.mu.pend != nil && l.mu.pend.Remove(oldest) {
			// It waited in the pending set: no goroutine will see the close, so its place
			// is freed here.
			oldest.Close()
			delete(l.mu.hs, oldest)
			l.wg.Done()
		} else {
			oldest.Close()
			l.mu.hs[oldest] = time.Now().Add(time.Hour) // evicted: never chosen again
		}
	}
	start = time.Now()
	l.mu.hs[c] = start
	l.loadLocked()
	return start, true
}

// loadLocked tells the guard whether handshakes in progress pile up: from an eighth of
// MaxHandshakes on, carriers arrive faster than handshakes finish, so the listener asks for
// cookies before spending a DH on anyone.
func (l *Listener) loadLocked() {
	l.guard.SetLoaded(len(l.mu.hs) >= max(l.maxHS/8, 1))
}

// routineHandshake authenticates one carrier and attaches it. Anything that does not
// authenticate gets no reply and the carrier is closed.
func (l *Listener) routineHandshake(c net.Conn, o sourceOpts, start time.Time) {
	defer l.wg.Done()
	ctx, cancel := context.WithDeadline(l.ctx, start.Add(l.c.hsTimeout))
	var created *session
	caps := capsOf(c)
	// A join counted against its session's paths until tracked, holding pathCost of the
	// budget until its link takes it (joinMem is zeroed then).
	var joining *session
	var joinMem int64
	defer func() {
		if joining != nil {
			joining.mem.Release(joinMem)
			l.mu.Lock()
			if l.mu.joining[joining]--; l.mu.joining[joining] <= 0 {
				delete(l.mu.joining, joining)
			}
			l.mu.Unlock()
		}
	}()
	res, err := l.resp.Respond(ctx, c, func(peer [32]byte, h *handshake.Hello) handshake.Reply {
		r, s := l.decide(PublicKey(peer), h, o, caps)
		if r.Status == handshake.StatusOK && caps.ext != nil {
			extra, err := caps.ext.AnswerExtra(h.Extra)
			if err == nil {
				err = checkExtra(c, extra)
			}
			if err != nil {
				// The carrier finds the hello's data wrong: a broken or hostile dialer.
				// Refuse, and end the session this hello would have founded.
				l.c.log.Debug("rendr: carrier refused the hello's data", "remote", c.RemoteAddr(), "err", err, "bytes", len(extra))
				r.Status = handshake.StatusRefused
			} else {
				r.Extra = extra
			}
		}
		if h.Mode == handshake.ModeNew {
			created = s
		} else if s != nil {
			joining, joinMem = s, pathCost
		}
		return r
	})
	cancel()
	if created != nil && (err != nil || res.Reply.Status != handshake.StatusOK) {
		cause := err
		if cause == nil {
			cause = fmt.Errorf("answered with status %d", res.Reply.Status)
		}
		created.fail(fmt.Errorf("rendr: founding handshake failed: %w", cause))
	}
	l.handshakeOver(c)
	if err != nil {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			l.stats.hsTimeouts.Add(1)
		case errors.Is(err, handshake.ErrUnknownKey):
			l.stats.unknownKey.Add(1)
			var uk *handshake.UnknownKeyError
			if ok, skipped := l.warnUnknown.allow(time.Now()); ok && errors.As(err, &uk) {
				// The commonest mistake in setting up a pair: say it where it is seen, at
				// most once every unknownKeyWarnEvery, whatever a flood of keys sends.
				l.c.log.Warn("rendr: handshake refused: this key is not in ListenConfig.Peers", "key", PublicKey(uk.Key).String(),
					"remote", c.RemoteAddr(), "others refused since the last warning", skipped)
			}
		case errors.Is(err, handshake.ErrReplay):
			l.stats.replayed.Add(1)
		}
		l.c.log.Debug("rendr: handshake refused", "remote", c.RemoteAddr(), "err", err)
		if l.c.trace != nil {
			l.traceHandshake(c, nil, refusalOf(err), err)
		}
		c.Close()
		return
	}
	if res.Reply.Status != handshake.StatusOK {
		if l.c.trace != nil {
			l.traceHandshake(c, res, replyRefusal(res.Reply.Status), nil)
		}
		l.closeAfterReply(c)
		return
	}
	if err := l.attach(c, res, created, &joinMem); err != nil {
		if created != nil {
			created.fail(err)
		}
		l.c.log.Debug("rendr: path not attached", "remote", c.RemoteAddr(), "err", err)
		if l.c.trace != nil {
			l.traceHandshake(c, res, status.RefuseOther, err)
		}
		c.Close()
		return
	}
	if l.c.trace != nil {
		l.traceHandshake(c, res, "", nil)
	}
}

// refuseFor is how long a source that passed its rate under load refuses the host's carriers.
const refuseFor = time.Second

// replyLinger bounds how long a carrier that got a refusal stays open for the reply to arrive.
const replyLinger = 2 * time.Second

// closeAfterReply closes a carrier whose peer was just told no (unknown session, refused), so
// that the reply reaches it: a carrier closed at once may drop it (QUIC discards unsent stream
// data on close; TCP resets when unread bytes remain). It half-closes, waits a bounded while
// for the peer to close its end, then closes.
func (l *Listener) closeAfterReply(c net.Conn) {
	defer c.Close()
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	if c.SetReadDeadline(time.Now().Add(min(replyLinger, l.c.hsTimeout))) != nil {
		return // no bound on the wait: close now
	}
	stop := context.AfterFunc(l.ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	var buf [512]byte
	for range 1024 { // what a peer may still send before it reads the reply is small
		if _, err := c.Read(buf[:]); err != nil {
			return
		}
	}
}

// decide answers an authenticated hello; dg says the carrier carries datagrams too, packets
// that it moves datagrams only.
func (l *Listener) decide(peer PublicKey, h *handshake.Hello, o sourceOpts, caps carrierCaps) (handshake.Reply, *session) {
	r := handshake.Reply{Status: handshake.StatusOK, Instance: l.c.instance}
	var agreed bool
	if r.Flags, agreed = caps.replyFlags(h.Flags, o.secure); !agreed {
		r.Status = handshake.StatusRefused
		return r, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed {
		r.Status = handshake.StatusRefused
		return r, nil
	}
	s := l.mu.sessions[h.Session]
	switch h.Mode {
	case handshake.ModeNew:
		if s != nil {
			r.Status = handshake.StatusRefused
			return r, nil
		}
		if c := l.newSessionRefusedLocked(peer, h.Instance); c != nil {
			c.Add(1)
			r.Status = handshake.StatusLimit
			return r, nil
		}
		mem := l.peerMemLocked(peer)
		if !mem.Reserve(l.sessionReserve() + pathCost) {
			l.stats.refusedMemory.Add(1)
			r.Status = handshake.StatusLimit
			return r, nil
		}
		// Register the session before the reply leaves: the dialer joins its other paths
		// the moment it reads the reply, and those joins must find the session. Its secret
		// follows when the handshake completes; a JOIN_PROOF is checked only after that.
		// The founding path's share moves to its link once it is made (attach).
		s = newSession(l.c, h.Session, peer, false, nil, mem)
		s.mu.memBase = l.sessionReserve() + pathCost // not shared yet
		s.onEnd = l.forget
		l.mu.sessions[h.Session] = s
		l.mu.perPeer[peer]++
		return r, s
	case handshake.ModeJoin:
		if s == nil || s.peerKey != peer || s.err() != nil {
			r.Status = handshake.StatusUnknownSession
		} else if s.pathsHeld()+l.mu.joining[s] >= l.lim.pathsPerSession {
			l.stats.refusedPaths.Add(1)
			r.Status = handshake.StatusLimit
		} else if !s.mem.Reserve(pathCost) {
			l.stats.refusedMemory.Add(1)
			r.Status = handshake.StatusLimit
		} else {
			l.mu.joining[s]++ // until the path is tracked: concurrent joins see it
			return r, s
		}
	}
	return r, nil
}

// attach makes the path's link; the link takes the path's share of the memory budget, from
// the session (founding) or from *joinMem (joining), once it is tracked.
func (l *Listener) attach(c net.Conn, res *handshake.Result, created *session, joinMem *int64) error {
	h := res.Hello
	peer := PublicKey(res.Peer)
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return errListenerClosed
	}
	s := l.mu.sessions[h.Session]
	var restarted []*session
	if h.Mode == handshake.ModeNew {
		if s != created {
			l.mu.Unlock()
			return errors.New("rendr: session replaced during its handshake")
		}
		s.establish(res.Secret, h.Instance)
		// A new instance of a peer whose old sessions have no path left: it restarted.
		// (Sessions that still have paths may belong to another live process with the key.)
		for _, o := range l.mu.sessions {
			if o != s && o.peerKey == peer && o.peerInstance() != h.Instance && o.deserted() && l.mu.joining[o] == 0 {
				restarted = append(restarted, o)
			}
		}
		s.wg.Add(2)
		go l.routineSessionAccept(s)
		go l.routineSessionAcceptPacket(s)
		if l.mu.sessionUp != nil {
			close(l.mu.sessionUp)
			l.mu.sessionUp = nil
		}
	} else if s == nil || s.peerKey != peer {
		l.mu.Unlock()
		return errors.New("rendr: unknown session")
	}
	l.mu.Unlock()
	for _, o := range restarted {
		l.wg.Go(func() { o.fail(ErrPeerRestarted) })
	}
	lk := s.newLink(h.Name, int(h.Tier), nil)
	lk.hash = res.Hash
	lk.openPath(c, res, l.c.path, true)
	if err := s.track(lk); err != nil {
		return err
	}
	s.mu.Lock()
	if h.Mode == handshake.ModeNew {
		lk.mem = pathCost
		s.mu.memBase -= pathCost
	} else {
		lk.mem, *joinMem = *joinMem, 0
	}
	s.mu.Unlock()
	// The founding path needs no JOIN_PROOF: mark it before its reader starts, or the
	// dialer's first record, already buffered, could be taken for a missing proof.
	if h.Mode == handshake.ModeNew {
		lk.joined.Store(true)
	}
	s.wg.Add(1) // released by lk.Down
	lk.p.Start()
	if h.Mode == handshake.ModeNew {
		if err := s.attach(lk); err != nil {
			lk.p.Close(err)
		}
	}
	return nil
}

func (s *session) peerInstance() [16]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.peerInst
}

func (s *session) pathCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.router.PathsLocked())
}

// deserted reports whether the session had a path and has none left, attached or joining. A
// session whose founding path is not attached yet is not: another instance of its peer's key
// arriving meanwhile must not take it for the remains of a restarted one.
func (s *session) deserted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.everUp && len(s.router.PathsLocked()) == 0 && len(s.mu.pending) == 0
}

// pathsHeld counts the session's paths, attached or still joining.
func (s *session) pathsHeld() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.router.PathsLocked()) + len(s.mu.pending)
}

func (l *Listener) forget(s *session) {
	l.mu.Lock()
	if l.mu.sessions[s.id] == s {
		delete(l.mu.sessions, s.id)
		if l.mu.perPeer[s.peerKey]--; l.mu.perPeer[s.peerKey] <= 0 {
			delete(l.mu.perPeer, s.peerKey)
			// Its paths may still be closing: keep its share until they give it back.
			if p := l.mu.peerMem[s.peerKey]; p != nil && p.Used() == 0 {
				delete(l.mu.peerMem, s.peerKey)
			}
		}
	}
	l.mu.Unlock()
}

// listenLimits are a listener's bounds, defaults applied.
type listenLimits struct {
	sessionsPerPeer, sessions, pathsPerSession int
	memory, memoryPerPeer                      int64
}

func (cfg *ListenConfig) limits() listenLimits {
	l := listenLimits{
		sessionsPerPeer: cmp.Or(max(cfg.MaxSessionsPerPeer, 0), 16),
		sessions:        cmp.Or(max(cfg.MaxSessions, 0), 1024),
		pathsPerSession: cmp.Or(max(cfg.MaxPathsPerSession, 0), 32),
		memory:          cmp.Or(max(cfg.MaxMemory, 0), 2<<30),
	}
	l.memoryPerPeer = cmp.Or(max(cfg.MaxMemoryPerPeer, 0), l.memory/8)
	return l
}

// peerMemLocked is peer's share of the memory budget, made on first use; forget drops it
// once the peer holds nothing.
func (l *Listener) peerMemLocked(peer PublicKey) *budget.Pool {
	p := l.mu.peerMem[peer]
	if p == nil {
		p = budget.New(l.lim.memoryPerPeer, l.mem)
		l.mu.peerMem[peer] = p
	}
	return p
}

// sessionReserve is what a new session reserves: its state and the receive window it
// promises before any MAX_DATA.
func (l *Listener) sessionReserve() int64 {
	return sessionCost + int64(cmp.Or(l.c.engine.InitialSessionWindow, flow.PeerInitialSessionWindow))
}

// listenStats are the listener's own counters; the guard keeps the handshake's.
type listenStats struct {
	evicted, refusedPerPeer, refusedSessions, refusedPaths, refusedMemory atomic.Uint64
	unknownKey, replayed, sourcesRefused, hsTimeouts                      atomic.Uint64
}

// newSessionRefusedLocked says which bound a new session of peer would pass, as the counter
// to count it in; nil when it may be created.
// A peer that restarted is not held back by the sessions of its old instance that lost
// every path: the new session ends them once founded (attach).
func (l *Listener) newSessionRefusedLocked(peer PublicKey, inst [16]byte) *atomic.Uint64 {
	stale := func() bool {
		for _, o := range l.mu.sessions {
			if o.peerKey == peer && o.peerInstance() != inst && o.pathCount() == 0 {
				return true
			}
		}
		return false
	}
	switch {
	case l.mu.perPeer[peer] >= l.lim.sessionsPerPeer && !stale():
		return &l.stats.refusedPerPeer
	case len(l.mu.sessions) >= l.lim.sessions && !stale():
		return &l.stats.refusedSessions
	}
	return nil
}

// Stats returns the listener's counters: what its defences turned away and why.
func (l *Listener) Stats() status.Listener {
	g := l.guard.Stats()
	l.mu.Lock()
	st := status.Listener{Sessions: len(l.mu.sessions), Peers: len(l.mu.perPeer), Handshaking: len(l.mu.hs)}
	if l.mu.pend != nil {
		st.Waiting = l.mu.pend.Len()
	}
	l.mu.Unlock()
	st.HandshakeTimeouts = l.stats.hsTimeouts.Load()
	st.Handshakes, st.BadMAC1, st.CookiesSent, st.BadCookie, st.RateLimited, st.CarriersLimited =
		g.Handshakes, g.BadMAC1, g.CookiesSent, g.BadCookie, g.RateLimited, g.CarriersLimited
	st.Evicted = l.stats.evicted.Load()
	st.UnknownKey, st.Replayed = l.stats.unknownKey.Load(), l.stats.replayed.Load()
	st.SourcesRefused = l.stats.sourcesRefused.Load()
	st.RefusedSessionsPerPeer = l.stats.refusedPerPeer.Load()
	st.RefusedSessions = l.stats.refusedSessions.Load()
	st.RefusedPaths = l.stats.refusedPaths.Load()
	st.RefusedMemory = l.stats.refusedMemory.Load()
	st.MemoryUsed, st.MemoryLimit = l.mem.Used(), l.mem.Limit()
	e := &l.egressStats
	st.EgressActive = int(e.active.Load())
	st.EgressCarried, st.EgressRefused, st.EgressUnreachable = e.carried.Load(), e.refused.Load(), e.unreachable.Load()
	st.EgressTimedOut, st.EgressRejected, st.EgressFull = e.timedOut.Load(), e.rejected.Load(), e.full.Load()
	return st
}

// routineSessionAccept hands a session's new flows to Accept.
func (l *Listener) routineSessionAccept(s *session) {
	handOff(s, (*flow.Engine).Accept, newConn, l.accept, l.done, l.carries)
}

// carries carries a flow with an L3 identity on itself when the listener has an Egress, and
// reports whether it did.
func (l *Listener) carries(s *session, st *flow.Stream) bool {
	if l.egressLim.egress == nil || st.Meta() == nil {
		return false
	}
	l.carry(s, st)
	return true
}

// Accept waits for the next flow. It implements net.Listener; the net.Conn is a *Conn.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.AcceptContext(context.Background())
	if err != nil {
		return nil, err
	}
	return c, nil
}

// AcceptContext waits for the next flow or for ctx.
func (l *Listener) AcceptContext(ctx context.Context) (*Conn, error) {
	return acceptFrom(ctx, l.accept, l.done, errListenerClosed)
}

// acceptFrom waits for the next flow on ch, the Close of the side taking it (done: then it
// returns closed) or ctx.
func acceptFrom[T any](ctx context.Context, ch <-chan T, done <-chan struct{}, closed error) (T, error) {
	var none T
	select {
	case c := <-ch:
		return c, nil
	case <-done:
		return none, closed
	case <-ctx.Done():
		return none, ctx.Err()
	}
}

// Addr is the first source's address.
func (l *Listener) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.mu.sources) == 0 {
		return Addr{}
	}
	return l.mu.sources[0].Addr()
}

// Sessions describes the live sessions.
func (l *Listener) Sessions() []status.Session {
	l.mu.Lock()
	ss := make([]*session, 0, len(l.mu.sessions))
	for _, s := range l.mu.sessions {
		ss = append(ss, s)
	}
	l.mu.Unlock()
	out := make([]status.Session, 0, len(ss))
	for _, s := range ss {
		out = append(out, s.snapshot())
	}
	return out
}

// Close closes the sources and ends every session as Dialer.Close does (each gets up to 2s,
// all at once, for written bytes to be acknowledged; peers' flows then fail with
// ErrSessionClosed), and waits for every goroutine to stop. It must not be called from an
// OnMigrate callback.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return nil
	}
	l.mu.closed = true
	close(l.done)
	l.cancel()
	srcs := l.mu.sources
	ss := make([]*session, 0, len(l.mu.sessions))
	for _, s := range l.mu.sessions {
		ss = append(ss, s)
	}
	l.mu.Unlock()
	var err error
	for _, src := range srcs {
		if e := src.Close(); e != nil && !errors.Is(e, net.ErrClosed) {
			err = fmt.Errorf("rendr: closing source: %w", e)
		}
	}
	l.mu.Lock()
	p := l.mu.pend
	l.mu.Unlock()
	if p != nil {
		p.Close() // each carrier still waiting is closed and forgotten
	}
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(func() { s.close(errListenerClosed) }) // each may linger to deliver what its flows wrote
	}
	wg.Wait()
	l.wg.Wait()
	return err
}

// unknownKeyWarnEvery is the least time between two warnings of a refused key.
const unknownKeyWarnEvery = 10 * time.Second

// warnLimit lets one warning through every unknownKeyWarnEvery and counts the others.
type warnLimit struct {
	mu      sync.Mutex
	b       rate.Bucket
	skipped int
}

// allow reports whether a warning may be logged at now, and how many were held back since
// the last one that was.
func (w *warnLimit) allow(now time.Time) (ok bool, skipped int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.b.Take(now, float64(time.Second)/float64(unknownKeyWarnEvery), 1) {
		w.skipped++
		return false, 0
	}
	skipped, w.skipped = w.skipped, 0
	return true, skipped
}
