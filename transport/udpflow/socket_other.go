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

func setDontFragment(*net.UDPConn) error { return nil }
