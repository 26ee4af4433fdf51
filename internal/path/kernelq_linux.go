package path

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// newKernelQueue reads TCP_INFO from conn when it is a kernel TCP socket.
func newKernelQueue(conn net.Conn) *kernelQueue {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return &kernelQueue{}
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return &kernelQueue{}
	}
	k := &kernelQueue{read: func() (kernelInfo, bool) { return tcpInfo(rc) }}
	if _, ok := k.read(); !ok {
		k.read = nil // a kernel without TCP_INFO, or not TCP after all
	}
	return k
}

// tcpInfo reads the sending side of a TCP socket.
func tcpInfo(rc syscall.RawConn) (kernelInfo, bool) {
	var ti *unix.TCPInfo
	var serr error
	if err := rc.Control(func(fd uintptr) {
		ti, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || serr != nil {
		return kernelInfo{}, false
	}
	return kernelInfo{
		rate:    float64(ti.Delivery_rate),
		minRTT:  time.Duration(ti.Min_rtt) * time.Microsecond,
		unacked: int(ti.Unacked) * int(ti.Snd_mss),
		notsent: int(ti.Notsent_bytes),
		mss:     int(ti.Snd_mss),
		acked:   ti.Bytes_acked,
		lastAck: time.Duration(ti.Last_ack_recv) * time.Millisecond,
	}, true
}
