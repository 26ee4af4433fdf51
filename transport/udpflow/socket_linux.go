package udpflow

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Linux batches: sendmmsg and recvmmsg through golang.org/x/net, UDP GSO (one send of a run
// of same-size datagrams, cut by the kernel or the NIC) and GRO (one receive of a run the
// kernel kept together). Each turns off for good on the first error the kernel gives for it,
// and the socket goes on without it.

const (
	readBatch   = 16 // datagrams (or GRO runs) per recvmmsg: 1 MiB of buffers per socket
	gsoSegments = 64 // the kernel's UDP_MAX_SEGMENTS on older kernels
	gsoBytes    = 65000
)

// batchConn is what ipv4.PacketConn and ipv6.PacketConn share that the batcher uses: their
// ReadBatch allocates a net.UDPAddr for every message, so reads use mmsgReader instead.
type batchConn interface {
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

type batcher struct {
	conn     batchConn
	rc       syscall.RawConn
	gso, gro atomic.Bool

	wmu    sync.Mutex // guards what follows
	msgs   []ipv4.Message
	iovs   [][]byte
	oobs   [][]byte
	toAddr netip.AddrPort
	toUDP  *net.UDPAddr
}

func newBatcher(u *net.UDPConn) *batcher {
	rc, err := u.SyscallConn()
	if err != nil {
		return nil
	}
	b := &batcher{rc: rc}
	if la, ok := u.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() == nil && !la.IP.IsUnspecified() {
		b.conn = ipv6.NewPacketConn(u)
	} else {
		b.conn = ipv4.NewPacketConn(u)
	}
	rc.Control(func(fd uintptr) {
		if _, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT); err == nil {
			b.gso.Store(true)
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil {
			b.gro.Store(true)
		}
	})
	return b
}

// setDontFragment sets the DF bit and makes the kernel refuse (EMSGSIZE) a datagram over the
// interface's MTU instead of fragmenting it, without lowering what it accepts on its own
// path MTU guesses: rendr's search finds the size (IP_PMTUDISC_PROBE).
func setDontFragment(u *net.UDPConn) error {
	rc, err := u.SyscallConn()
	if err != nil {
		return err
	}
	var e4, e6 error
	cerr := rc.Control(func(fd uintptr) {
		e4 = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
		e6 = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE)
	})
	if cerr != nil {
		return cerr
	}
	if e4 != nil && e6 != nil {
		return e4 // neither family took it
	}
	return nil
}

// mmsgReader is recvmmsg over system calls of its own, which leave each sender's address
// where the kernel wrote it: a read allocates nothing.
type mmsgReader struct {
	hs    []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // room for either family's address
	oobs  [][]byte
}

func newMmsgReader(n, oobLen int) *mmsgReader {
	m := &mmsgReader{hs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n), oobs: make([][]byte, n)}
	for i := range m.oobs {
		m.oobs[i] = make([]byte, oobLen)
	}
	return m
}

// read receives up to len(bufs) datagrams, one into each buffer, waiting for the first.
func (m *mmsgReader) read(rc syscall.RawConn, bufs []*[]byte) (int, error) {
	for i := range m.hs {
		b := *bufs[i]
		m.iovs[i].Base = &b[0]
		m.iovs[i].SetLen(len(b))
		h := &m.hs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&m.names[i]))
		h.Namelen = uint32(unsafe.Sizeof(m.names[i]))
		h.Iov = &m.iovs[i]
		h.SetIovlen(1)
		h.Control = &m.oobs[i][0]
		h.SetControllen(len(m.oobs[i]))
		h.Flags = 0
		m.hs[i].Len = 0
	}
	var n int
	var errno syscall.Errno
	err := rc.Read(func(fd uintptr) bool {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&m.hs[0])), uintptr(len(m.hs)), 0, 0, 0)
		if e == unix.EAGAIN {
			return false // nothing yet: the poller waits for the socket
		}
		n, errno = int(r), e
		return true
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

// from is the address message i came from.
func (m *mmsgReader) from(i int) (netip.AddrPort, bool) {
	sa := &m.names[i]
	port := func(p uint16) uint16 { // network byte order, as the kernel wrote it
		b := (*[2]byte)(unsafe.Pointer(&p))
		return uint16(b[0])<<8 | uint16(b[1])
	}
	switch sa.Family {
	case unix.AF_INET:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), port(s4.Port)), true
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port(sa.Port)), true
	}
	return netip.AddrPort{}, false
}

// readLoop reads batches until the socket closes. It reports false, having read nothing,
// when the socket cannot read in batches, so the caller reads one at a time.
func (b *batcher) readLoop(fn readFunc, lent *atomic.Int32) bool {
	bufs := make([]*[]byte, readBatch)
	for i := range bufs {
		bufs[i] = getBuf(maxUDP + 1)
	}
	defer func() {
		for _, bp := range bufs {
			putBuf(bp)
		}
	}()
	mr := newMmsgReader(readBatch, unix.CmsgSpace(4)*2)
	first := true
	for {
		n, err := mr.read(b.rc, bufs)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return true
			}
			if first && (errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EOPNOTSUPP)) {
				return false
			}
			continue // an ICMP error reported on the socket: next
		}
		first = false
		for i := range n {
			h := &mr.hs[i]
			addr, ok := mr.from(i)
			if !ok || h.Hdr.Flags&unix.MSG_TRUNC != 0 {
				continue
			}
			from := unmap(addr)
			size := int(h.Len)
			data := (*bufs[i])[:size]
			seg := groSize(mr.oobs[i][:h.Hdr.Controllen])
			bufs[i] = handOff(bufs[i], size, lent, func(rb *rxBuf) (kept int) {
				if seg <= 0 || seg >= len(data) {
					if fn(data, from, rb) {
						kept++
					}
					return kept
				}
				for off := 0; off < len(data); off += seg {
					end := min(off+seg, len(data))
					// Capped at its end: an append must never run into the next one,
					// which may be another connection's.
					if fn(data[off:end:end], from, rb) {
						kept++
					}
				}
				return kept
			})
		}
	}
}

// groSize is the segment size of a GRO run, from a message's control data; 0 when none.
func groSize(oob []byte) int {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 2 {
			if len(data) >= 4 {
				return int(*(*int32)(unsafe.Pointer(&data[0])))
			}
			return int(*(*uint16)(unsafe.Pointer(&data[0])))
		}
		oob = rest
	}
	return 0
}

// writeBatch sends each of bufs with header before it. It reports false when the caller
// should send them one by one instead.
func (b *batcher) writeBatch(header []byte, bufs [][]byte, to netip.AddrPort) (bool, error) {
	if b == nil {
		return false, nil
	}
	b.wmu.Lock()
	defer b.wmu.Unlock()
	if b.toUDP == nil || b.toAddr != to {
		b.toAddr, b.toUDP = to, net.UDPAddrFromAddrPort(to)
	}
	gso := b.gso.Load()
	b.build(header, bufs, gso)
	for sent := 0; sent < len(b.msgs); {
		n, err := b.conn.WriteBatch(b.msgs[sent:], 0)
		if err != nil {
			if gso && (errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EINVAL)) {
				// The kernel or the device cannot segment, or a segment is over the
				// device's MTU (also EINVAL). Send the rest without GSO: if that works,
				// GSO was the trouble and stays off; if the datagrams are refused as too
				// large, the size was, and GSO stays on for the sizes that fit.
				b.build(header, bufs[b.covered(sent):], false)
				if _, again := b.sendAll(); again != nil {
					return true, again
				}
				b.gso.Store(false)
				clear(b.iovs)
				return true, nil
			}
			return true, err
		}
		sent += n
	}
	clear(b.iovs)
	return true, nil
}

// sendAll sends every message built, however many each system call takes.
func (b *batcher) sendAll() (int, error) {
	for sent := 0; sent < len(b.msgs); {
		n, err := b.conn.WriteBatch(b.msgs[sent:], 0)
		if err != nil {
			return sent, err
		}
		sent += n
	}
	return len(b.msgs), nil
}

// covered is how many datagrams the first k messages built carry.
func (b *batcher) covered(k int) int {
	n := 0
	for _, m := range b.msgs[:k] {
		n += len(m.Buffers) / 2
	}
	return n
}

// build lays out bufs as messages: with GSO, a run of datagrams of one size (the last may be
// shorter) is one message whose segment size the kernel cuts at.
func (b *batcher) build(header []byte, bufs [][]byte, gso bool) {
	b.msgs = b.msgs[:0]
	b.iovs = b.iovs[:0]
	for i := 0; i < len(bufs); {
		size := len(header) + len(bufs[i])
		start := len(b.iovs)
		j, total := i, 0
		for j < len(bufs) && j-i < gsoSegments {
			l := len(header) + len(bufs[j])
			if l > size || total+l > gsoBytes && j > i {
				break
			}
			b.iovs = append(b.iovs, header, bufs[j])
			total += l
			j++
			if !gso || l < size {
				break
			}
		}
		m := ipv4.Message{Buffers: b.iovs[start:len(b.iovs):len(b.iovs)], Addr: b.toUDP}
		if j-i > 1 {
			m.OOB = b.segmentOOB(len(b.msgs), size)
		}
		b.msgs = append(b.msgs, m)
		i = j
	}
}

// segmentOOB is message k's control data asking the kernel to cut it every size bytes.
func (b *batcher) segmentOOB(k, size int) []byte {
	for len(b.oobs) <= k {
		b.oobs = append(b.oobs, make([]byte, unix.CmsgSpace(2)))
	}
	oob := b.oobs[k]
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = uint16(size)
	return oob
}
