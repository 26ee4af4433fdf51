// Package debugpage is an http.Handler showing a rendr Dialer's and Listener's live status:
// each session's paths (state, round trip, loss, bytes), flows and moves, the listener's
// defences, and the engine's recent events (migrations first of all), as JSON or as a small
// HTML page with no script.
//
//	page := debugpage.New()
//	d, _ := rendr.NewDialer(rendr.DialerConfig{..., Options: rendr.Options{Trace: page.Trace}})
//	page.WatchDialer(d)
//	mux.Handle("/debug/rendr", page) // ?format=json, or Accept: application/json, for JSON
//
// The page names paths and their addresses and is not authenticated: serve it where only
// operators reach it.
package debugpage

import (
	"encoding/hex"
	"encoding/json"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/trace"
)

// DialerSource is what the page reads of a Dialer: *rendr.Dialer is one.
type DialerSource interface {
	Status() status.Session
}

// ListenerSource is what the page reads of a Listener: *rendr.Listener is one.
type ListenerSource interface {
	Sessions() []status.Session
	Stats() status.Listener
}

// Defaults of a Page's bounds.
const (
	DefaultRecent      = 64  // events kept
	DefaultMaxSessions = 100 // listener sessions shown
)

// Option configures a Page.
type Option func(*Page)

// Recent sets how many recent events the page keeps (DefaultRecent when n < 1); the oldest
// go first.
func Recent(n int) Option {
	return func(p *Page) {
		if n >= 1 {
			p.recent = n
		}
	}
}

// MaxSessions bounds the listener's sessions shown (DefaultMaxSessions when n < 1); the page
// says how many more there are.
func MaxSessions(n int) Option {
	return func(p *Page) {
		if n >= 1 {
			p.maxSessions = n
		}
	}
}

// Page is the debug page. Make it with New; it is safe for concurrent use.
type Page struct {
	recent, maxSessions int

	mu struct {
		sync.Mutex
		dialer   DialerSource
		listener ListenerSource
		ring     []status.Event // the newest recent events, oldest first once full (next)
		next     int
	}
}

var _ http.Handler = (*Page)(nil)

// New returns a Page watching nothing yet (WatchDialer, WatchListener).
func New(opts ...Option) *Page {
	p := &Page{recent: DefaultRecent, maxSessions: DefaultMaxSessions}
	for _, o := range opts {
		o(p)
	}
	return p
}

// WatchDialer shows d (replacing the Dialer shown).
func (p *Page) WatchDialer(d DialerSource) {
	p.mu.Lock()
	p.mu.dialer = d
	p.mu.Unlock()
}

// WatchListener shows l (replacing the Listener shown).
func (p *Page) WatchListener(l ListenerSource) {
	p.mu.Lock()
	p.mu.listener = l
	p.mu.Unlock()
}

// Trace keeps ev among the recent events; it is a rendr.Options.Trace (a lock and a copy).
func (p *Page) Trace(ev status.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.mu.ring) < p.recent {
		p.mu.ring = append(p.mu.ring, ev)
		return
	}
	p.mu.ring[p.mu.next] = ev
	p.mu.next = (p.mu.next + 1) % p.recent
}

// OnMigrate keeps a migration among the recent events: a rendr.Options.OnMigrate, for an
// embedder that traces nothing else.
func (p *Page) OnMigrate(m status.Migration) {
	p.Trace(status.Event{Time: m.Time, Kind: status.Migrated, Session: m.Session, Cause: m.Cause,
		From: m.From, To: m.To, FromID: m.FromID, ToID: m.ToID, Active: m.Active, Path: m.To, PathID: m.ToID})
}

// View is what the page shows, and its JSON.
type View struct {
	Time     time.Time      `json:"time"`
	Dialer   *SessionView   `json:"dialer,omitempty"` // nil: no Dialer, or no session now
	Listener *ListenerView  `json:"listener,omitempty"`
	Recent   []trace.Record `json:"recent"` // newest first
}

// ListenerView is a Listener's counters and its sessions.
type ListenerView struct {
	Stats    status.Listener `json:"stats"`
	Sessions []SessionView   `json:"sessions"`
	Omitted  int             `json:"omitted,omitempty"` // sessions past MaxSessions, not shown
}

// SessionView is a session as shown.
type SessionView struct {
	ID           string         `json:"id"`
	PeerInstance string         `json:"peer_instance"`
	Flows        int            `json:"flows"`
	Migrations   int            `json:"migrations"`
	Moves        map[string]int `json:"moves,omitempty"` // by cause, those that happened
	Spurious     int            `json:"spurious"`
	Undone       int            `json:"undone"`
	Rewinds      int            `json:"rewinds"`
	Resent       uint64         `json:"resent_bytes"`
	Drops        status.Drops   `json:"drops"`
	Paths        []PathView     `json:"paths"`
}

// PathView is a path as shown.
type PathView struct {
	Name      string          `json:"name"`
	ID        uint32          `json:"id"`
	State     string          `json:"state"`
	Active    bool            `json:"active"`
	Tier      int             `json:"tier"`
	Local     string          `json:"local,omitempty"`
	Remote    string          `json:"remote,omitempty"`
	SRTTms    float64         `json:"srtt_ms"`
	JitterMs  float64         `json:"jitter_ms"`
	MinRTTms  float64         `json:"min_rtt_ms"`
	Loss      float64         `json:"loss"`
	BytesSent int64           `json:"bytes_sent"`
	BytesRecv int64           `json:"bytes_recv"`
	Since     time.Time       `json:"since"`
	LastError string          `json:"last_error,omitempty"`
	Dials     int             `json:"dials"`
	Packets   *status.Packets `json:"packets,omitempty"`
}

// Snapshot reads the Dialer and the Listener now.
func (p *Page) Snapshot() View {
	p.mu.Lock()
	d, l := p.mu.dialer, p.mu.listener
	recent := make([]trace.Record, 0, len(p.mu.ring))
	for i := range p.mu.ring {
		recent = append(recent, trace.FromEvent(p.mu.ring[(p.mu.next+i)%len(p.mu.ring)]))
	}
	p.mu.Unlock()
	slices.Reverse(recent)
	v := View{Time: time.Now(), Recent: recent}
	if d != nil {
		if s := d.Status(); s.ID != ([16]byte{}) {
			sv := sessionView(&s)
			v.Dialer = &sv
		}
	}
	if l != nil {
		ss := l.Sessions()
		slices.SortFunc(ss, func(a, b status.Session) int { return slices.Compare(a.ID[:], b.ID[:]) })
		lv := &ListenerView{Stats: l.Stats(), Sessions: []SessionView{}}
		if len(ss) > p.maxSessions {
			lv.Omitted, ss = len(ss)-p.maxSessions, ss[:p.maxSessions]
		}
		for i := range ss {
			lv.Sessions = append(lv.Sessions, sessionView(&ss[i]))
		}
		v.Listener = lv
	}
	return v
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func sessionView(s *status.Session) SessionView {
	v := SessionView{ID: hex.EncodeToString(s.ID[:]), PeerInstance: hex.EncodeToString(s.PeerInstance[:]),
		Flows: s.Flows, Migrations: s.Migrations, Spurious: s.Spurious, Undone: s.Undone,
		Rewinds: s.Rewinds, Resent: s.Resent, Drops: s.Drops, Paths: []PathView{}}
	for c, n := range s.Moves {
		if n > 0 {
			if v.Moves == nil {
				v.Moves = map[string]int{}
			}
			v.Moves[status.Cause(c).String()] = n
		}
	}
	for _, p := range s.Paths {
		pv := PathView{Name: p.Name, ID: p.ID, State: p.State.String(), Active: p.Active, Tier: p.Tier,
			SRTTms: ms(p.SRTT), JitterMs: ms(p.Jitter), MinRTTms: ms(p.MinRTT), Loss: p.Loss,
			BytesSent: p.BytesSent, BytesRecv: p.BytesRecv, Since: p.Since, LastError: p.LastError,
			Dials: p.Dials, Packets: p.Packets}
		if p.Local != nil {
			pv.Local = p.Local.String()
		}
		if p.Remote != nil {
			pv.Remote = p.Remote.String()
		}
		v.Paths = append(v.Paths, pv)
	}
	return v
}

// ServeHTTP serves the page: JSON for ?format=json or a request that accepts
// application/json before text/html, HTML otherwise. Only GET and HEAD are served.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	v := p.Snapshot()
	w.Header().Set("Cache-Control", "no-store")
	if wantsJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(v)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	page.Execute(w, v)
}

// wantsJSON reads ?format= first, then whether Accept names JSON before any HTML.
func wantsJSON(r *http.Request) bool {
	switch r.URL.Query().Get("format") {
	case "json":
		return true
	case "html":
		return false
	}
	for part := range strings.SplitSeq(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "application/json":
			return true
		case "text/html", "*/*", "text/*":
			return false
		}
	}
	return false
}
