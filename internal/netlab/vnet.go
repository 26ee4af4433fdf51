package netlab

import (
	"encoding/binary"
	"fmt"
)

// With offloads, each read from a TUN device starts with a virtio_net_hdr (linux/virtio_net.h)
// saying how the kernel would cut the packet after it: gso_type names the protocol and
// gso_size the payload of each segment but the last. The node never cuts a super-packet, it
// writes it to the other device header and all; it only needs the size of the segments on the
// wire for the rate stage and the counters.
//
// The header's fields are in the host's byte order (a legacy virtio header, as the lab never
// asks the device for another) and laid out as:
//
//	0  flags        u8   vnetNeedsCsum: csum_start and csum_offset are set
//	1  gso_type     u8   vnetGSO*, with vnetGSOECN or'ed in when CWR must be kept
//	2  hdr_len      u16  the kernel's linear length on forwarded packets, not the headers'
//	4  gso_size     u16  payload bytes per segment
//	6  csum_start   u16  where the transport header starts
//	8  csum_offset  u16  where, after csum_start, its checksum goes
const (
	vnetHdrLen    = 10
	vnetNeedsCsum = 1

	vnetGSONone  = 0
	vnetGSOTCPv4 = 1
	vnetGSOTCPv6 = 4
	vnetGSOUDPL4 = 5 // USO: one UDP datagram per segment
	vnetGSOECN   = 0x80
)

// Offload says what a delay node's TUN devices hand it in one read.
type Offload int

const (
	// OffloadNone: one IP packet per read, never larger than the device's MTU; the kernel
	// segments and checksums everything before the node sees it.
	OffloadNone Offload = iota
	// OffloadTCP: a TCP super-packet of up to 64 KiB per read (TSO), and partial checksums.
	OffloadTCP
	// OffloadTCPUDP: OffloadTCP, and UDP super-packets as well (USO, Linux 6.2 and later).
	OffloadTCPUDP
)

func (o Offload) String() string {
	switch o {
	case OffloadNone:
		return "none"
	case OffloadTCP:
		return "tcp"
	case OffloadTCPUDP:
		return "tcp+udp"
	}
	return fmt.Sprintf("Offload(%d)", int(o))
}

// wireSize returns how many packets a frame read from a TUN device stands for on the wire,
// and their bytes, IP headers included. Without a virtio header the frame is one packet. A
// super-packet of N segments is its payload plus N copies of its IP and transport headers,
// which is what the kernel will make of it. A header that does not add up (none the kernel
// writes) counts the frame as one packet of its size: the rate stage then errs towards
// fewer bytes, and the frame still crosses.
func wireSize(frame []byte, vnet bool) (packets, bytes int) {
	if !vnet {
		return 1, len(frame)
	}
	if len(frame) < vnetHdrLen {
		return 1, len(frame)
	}
	pkt := frame[vnetHdrLen:]
	gsoType := frame[1] &^ vnetGSOECN
	gsoSize := int(binary.NativeEndian.Uint16(frame[4:]))
	if gsoType == vnetGSONone || gsoSize == 0 {
		return 1, len(pkt)
	}
	l4 := transportOffset(frame, pkt)
	if l4 < 0 {
		return 1, len(pkt)
	}
	var hdr int
	switch gsoType {
	case vnetGSOTCPv4, vnetGSOTCPv6:
		if l4+12 >= len(pkt) {
			return 1, len(pkt)
		}
		// hdr_len cannot be trusted for this (see above): the TCP data offset can.
		hdr = l4 + int(pkt[l4+12]>>4)*4
	case vnetGSOUDPL4:
		hdr = l4 + 8
	default:
		return 1, len(pkt)
	}
	payload := len(pkt) - hdr
	if payload <= 0 {
		return 1, len(pkt)
	}
	packets = (payload + gsoSize - 1) / gsoSize
	return packets, payload + packets*hdr
}

// transportOffset is where the transport header of pkt starts: csum_start when the header
// sets it, which the kernel does for every super-packet, else after the IP header; -1 when
// neither makes sense.
func transportOffset(hdr, pkt []byte) int {
	if hdr[0]&vnetNeedsCsum != 0 {
		if off := int(binary.NativeEndian.Uint16(hdr[6:])); off < len(pkt) {
			return off
		}
		return -1
	}
	if len(pkt) == 0 {
		return -1
	}
	switch pkt[0] >> 4 {
	case 4:
		return int(pkt[0]&0x0f) * 4
	case 6:
		return 40 // the lab's IPv6 is off; extension headers are not followed
	}
	return -1
}
