//go:build !linux

package tcp

import (
	"net"
	"net/netip"
	"syscall"
)

// setRefuseFilter does nothing where there are no Linux socket filters: refused sources are
// still closed at accept by rendr's listener.
func setRefuseFilter(net.Listener, []netip.Prefix, []netip.Prefix) bool { return false }

func detachFilter(syscall.RawConn) {}
