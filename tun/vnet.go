package tun

// The device's packets with their virtio-net headers: the Linux TUN offloads.
//
// A TUN opened with IFF_VNET_HDR (wireguard's tun opens it so on Linux) puts a 10-byte header
// in front of every packet, each way. With the offloads on, the kernel hands over a TCP
// connection's data as segments of up to 64 KiB whose checksum it left to be finished
// (TSO), and takes such segments back, cutting them to the MTU itself. wireguard's tun cuts
// every such segment into MTU-sized packets on a read and glues them together again on a
// write, which is what a per-packet cipher needs. The ingress needs neither: its gVisor stack
// takes a 64 KiB segment as one packet and makes 64 KiB segments itself (host GSO), so each
// crossing of the device costs one system call and one pass of the stack per 64 KiB rather
// than per 1.4 KiB. So the ingress reads and writes the device's file itself, headers and
// all, and lets the kernel do the cutting and the checksums.

import (
	"encoding/binary"
	"errors"
	"io"
	"sync/atomic"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// vnetHdrLen is the size of struct virtio_net_hdr.
const vnetHdrLen = 10

// The header's flags and segmentation types (linux/virtio_net.h).
const (
	vnetNeedsCsum = 1 // the checksum at csumStart+csumOffset holds only the pseudo-header's sum
	vnetDataValid = 2 // the kernel checked the checksums

	vnetGSONone  = 0
	vnetGSOTCPv4 = 1
	vnetGSOTCPv6 = 4
	vnetGSOECN   = 0x80
)

// gsoMaxSize bounds the segments the stack makes: with its largest headers (60 bytes of IPv6
// and TCP options beyond the 40 fixed ones) a segment stays inside a 64 KiB buffer and an
// IPv4 total length.
const gsoMaxSize = 64000

// vnetHdr is struct virtio_net_hdr, in the host's byte order (a TUN's legacy header is).
type vnetHdr struct {
	flags, gsoType                         uint8
	hdrLen, gsoSize, csumStart, csumOffset uint16
}

func (h *vnetHdr) decode(b []byte) {
	h.flags, h.gsoType = b[0], b[1]
	h.hdrLen = binary.NativeEndian.Uint16(b[2:])
	h.gsoSize = binary.NativeEndian.Uint16(b[4:])
	h.csumStart = binary.NativeEndian.Uint16(b[6:])
	h.csumOffset = binary.NativeEndian.Uint16(b[8:])
}

func (h *vnetHdr) encode(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}

// vnetDevice is a TUN's file, read and written with virtio-net headers.
type vnetDevice struct {
	f io.ReadWriter // the device's *os.File
	// offload says the offloads are on: the kernel took TUN_F_CSUM (and TSO4|TSO6 with it,
	// unless it refused them), so it sends unfinished checksums (and segments), and the
	// stack is told its received checksums are checked (they are, here, where the kernel
	// did not vouch for them); and the stack makes segments of its own, which the kernel
	// takes whatever it sends (soft covers one that refuses them).
	offload bool
	// soft is set once the kernel refused a segment or an unfinished checksum on a write
	// (some kernels answer EINVAL): from then on they are cut and finished here.
	soft atomic.Bool
	// segIn and segOut count the segments of more than one packet read and written.
	segIn, segOut atomic.Uint64
}

// readLoop reads packets until a read fails, and hands each one the stack may take to take
// (which must copy what it keeps); a packet it may not is counted in dropped.
func (v *vnetDevice) readLoop(take func([]byte), dropped *atomic.Uint64) error {
	buf := make([]byte, vnetHdrLen+maxPacket)
	for {
		n, err := v.f.Read(buf)
		if err != nil {
			return err
		}
		if n < vnetHdrLen {
			dropped.Add(1)
			continue
		}
		var h vnetHdr
		h.decode(buf)
		p := buf[vnetHdrLen:n]
		if !v.prepare(&h, p) {
			dropped.Add(1)
			continue
		}
		if h.gsoType != vnetGSONone {
			v.segIn.Add(1)
		}
		take(p)
	}
}

// prepare makes p, read with header h, fit for the stack, or reports that it cannot be. The
// stack takes a TCP segment whole and unfinished checksums of TCP and UDP as they are, since
// it is told the device checked them; any other unfinished checksum is finished here, and a
// packet whose checksums nobody vouched for is checked here.
func (v *vnetDevice) prepare(h *vnetHdr, p []byte) bool {
	switch h.gsoType &^ vnetGSOECN {
	case vnetGSONone:
	case vnetGSOTCPv4, vnetGSOTCPv6:
		// The segment's IP length must be its whole length: the stack reads it so.
		return h.flags&vnetNeedsCsum != 0 && ipLength(p) == len(p) && transport(p) == 6
	default:
		return false // UDP segments: never asked for (TUN_F_USO is left off)
	}
	switch {
	case h.flags&vnetNeedsCsum != 0:
		if proto := transport(p); proto == 6 || proto == 17 {
			return ipLength(p) == len(p)
		}
		return finishChecksum(p, int(h.csumStart), int(h.csumOffset))
	case h.flags&vnetDataValid != 0 || !v.offload:
		return true
	}
	return checksumsValid(p)
}

// write writes the stack's packet pkt, gathered into buf after vnetHdrLen bytes of room.
func (v *vnetDevice) write(buf []byte, pkt *stack.PacketBuffer) error {
	var h vnetHdr
	o := pkt.GSOOptions
	if o.Type == stack.GSOTCPv4 || o.Type == stack.GSOTCPv6 {
		l3 := len(pkt.NetworkHeader().Slice())
		if o.NeedsCsum {
			h.flags, h.csumStart, h.csumOffset = vnetNeedsCsum, uint16(l3), o.CsumOffset
		}
		if pkt.Data().Size() > int(o.MSS) {
			h.gsoType, h.gsoSize, h.hdrLen = vnetGSOTCPv4, o.MSS, uint16(pkt.HeaderSize())
			if o.Type == stack.GSOTCPv6 {
				h.gsoType = vnetGSOTCPv6
			}
			v.segOut.Add(1)
		}
	}
	if h.flags != 0 && !v.soft.Load() {
		h.encode(buf)
		_, err := v.f.Write(buf)
		if !errors.Is(err, syscall.EINVAL) {
			return err
		}
		v.soft.Store(true)
	}
	if h.flags == 0 {
		clear(buf[:vnetHdrLen])
		_, err := v.f.Write(buf)
		return err
	}
	return segment(buf, h, func(p []byte) error {
		clear(p[:vnetHdrLen])
		_, err := v.f.Write(p)
		return err
	})
}

// ipLength is the length p's IP header gives for the whole packet, or -1.
func ipLength(p []byte) int {
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		return int(binary.BigEndian.Uint16(p[2:]))
	case len(p) >= 40 && p[0]>>4 == 6:
		return 40 + int(binary.BigEndian.Uint16(p[4:]))
	}
	return -1
}

// transport is the protocol of the transport header that directly follows p's IP header,
// and its offset; 0 when there is none (IPv6 extension headers, a fragment that is not the
// first, a malformed header).
func transport(p []byte) byte {
	proto, _ := transportAt(p)
	return proto
}

func transportAt(p []byte) (proto byte, at int) {
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		hl := int(p[0]&0x0f) * 4
		if hl < 20 || len(p) < hl || binary.BigEndian.Uint16(p[6:])&0x3fff != 0 {
			return 0, 0 // a fragment: its transport header, if any, is not whole here
		}
		return p[9], hl
	case len(p) >= 40 && p[0]>>4 == 6:
		return p[6], 40
	}
	return 0, 0
}

// pseudoSum is the checksum of p's pseudo-header for a transport length of n.
func pseudoSum(p []byte, proto byte, n int) uint16 {
	var s uint16
	if p[0]>>4 == 4 {
		s = checksum.Checksum(p[12:20], 0)
	} else {
		s = checksum.Checksum(p[8:40], 0)
	}
	var tail [4]byte
	binary.BigEndian.PutUint16(tail[:], uint16(proto))
	binary.BigEndian.PutUint16(tail[2:], uint16(n))
	return checksum.Checksum(tail[:], s)
}

// finishChecksum finishes the checksum the kernel left at start+off of p, which holds the
// pseudo-header's sum: the sum of everything from start on, as a device would. It reports
// whether the offsets lie inside p.
func finishChecksum(p []byte, start, off int) bool {
	if start+off+2 > len(p) || start < 0 {
		return false
	}
	s := ^checksum.Checksum(p[start:], 0)
	if s == 0 && off == 6 && transport(p) == 17 {
		s = 0xffff // UDP says "no checksum" with 0
	}
	binary.BigEndian.PutUint16(p[start+off:], s)
	return true
}

// checksumsValid reports whether p's IPv4 header checksum and its TCP or UDP checksum are
// right. What cannot be checked from p alone (a fragment, a transport behind IPv6 extension
// headers) passes: those come from the host itself, not from a wire.
func checksumsValid(p []byte) bool {
	if len(p) >= 20 && p[0]>>4 == 4 {
		hl := int(p[0]&0x0f) * 4
		if hl < 20 || len(p) < hl || checksum.Checksum(p[:hl], 0) != 0xffff {
			return false
		}
	}
	n := ipLength(p)
	if n < 0 || n > len(p) {
		return false
	}
	p = p[:n]
	proto, at := transportAt(p)
	if proto != 6 && proto != 17 {
		return true
	}
	seg := p[at:]
	if proto == 17 && len(seg) >= 8 && p[0]>>4 == 4 && binary.BigEndian.Uint16(seg[6:]) == 0 {
		return true // no checksum: IPv4 UDP allows it
	}
	return checksum.Checksum(seg, pseudoSum(p, proto, len(seg))) == 0xffff
}

// segment cuts the TCP segment in buf[vnetHdrLen:] (header h: hdrLen bytes of IP and TCP
// header, gsoSize bytes of data a packet) into packets with finished checksums, and hands
// each to emit with vnetHdrLen bytes of room in front of it, which emit may write over. Each
// packet is built in place, its headers over the end of the data of the packet before it,
// so buf is spent afterwards. Without a segmentation type it only finishes the checksum.
func segment(buf []byte, h vnetHdr, emit func([]byte) error) error {
	p := buf[vnetHdrLen:]
	hl, l3 := int(h.hdrLen), int(h.csumStart)
	if h.gsoType == vnetGSONone {
		if !finishChecksum(p, l3, int(h.csumOffset)) {
			return errMalformed
		}
		return emit(buf)
	}
	if hl > len(p) || l3 < 20 || l3+20 > hl || h.gsoSize == 0 {
		return errMalformed
	}
	v4 := p[0]>>4 == 4
	hdr := make([]byte, hl)
	copy(hdr, p)
	seq := binary.BigEndian.Uint32(hdr[l3+4:])
	id := uint16(0)
	if v4 {
		id = binary.BigEndian.Uint16(hdr[4:])
	}
	flags := hdr[l3+13]
	size := len(p) - hl
	for i, off := 0, 0; off < size; i++ {
		n := min(int(h.gsoSize), size-off)
		pkt := buf[off : vnetHdrLen+hl+off+n]
		b := pkt[vnetHdrLen:]
		copy(b, hdr)
		if v4 {
			binary.BigEndian.PutUint16(b[2:], uint16(hl+n))
			binary.BigEndian.PutUint16(b[4:], id+uint16(i))
			b[10], b[11] = 0, 0
			binary.BigEndian.PutUint16(b[10:], ^checksum.Checksum(b[:l3], 0))
		} else {
			binary.BigEndian.PutUint16(b[4:], uint16(hl+n-40))
		}
		tcp := b[l3:]
		binary.BigEndian.PutUint32(tcp[4:], seq+uint32(off))
		f := flags
		if off+n < size {
			f &^= 0x09 // FIN and PSH: the last packet's
		}
		if i > 0 {
			f &^= 0x80 // CWR: the first packet's
		}
		tcp[13] = f
		tcp[16], tcp[17] = 0, 0
		binary.BigEndian.PutUint16(tcp[16:], ^checksum.Checksum(tcp, pseudoSum(b, 6, len(tcp))))
		// The next packet's headers go over this one's data: it leaves first.
		if err := emit(pkt); err != nil {
			return err
		}
		off += n
	}
	return nil
}

var errMalformed = errors.New("rendr/tun: malformed segment")
