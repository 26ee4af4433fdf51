// Dialing side: a Dialer's session, its configured paths kept attached (dial, handshake,
// attach, back off, again), and its flows.

package rendr

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rendr-go/rendr/internal/flow"
	"github.com/rendr-go/rendr/internal/handshake"
	"github.com/rendr-go/rendr/internal/path"
	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/policy"
	"github.com/rendr-go/rendr/status"
)

// DialerConfig configures a Dialer.
type DialerConfig struct {
	Key     PrivateKey // this side's static key
	PeerKey PublicKey  // the listener's static key
	Root    *Target    // the target graph: a Path or a Selector of targets
	// BackupHeadStart is how long a fresh session keeps traffic off backup paths (tiers
	// above 0) while a path of a lower tier is still setting up its first carrier, as Happy
	// Eyeballs gives the preferred address family a head start: a backup that connects first
	// (a metered link, say) carries nothing that a primary connecting a moment later could.
	// A primary that fails to connect ends its wait at once; one that is up ends it too.
	// Zero means 250ms; negative means none.
	BackupHeadStart time.Duration
	// AcceptFlows lets the listening side open flows towards this Dialer
	// (Listener.DialPeer): they wait for Accept and AcceptPacket, up to Options.Backlog.
	// Without it they are refused, and the listener's flow fails with ErrReset.
	AcceptFlows bool
	Options
}

// Dialer opens flows to one peer over its target graph. Flows share one session: the first
// DialContext starts it (dialing every path), later ones reuse it with no handshake. If the
// session fails (the peer restarted, or no path came back within ReconnectTimeout), the next
// DialContext starts a new one.
type Dialer struct {
	c         *common
	peer      PublicKey
	clock     handshake.Clock
	headStart time.Duration // BackupHeadStart; <0: none

	// Flows the listening side opened (AcceptFlows), for Accept and AcceptPacket; done is
	// closed by Close.
	acceptFlows bool
	accept      chan *Conn
	acceptPk    chan *PacketConn
	done        chan struct{}

	ctl sync.Mutex // held by each change of the graph (Add, Remove, SetTier, Select) from start to end

	mu struct {
		sync.Mutex
		s      *session
		closed bool
		// root and selected change with Add, Remove, SetTier and Select.
		root     *Target
		selected string
	}
}

// NewDialer checks cfg and returns a Dialer. It opens nothing until the first DialContext.
func NewDialer(cfg DialerConfig) (*Dialer, error) {
	if cfg.Root == nil {
		return nil, errors.New("rendr: DialerConfig.Root is nil")
	}
	if err := checkGraph(cfg.Root); err != nil {
		return nil, err
	}
	if err := cfg.Key.check("DialerConfig.Key"); err != nil {
		return nil, err
	}
	if err := cfg.PeerKey.check("DialerConfig.PeerKey"); err != nil {
		return nil, err
	}
	if cfg.PeerKey == cfg.Key.Public() {
		return nil, errors.New("rendr: DialerConfig.PeerKey is this Dialer's own public key: set it to the listener's")
	}
	// The graph is copied: the Dialer changes it (Add, Remove...), never the caller's Targets.
	d := &Dialer{c: cfg.Options.common(cfg.Key), peer: cfg.PeerKey, headStart: cfg.BackupHeadStart,
		acceptFlows: cfg.AcceptFlows, accept: make(chan *Conn), acceptPk: make(chan *PacketConn), done: make(chan struct{})}
	d.c.engine.RefuseFlows = !cfg.AcceptFlows
	if d.headStart == 0 {
		d.headStart = defaultHeadStart
	}
	d.mu.root = cfg.Root.clone()
	return d, nil
}

// defaultHeadStart is BackupHeadStart's default: Happy Eyeballs' head start for the preferred
// address family (RFC 8305), long enough for a primary a little slower to set up than its
// backup, short enough that a dead primary costs a new session little.
const defaultHeadStart = 250 * time.Millisecond

// Graph limits, so that every route the graph can take fits a ROUTE frame (docs/wire.md 8.9):
// names of 1..64 bytes (the Hello carries a path's name), at most 16 children per group, 64
// targets and 8 levels in all.
const (
	maxNameLen  = 64
	maxChildren = 16
	maxTargets  = 64
	maxDepth    = 8
)

// quoteShort quotes s, or its start when it is long: an error names what was wrong, it does
// not echo kilobytes of it back.
func quoteShort(s string) string {
	const most = 32
	if len(s) <= most {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q... (%d bytes)", strings.ToValidUTF8(s[:most], ""), len(s))
}

// checkGraph checks a whole target graph.
func checkGraph(root *Target) error {
	count := 0
	return checkTarget(root, map[string]bool{}, 1, &count)
}

func checkTarget(t *Target, names map[string]bool, depth int, count *int) error {
	if t.name == "" || len(t.name) > maxNameLen {
		return fmt.Errorf("rendr: target name %s: names are 1 to %d bytes", quoteShort(t.name), maxNameLen)
	}
	if t.tier < 0 || t.tier > MaxTier {
		return fmt.Errorf("rendr: target %q: tier %d: tiers are 0 (primary) to %d", t.name, t.tier, MaxTier)
	}
	if names[t.name] {
		return fmt.Errorf("rendr: two targets are named %q", t.name)
	}
	names[t.name] = true
	if *count++; *count > maxTargets {
		return fmt.Errorf("rendr: more than %d targets in the graph", maxTargets)
	}
	if depth > maxDepth {
		return fmt.Errorf("rendr: target %q is deeper than %d levels", t.name, maxDepth)
	}
	switch t.kind {
	case kindPath:
		if t.dial == nil {
			return fmt.Errorf("rendr: path %q has no dialer", t.name)
		}
	case kindSelector, kindRace, kindBond:
		if len(t.children) == 0 {
			return fmt.Errorf("rendr: %v %q has no children", t.kind, t.name)
		}
		if len(t.children) > maxChildren {
			return fmt.Errorf("rendr: %v %q has more than %d children", t.kind, t.name, maxChildren)
		}
		for _, c := range t.children {
			if c == nil {
				return fmt.Errorf("rendr: %v %q has a nil child", t.kind, t.name)
			}
			if err := checkTarget(c, names, depth+1, count); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("%w: target kind %d", ErrUnsupported, t.kind)
	}
	return nil
}

// node builds the policy graph for one session, remembering which Target each leaf is.
func (t *Target) node(tuning policy.Tuning, leaves map[*policy.Node]*Target) *policy.Node {
	n := &policy.Node{Name: t.name, Tier: t.tier, Tuning: tuning}
	if t.kind == kindPath {
		n.Kind = policy.KindPath
		leaves[n] = t
		return n
	}
	n.Kind = map[targetKind]policy.Kind{kindSelector: policy.KindSelector,
		kindRace: policy.KindRace, kindBond: policy.KindBond}[t.kind]
	for _, c := range t.children {
		n.Children = append(n.Children, c.node(tuning, leaves))
	}
	return n
}

// Dial opens a flow with no deadline beyond the session's own timeouts.
func (d *Dialer) Dial() (*Conn, error) { return d.DialContext(context.Background()) }

// DialContext opens a new flow. The first call waits for the session's first path (bounded by
// ctx); later calls cost no round trip. When every path of a session that never came up is
// refused twice in a row (connection refused: the host is there and nothing listens), it
// fails at once, as net.Dial does, with an error that matches ErrNoPath and ECONNREFUSED. A
// network that is not there yet (no route to it) is waited for, up to ReconnectTimeout; and
// once a session has been up, its paths keep being dialed through refusals (the peer may be
// restarting).
func (d *Dialer) DialContext(ctx context.Context) (*Conn, error) {
	s, st, err := d.open(ctx, (*flow.Engine).Open)
	if err != nil {
		return nil, err
	}
	return newConn(s, st), nil
}

// DialNetwork opens a flow as DialContext or DialPacket does, for code that dials with the
// signature of net.Dialer.DialContext: http.Transport's DialContext, grpc.WithContextDialer,
// golang.org/x/net/proxy's ContextDialer. network picks the kind of flow: "tcp", "tcp4" or
// "tcp6" a stream flow (a *Conn), "udp", "udp4" or "udp6" a packet flow (a *PacketConn).
// address is not used: every flow goes to this Dialer's listener, whose Accept takes it (the
// listener is the far end's net.Listener: an http.Server or a gRPC server serves on it). To
// have the listener carry a flow on to an address, see DialIdentity and ListenConfig.Egress.
func (d *Dialer) DialNetwork(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
		c, err := d.DialContext(ctx)
		if err != nil {
			return nil, err // not a nil *Conn in a non-nil net.Conn
		}
		return c, nil
	case "udp", "udp4", "udp6":
		pc, err := d.DialPacket(ctx)
		if err != nil {
			return nil, err
		}
		return pc, nil
	}
	return nil, fmt.Errorf("rendr: DialNetwork(%q, %s): a flow is a stream (\"tcp\") or a packet flow (\"udp\")", network, quoteShort(address))
}

// Connect starts the session now, without opening a flow, and waits (bounded by ctx) until a
// path is attached: a VPN client, say, that wants its uplinks up before the first connection.
// Without it the session starts with the first Dial. It returns at once when the session is
// up already. A session that fails before any path comes up is started again, as Dial does;
// like Dial, it fails at once when every path is refused (see DialContext).
func (d *Dialer) Connect(ctx context.Context) error {
	_, _, err := d.open(ctx, nil)
	return err
}

// open waits for the session and opens a flow on it with open (none when open is nil).
func (d *Dialer) open(ctx context.Context, open func(*flow.Engine) (*flow.Stream, error)) (*session, *flow.Stream, error) {
	var last *session
	for range 3 {
		s, err := d.session()
		if err != nil {
			return nil, nil, err
		}
		last = s
		select {
		case <-s.established:
		case <-s.done:
			if le := lastDialError(s); errors.Is(s.err(), ErrNoPath) && refused(le) {
				// No path came up for the whole reconnect timeout, and the network says
				// nothing listens there: another session would only be refused as long
				// again. (Paths still dialing, timing out or turned away by a busy
				// listener may well come up in a fresh one.)
				return nil, nil, dialFailed(s.err(), le)
			}
			continue // failed before it started: a fresh session may succeed
		case <-ctx.Done():
			// Both match with errors.Is: the deadline, and why no path came up
			// (ErrLimit, ErrPeerRestarted, a refused connection...).
			return nil, nil, dialFailed(ctx.Err(), lastDialError(s))
		}
		if open == nil {
			return s, nil, nil
		}
		st, err := openWaiting(ctx, s.engine, open)
		if err != nil {
			if s.err() != nil {
				continue
			}
			return nil, nil, err
		}
		return s, st, nil
	}
	var le error
	if last != nil {
		le = lastDialError(last)
	}
	return nil, nil, dialFailed(d.lastErr(), le)
}

// refused reports whether err is the network's answer that nothing listens, or that there is
// no way there: a refusal that another attempt soon after would meet again.
func refused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH)
}

// dialError is a dial's failure. Its text says "rendr:" once, the texts of the errors it
// wraps stripped of their own, and errors.Is finds each of them.
type dialError struct {
	text string
	errs []error
}

func (e *dialError) Error() string   { return e.text }
func (e *dialError) Unwrap() []error { return e.errs }

// dialFailed is the error of a dial that failed for why, with the last path's error (nil when
// no path has failed yet).
func dialFailed(why, pathErr error) error {
	bare := func(err error) string { return strings.TrimPrefix(err.Error(), "rendr: ") }
	e := &dialError{text: "rendr: dial: " + bare(why), errs: []error{why}}
	if pathErr != nil {
		e.text += " (last path error: " + bare(pathErr) + ")"
		e.errs = append(e.errs, pathErr)
	} else {
		e.text += " (no path attached yet)"
	}
	return e
}

// openWaiting opens a flow, waiting while flow.MaxOpening flows already wait for the
// listener's answer (a burst of dials is paced by the listener's answers, not refused).
func openWaiting(ctx context.Context, e *flow.Engine, open func(*flow.Engine) (*flow.Stream, error)) (*flow.Stream, error) {
	for {
		if err := e.WaitOpening(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("rendr: dial: %w (%d flows wait for the listener's answer)", err, flow.MaxOpening)
			}
			return nil, err
		}
		st, err := open(e)
		if !errors.Is(err, flow.ErrOpening) {
			return st, err
		}
	}
}

func (d *Dialer) lastErr() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.closed {
		return errDialerClosed
	}
	if d.mu.s != nil {
		if err := d.mu.s.err(); err != nil {
			return err
		}
	}
	return ErrNoPath
}

func lastDialError(s *session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ls := range s.mu.leaves {
		if ls.lastErr != nil {
			return ls.lastErr
		}
	}
	return nil
}

// session returns the live session, starting one if there is none.
func (d *Dialer) session() (*session, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.closed {
		return nil, errDialerClosed
	}
	if s := d.mu.s; s != nil && s.err() == nil {
		return s, nil
	}
	var id [16]byte
	if _, err := io.ReadFull(rand.Reader, id[:]); err != nil {
		return nil, err
	}
	leaves := map[*policy.Node]*Target{}
	root := d.mu.root.node(d.c.tuning, leaves)
	root.Init()
	s := newSession(d.c, id, d.peer, true, root, nil)
	s.onEnd = func(s *session) {
		d.mu.Lock()
		if d.mu.s == s {
			d.mu.s = nil
		}
		d.mu.Unlock()
	}
	s.mu.Lock() // the engine may already ask for a route
	for _, n := range root.Leaves() {
		ls := &leafState{target: leaves[n], node: n, state: status.Connecting, since: time.Now(), stop: make(chan struct{}),
			kick: make(chan struct{}, 1)}
		s.mu.leaves[n] = ls
		s.mu.targets[leaves[n].name] = ls
	}
	if d.mu.selected != "" {
		if sel := root.Find(d.mu.selected); sel != nil {
			s.router.SetGraphLocked(sel, false)
		}
	}
	if d.headStart > 0 {
		s.mu.headStart = time.Now().Add(d.headStart)
		s.mu.headTimer = time.AfterFunc(d.headStart, s.routeAgain)
	}
	s.mu.Unlock()
	for _, n := range root.Leaves() {
		s.wg.Add(1)
		go d.routineLeaf(s, s.mu.leaves[n])
	}
	d.startAccepting(s)
	d.mu.s = s
	return s, nil
}

// Status describes the current session (an empty snapshot if none is running).
func (d *Dialer) Status() status.Session {
	d.mu.Lock()
	s := d.mu.s
	d.mu.Unlock()
	if s == nil {
		return status.Session{}
	}
	return s.snapshot()
}

// Close ends the session: it gives bytes already written on its flows up to 2s to be
// acknowledged, tells the peer (whose flows then fail with ErrSessionClosed once they have read
// what arrived; local ones fail with ErrClosed), and waits for every goroutine to stop. It
// must not be called from an OnMigrate callback.
func (d *Dialer) Close() error {
	d.mu.Lock()
	s := d.mu.s
	was := d.mu.closed
	d.mu.closed = true
	d.mu.s = nil
	d.mu.Unlock()
	if !was {
		close(d.done)
	}
	if s != nil {
		s.close(errDialerClosed)
	}
	return nil
}

// Backoff between carrier attempts of one path: doubling from minBackoff to maxBackoff, back
// to the minimum after a path has lived for stableAfter.
const (
	minBackoff  = 50 * time.Millisecond
	maxBackoff  = 2 * time.Second
	stableAfter = 5 * time.Second
)

// routineLeaf keeps one configured path attached: dial, handshake, attach, wait for death,
// back off, again, until the session ends.
func (d *Dialer) routineLeaf(s *session, ls *leafState) {
	defer s.wg.Done()
	backoff := time.Duration(0)
	for {
		if backoff > 0 {
			select {
			case <-time.After(backoff):
			case <-ls.kick: // Dialer.Redial: the network changed, dial now
				backoff = 0
			case <-s.done:
				return
			case <-ls.stop:
				return
			}
		}
		select {
		case <-ls.stop:
			return // removed from the graph
		default:
		}
		backoff = min(max(2*backoff, minBackoff), maxBackoff)
		started := time.Now()
		err := d.attempt(s, ls)
		if errors.Is(err, errSessionOver) {
			return
		}
		if err != nil {
			s.mu.Lock()
			ls.lastErr = err
			if ls.state != status.Down {
				ls.state, ls.since = status.Down, time.Now()
			}
			waited := !ls.settled && time.Now().Before(s.mu.headStart)
			ls.settled = true
			if errors.Is(err, syscall.ECONNREFUSED) {
				ls.refusals++
			} else {
				ls.refusals = 0
			}
			refusedAll := ls.refusals > 0 && s.refusedEverywhereLocked()
			s.mu.Unlock()
			if waited {
				s.routeAgain() // a backup may have been held back for this path
			}
			if errors.Is(err, ErrPeerRestarted) {
				s.fail(err)
				return
			}
			if refusedAll {
				// Nothing listens at any path's end: a dial fails now, as net.Dial does,
				// rather than after the reconnect timeout. (A session that was up keeps
				// trying: there, a refusal is a peer restarting.)
				s.fail(errAllRefused{})
				return
			}
			continue
		}
		if time.Since(started) >= stableAfter {
			backoff = 0
		}
	}
}

// errAllRefused ends a session that never came up because every path was refused. It is an
// ErrNoPath.
type errAllRefused struct{}

func (errAllRefused) Error() string {
	return "rendr: every path was refused twice: nothing listens at their addresses"
}

// Is makes errors.Is match ECONNREFUSED too: it is what every path met.
func (errAllRefused) Is(target error) bool { return target == syscall.ECONNREFUSED }
func (errAllRefused) Unwrap() error        { return ErrNoPath }

// refusedTries is how many times in a row every path of a session that never came up must be
// refused before a dial gives up: twice, so that one refusal from a listener that is just
// starting does not end it. Only "connection refused" counts: the host is there and nothing
// listens. A network not there yet (no route, host unreachable: a laptop waking, Wi-Fi
// coming up) may be there in a moment, and is waited for.
const refusedTries = 2

// refusedEverywhereLocked reports whether the session never came up and every path's last
// refusedTries attempts in a row were refused (a path that connected since, and may be
// handshaking now, has a count of zero).
func (s *session) refusedEverywhereLocked() bool {
	select {
	case <-s.established:
		return false
	default:
	}
	n := 0
	for _, ls := range s.mu.leaves {
		if ls.removed {
			continue
		}
		if ls.refusals < refusedTries {
			return false
		}
		n++
	}
	return n > 0
}

// founder decides whether a leaf whose carrier is connected founds the session (mode New) or
// joins it, waiting while another leaf is founding. ok is false once the session is over.
// Paths dial at once and only their handshakes wait here: a founding path whose dial hangs
// must not hold back one that is already connected.
func (d *Dialer) founder(ctx context.Context, s *session) (mode uint8, ok bool) {
	for {
		select {
		case <-s.established:
			return handshake.ModeJoin, true
		case <-s.done:
			return 0, false
		default:
		}
		s.mu.Lock()
		if !s.mu.founding {
			s.mu.founding = true
			s.mu.Unlock()
			return handshake.ModeNew, true
		}
		s.mu.Unlock()
		select {
		case <-s.established:
		case <-s.done:
			return 0, false
		case <-ctx.Done():
			return 0, false
		case <-time.After(minBackoff):
		}
	}
}

// errSessionOver is attempt's error when the session ended before its carrier could join it.
var errSessionOver = errors.New("rendr: session over")

// attempt dials one carrier, handshakes, attaches it and returns when it dies.
func (d *Dialer) attempt(s *session, ls *leafState) (err error) {
	s.mu.Lock()
	t := ls.target // a Target is never changed once in a graph; SetTier replaces it
	ls.dials++
	if ls.state != status.Down {
		ls.state, ls.since = status.Connecting, time.Now()
	}
	s.mu.Unlock()
	if d.c.trace != nil {
		s.traceConnecting(t.name)
	}
	// base ends with the session, or when the path is removed while dialing, waiting or
	// handshaking; the dial and the handshake each get HandshakeTimeout within it.
	base, cancelBase := context.WithCancel(s.ctx)
	defer cancelBase()
	go func() {
		select {
		case <-ls.stop:
			cancelBase()
		case <-base.Done():
		}
	}()
	ctx, cancel := context.WithTimeout(base, d.c.hsTimeout)
	defer cancel()
	conn, err := t.dial(ctx)
	if d.c.trace != nil {
		defer s.traceAttempt(t.name, conn != nil, &err)
	}
	if err != nil {
		return err
	}
	if conn == nil {
		// The embedder's dial function broke its contract; say so rather than crash in the
		// handshake.
		return fmt.Errorf("rendr: path %q: its dial function returned neither a connection nor an error", t.name)
	}
	s.mu.Lock()
	ls.refusals = 0 // it connected: whatever refused it before listens now
	s.mu.Unlock()
	// Waiting for another path's founding handshake takes nothing from this one's: its
	// handshake gets a HandshakeTimeout of its own once it may start (otherwise a founder
	// whose handshake is never answered would time out every path waiting behind it, and
	// win the next race for founding again).
	mode, ok := d.founder(base, s)
	if !ok {
		conn.Close()
		if s.ctx.Err() == nil {
			return errRemoved
		}
		return errSessionOver
	}
	cancel()
	ctx, cancel = context.WithTimeout(base, d.c.hsTimeout)
	defer cancel()
	if mode == handshake.ModeNew {
		defer func() {
			s.mu.Lock()
			s.mu.founding = false
			s.mu.Unlock()
		}()
		// A fresh id for every founding attempt: if an earlier attempt's reply was lost, the
		// listener holds an orphan session under the old id and would refuse a second NEW.
		var id [16]byte
		if _, err := io.ReadFull(rand.Reader, id[:]); err != nil {
			conn.Close()
			return err
		}
		s.mu.Lock()
		s.id = id
		s.mu.Unlock()
	}
	s.mu.Lock()
	sid := s.id
	s.mu.Unlock()
	caps := capsOf(conn)
	h := handshake.Hello{Time: d.clock.Now(), Instance: d.c.instance, Session: sid, Mode: mode,
		Tier: uint8(min(t.tier, 255)), Name: t.name, Flags: caps.helloFlags(t.secure)}
	if caps.ext != nil {
		h.Extra = caps.ext.HelloExtra()
		if err := checkExtra(conn, h.Extra); err != nil {
			conn.Close()
			return err
		}
	}
	res, err := handshake.Initiate(ctx, conn, d.c.key, d.peer, h, &ls.cookies)
	if err != nil {
		conn.Close()
		return handshakeFailed(t.name, err)
	}
	switch res.Reply.Status {
	case handshake.StatusOK:
	case handshake.StatusUnknownSession:
		conn.Close()
		return ErrPeerRestarted
	case handshake.StatusLimit:
		conn.Close()
		return ErrLimit
	default:
		conn.Close()
		return errors.New("rendr: listener refused the path")
	}
	if err := checkReply(h.Flags, res.Reply.Flags); err != nil {
		conn.Close()
		return err
	}
	if caps.ext != nil {
		if err := caps.ext.ReplyExtra(res.Reply.Extra); err != nil {
			conn.Close()
			return fmt.Errorf("rendr: carrier refused the listener's handshake data: %w", err)
		}
	}
	if mode == handshake.ModeNew {
		s.establish(res.Secret, res.Reply.Instance)
	} else {
		s.mu.Lock()
		same := s.mu.peerInst == res.Reply.Instance
		s.mu.Unlock()
		if !same {
			conn.Close()
			return ErrPeerRestarted
		}
	}
	l := s.newLink(t.name, t.tier, ls)
	l.openPath(conn, res, d.c.path, false)
	l.joined.Store(true)
	if mode == handshake.ModeJoin {
		s.mu.Lock()
		secret := s.mu.secret
		s.mu.Unlock()
		mac := handshake.JoinProof(secret, res.Hash)
		r := path.NewRecord()
		r.B = wire.AppendJoinProof(r.B, &mac)
		l.p.SendControl(r)
	}
	if err := s.track(l); err != nil {
		conn.Close()
		return err
	}
	s.wg.Add(1) // released by l.Down
	l.p.Start()
	// A packet path may lose its JOIN_PROOF, and the listening side refuses anything before
	// it: carry traffic only once the peer acknowledged it (at once on a stream path).
	select {
	case <-l.p.Confirmed():
		if err := s.attach(l); err != nil {
			l.p.Close(err)
		}
	case <-l.p.Closed():
	case <-s.done:
	}
	select {
	case <-l.p.Closed():
	case <-s.done:
		l.p.Close(s.err())
	}
	l.p.Wait()
	return nil
}

// handshakeFailed says what a handshake's failure most likely means. A listener answers
// nothing to a key it does not know, nor to a hello it cannot read (sealed to another key): it
// only closes the connection, or lets it wait, so that a stranger learns nothing. The dialer
// can still say what it saw, and what to check.
func handshakeFailed(path string, err error) error {
	const check = "is this Dialer's public key in the listener's ListenConfig.Peers, and DialerConfig.PeerKey the listener's public key?"
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("rendr: path %q: the listener closed the connection without answering the handshake (%s): %w", path, check, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("rendr: path %q: no answer to the handshake (%s): %w", path, check, err)
	}
	return err
}
