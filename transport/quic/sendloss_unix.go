//go:build unix

package quic

import (
	"errors"
	"net"
	"sync/atomic"
	"syscall"
)

// lossyUDP turns a socket's routing errors on send into loss once the connection is up. quic-go
// ends a connection on any send error, but a UDP sender that briefly has no route (an address
// being replaced, an interface going down under a path that already moved) has only lost a
// packet: QUIC recovers it, and if the route never returns, rendr's probes declare the path
// dead. Before the connection is up the errors pass, so a dial to an unreachable network fails
// at once with its real cause.
type lossyUDP struct {
	*net.UDPConn
	up *atomic.Bool
}

func (c *lossyUDP) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (int, int, error) {
	n, oobn, err := c.UDPConn.WriteMsgUDP(b, oob, addr)
	if err != nil && c.up.Load() && routeErr(err) {
		return len(b), len(oob), nil
	}
	return n, oobn, err
}

func (c *lossyUDP) WriteTo(b []byte, addr net.Addr) (int, error) {
	n, err := c.UDPConn.WriteTo(b, addr)
	if err != nil && c.up.Load() && routeErr(err) {
		return len(b), nil
	}
	return n, err
}

func routeErr(err error) bool {
	return errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.ENOBUFS)
}

// tolerant wraps pc when it is a UDP socket; up says when routing errors become loss.
func tolerant(pc net.PacketConn, up *atomic.Bool) net.PacketConn {
	if u, ok := pc.(*net.UDPConn); ok {
		return &lossyUDP{UDPConn: u, up: up}
	}
	return pc
}
