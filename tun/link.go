package tun

// The link between the device and the stack: batched reads into the stack, batched writes of
// what it sends.

import (
	"errors"
	"os"
	"sync/atomic"

	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

const (
	// offset is the room left in front of each packet buffer: the device writes its virtio
	// header there when it coalesces packets (wireguard's tun needs at least 10 bytes).
	offset = 16
	// maxPacket is the largest packet a read or write carries: a coalesced TCP segment.
	maxPacket = 65535
	// queueLen is the stack's queue of packets to the device.
	queueLen = 1024
)

// routineRead reads packets from the device and hands each to the stack: a 64 KiB segment at a
// time from a Linux TUN with its offloads (vnet.go), else a batch at a time. Its buffers (one
// of 64 KiB, or BatchSize of them) are its whole memory.
func (in *Ingress) routineRead() {
	defer in.leave()
	var err error
	if in.vnet != nil {
		err = in.vnet.readLoop(in.inject, &in.stats.dropped)
	} else {
		err = readBatches(in.dev, in.inject, &in.stats.dropped)
	}
	if in.ctx.Err() == nil && !errors.Is(err, os.ErrClosed) {
		in.log.Debug("rendr/tun: device read", "err", err)
	}
}

// readBatches reads packets from dev, a batch at a time, and hands each to take (which must
// copy what it keeps), until a read fails; a segment that splits into more packets than a
// batch holds is counted in dropped and read past.
func readBatches(dev wgtun.Device, take func([]byte), dropped *atomic.Uint64) error {
	n := dev.BatchSize()
	bufs := make([][]byte, n)
	sizes := make([]int, n)
	for i := range bufs {
		bufs[i] = make([]byte, offset+maxPacket)
	}
	for {
		got, err := dev.Read(bufs, sizes, offset)
		for i := range got {
			take(bufs[i][offset : offset+sizes[i]])
		}
		if errors.Is(err, wgtun.ErrTooManySegments) {
			dropped.Add(1)
		} else if err != nil {
			return err
		}
	}
}

// inject hands one IP packet to the stack, which copies it.
func (in *Ingress) inject(p []byte) {
	var proto tcpip.NetworkProtocolNumber
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		proto = ipv4.ProtocolNumber
	case len(p) >= 40 && p[0]>>4 == 6:
		proto = ipv6.ProtocolNumber
	default:
		in.stats.dropped.Add(1)
		return
	}
	in.stats.in.Add(1)
	if isRaw(p) {
		in.sendRaw(p)
		return
	}
	in.noteSYN(p)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
	in.ep.InjectInbound(proto, pkt)
	pkt.DecRef()
}

// routineWrite writes what the stack sends to the device: each packet (a segment of up to
// 64 KiB) with its virtio-net header on a Linux TUN with its offloads, else as many packets a
// write as are queued (up to the device's batch), which the device may coalesce.
func (in *Ingress) routineWrite() {
	defer in.leave()
	if in.vnet != nil {
		in.writeVnet()
		return
	}
	n := in.dev.BatchSize()
	backing := make([][]byte, n)
	for i := range backing {
		backing[i] = make([]byte, offset, offset+maxPacket)
	}
	bufs := make([][]byte, 0, n)
	for {
		pkt := in.ep.ReadContext(in.ctx)
		if pkt == nil {
			return
		}
		bufs = bufs[:0]
		for pkt != nil {
			b := backing[len(bufs)][:offset]
			for _, s := range pkt.AsSlices() {
				b = append(b, s...)
			}
			pkt.DecRef()
			bufs = append(bufs, b)
			if len(bufs) == n {
				break
			}
			pkt = in.ep.Read()
		}
		if _, err := in.dev.Write(bufs, offset); err != nil {
			in.stats.dropped.Add(uint64(len(bufs)))
			if in.ctx.Err() != nil {
				return
			}
			in.log.Debug("rendr/tun: device write", "err", err)
			continue
		}
		in.stats.out.Add(uint64(len(bufs)))
	}
}

// writeVnet is routineWrite on a device read and written with virtio-net headers.
func (in *Ingress) writeVnet() {
	buf := make([]byte, vnetHdrLen, vnetHdrLen+maxPacket)
	for {
		pkt := in.ep.ReadContext(in.ctx)
		if pkt == nil {
			return
		}
		b := buf[:vnetHdrLen]
		for _, s := range pkt.AsSlices() {
			b = append(b, s...)
		}
		err := in.vnet.write(b, pkt)
		pkt.DecRef()
		if err != nil {
			in.stats.dropped.Add(1)
			if in.ctx.Err() != nil {
				return
			}
			in.log.Debug("rendr/tun: device write", "err", err)
			continue
		}
		in.stats.out.Add(1)
	}
}

// gsoLink is the stack's link to a device that takes TCP segments of up to gsoMaxSize (the
// channel endpoint says 32 KiB).
type gsoLink struct{ *channel.Endpoint }

func (gsoLink) GSOMaxSize() uint32 { return gsoMaxSize }
