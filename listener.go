package rendr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/rendr-go/rendr/flow"
	"github.com/rendr-go/rendr/internal/handshake"
	"github.com/rendr-go/rendr/path"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport"
)

// ListenConfig configures a Listener.
type ListenConfig struct {
	Key   PrivateKey  // this side's static key
	Peers []PublicKey // the keys allowed to connect
	// MaxHandshakes bounds handshakes in progress at once; carriers beyond it are closed
	// unanswered, so a flood costs bounded memory. Zero means 256.
	MaxHandshakes int
	Options
}

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
	wg       sync.WaitGroup

	mu struct {
		sync.Mutex
		sessions map[[16]byte]*session
		sources  []net.Listener
		closed   bool
		hs       map[net.Conn]time.Time // handshakes in progress, by start time
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
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = 256
	}
	l := &Listener{
		c:      cfg.Options.common(cfg.Key),
		peers:  map[PublicKey]bool{},
		accept: make(chan *Conn), acceptPk: make(chan *PacketConn),
		done:  make(chan struct{}),
		maxHS: cfg.MaxHandshakes,
	}
	for _, p := range cfg.Peers {
		l.peers[p] = true
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.mu.sessions = map[[16]byte]*session{}
	l.mu.hs = map[net.Conn]time.Time{}
	l.resp = handshake.Responder{Key: l.c.key, Replay: &handshake.Replay{},
		Allow: func(k [32]byte) bool { return l.peers[PublicKey(k)] }}
	for _, src := range sources {
		if err := l.AddSource(src); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// AddSource starts accepting carriers from src.
func (l *Listener) AddSource(src net.Listener, opts ...SourceOption) error {
	var o sourceOpts
	for _, f := range opts {
		f(&o)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed {
		return ErrClosed
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
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(delay):
			case <-l.done:
				return
			}
			continue
		}
		delay = 0
		if !l.admit(c) {
			c.Close()
			continue
		}
		l.wg.Add(1)
		go l.routineHandshake(c, o)
	}
}

// admit bounds handshakes in progress. At the limit it closes the oldest one to make room: a
// real peer finishes its handshake within a round trip, so the oldest is almost always a
// connection that sent nothing (a slow-loris flood), and evicting it keeps real peers
// connecting while memory stays flat. Evicted handshakes release their place once their
// goroutine sees the close; if that many are still unwinding, the new carrier is dropped.
func (l *Listener) admit(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.mu.hs) >= 2*l.maxHS {
		return false
	}
	if len(l.mu.hs) >= l.maxHS {
		var oldest net.Conn
		var at time.Time
		for hc, t := range l.mu.hs {
			if oldest == nil || t.Before(at) {
				oldest, at = hc, t
			}
		}
		oldest.Close()
		l.mu.hs[oldest] = time.Now().Add(time.Hour) // evicted: never chosen again
	}
	l.mu.hs[c] = time.Now()
	return true
}

// routineHandshake authenticates one carrier and attaches it. Anything that does not
// authenticate gets no reply and the carrier is closed.
func (l *Listener) routineHandshake(c net.Conn, o sourceOpts) {
	defer l.wg.Done()
	ctx, cancel := context.WithTimeout(l.ctx, l.c.hsTimeout)
	var created *session
	_, dg := c.(transport.Datagrammer)
	_, packets := c.(transport.PacketCarrier)
	res, err := l.resp.Respond(ctx, c, func(peer [32]byte, h *handshake.Hello) handshake.Reply {
		r, s := l.decide(PublicKey(peer), h, o, dg, packets)
		created = s
		return r
	})
	cancel()
	if created != nil && (err != nil || res.Reply.Status != handshake.StatusOK) {
		created.fail(fmt.Errorf("rendr: founding handshake failed: %w", err))
	}
	l.mu.Lock()
	delete(l.mu.hs, c)
	l.mu.Unlock()
	if err != nil {
		l.c.log.Debug("rendr: handshake refused", "remote", c.RemoteAddr(), "err", err)
		c.Close()
		return
	}
	if res.Reply.Status != handshake.StatusOK {
		l.closeAfterReply(c)
		return
	}
	if err := l.attach(c, res, created); err != nil {
		if created != nil {
			created.fail(err)
		}
		l.c.log.Debug("rendr: path not attached", "remote", c.RemoteAddr(), "err", err)
		c.Close()
	}
}

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
func (l *Listener) decide(peer PublicKey, h *handshake.Hello, o sourceOpts, dg, packets bool) (handshake.Reply, *session) {
	r := handshake.Reply{Status: handshake.StatusOK, Instance: l.c.instance}
	if dg && h.Flags&handshake.FlagDatagrams != 0 {
		r.Flags |= handshake.FlagDatagrams
	}
	if packets {
		r.Flags |= handshake.FlagPackets
	}
	if packets != (h.Flags&handshake.FlagPackets != 0) {
		r.Status = handshake.StatusRefused // one end reads packets, the other a stream
		return r, nil
	}
	if h.Flags&handshake.FlagPlain != 0 {
		if !o.secure {
			r.Status = handshake.StatusRefused
			return r, nil
		}
		r.Flags |= handshake.FlagPlain
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
		// Register the session before the reply leaves: the dialer joins its other paths
		// the moment it reads the reply, and those joins must find the session. Its secret
		// follows when the handshake completes; a JOIN_PROOF is checked only after that.
		s = newSession(l.c, h.Session, peer, false, nil)
		s.onEnd = l.forget
		l.mu.sessions[h.Session] = s
		return r, s
	case handshake.ModeJoin:
		if s == nil || s.peerKey != peer || s.err() != nil {
			r.Status = handshake.StatusUnknownSession
		}
	}
	return r, nil
}

func (l *Listener) attach(c net.Conn, res *handshake.Result, created *session) error {
	h := res.Hello
	peer := PublicKey(res.Peer)
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return ErrClosed
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
			if o != s && o.peerKey == peer && o.peerInstance() != h.Instance && o.pathCount() == 0 {
				restarted = append(restarted, o)
			}
		}
		s.wg.Add(2)
		go l.routineSessionAccept(s)
		go l.routineSessionAcceptPacket(s)
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
	send, recv := res.Send, res.Recv
	if res.Reply.Flags&handshake.FlagPlain != 0 {
		send, recv = nil, nil
	}
	pc := l.c.path
	pc.Name, pc.Tier, pc.Hold = h.Name, int(h.Tier), s.hold
	pc.Datagrams = res.Reply.Flags&handshake.FlagDatagrams != 0
	pc.Unvalidated = true // the dialer's address is only proven by its first packet
	lk.setPath(path.New(lk.id, c, send, recv, pc, lk))
	if err := s.track(lk); err != nil {
		return err
	}
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
	return len(s.mu.links)
}

func (l *Listener) forget(s *session) {
	l.mu.Lock()
	if l.mu.sessions[s.id] == s {
		delete(l.mu.sessions, s.id)
	}
	l.mu.Unlock()
}

// routineSessionAccept hands a session's new flows to Accept.
func (l *Listener) routineSessionAccept(s *session) {
	handOff(l, s, (*flow.Engine).Accept, newConn, l.accept)
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
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.done:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
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
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(s.close) // each may linger to deliver what its flows wrote
	}
	wg.Wait()
	l.wg.Wait()
	return err
}
