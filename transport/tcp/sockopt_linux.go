package tcp

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// paceAny is the SO_MAX_PACING_RATE that turns the kernel's own TCP pacing on without capping
// it: any value but "unlimited" (all ones) makes the socket pace, at the rate its congestion
// control computes, and this one is beyond any link (some 4 EB/s).
const paceAny = 1 << 62

func tune(c syscall.RawConn, lowat int, pace bool) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if lowat > 0 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, lowat)
		}
		if pace && serr == nil {
			// Best effort: a kernel that takes only 32 bits, or none, sends unpaced
			// as before, which still works.
			if unix.SetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, paceAny) != nil {
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MAX_PACING_RATE, 1<<31-1)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}
