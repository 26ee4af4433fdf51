// Package transport defines what rendr needs from a carrier and adapts what embedders already
// have. A stream carrier is any net.Conn that delivers bytes in order; a datagram carrier is a
// net.Conn that also implements PacketCarrier (each Read one datagram, each Write one), which
// rendr makes reliable itself. A path's dialer is any func(ctx) (net.Conn, error), and a
// listening side's source is any net.Listener.
//
// Implementations live in sub-packages (transport/tcp, transport/quic, transport/udpflow,
// transport/gvisor); they never import rendr's engine. Each is used the same way:
// Dialer(address, opts...) returns a path's DialFunc and Listen(address, opts...) a source, with
// the package's typed Options (QUIC takes its *tls.Config after the address, as tls.Dial does).
// A package whose live carriers can do more than be dialed returns that handle from a New
// function (quic.NewClient: its Migrate moves live connections to a new local address).
package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// DialFunc opens one carrier connection for a path. rendr calls it again, with backoff, each
// time the path dies. It should honour ctx's deadline and cancellation.
type DialFunc func(ctx context.Context) (net.Conn, error)

// ContextDialer is what net.Dialer, proxy dialers (golang.org/x/net/proxy) and many others
// implement.
type ContextDialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// FromDialer turns any ContextDialer into a DialFunc for one address: a SOCKS hop, a dialer
// bound to an interface, a TLS dialer (tls.Dialer implements ContextDialer).
func FromDialer(d ContextDialer, network, address string) DialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, network, address)
	}
}

// Datagrammer is a stream carrier that can also carry unreliable datagrams beside its byte
// stream, as QUIC does with RFC 9221 datagrams. When both ends of a path have one, rendr
// sends packet flows' datagrams this way: a lost one is gone (packet flows never retransmit)
// instead of holding back every byte queued behind it in the stream. A datagram too large for
// the carrier at that moment travels in the stream instead, so none is refused for it.
type Datagrammer interface {
	// SendDatagram sends b as one datagram. It may block while the carrier's queue is full,
	// and must not keep b after it returns. A datagram over the carrier's current limit
	// fails with a *DatagramTooLargeError.
	SendDatagram(b []byte) error
	// ReceiveDatagram returns the next datagram, or an error once ctx ends or the carrier is
	// closed.
	ReceiveDatagram(ctx context.Context) ([]byte, error)
	// MaxDatagramSize is the largest datagram SendDatagram should be given now; it may
	// change with the path MTU. Zero or less: the carrier carries no datagrams (the peer did
	// not agree to them, say), and everything goes in the stream.
	MaxDatagramSize() int
}

// DatagramTooLargeError is SendDatagram's error for a datagram over the carrier's limit.
type DatagramTooLargeError struct {
	Max int // the largest datagram the carrier takes now
}

func (e *DatagramTooLargeError) Error() string {
	return fmt.Sprintf("rendr: datagram larger than the carrier's limit of %d bytes", e.Max)
}

// PacketCarrier is a carrier that moves datagrams rather than a byte stream: Read returns
// one whole datagram (rendr reads with a buffer larger than MaxDatagramSize, so a longer one
// shows as too long rather than cut) and Write sends one. Datagrams may be lost, reordered or
// duplicated; rendr numbers, acknowledges and paces them itself and resends what stream flows
// lost (docs/datagram-paths.md). transport/udpflow is one over UDP; a WebSocket's messages or
// a proxy's UDP association can be another.
//
// rendr finds these interfaces by type assertion on the conn the dial function returns (or
// the source's Accept): a wrapper around a datagram carrier (for logging, for metrics) must
// implement PacketCarrier too, and Rebinder, BatchWriter, PacketReader, PacketKeeper,
// CongestionMarker and HandshakeExtender where the carrier does, or rendr takes it for a byte
// stream (or does without the feature).
//
// The handshake's two messages are one datagram each. A carrier that may lose them should
// resend the first until an answer arrives, and its listening side should answer a copy of
// the first with a copy of its answer and drop copies of the answer reaching the dialing side
// (udpflow does all three); without that, a lost one costs a new dial after the handshake
// timeout, and a stray copy counts as a forged datagram.
type PacketCarrier interface {
	net.Conn
	// MaxDatagramSize is the largest datagram Write takes.
	MaxDatagramSize() int
	// BaseDatagramSize is the size every network path is assumed to carry (1200 bytes of UDP
	// payload, as QUIC assumes). When it is below MaxDatagramSize rendr probes the sizes
	// between and uses the largest its peer acknowledges (RFC 8899); a carrier that knows its
	// limit returns MaxDatagramSize.
	BaseDatagramSize() int
}

// Rebinder is a PacketCarrier whose peer may change address (UDP through NATs). rendr moves
// the path to a new address only once its peer proved, from that address, that it holds the
// path's keys (a PATH_CHALLENGE answered); until then the carrier keeps sending to the old one.
type Rebinder interface {
	PacketCarrier
	// ReadFrom is Read that also says where the datagram came from: nil for the current peer.
	ReadFrom(b []byte) (int, net.Addr, error)
	// WriteTo sends one datagram to addr rather than to the current peer.
	WriteTo(b []byte, addr net.Addr) (int, error)
	// SetPeer makes addr the current peer, for Write and for ReadFrom's nil.
	SetPeer(addr net.Addr)
}

// BatchWriter is a PacketCarrier that sends several datagrams with one system call
// (sendmmsg, UDP GSO). rendr's path writer hands it each batch it has.
type BatchWriter interface {
	PacketCarrier
	// WriteBatch sends each element of b as one datagram to the current peer, in order. It
	// must not keep b after it returns.
	WriteBatch(b [][]byte) error
}

// CongestionMarker is a PacketCarrier that can say a datagram met congestion on its way in,
// before it was lost to it: the carrier's own receive queue stood or was filling when the
// datagram left it (its reader is falling behind), or, for a carrier that reads IP headers,
// the ECN field said Congestion Experienced. rendr counts such packets in its
// acknowledgements (PATH_ACK_CE), and the sender answers the share of its packets marked per
// round trip, as DCTCP does (RFC 8257): a few marks shrink its window a little, marks on
// every packet halve it each round trip, and nothing is lost, resent or reordered. A mark
// should therefore mean a queue that persists, not a reader's pause that it then reads away.
// udpflow marks a datagram when every one read for 100 ms waited 5 ms or more with 8 or more
// behind it (CoDel's target and interval), or when a quarter of its queue's bounds (2 MiB or
// 2048 datagrams) is still behind it: on a path where the receiver, not the network, is the
// bottleneck (loopback, a fast LAN to a slow host), the window then stops short of
// overflowing the queue.
type CongestionMarker interface {
	PacketCarrier
	// Marked reports whether the datagram last returned by Read, ReadFrom or ReadPacket met
	// congestion. Only the reading goroutine calls it.
	Marked() bool
}

// PacketReader is a PacketCarrier that lends received datagrams where they already are
// instead of copying them into the caller's buffer. rendr's path reads with it when the
// carrier has it: a datagram is then opened in place.
type PacketReader interface {
	PacketCarrier
	// ReadPacket returns the next datagram and where it came from (nil for the current
	// peer, as Rebinder.ReadFrom). b stays valid, and may be written to, until the next
	// ReadPacket. After Close it returns an error at once, letting go of the last one: rendr
	// calls it once more when it stops reading.
	ReadPacket() (b []byte, from net.Addr, err error)
}

// PacketKeeper is a PacketReader whose lent datagrams can outlive the next ReadPacket: rendr
// then keeps a stream's bytes where they arrived, in the carrier's buffer, until the
// application reads them, instead of copying them out first.
type PacketKeeper interface {
	PacketReader
	// Keep makes the datagram ReadPacket returned last stay valid, unchanged, until pin's
	// Unpin (called once, from any goroutine). size is the memory that keeps from reuse (a
	// datagram's share of a buffer several share), which rendr counts against the session's
	// bound on held memory; rendr keeps a datagram once however many of its payloads it holds. A nil pin means the
	// carrier cannot spare that datagram: it stays valid only until the next ReadPacket.
	Keep() (pin Pin, size int)
}

// Pin holds memory a carrier lent until Unpin.
type Pin interface{ Unpin() }

// ErrDatagramTooLarge may be returned (wrapped) by a PacketCarrier's Write for a datagram
// the network refused as larger than its MTU (EMSGSIZE): rendr treats the size as failed,
// not the carrier as dead.
var ErrDatagramTooLarge = errors.New("rendr: datagram larger than the path MTU")

// HandshakeExtender is a carrier with something of its own to exchange under the encryption
// of rendr's handshake, where nobody but the two ends can read or change it (udpflow: the
// connection ids it will move to and their stateless reset tokens, docs/wire.md sections 3.3
// and 5.1).
// rendr calls the methods from the goroutine running the carrier's handshake, in order:
// HelloExtra on the dialing side, AnswerExtra on the listening side with what the hello
// carried, ReplyExtra on the dialing side with what the reply carried. Each blob is at most
// MaxHandshakeExtra bytes; an empty one is sent as nothing. A carrier of one end only may
// implement it: the other end's blobs are then empty.
type HandshakeExtender interface {
	net.Conn
	// HelloExtra is what the dialing side's carrier puts in the hello.
	HelloExtra() []byte
	// AnswerExtra takes the hello's blob on the listening side and returns the reply's. An
	// error refuses the handshake, silently (the hello authenticated, but its blob does not
	// make sense to this carrier).
	AnswerExtra(hello []byte) ([]byte, error)
	// ReplyExtra takes the reply's blob on the dialing side. An error abandons the carrier.
	ReplyExtra(reply []byte) error
}

// MaxHandshakeExtra bounds a HandshakeExtender's blobs.
const MaxHandshakeExtra = 128

// SourceRefuser is a source (a net.Listener given to rendr) that can refuse new carriers
// from one address for a while before they cost anything above the kernel: rendr's
// listener, under load, asks it to refuse a source that opens carriers faster than its
// rate, rather than accept and close each one (transport/tcp: a socket filter drops the
// source's SYNs). Established carriers are not touched.
type SourceRefuser interface {
	net.Listener
	// RefuseSource refuses new carriers from addr's host (an IPv4 address, or an IPv6 /64)
	// for d. A source may hold a bounded number of refusals and drop the oldest past it.
	RefuseSource(addr net.Addr, d time.Duration)
}
