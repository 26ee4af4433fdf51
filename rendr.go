// Package rendr gives applications a stable net.Conn over network paths that come and go.
//
// A Dialer holds a target graph of paths (any func(ctx) (net.Conn, error) is a path) and a
// Listener takes carrier connections from any net.Listener. The two ends authenticate each
// other with static X25519 keys and form a session; flows (each a Conn) share the session and
// its paths. When the path carrying traffic dies or stalls, traffic moves to another path and
// every byte not yet acknowledged is sent again there: the application sees no reset, no EOF
// and no lost, duplicated or reordered byte.
//
//	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
//	ln, _ := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}},
//		l1, l2)
//	d, _ := rendr.NewDialer(rendr.DialerConfig{Key: cliKey, PeerKey: srvKey.Public(),
//		Root: rendr.Selector("uplinks",
//			rendr.Path("wifi", tcp.Dialer("192.0.2.7:7001")),
//			rendr.Path("lte", tcp.Dialer("192.0.2.7:7002"), rendr.Backup()))})
//	c, _ := d.DialContext(ctx) // a net.Conn that survives the loss of any path
//
// The wire protocol is specified in docs/wire.md.
package rendr

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"

	"github.com/rendr-go/rendr/internal/flow"
	"github.com/rendr-go/rendr/internal/handshake"
	"github.com/rendr-go/rendr/transport"
)

// closedError is ErrClosed naming what was closed: a call on a closed Dialer should not say
// "flow closed".
type closedError string

func (e closedError) Error() string { return "rendr: " + string(e) + " closed" }

// Is makes errors.Is match ErrClosed and net.ErrClosed, as ErrClosed itself does.
func (e closedError) Is(target error) bool { return target == ErrClosed || target == net.ErrClosed }

// errDialerClosed and errListenerClosed are ErrClosed from a closed Dialer or Listener, and
// from the flows and calls of its sessions.
const (
	errDialerClosed   = closedError("dialer")
	errListenerClosed = closedError("listener")
)

// Errors. Match them with errors.Is.
var (
	// ErrClosed: the Conn, Dialer or Listener was closed locally. It wraps net.ErrClosed.
	// The error returned says which was closed (a Dialer's "rendr: dialer closed", say) and
	// matches ErrClosed under errors.Is.
	ErrClosed = flow.ErrClosed
	// ErrSessionClosed: the peer closed the session (its Dialer or Listener closed). It wraps
	// net.ErrClosed.
	ErrSessionClosed = fmt.Errorf("rendr: session closed by peer: %w", net.ErrClosed)
	// ErrPeerRestarted: the peer is a new instance (it restarted) and does not know this
	// session. Its flows are not resumed: they fail with this error.
	// It wraps net.ErrClosed, like every error that ends a flow for good.
	ErrPeerRestarted = fmt.Errorf("rendr: peer restarted; flow cannot resume: %w", net.ErrClosed)
	// ErrNoPath: no path could be attached for longer than the reconnect timeout. It wraps
	// net.ErrClosed.
	ErrNoPath = fmt.Errorf("rendr: no usable path: %w", net.ErrClosed)
	// ErrReset: the peer reset its direction of the flow, or refused it.
	ErrReset = flow.ErrReset
	// ErrStopped: the peer closed its reading direction; what is written is not delivered.
	ErrStopped = flow.ErrStopped
	// ErrRejected: the listener turned the flow down after it arrived: it carries an L3
	// identity, and the listener takes none (ListenConfig.AcceptIdentities) or not this one.
	ErrRejected = flow.ErrRejected
	// ErrDestRefused, ErrDestUnreachable and ErrDestTimeout say why a listener's Egress did
	// not reach where a flow with an L3 identity was going: the destination refused the
	// connection (a TCP RST), there is no route to it, or it did not answer. Each matches
	// ErrRejected too.
	ErrDestRefused     = flow.ErrDestRefused
	ErrDestUnreachable = flow.ErrDestUnreachable
	ErrDestTimeout     = flow.ErrDestTimeout
	// ErrDestReset: the connection a listener's Egress made for the flow was reset by its far
	// end after it was made. It matches ErrReset too.
	ErrDestReset = flow.ErrDestReset
	// ErrWriteClosed: Write after CloseWrite.
	ErrWriteClosed = flow.ErrWriteClosed
	// ErrTooManyFlows: the session's flow limit is reached.
	ErrTooManyFlows = flow.ErrTooManyFlows
	// ErrUnsupported: the configuration asks for something this version cannot do.
	ErrUnsupported = errors.New("rendr: unsupported")
	// ErrLimit: the listener refused a path because taking it would pass one of its bounds
	// (ListenConfig: MaxSessionsPerPeer, MaxSessions, MaxPathsPerSession, MaxMemory). The
	// dialer tries the path again later; a dial that finds no path says so in its error.
	ErrLimit = errors.New("rendr: the listener refused the path: one of its bounds is reached (sessions per peer or in all, paths per session, memory)")
)

// PrivateKey is a static X25519 private key.
type PrivateKey [32]byte

// PublicKey is a static X25519 public key.
type PublicKey [32]byte

// NewKey generates a private key.
func NewKey() (PrivateKey, error) {
	k, err := handshake.NewKeypair()
	return PrivateKey(k.Private), err
}

// MustNewKey is NewKey for programs and tests that cannot go on without randomness.
func MustNewKey() PrivateKey {
	k, err := NewKey()
	if err != nil {
		panic(err)
	}
	return k
}

// Public returns the key's public half.
func (k PrivateKey) Public() PublicKey {
	kp, err := handshake.KeypairFrom(k)
	if err != nil {
		panic(err) // X25519 accepts every 32-byte scalar
	}
	return PublicKey(kp.Public)
}

// check refuses a zero key: its public half is well known, so anyone could be this side.
func (k PrivateKey) check(field string) error {
	if handshake.CheckPrivate(k) != nil {
		return fmt.Errorf("rendr: %s is zero: generate a key once with rendr.NewKey, keep it, and give peers its Public()", field)
	}
	return nil
}

// check refuses a zero key and a key of small order, with which a handshake would prove
// nothing about the other side.
func (k PublicKey) check(field string) error {
	if k == (PublicKey{}) {
		return fmt.Errorf("rendr: %s is empty: set it to the peer's PrivateKey.Public()", field)
	}
	if handshake.CheckPublic(k) != nil {
		return fmt.Errorf("rendr: %s %s is of small order, not a real peer key: use the peer's PrivateKey.Public()", field, k)
	}
	return nil
}

func (k PrivateKey) keypair() handshake.Keypair {
	kp, _ := handshake.KeypairFrom(k)
	return kp
}

// String encodes the public key in base64.
func (k PublicKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// ParsePublicKey decodes a base64 public key.
func ParsePublicKey(s string) (PublicKey, error) {
	var k PublicKey
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("rendr: bad public key %q", s)
	}
	copy(k[:], b)
	return k, nil
}

// MarshalText encodes the public key in base64, for configuration files.
func (k PublicKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes a base64 public key.
func (k *PublicKey) UnmarshalText(b []byte) error {
	p, err := ParsePublicKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// String names the key by its public half, never showing it: "PrivateKey(public ...)".
func (k PrivateKey) String() string {
	if k == (PrivateKey{}) {
		return "PrivateKey(zero)"
	}
	return "PrivateKey(public " + k.Public().String() + ")"
}

// Format prints String for every verb (%v, %x, %#v, %d...), so that no printing of a key, or
// of a configuration that holds one, shows it by accident.
func (k PrivateKey) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// LogValue is String for log/slog, which would otherwise log MarshalText's base64.
func (k PrivateKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// MarshalText encodes the private key in base64 (as wg's keys are), for a configuration file
// only its owner reads: the one deliberate way to write a key out.
func (k PrivateKey) MarshalText() ([]byte, error) {
	return []byte(base64.StdEncoding.EncodeToString(k[:])), nil
}

// UnmarshalText decodes a base64 private key; an all-zero key is refused.
func (k *PrivateKey) UnmarshalText(b []byte) error {
	p, err := ParsePrivateKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// ParsePrivateKey decodes a base64 private key (what MarshalText and NewKey's key encode to).
func ParsePrivateKey(s string) (PrivateKey, error) {
	var k PrivateKey
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(k) {
		return k, errors.New("rendr: bad private key: want 32 bytes in base64 (tunvpn genkey makes one)")
	}
	copy(k[:], b)
	if err := k.check("private key"); err != nil {
		return PrivateKey{}, err
	}
	return k, nil
}

// Target is a node of the target graph: a Path leaf or a group of targets. Build it with Path
// and Selector. A Target is only a description; each Dialer runs its own copy.
type Target struct {
	kind     targetKind
	name     string
	dial     transport.DialFunc
	tier     int
	secure   bool
	children []*Target
}

type targetKind int

const (
	kindPath targetKind = iota
	kindSelector
	kindRace
	kindBond
)

func (k targetKind) String() string {
	return [...]string{"path", "selector", "race", "bond"}[k]
}

// Name is the target's name.
func (t *Target) Name() string { return t.name }

// PathOption configures a Path or a group.
type PathOption func(*Target)

// Backup puts the target in the backup tier: it carries traffic only while no primary sibling
// is usable. A fresh session gives its primaries a head start (DialerConfig.BackupHeadStart,
// 250ms by default): a backup that connects first carries nothing until a primary is up, has
// failed to connect, or the head start is over.
func Backup() PathOption { return func(t *Target) { t.tier = 1 } }

// Tier sets the priority tier directly (0 is primary; higher is used only when every lower
// tier is unusable), from 0 to MaxTier: NewDialer refuses a graph with any other.
func Tier(n int) PathOption { return func(t *Target) { t.tier = n } }

// MaxTier is the highest tier.
const MaxTier = 255

// SecureCarrier declares that the path's carrier is already encrypted and authenticated (TLS,
// an SSH channel, WireGuard): after the handshake, which still authenticates both ends and the
// session, records are not encrypted again. The listening side must agree: the source it
// arrives on must be added with SecureSource. Use it only when the carrier really is secure.
func SecureCarrier() PathOption { return func(t *Target) { t.secure = true } }

// Path is a leaf: one path whose carrier connections come from dial, re-dialed with backoff
// whenever the path dies.
func Path(name string, dial transport.DialFunc, opts ...PathOption) *Target {
	t := &Target{kind: kindPath, name: name, dial: dial}
	for _, o := range opts {
		o(t)
	}
	return t
}

// Selector is a group that sends on its best child at a time and migrates on death, stall or
// sustained better quality (see package policy for the score, hysteresis and dwell). Options
// such as Backup apply to the group within its parent.
func Selector(name string, children ...*Target) *Target {
	return &Target{kind: kindSelector, name: name, children: children}
}

// Race is a group that sends every frame on every usable child; the receiver keeps the first
// copy of each byte and drops the others. Latency follows the best child at each moment, so
// it stays flat when one link turns lossy or dies, at the cost of sending everything once
// per child. A child that cannot keep up misses frames instead of holding back the others.
func Race(name string, children ...*Target) *Target {
	return &Target{kind: kindRace, name: name, children: children}
}

// Bond is a group that spreads one flow's frames across its usable children, each frame on
// the child expected to deliver it first (from its round trip, backlog and measured rate),
// so throughput adds up across links of different speeds. The receiver puts bytes back in
// order; a child that dies has its unacknowledged bytes sent again on the others.
func Bond(name string, children ...*Target) *Target {
	return &Target{kind: kindBond, name: name, children: children}
}

// With applies options to a target (for groups: rendr.Selector(...).With(rendr.Backup())).
func (t *Target) With(opts ...PathOption) *Target {
	for _, o := range opts {
		o(t)
	}
	return t
}

// Addr is a Conn's address: the peer's key and the flow. Carrier addresses change as traffic
// moves; they are in Status.
type Addr struct {
	Key  PublicKey
	Flow uint64
}

// Network returns "rendr".
func (a Addr) Network() string { return "rendr" }

func (a Addr) String() string { return fmt.Sprintf("%s/%d", a.Key.String()[:8], a.Flow) }
