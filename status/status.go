// Package status describes a running rendr session for people and programs watching it:
// per-path state and quality, which path carries traffic, and migration events.
package status

import (
	"fmt"
	"net"
	"time"
)

// PathState is where a path is in its life.
type PathState int

const (
	// Connecting: the path is being dialed or is handshaking.
	Connecting PathState = iota
	// Up: the path is attached and answering probes.
	Up
	// Suspect: data sent on the path went unacknowledged for longer than its round trip
	// allows; the policy routes around it until it answers again.
	Suspect
	// Down: the path died (error or silence) and is waiting to be re-dialed.
	Down
)

func (s PathState) String() string {
	switch s {
	case Connecting:
		return "connecting"
	case Up:
		return "up"
	case Suspect:
		return "suspect"
	case Down:
		return "down"
	}
	return fmt.Sprintf("PathState(%d)", int(s))
}

// Path is a snapshot of one path.
type Path struct {
	Name   string
	ID     uint32 // unique within the session; a re-dialed path gets a new ID
	State  PathState
	Active bool // the policy currently sends on this path
	Tier   int  // 0 is primary; higher tiers carry traffic only while no lower tier is usable
	Local  net.Addr
	Remote net.Addr

	SRTT      time.Duration
	Jitter    time.Duration // RTT variation (rttvar)
	MinRTT    time.Duration
	Loss      float64 // fraction of probes answered late or not at all, smoothed
	BytesSent int64   // carrier bytes written, headers and tags included
	BytesRecv int64
	Since     time.Time // when the path entered State
	LastError string    // why it last went down, if it did
	Dials     int       // connection attempts so far
	// Moves for a stall off this path that proved spurious: it answered a probe sent before
	// the move, sooner than the new route could have delivered. On the dialing side, also a
	// death by silence of the carrier before this one, when this one came up within the
	// deadline the dead one had. Undone counts the moves back to it. The path's stall timeout
	// doubles with each spurious stall (decaying over time), and the session waits longer
	// between stall moves.
	Spurious, Undone int

	// Packet paths (a datagram carrier: udpflow) only; zero on a stream path.
	Packets *Packets
}

// Packets are the counters of a path over a datagram carrier, where rendr numbers, paces and
// resends itself.
type Packets struct {
	Sent, Lost uint64 // packets sent, and those declared lost (sent again as needed)
	Forged     uint64 // datagrams received that did not authenticate, dropped
	MTU        int    // the datagram size in use, after the path MTU search
	Window     int    // congestion window, bytes
	InFlight   int    // bytes sent and not yet acknowledged or declared lost
	Rebinds    uint64 // moves to a new peer address (NAT rebinding), each validated first
	// Marked counts this side's packets that the peer's carrier saw meet congestion: they
	// arrived into a receive queue that was filling (udpflow), so the window shrank as for a
	// loss, with nothing lost. MarkedIn counts the peer's packets that this side's carrier
	// marked so. Both grow when the receiver, not the network, is what limits the path.
	Marked, MarkedIn uint64
	// PongsHeld counts PINGs whose PONG waited because the PONGs already sent were not yet
	// acknowledged (at most 4 are kept in flight: a peer that pings without acknowledging
	// cannot make the path track packets without end).
	PongsHeld uint64
}

// Session is a snapshot of a peer session.
type Session struct {
	ID           [16]byte
	PeerInstance [16]byte
	Paths        []Path
	Flows        int
	Migrations   int
	// Moves counts the migrations by cause (Migrations is their sum). Spurious counts the
	// moves for a stall, and the deaths by silence, that proved spurious, and Undone the moves
	// back; each path counts its own too.
	Moves            [Causes]int
	Spurious, Undone int
	// What the peer's frames met (docs/wire.md 8.1, 9): flows refused (accept backlog, flow
	// limit or memory budget full), frames that broke the protocol and closed their path,
	// among them frames that named a flow id too far ahead, and flows or window growth the
	// listener's memory budget refused.
	Refused, Violations, OpenOverflow, BudgetDenied uint64
	// Rejected counts flows turned down for the L3 identity they carry (the listener takes
	// none, or it was not in its canonical encoding).
	Rejected uint64
	// Rewinds counts the path changes that sent flows back to their acknowledged offsets,
	// and Resent the bytes sent again: those rewinds' unacknowledged bytes, and what a
	// datagram path reported lost.
	Rewinds int
	Resent  uint64
	// Drops counts what the session dropped, by cause, over all its flows.
	Drops Drops
}

// Drops counts what a session dropped, by cause. Datagrams of packet flows are dropped by
// design (a full queue, a copy); stream bytes are only ever dropped as copies of bytes
// already delivered, or ahead of a gap, to come again.
type Drops struct {
	SendQueue uint64 // datagrams the send queue had no room for
	RecvQueue uint64 // datagrams the receive queue had no room for
	Duplicate uint64 // datagrams received twice (a Race sends each on every path)
	TooOld    uint64 // datagrams too far behind the newest to tell whether they are copies
	Late      uint64 // datagrams that arrived after their flow's end
	Oversize  uint64 // datagrams larger than the packets of the path they were to go on
	// DupBytes counts stream bytes received again after their delivery (a Race, a rewind),
	// and GapFrames the DATA frames dropped ahead of a gap (sent again by the peer).
	DupBytes, GapFrames uint64
}

// Cause says why traffic moved.
type Cause int

const (
	// CauseDeath: the active path died (error or silence).
	CauseDeath Cause = iota
	// CauseStall: data on the active path stopped being acknowledged.
	CauseStall
	// CauseQuality: another path has been better for longer than the dwell time.
	CauseQuality
	// CauseRecovery: a preferred (higher-priority) path is usable again.
	CauseRecovery
	// CausePeer: the peer moved its traffic, and this side followed.
	CausePeer
	// CauseFirst: traffic starts on a path after there was none.
	CauseFirst
	// CauseJoin: a path became usable and joined a Race or Bond that already carried traffic.
	CauseJoin
	// CauseControl: the application changed the target graph (Dialer.Add, Remove, SetTier,
	// Select).
	CauseControl
	// CauseUndo: a move for a stall proved spurious (the path it left answered a probe sent
	// before the move, sooner than the new route could have delivered) and traffic went back.
	CauseUndo
)

// Causes is how many causes there are: Cause values run from 0 to Causes-1.
const Causes = int(CauseUndo) + 1

func (c Cause) String() string {
	switch c {
	case CauseDeath:
		return "death"
	case CauseStall:
		return "stall"
	case CauseQuality:
		return "quality"
	case CauseRecovery:
		return "recovery"
	case CausePeer:
		return "peer"
	case CauseFirst:
		return "first"
	case CauseJoin:
		return "join"
	case CauseControl:
		return "control"
	case CauseUndo:
		return "undo"
	}
	return fmt.Sprintf("Cause(%d)", int(c))
}

// Migration is one change of the paths carrying a session's traffic.
type Migration struct {
	Time     time.Time
	Session  [16]byte
	From, To string // path names; From is empty for CauseFirst, To is empty when no path is left
	FromID   uint32
	ToID     uint32
	Cause    Cause
	// Active names every path carrying traffic after the change: the one path of a Selector,
	// or every member of a Race or Bond. With several, From is the first path that left
	// (empty when one only joined) and To the first that joined (empty when one only left).
	Active []string
}

// Listener is a snapshot of a listener's defences and bounds: what it refused and why, so an
// operator can tell a flood or a misbehaving peer from a quiet day. Every counter only grows.
type Listener struct {
	Sessions int // live sessions
	Peers    int // distinct peer keys among them

	// Handshakes that reached the Diffie-Hellman, and what stopped the others before it.
	Handshakes  uint64
	BadMAC1     uint64 // first messages without the listener's mac1: not for this key, or not rendr
	CookiesSent uint64 // cookie replies sent while under load
	BadCookie   uint64 // first messages under load without a valid cookie
	RateLimited uint64 // first messages over their source's rate while under load
	// CarriersLimited counts carriers closed at once, before any read, while under load:
	// their source opened more than 32 at once or 16 a second. SourcesRefused counts the times
	// the listener then asked the carrier's source to refuse that host for a second
	// (transport.SourceRefuser: transport/tcp drops its SYNs in the kernel).
	CarriersLimited, SourcesRefused uint64
	// Handshaking is how many carriers are in their handshake now (at most MaxHandshakes, see
	// Evicted), and Waiting how many of those have not yet sent a whole first message. On
	// Linux a stream carrier waits for that message without a goroutine of its own, holding
	// its socket and a few hundred bytes until then.
	Handshaking, Waiting int
	// HandshakeTimeouts counts carriers closed because their handshake had not ended within
	// HandshakeTimeout of their arrival.
	HandshakeTimeouts uint64
	// Evicted counts carriers closed unanswered because MaxHandshakes were in progress.
	Evicted uint64
	// After the DH: first messages from a key not in Peers (a dialer configured with a key
	// this listener does not know), and replayed ones (a timestamp already seen).
	UnknownKey, Replayed uint64
	// Refused counts authenticated handshakes refused by a bound, by bound.
	RefusedSessionsPerPeer, RefusedSessions, RefusedPaths, RefusedMemory uint64
	// MemoryUsed is what sessions, paths and flows reserve of the memory budget now
	// (ListenConfig.MaxMemory), MemoryLimit the budget.
	MemoryUsed, MemoryLimit int64
	// The Egress (ListenConfig.Egress): flows carried on now, and since the start, flows
	// whose connection was made, and those turned down: the destination refused, was
	// unreachable or did not answer, the Egress said no (or the flow's kind did not fit its
	// protocol), or MaxEgress were carried on already.
	EgressActive                                    int
	EgressCarried, EgressRefused, EgressUnreachable uint64
	EgressTimedOut, EgressRejected, EgressFull      uint64
}
