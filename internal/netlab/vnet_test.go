package netlab

import (
	"encoding/binary"
	"testing"
)

// vnetFrame builds what a TUN device with offloads hands over: a virtio header, an IPv4
// header of 20 bytes and a transport header of l4Len bytes, then payload bytes.
func vnetFrame(gsoType uint8, gsoSize, l4Len, payload int, needsCsum bool) []byte {
	f := make([]byte, vnetHdrLen+20+l4Len+payload)
	if needsCsum {
		f[0] = vnetNeedsCsum
		binary.NativeEndian.PutUint16(f[6:], 20)
		binary.NativeEndian.PutUint16(f[8:], 16)
	}
	f[1] = gsoType
	// hdr_len as the kernel fills it in on the forwarding path: the whole linear part.
	binary.NativeEndian.PutUint16(f[2:], uint16(min(len(f)-vnetHdrLen, 1500)))
	binary.NativeEndian.PutUint16(f[4:], uint16(gsoSize))
	ip := f[vnetHdrLen:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	if gsoType&^vnetGSOECN == vnetGSOTCPv4 || gsoType == vnetGSONone && l4Len >= 20 {
		ip[9] = 6
		ip[20+12] = byte(l4Len/4) << 4
	} else {
		ip[9] = 17
	}
	return f
}

func TestWireSize(t *testing.T) {
	for _, tc := range []struct {
		name          string
		frame         []byte
		vnet          bool
		packets, size int
	}{
		{"no header", make([]byte, 1500), false, 1, 1500},
		{"single packet", vnetFrame(vnetGSONone, 0, 20, 1460, false), true, 1, 1500},
		{"partial checksum", vnetFrame(vnetGSONone, 0, 20, 100, true), true, 1, 140},
		// 44 full segments of 1448 bytes behind 52 bytes of headers each.
		{"TSO", vnetFrame(vnetGSOTCPv4, 1448, 32, 44*1448, true), true, 44, 44 * 1500},
		{"TSO with ECN", vnetFrame(vnetGSOTCPv4|vnetGSOECN, 1448, 32, 44*1448, true), true, 44, 44 * 1500},
		// The last segment is short.
		{"TSO short tail", vnetFrame(vnetGSOTCPv4, 1448, 32, 3*1448+100, true), true, 4, 3*1448 + 100 + 4*52},
		// Without csum_start, the IP header says where TCP starts.
		{"TSO from IHL", vnetFrame(vnetGSOTCPv4, 1448, 32, 2*1448, false), true, 2, 2 * 1500},
		{"USO", vnetFrame(vnetGSOUDPL4, 1200, 8, 10*1200, true), true, 10, 10 * 1228},
		{"USO short tail", vnetFrame(vnetGSOUDPL4, 1200, 8, 9*1200+1, true), true, 10, 9*1200 + 1 + 10*28},
		// Nonsense counts as one packet of the frame's size.
		{"no gso_size", vnetFrame(vnetGSOTCPv4, 0, 32, 5000, true), true, 1, 5052},
		{"unknown type", vnetFrame(42, 1448, 32, 5000, true), true, 1, 5052},
		{"headers only", vnetFrame(vnetGSOTCPv4, 1448, 32, 0, true), true, 1, 52},
		{"short frame", make([]byte, 4), true, 1, 4},
	} {
		packets, size := wireSize(tc.frame, tc.vnet)
		if packets != tc.packets || size != tc.size {
			t.Errorf("%s: %d packets, %d bytes; want %d, %d", tc.name, packets, size, tc.packets, tc.size)
		}
	}
}

func TestOffloadChoice(t *testing.T) {
	for _, tc := range []struct {
		cfg  DelayConfig
		want Offload
	}{
		{DelayConfig{Delay: 1}, OffloadTCPUDP},
		{DelayConfig{RateBits: 1_000_000_000}, OffloadTCPUDP},
		{DelayConfig{RateBits: 600_000_000}, OffloadTCPUDP},
		// 64 KiB take more than a millisecond below 524.288 Mbit/s.
		{DelayConfig{RateBits: 524_288_000}, OffloadTCPUDP},
		{DelayConfig{RateBits: 524_287_999}, OffloadNone},
		{DelayConfig{RateBits: 100_000_000}, OffloadNone},
		{DelayConfig{LossPercent: 0.1}, OffloadNone},
		{DelayConfig{RateBits: 1_000_000_000, LossPercent: 1}, OffloadNone},
		{DelayConfig{Delay: 1, DisableOffload: true}, OffloadNone},
	} {
		if got := tc.cfg.offload(); got != tc.want {
			t.Errorf("%+v: offload %v, want %v", tc.cfg, got, tc.want)
		}
	}
}
