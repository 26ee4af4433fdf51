package tun

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// openVnet returns dev's file for reading and writing with virtio-net headers, when dev is a
// Linux TUN opened with them; nil otherwise. With offload it asks the kernel for TCP
// segments and unfinished checksums (TUN_F_CSUM|TSO4|TSO6, never UDP segments), then for
// unfinished checksums alone if the kernel refuses, and goes on without either if it refuses
// both; without, it turns every offload off, so the kernel sends whole, checked packets.
func openVnet(dev wgtun.Device, offload bool) (*vnetDevice, error) {
	fd, ok := dev.(interface{ File() *os.File })
	if !ok {
		return nil, nil
	}
	f := fd.File()
	if f == nil {
		return nil, nil // a device of the embedder's that has no file (wireguard's tuntest)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, nil
	}
	v := &vnetDevice{f: f}
	var ioErr error
	err = rc.Control(func(fd uintptr) {
		ifr, err := unix.NewIfreq("")
		if err != nil {
			ioErr = err
			return
		}
		if err := unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr); err != nil {
			ioErr = fmt.Errorf("TUNGETIFF: %w", err)
			return
		}
		if ifr.Uint16()&unix.IFF_VNET_HDR == 0 {
			v = nil
			return
		}
		// Each offload is asked for on its own terms: segments need unfinished checksums,
		// so a kernel that refuses segments may still take those.
		for _, flags := range []int{unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6, unix.TUN_F_CSUM} {
			if offload && unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, flags) == nil {
				v.offload = true
				return
			}
		}
		if err := unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, 0); err != nil {
			ioErr = fmt.Errorf("TUNSETOFFLOAD: %w", err)
		}
	})
	if err == nil {
		err = ioErr
	}
	if err != nil {
		return nil, fmt.Errorf("rendr/tun: the device's offloads: %w", err)
	}
	return v, nil
}
