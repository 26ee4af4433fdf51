package tun

import (
	"bytes"
	"encoding/binary"
	"io"
	"syscall"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tcpSegment builds a TCP segment of the given IP version carrying data, its checksum left
// unfinished (the pseudo-header's sum), as the kernel and the stack leave it for the device;
// it returns it behind vnetHdrLen bytes of room, and its header's length.
func tcpSegment(v6 bool, data []byte, flags byte) (buf []byte, hl int) {
	l3 := 20
	if v6 {
		l3 = 40
	}
	hl = l3 + 32 // TCP with 12 bytes of options (timestamps)
	buf = make([]byte, vnetHdrLen+hl+len(data))
	p := buf[vnetHdrLen:]
	if v6 {
		p[0], p[6], p[7] = 0x60, 6, 64
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		copy(p[8:], []byte{0xfd, 0x98, 15: 2})
		copy(p[24:], []byte{0xfd, 0x99, 15: 1})
	} else {
		p[0], p[8], p[9] = 0x45, 64, 6
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[4:], 0x1234)
		copy(p[12:], []byte{10, 98, 0, 2, 10, 99, 0, 1})
		binary.BigEndian.PutUint16(p[10:], ^checksum.Checksum(p[:20], 0))
	}
	tcp := p[l3:]
	binary.BigEndian.PutUint16(tcp, 40000)
	binary.BigEndian.PutUint16(tcp[2:], 443)
	binary.BigEndian.PutUint32(tcp[4:], 0xfffff000) // wraps within the segment
	binary.BigEndian.PutUint32(tcp[8:], 77)
	tcp[12], tcp[13] = 8<<4, flags
	binary.BigEndian.PutUint16(tcp[14:], 512)
	copy(tcp[20:], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2})
	copy(tcp[32:], data)
	binary.BigEndian.PutUint16(tcp[16:], pseudoSum(p, 6, len(tcp)))
	return buf, hl
}

// TestSegment: a segment cut here comes out as the packets the kernel would make of it: each
// within the segment size, with its own IP length, IPv4 id and header checksum, sequence
// number and finished TCP checksum; FIN and PSH on the last only, CWR on the first only;
// and the data whole and in order.
func TestSegment(t *testing.T) {
	data := make([]byte, 5000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, v6 := range []bool{false, true} {
		buf, hl := tcpSegment(v6, data, 0x80|0x10|0x08|0x01) // CWR, ACK, PSH, FIN
		l3 := 20
		if v6 {
			l3 = 40
		}
		h := vnetHdr{flags: vnetNeedsCsum, gsoType: vnetGSOTCPv4, hdrLen: uint16(hl), gsoSize: 1400, csumStart: uint16(l3), csumOffset: 16}
		var pkts [][]byte
		err := segment(buf, h, func(p []byte) error {
			if len(p) < vnetHdrLen {
				t.Fatalf("a packet without room for its header")
			}
			pkts = append(pkts, bytes.Clone(p[vnetHdrLen:]))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(pkts) != 4 {
			t.Fatalf("v6 %v: %d packets, want 4", v6, len(pkts))
		}
		var got []byte
		for i, p := range pkts {
			if !checksumsValid(p) || ipLength(p) != len(p) {
				t.Errorf("v6 %v: packet %d: checksums or length wrong", v6, i)
			}
			if n := len(p) - hl; n > 1400 || (i < 3 && n != 1400) {
				t.Errorf("v6 %v: packet %d carries %d bytes", v6, i, n)
			}
			if seq := binary.BigEndian.Uint32(p[l3+4:]); seq != 0xfffff000+uint32(len(got)) {
				t.Errorf("v6 %v: packet %d: seq %#x", v6, i, seq)
			}
			f := p[l3+13]
			if wantFin := i == 3; (f&0x09 == 0x09) != wantFin || (f&0x09 == 0) == wantFin {
				t.Errorf("v6 %v: packet %d: flags %#x", v6, i, f)
			}
			if (f&0x80 != 0) != (i == 0) || f&0x10 == 0 {
				t.Errorf("v6 %v: packet %d: flags %#x", v6, i, f)
			}
			if !v6 && binary.BigEndian.Uint16(p[4:]) != 0x1234+uint16(i) {
				t.Errorf("packet %d: IPv4 id %#x", i, binary.BigEndian.Uint16(p[4:]))
			}
			if !bytes.Equal(p[l3+20:hl], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}) {
				t.Errorf("v6 %v: packet %d: options changed", v6, i)
			}
			got = append(got, p[hl:]...)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("v6 %v: the data came out changed", v6)
		}
	}
}

// TestChecksums: an unfinished checksum finished here is right, and a packet whose bytes were
// changed after it was made is caught; a UDP datagram without a checksum (IPv4) passes.
func TestChecksums(t *testing.T) {
	buf, _ := tcpSegment(false, []byte("hello, world"), 0x18)
	p := buf[vnetHdrLen:]
	if checksumsValid(p) {
		t.Fatal("an unfinished checksum passed as valid")
	}
	if !finishChecksum(p, 20, 16) || !checksumsValid(p) {
		t.Fatal("the finished checksum is wrong")
	}
	p[len(p)-1] ^= 1
	if checksumsValid(p) {
		t.Fatal("a changed byte passed")
	}
	p[len(p)-1] ^= 1
	p[8]-- // the TTL, under the IPv4 header checksum
	if checksumsValid(p) {
		t.Fatal("a changed IPv4 header passed")
	}
	udp := []byte{0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 10, 98, 0, 2, 10, 99, 0, 1, 0x9c, 0x40, 0, 53, 0, 12, 0, 0, 'a', 'b', 'c', 'd'}
	binary.BigEndian.PutUint16(udp[10:], ^checksum.Checksum(udp[:20], 0))
	if !checksumsValid(udp) {
		t.Fatal("an IPv4 UDP datagram without a checksum failed")
	}
	binary.BigEndian.PutUint16(udp[26:], pseudoSum(udp, 17, 12))
	if !finishChecksum(udp, 20, 6) || !checksumsValid(udp) || binary.BigEndian.Uint16(udp[26:]) == 0 {
		t.Fatal("the finished UDP checksum is wrong")
	}
}

// TestPrepare: what the device reads is handed to the stack only when the stack may take it.
func TestPrepare(t *testing.T) {
	v := &vnetDevice{offload: true}
	seg, hl := tcpSegment(false, make([]byte, 3000), 0x10)
	p := seg[vnetHdrLen:]
	gso := vnetHdr{flags: vnetNeedsCsum, gsoType: vnetGSOTCPv4, hdrLen: uint16(hl), gsoSize: 1400, csumStart: 20, csumOffset: 16}
	if !v.prepare(&gso, p) {
		t.Error("a TCP segment was refused")
	}
	if v.prepare(&gso, p[:len(p)-1]) {
		t.Error("a segment shorter than its IP length was taken")
	}
	usegs := gso
	usegs.gsoType = 5 // UDP segments: never asked for
	if v.prepare(&usegs, p) {
		t.Error("a UDP segment was taken")
	}
	none := vnetHdr{}
	if v.prepare(&none, p) {
		t.Error("a packet with an unfinished checksum and no flag was taken as checked")
	}
	if !(&vnetDevice{}).prepare(&none, p) {
		t.Error("with the offloads off the stack checks checksums itself: the packet is its to judge")
	}
	// Another protocol's unfinished checksum is finished here: ICMP echo.
	icmp := []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 98, 0, 2, 10, 99, 0, 1, 8, 0, 0, 0, 0, 1, 0, 1}
	binary.BigEndian.PutUint16(icmp[10:], ^checksum.Checksum(icmp[:20], 0))
	partial := vnetHdr{flags: vnetNeedsCsum, csumStart: 20, csumOffset: 2}
	if !v.prepare(&partial, icmp) || checksum.Checksum(icmp[20:], 0) != 0xffff {
		t.Error("an ICMP message's checksum was not finished")
	}
	partial.csumStart = 100
	if v.prepare(&partial, icmp) {
		t.Error("a checksum offset past the packet was taken")
	}
}

// FuzzVnet drives what acts on the device's packets and on a refused write's segments: any
// header and packet are taken or refused, and cut, without a panic.
func FuzzVnet(f *testing.F) {
	seg, hl := tcpSegment(true, make([]byte, 4000), 0x19)
	h := vnetHdr{flags: vnetNeedsCsum, gsoType: vnetGSOTCPv6, hdrLen: uint16(hl), gsoSize: 1000, csumStart: 40, csumOffset: 16}
	var hb [vnetHdrLen]byte
	h.encode(hb[:])
	f.Add(hb[:], seg[vnetHdrLen:])
	f.Add(make([]byte, vnetHdrLen), []byte{0x45, 0, 0, 20})
	f.Fuzz(func(t *testing.T, hdr, p []byte) {
		if len(hdr) < vnetHdrLen {
			return
		}
		var h vnetHdr
		h.decode(hdr)
		for _, off := range []bool{true, false} {
			(&vnetDevice{offload: off}).prepare(&h, bytes.Clone(p))
		}
		buf := append(make([]byte, vnetHdrLen), p...)
		total := 0
		segment(buf, h, func(q []byte) error {
			if len(q) < vnetHdrLen {
				t.Fatalf("a packet without room for its header")
			}
			total += len(q) - vnetHdrLen
			return nil
		})
		if total > len(p)*(1+len(p)) {
			t.Fatalf("%d bytes out of %d", total, len(p))
		}
	})
}

// refusingDevice takes packets whole, each after its virtio-net header, and refuses with
// EINVAL a header asking for segmentation or a checksum, as some kernels do.
type refusingDevice struct {
	refused int
	got     [][]byte // each write's packet, its header checked to be all zero
}

func (d *refusingDevice) Read([]byte) (int, error) { return 0, io.EOF }
func (d *refusingDevice) Write(b []byte) (int, error) {
	var h vnetHdr
	h.decode(b)
	if h != (vnetHdr{}) {
		d.refused++
		return 0, syscall.EINVAL
	}
	d.got = append(d.got, bytes.Clone(b[vnetHdrLen:]))
	return len(b), nil
}

// TestWriteRefused: when the kernel refuses a segment from the stack, the device cuts it
// itself and writes the packets with finished checksums, and does so from then on without
// asking again; a packet within one segment size has its checksum finished.
func TestWriteRefused(t *testing.T) {
	data := make([]byte, 3000)
	for i := range data {
		data[i] = byte(i)
	}
	seg, hl := tcpSegment(false, data, 0x18)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: hl,
		Payload: buffer.MakeWithData(seg[vnetHdrLen+hl:])})
	defer pkt.DecRef()
	copy(pkt.TransportHeader().Push(hl-20), seg[vnetHdrLen+20:vnetHdrLen+hl])
	copy(pkt.NetworkHeader().Push(20), seg[vnetHdrLen:vnetHdrLen+20])
	pkt.GSOOptions = stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: 16, MSS: 1400, L3HdrLen: 20}
	dev := &refusingDevice{}
	v := &vnetDevice{f: dev, offload: true}
	gather := func() []byte {
		b := make([]byte, vnetHdrLen, vnetHdrLen+pkt.Size())
		for _, s := range pkt.AsSlices() {
			b = append(b, s...)
		}
		return b
	}
	for round := range 2 {
		dev.got = nil
		if err := v.write(gather(), pkt); err != nil {
			t.Fatal(err)
		}
		if dev.refused != 1 || len(dev.got) != 3 {
			t.Fatalf("round %d: %d refused, %d packets written; want 1 refusal in all and 3 packets", round, dev.refused, len(dev.got))
		}
		var out []byte
		for _, p := range dev.got {
			if !checksumsValid(p) {
				t.Fatalf("round %d: a packet with a wrong checksum", round)
			}
			out = append(out, p[hl:]...)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("round %d: the data came out changed", round)
		}
	}
	if v.segOut.Load() != 2 {
		t.Errorf("%d segments counted, want 2", v.segOut.Load())
	}
}
