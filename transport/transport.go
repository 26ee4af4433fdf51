// Package transport defines what rendr needs from a carrier and adapts what embedders already
// have. A stream carrier is any net.Conn that delivers bytes in order; a path's dialer is any
// func(ctx) (net.Conn, error), and a listening side's source is any net.Listener.
//
// Implementations live in sub-packages (transport/tcp); they never import rendr's engine.
package transport

import (
	"context"
	"fmt"
	"net"
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
