//go:build !linux

package udpflow

import (
	"net"
	"net/netip"
)

// batcher is Linux's batched I/O; elsewhere there is none.
type batcher struct{}

func newBatcher(*net.UDPConn) *batcher { return nil }

func (*batcher) readLoop(func([]byte, netip.AddrPort)) bool { return false }

func (*batcher) writeBatch([]byte, [][]byte, netip.AddrPort) (bool, error) { return false, nil }

func setDontFragment(*net.UDPConn) error { return nil }
