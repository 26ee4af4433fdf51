package path

import (
	"net"
	"syscall"
)

// Unread reports whether bytes from the peer wait in the carrier's socket, not read yet: the
// peer was heard, though this host has not got to it (its reader was not scheduled, or is
// behind). Silence measured then is this host's, not the path's. Known only for carriers on a
// kernel socket, on Linux; false otherwise.
func (p *Path) Unread() bool { return unread(p.conn) }

// unread reports whether c's socket holds bytes not read yet.
func unread(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	if rc.Control(func(fd uintptr) { n = queued(fd) }) != nil {
		return false
	}
	return n > 0
}
