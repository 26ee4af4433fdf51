package main

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// setCongestion sets the socket's TCP congestion control (TCP_CONGESTION). A namespace other
// than the machine's own may only make the algorithms the machine allows its default, but a
// process with CAP_NET_ADMIN may set any loaded one on its sockets.
func setCongestion(rc syscall.RawConn, cc string) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc)
	}); err != nil {
		return err
	}
	return serr
}
