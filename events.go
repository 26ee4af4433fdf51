// Events: the engine's decisions handed to Options.Trace. Every emit site checks that a trace
// is set before it builds an event, so that without one nothing is allocated. Events made
// under the session's lock (the router's verdicts on a path) wait in the session until the
// lock is let go: Trace is never called with a lock of rendr's held.

package rendr

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/rendr-go/rendr/internal/handshake"
	"github.com/rendr-go/rendr/internal/router"
	"github.com/rendr-go/rendr/status"
)

// maxQueuedEvents bounds the events a session holds for Trace between two routes; the router
// makes at most a few per path per route.
const maxQueuedEvents = 256

// emit hands ev to Options.Trace, stamped now. The caller has checked that c.trace is set.
func (c *common) emit(ev status.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	c.trace(ev)
}

// emitAll emits the events taken from a session's queue.
func (c *common) emitAll(evs []status.Event) {
	for _, ev := range evs {
		c.trace(ev)
	}
}

// emitMigration tells Trace of a migration, as OnMigrate is told.
func (c *common) emitMigration(dialer bool, m *status.Migration) {
	c.emit(status.Event{Time: m.Time, Kind: status.Migrated, Dialer: dialer, Session: m.Session,
		Cause: m.Cause, From: m.From, To: m.To, FromID: m.FromID, ToID: m.ToID, Active: m.Active,
		Path: m.To, PathID: m.ToID})
}

// routerStateLocked is the router's OnState: a path turned Suspect, or Up again. It runs
// under the session's lock, so the event waits in the session's queue for the next Route.
// Nil without a trace.
func (s *session) routerStateLocked() func(router.Path, string) {
	if s.c.trace == nil {
		return nil
	}
	return func(p router.Path, why string) {
		if len(s.mu.events) >= maxQueuedEvents {
			return
		}
		kind := status.PathSuspect
		if p.Standing().State == status.Up {
			kind = status.PathUp
		}
		s.mu.events = append(s.mu.events, status.Event{Time: time.Now(), Kind: kind, Dialer: s.dialer,
			Session: s.id, Path: p.Name(), PathID: p.ID(), Reason: why, SRTT: p.Quality().SRTT})
	}
}

// takeEventsLocked takes the events queued under the lock, for emitAll once it is let go.
func (s *session) takeEventsLocked() []status.Event {
	if len(s.mu.events) == 0 {
		return nil
	}
	evs := s.mu.events
	s.mu.events = nil
	return evs
}

// rewound is the engine's OnRewind: flows and bytes sent again after a path left the route.
// Nil without a trace.
func (s *session) rewound() func(int, uint64) {
	if s.c.trace == nil {
		return nil
	}
	return func(flows int, bytes uint64) {
		s.mu.Lock()
		id := s.id
		s.mu.Unlock()
		s.c.emit(status.Event{Kind: status.Rewound, Dialer: s.dialer, Session: id, Flows: flows, Bytes: bytes})
	}
}

// pathDown tells Trace that l's carrier ended.
func (s *session) pathDown(l *link, cause error) {
	s.mu.Lock()
	id := s.id
	s.mu.Unlock()
	s.c.emit(status.Event{Kind: status.PathDown, Dialer: s.dialer, Session: id, Path: l.name, PathID: l.id,
		Remote: addrText(l.p.RemoteAddr()), Err: errText(cause), SRTT: l.p.Quality().SRTT})
}

// traceConnecting tells Trace that the dialing side starts an attempt on a path.
func (s *session) traceConnecting(name string) {
	s.mu.Lock()
	id := s.id
	s.mu.Unlock()
	s.c.emit(status.Event{Kind: status.PathConnecting, Dialer: true, Session: id, Path: name})
}

// traceAttempt tells Trace how a failed attempt on a path ended (dialing side): the
// handshake failed (its carrier was made), or the dial did; nothing when the session or the
// path is over (a Close, a Remove is no failure).
func (s *session) traceAttempt(name string, handshook bool, errp *error) {
	err := *errp
	if err == nil || s.ctx.Err() != nil || errors.Is(err, errRemoved) || errors.Is(err, context.Canceled) {
		return
	}
	s.mu.Lock()
	id := s.id
	s.mu.Unlock()
	kind := status.PathDown
	if handshook {
		kind = status.HandshakeFailed
	}
	s.c.emit(status.Event{Kind: kind, Dialer: true, Session: id, Path: name, Err: err.Error()})
}

// traceHandshake tells Trace of a handshake's outcome on the listening side: accepted when
// reason is "", refused for reason otherwise. res may be nil (nothing authenticated).
func (l *Listener) traceHandshake(c net.Conn, res *handshake.Result, reason string, err error) {
	ev := status.Event{Kind: status.HandshakeAccepted, Remote: addrText(c.RemoteAddr()), Err: errText(err)}
	if reason != "" {
		ev.Kind, ev.Reason = status.HandshakeRefused, reason
	}
	if res != nil {
		ev.Session, ev.Path = res.Hello.Session, res.Hello.Name
	}
	l.c.emit(ev)
}

// refusalOf names why Respond turned a carrier away (status.Refuse*).
func refusalOf(err error) string {
	switch {
	case errors.Is(err, handshake.ErrUnknownKey):
		return status.RefuseUnknownKey
	case errors.Is(err, handshake.ErrReplay):
		return status.RefuseReplay
	case errors.Is(err, handshake.ErrMAC1):
		return status.RefuseBadMAC
	case errors.Is(err, handshake.ErrCookie):
		return status.RefuseCookie
	case errors.Is(err, handshake.ErrRateLimited):
		return status.RefuseRateLimited
	case errors.Is(err, handshake.ErrBadPreface), errors.Is(err, handshake.ErrMalformed):
		return status.RefuseMalformed
	case errors.Is(err, context.DeadlineExceeded):
		return status.RefuseTimeout
	}
	return status.RefuseOther
}

// replyRefusal names why the listening side answered a hello with a refusal.
func replyRefusal(st uint8) string {
	switch st {
	case handshake.StatusLimit:
		return status.RefuseLimit
	case handshake.StatusUnknownSession:
		return status.RefuseUnknownSession
	}
	return status.RefuseRefused
}

// addrText is a's text, "" for none.
func addrText(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
