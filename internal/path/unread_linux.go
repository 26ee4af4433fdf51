package path

import "golang.org/x/sys/unix"

// queued is the bytes in the socket's receive queue (SIOCINQ; for UDP, the next datagram's
// size), 0 if it cannot be read.
func queued(fd uintptr) int {
	n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	if err != nil {
		return 0
	}
	return n
}
