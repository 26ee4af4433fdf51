// Package transport defines what rendr needs from a carrier and adapts what embedders already
// have. A stream carrier is any net.Conn that delivers bytes in order; a path's dialer is any
// func(ctx) (net.Conn, error), and a listening side's source is any net.Listener.
//
// Implementations live in sub-packages (transport/tcp); they never import rendr's engine.
package transport

import (
	"context"
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
