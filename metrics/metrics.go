// Package metrics exports a rendr Dialer's and Listener's state as Prometheus metrics: sessions,
// paths (state, round trip, loss, bytes, packets, congestion marks), flows, migrations by
// cause, bytes sent again, drops by cause, and handshakes the listener refused by reason.
//
// Nothing is registered anywhere on its own: the embedder registers the Collector on the
// registry it serves. Values are read from the Dialer's and Listener's status snapshots when
// the registry is scraped, so the Collector costs nothing between scrapes. Its Trace method,
// plugged into rendr.Options.Trace, adds counts of the engine's events that outlive the
// sessions they happened in.
//
//	m := metrics.New()
//	d, _ := rendr.NewDialer(rendr.DialerConfig{..., Options: rendr.Options{Trace: m.Trace}})
//	m.WatchDialer(d)
//	reg.MustRegister(m)
//
// # Labels and their cardinality
//
// side is "dialer" or "listener". session is a session's id, shortened to its first 8 hex
// digits (all 32 where two live sessions share them). path is a path's name: on the dialing
// side one of the names of its graph (at most 64), on the listening side as the dialer named
// it, at most MaxPathsPerSession per session. cause, state, reason and kind take a fixed set
// of values each. A Dialer has one session at a time; a Listener has one per live session, so
// per-session and per-path series are exported for at most MaxSessions sessions (the first by
// id; WithMaxSessions), and rendr_sessions_omitted counts the others, which still count in
// rendr_sessions and in the listener's totals. A session's counters start from zero, and
// vanish with it.
//
// To export several Dialers or Listeners, use a Collector for each and register each through
// prometheus.WrapRegistererWith with a label of your own that tells them apart.
package metrics

import (
	"encoding/hex"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rendr-go/rendr/status"
)

// DialerSource is what the Collector reads of a Dialer: *rendr.Dialer is one.
type DialerSource interface {
	Status() status.Session
}

// ListenerSource is what the Collector reads of a Listener: *rendr.Listener is one.
type ListenerSource interface {
	Sessions() []status.Session
	Stats() status.Listener
}

// DefaultMaxSessions is how many sessions of a Listener get series of their own by default.
const DefaultMaxSessions = 64

// Option configures a Collector.
type Option func(*Collector)

// WithMaxSessions bounds the sessions exported with series of their own (DefaultMaxSessions
// when n < 1).
func WithMaxSessions(n int) Option {
	return func(c *Collector) {
		if n >= 1 {
			c.maxSessions = n
		}
	}
}

// Collector is a prometheus.Collector over one Dialer and one Listener (either may be
// absent). Make it with New; it is safe for concurrent use.
type Collector struct {
	maxSessions int

	mu struct {
		sync.Mutex
		dialer   DialerSource
		listener ListenerSource
		// Counted from Trace, by side (0 listener, 1 dialer).
		events     [2][]uint64 // by status.EventKind
		migrations [2][status.Causes]uint64
		refused    map[string]uint64 // handshakes refused, by reason (listening side)
	}
}

var _ prometheus.Collector = (*Collector)(nil)

// New returns a Collector watching nothing yet: give it a Dialer and a Listener with
// WatchDialer and WatchListener.
func New(opts ...Option) *Collector {
	c := &Collector{maxSessions: DefaultMaxSessions}
	for _, o := range opts {
		o(c)
	}
	for i := range c.mu.events {
		c.mu.events[i] = make([]uint64, status.SessionEnded+1)
	}
	c.mu.refused = map[string]uint64{}
	return c
}

// Register makes a Collector of d and l (either may be nil) and registers it on reg.
func Register(reg prometheus.Registerer, d DialerSource, l ListenerSource, opts ...Option) (*Collector, error) {
	c := New(opts...)
	if d != nil {
		c.WatchDialer(d)
	}
	if l != nil {
		c.WatchListener(l)
	}
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	return c, nil
}

// WatchDialer makes the Collector export d (replacing the Dialer it watched).
func (c *Collector) WatchDialer(d DialerSource) {
	c.mu.Lock()
	c.mu.dialer = d
	c.mu.Unlock()
}

// WatchListener makes the Collector export l (replacing the Listener it watched).
func (c *Collector) WatchListener(l ListenerSource) {
	c.mu.Lock()
	c.mu.listener = l
	c.mu.Unlock()
}

// Trace counts an event; it is a rendr.Options.Trace. It takes a lock and increments a
// counter, nothing more.
func (c *Collector) Trace(ev status.Event) {
	side := 0
	if ev.Dialer {
		side = 1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if k := int(ev.Kind); k >= 0 && k < len(c.mu.events[side]) {
		c.mu.events[side][k]++
	}
	if ev.Kind == status.Migrated && int(ev.Cause) >= 0 && int(ev.Cause) < status.Causes {
		c.mu.migrations[side][ev.Cause]++
	}
	if ev.Kind == status.HandshakeRefused && refuseReasons[ev.Reason] {
		c.mu.refused[ev.Reason]++
	}
}

// refuseReasons are the reasons Trace counts: status.Refuse*, a fixed set.
var refuseReasons = map[string]bool{
	status.RefuseUnknownKey: true, status.RefuseReplay: true, status.RefuseBadMAC: true,
	status.RefuseCookie: true, status.RefuseRateLimited: true, status.RefuseMalformed: true,
	status.RefuseTimeout: true, status.RefuseLimit: true, status.RefuseUnknownSession: true,
	status.RefuseRefused: true, status.RefuseOther: true,
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it snapshots the Dialer and the Listener.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	d, l := c.mu.dialer, c.mu.listener
	var events [2][]uint64
	for i := range events {
		events[i] = slices.Clone(c.mu.events[i])
	}
	migrations := c.mu.migrations
	refused := make(map[string]uint64, len(c.mu.refused))
	for k, v := range c.mu.refused {
		refused[k] = v
	}
	c.mu.Unlock()

	if d != nil {
		var ss []status.Session
		if st := d.Status(); st.ID != ([16]byte{}) {
			ss = append(ss, st)
		}
		c.sessions(ch, "dialer", ss)
	}
	if l != nil {
		c.sessions(ch, "listener", l.Sessions())
		listenerStats(ch, l.Stats())
	}
	for side, name := range []string{"listener", "dialer"} {
		for k := status.PathConnecting; k <= status.SessionEnded; k++ {
			if n := events[side][k]; n > 0 {
				ch <- counter(descEvents, n, name, k.String())
			}
		}
		for cause := range status.Causes {
			if n := migrations[side][cause]; n > 0 {
				ch <- counter(descMigrationsTraced, n, name, status.Cause(cause).String())
			}
		}
	}
	for reason, n := range refused {
		ch <- counter(descRefusedTraced, n, reason)
	}
}

// sessions exports one side's sessions: their count, and series for the first MaxSessions.
func (c *Collector) sessions(ch chan<- prometheus.Metric, side string, ss []status.Session) {
	ch <- gauge(descSessions, float64(len(ss)), side)
	slices.SortFunc(ss, func(a, b status.Session) int { return slices.Compare(a.ID[:], b.ID[:]) })
	omitted := max(len(ss)-c.maxSessions, 0)
	ss = ss[:len(ss)-omitted]
	ch <- gauge(descOmitted, float64(omitted), side)
	short := map[string]int{}
	for _, s := range ss {
		short[hex.EncodeToString(s.ID[:4])]++
	}
	for _, s := range ss {
		id := hex.EncodeToString(s.ID[:4])
		if short[id] > 1 {
			id = hex.EncodeToString(s.ID[:])
		}
		session(ch, side, id, &s)
	}
}

// session exports one session and its paths.
func session(ch chan<- prometheus.Metric, side, id string, s *status.Session) {
	ch <- gauge(descFlows, float64(s.Flows), side, id)
	for cause, n := range s.Moves {
		ch <- counter(descMigrations, uint64(n), side, id, status.Cause(cause).String())
	}
	ch <- counter(descSpurious, uint64(s.Spurious), side, id)
	ch <- counter(descRewinds, uint64(s.Rewinds), side, id)
	ch <- counter(descResent, s.Resent, side, id)
	for _, d := range []struct {
		cause string
		n     uint64
	}{{"send_queue", s.Drops.SendQueue}, {"recv_queue", s.Drops.RecvQueue}, {"duplicate", s.Drops.Duplicate},
		{"too_old", s.Drops.TooOld}, {"late", s.Drops.Late}, {"oversize", s.Drops.Oversize}} {
		ch <- counter(descDroppedDatagrams, d.n, side, id, d.cause)
	}
	ch <- counter(descDuplicateBytes, s.Drops.DupBytes, side, id)
	ch <- counter(descGapFrames, s.Drops.GapFrames, side, id)
	ch <- counter(descRefusedFlows, s.Refused, side, id)
	ch <- counter(descViolations, s.Violations, side, id)

	// A path name appears once: a re-dialed path's old carrier may linger beside its new
	// one, and the one carrying traffic, or else the newest, speaks for the name.
	paths := slices.Clone(s.Paths)
	slices.SortStableFunc(paths, func(a, b status.Path) int {
		switch {
		case a.Active != b.Active:
			if a.Active {
				return -1
			}
			return 1
		case a.ID != b.ID:
			if a.ID > b.ID {
				return -1
			}
			return 1
		}
		return 0
	})
	seen := map[string]bool{}
	for i := range paths {
		p := &paths[i]
		if seen[p.Name] {
			continue
		}
		seen[p.Name] = true
		path(ch, side, id, p)
	}
}

var stateNames = [...]string{status.Connecting: "connecting", status.Up: "up", status.Suspect: "suspect", status.Down: "down"}

// path exports one path.
func path(ch chan<- prometheus.Metric, side, id string, p *status.Path) {
	lv := []string{side, id, p.Name}
	for st, name := range stateNames {
		ch <- gauge(descPathState, b2f(p.State == status.PathState(st)), append(lv, name)...)
	}
	ch <- gauge(descPathActive, b2f(p.Active), lv...)
	ch <- gauge(descPathSRTT, p.SRTT.Seconds(), lv...)
	ch <- gauge(descPathJitter, p.Jitter.Seconds(), lv...)
	ch <- gauge(descPathMinRTT, p.MinRTT.Seconds(), lv...)
	ch <- gauge(descPathLoss, p.Loss, lv...)
	ch <- counter(descPathSent, uint64(max(p.BytesSent, 0)), lv...)
	ch <- counter(descPathRecv, uint64(max(p.BytesRecv, 0)), lv...)
	ch <- counter(descPathDials, uint64(p.Dials), lv...)
	ch <- counter(descPathSpurious, uint64(p.Spurious), lv...)
	if k := p.Packets; k != nil {
		ch <- counter(descPktSent, k.Sent, lv...)
		ch <- counter(descPktLost, k.Lost, lv...)
		ch <- counter(descPktForged, k.Forged, lv...)
		ch <- counter(descPktMarked, k.Marked, append(lv, "sent")...)
		ch <- counter(descPktMarked, k.MarkedIn, append(lv, "received")...)
		ch <- counter(descPktRebinds, k.Rebinds, lv...)
		ch <- gauge(descPktMTU, float64(k.MTU), lv...)
		ch <- gauge(descPktWindow, float64(k.Window), lv...)
		ch <- gauge(descPktInFlight, float64(k.InFlight), lv...)
	}
}

// listenerStats exports a Listener's own counters.
func listenerStats(ch chan<- prometheus.Metric, st status.Listener) {
	ch <- gauge(descPeers, float64(st.Peers))
	ch <- counter(descHandshakes, st.Handshakes)
	ch <- gauge(descHandshaking, float64(st.Handshaking))
	ch <- counter(descCookies, st.CookiesSent)
	for _, r := range []struct {
		reason string
		n      uint64
	}{
		{status.RefuseUnknownKey, st.UnknownKey}, {status.RefuseReplay, st.Replayed},
		{status.RefuseBadMAC, st.BadMAC1}, {status.RefuseCookie, st.BadCookie},
		{status.RefuseRateLimited, st.RateLimited}, {status.RefuseTimeout, st.HandshakeTimeouts},
		{"evicted", st.Evicted}, {"carriers_limited", st.CarriersLimited},
		{"limit_sessions_per_peer", st.RefusedSessionsPerPeer}, {"limit_sessions", st.RefusedSessions},
		{"limit_paths", st.RefusedPaths}, {"limit_memory", st.RefusedMemory},
	} {
		ch <- counter(descRefused, r.n, r.reason)
	}
	ch <- gauge(descMemUsed, float64(st.MemoryUsed))
	ch <- gauge(descMemLimit, float64(st.MemoryLimit))
	ch <- gauge(descEgressActive, float64(st.EgressActive))
	for _, e := range []struct {
		outcome string
		n       uint64
	}{{"carried", st.EgressCarried}, {"refused", st.EgressRefused}, {"unreachable", st.EgressUnreachable},
		{"timed_out", st.EgressTimedOut}, {"rejected", st.EgressRejected}, {"full", st.EgressFull}} {
		ch <- counter(descEgress, e.n, e.outcome)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func gauge(d *prometheus.Desc, v float64, lv ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
}

func counter(d *prometheus.Desc, v uint64, lv ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
}
