package udpflow

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/rendr-go/rendr/transport"
)

// socket is one UDP socket: a dialer's own, or a listener's shared by its connections.
type socket struct {
	u    *net.UDPConn
	bat  *batcher // nil: one system call per datagram
	once sync.Once

	wmu  sync.Mutex // guards wbuf
	wbuf []byte
}

// sockBuffer is the socket buffer size asked for: a window's worth at the rates rendr runs,
// so a burst is not dropped by the socket itself.
const sockBuffer = 4 << 20

func newSocket(u *net.UDPConn, batch bool) (*socket, error) {
	if err := setDontFragment(u); err != nil {
		return nil, err
	}
	u.SetReadBuffer(sockBuffer) // best effort: the system's limit may be lower
	u.SetWriteBuffer(sockBuffer)
	s := &socket{u: u}
	if batch {
		s.bat = newBatcher(u)
	}
	return s, nil
}

func (s *socket) close() {
	s.once.Do(func() { s.u.Close() })
}

// readLoop reads datagrams until the socket closes, handing each to fn, which must not keep
// b.
func (s *socket) readLoop(fn func(b []byte, from netip.AddrPort)) {
	if s.bat != nil && s.bat.readLoop(fn) {
		return
	}
	buf := make([]byte, maxUDP+1)
	for {
		n, from, err := s.u.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // an ICMP error reported on the socket, a truncated datagram: next
		}
		fn(buf[:n], unmap(from))
	}
}

// writeTo sends one datagram.
func (s *socket) writeTo(b []byte, to netip.AddrPort) error {
	_, err := s.u.WriteToUDPAddrPort(b, to)
	return sendErr(err)
}

// writeBatch sends each of bufs, with header before it, to one address.
func (s *socket) writeBatch(header []byte, bufs [][]byte, to netip.AddrPort) error {
	if s.bat != nil {
		if done, err := s.bat.writeBatch(header, bufs, to); done {
			return sendErr(err)
		}
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for _, b := range bufs {
		s.wbuf = append(append(s.wbuf[:0], header...), b...)
		if err := s.writeTo(s.wbuf, to); err != nil {
			return err
		}
	}
	return nil
}

// sendErr maps a send error: EMSGSIZE is the path MTU, which rendr handles; an unreachable
// network or host (a route gone while an interface changes) is loss, as it would be one hop
// further; anything else is returned as it is.
func sendErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EMSGSIZE):
		return fmt.Errorf("udpflow: %w: %w", transport.ErrDatagramTooLarge, err)
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENOBUFS), errors.Is(err, syscall.EAGAIN),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPERM):
		return nil
	}
	return err
}
