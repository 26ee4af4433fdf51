//go:build !unix

package quic

import (
	"net"
	"sync/atomic"
)

// tolerant leaves pc as it is: only Unix systems name their routing errors portably.
func tolerant(pc net.PacketConn, _ *atomic.Bool) net.PacketConn { return pc }
