package tcp

import (
	"syscall"

	"golang.org/x/sys/unix"
)

func tune(c syscall.RawConn, lowat int) error {
	if lowat <= 0 {
		return nil
	}
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, lowat)
	})
	if err != nil {
		return err
	}
	return serr
}
