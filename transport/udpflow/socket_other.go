//go:build !linux

package udpflow

import (
	"net"
	"net/netip"
	"sync/atomic"
)

// batcher is Linux's batched I/O; elsewhere there is none.
type batcher struct{}

func newBatcher(*net.UDPConn) *batcher { return nil }

func (*batcher) readLoop(readFunc, *atomic.Int32) bool { return false }

func (*batcher) writeBatch([]byte, [][]byte, netip.AddrPort) (bool, error) { return false, nil }

// setDontFragment does nothing here: the system's default applies, under which a datagram
// too large for the path may be fragmented rather than dropped. Path MTU probing then finds
// the path larger than its MTU, at the cost of fragments; nothing is lost or wrong.
func setDontFragment(*net.UDPConn) error { return nil }
