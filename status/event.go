// Events: what the engine decided, one at a time, for a trace (Options.Trace).

package status

import (
	"fmt"
	"time"
)

// EventKind says what an Event reports.
type EventKind int

const (
	// PathConnecting: the dialing side starts dialing a path (each attempt, after backoff).
	PathConnecting EventKind = iota + 1
	// PathUp: a path was attached and carries traffic; or, with Reason set, a suspect path
	// answered again ("answered", "spurious stall").
	PathUp
	// PathSuspect: the router routes around a path; Reason says why ("stall": data went
	// unacknowledged; "silent": its probes went unanswered while another path's were;
	// "peer moved": the peer's data arrived on another path).
	PathSuspect
	// PathDown: a path's carrier ended; Err says why (the dialing side's failed attempts
	// too, before the path came up).
	PathDown
	// Migrated: traffic moved (Cause, From, To, FromID, ToID, Active), as OnMigrate tells.
	Migrated
	// Rewound: a path left the route, and every flow goes back to its acknowledged offset:
	// Bytes bytes of Flows flows are sent again on the paths left.
	Rewound
	// HandshakeAccepted: the listening side took a carrier's handshake (Path names the path
	// as the dialer calls it; Remote is the carrier's address).
	HandshakeAccepted
	// HandshakeRefused: the listening side turned a carrier away; Reason says why (one of the
	// Refuse* reasons), Err gives the detail.
	HandshakeRefused
	// HandshakeFailed: the dialing side's handshake on a path failed or was refused; Err says
	// why.
	HandshakeFailed
	// SessionEnded: the session is over; Err says why.
	SessionEnded
)

func (k EventKind) String() string {
	switch k {
	case PathConnecting:
		return "path_connecting"
	case PathUp:
		return "path_up"
	case PathSuspect:
		return "path_suspect"
	case PathDown:
		return "path_down"
	case Migrated:
		return "migration"
	case Rewound:
		return "rewind"
	case HandshakeAccepted:
		return "handshake_accepted"
	case HandshakeRefused:
		return "handshake_refused"
	case HandshakeFailed:
		return "handshake_failed"
	case SessionEnded:
		return "session_ended"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Why the listening side refused a handshake (Event.Reason of HandshakeRefused): a fixed
// set, so that a count by reason stays small whatever the peers send.
const (
	RefuseUnknownKey     = "unknown_key"     // the dialer's key is not in ListenConfig.Peers
	RefuseReplay         = "replay"          // a first message replayed, or older than one seen
	RefuseBadMAC         = "bad_mac"         // no valid mac1: not for this key, or not rendr
	RefuseCookie         = "cookie"          // under load, and no valid cookie
	RefuseRateLimited    = "rate_limited"    // under load, and the source is over its rate
	RefuseMalformed      = "malformed"       // not a handshake this listener can read
	RefuseTimeout        = "timeout"         // not finished within HandshakeTimeout
	RefuseLimit          = "limit"           // a bound: sessions, paths or memory
	RefuseUnknownSession = "unknown_session" // a join to a session this listener does not have
	RefuseRefused        = "refused"         // the carriers could not agree, or the listener is closing
	RefuseOther          = "other"
)

// Event is one decision of the engine: a path's change of state, a migration, a rewind, a
// handshake's outcome. Fields that do not apply to the Kind are zero.
type Event struct {
	Time    time.Time
	Kind    EventKind
	Dialer  bool     // the dialing side reports it; false: the listening side
	Session [16]byte // zero when no session is known (a refused handshake)
	Path    string   // the path's name (as the dialing side's graph names it)
	PathID  uint32   // the path's id within the session; 0 when it has none yet
	Remote  string   // the carrier's remote address, when known
	Reason  string   // PathUp, PathSuspect, HandshakeRefused: why, in a word or two
	Err     string   // PathDown, HandshakeRefused, HandshakeFailed, SessionEnded: the error's text

	// Migrated.
	Cause        Cause
	From, To     string
	FromID, ToID uint32
	Active       []string

	// Rewound: the flows and bytes sent again.
	Flows int
	Bytes uint64

	// PathUp, PathSuspect, PathDown: the path's smoothed round trip then (0 if unknown).
	SRTT time.Duration
}
