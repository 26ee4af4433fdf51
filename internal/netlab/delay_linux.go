package netlab

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// TUN offload flags the node asks for: checksums are left to the kernel (TSO needs that),
// TCP super-packets over IPv4 and IPv6, with CWR (TSO_ECN), so that a packet carrying it is
// not segmented before the node sees it, and UDP super-packets (USO) where the kernel has them.
const (
	tunTCPOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | unix.TUN_F_TSO_ECN
	tunUDPOffloads = unix.TUN_F_USO4 | unix.TUN_F_USO6
)

// openTUN creates the TUN device name in the namespace of the calling thread (run it through
// within). IFF_NO_PI makes each read and write exactly one frame. With want above
// OffloadNone it asks for a virtio header before each frame and for the offloads of want;
// the device gets what the kernel grants, down to none, in which case it is made again
// without the header: one packet per read, none larger than its MTU, as the kernel segments
// everything before the device. The descriptor is non-blocking so that the runtime's poller
// serves it and Close wakes a pending Read. Closing it removes the device.
func openTUN(name string, want Offload) (tunDev, error) {
	if want != OffloadNone {
		fd, err := createTUN(name, unix.IFF_VNET_HDR)
		if err == nil {
			got := OffloadNone
			if want >= OffloadTCPUDP && unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunTCPOffloads|tunUDPOffloads) == nil {
				got = OffloadTCPUDP
			} else if unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunTCPOffloads) == nil {
				got = OffloadTCP
			}
			if got != OffloadNone {
				return tunDev{os.NewFile(uintptr(fd), "tun "+name), got}, nil
			}
			// Closing the descriptor removes the device, so the name is free again.
			unix.Close(fd)
		}
	}
	fd, err := createTUN(name, 0)
	if err != nil {
		return tunDev{}, err
	}
	return tunDev{os.NewFile(uintptr(fd), "tun "+name), OffloadNone}, nil
}

// createTUN opens /dev/net/tun and makes it the TUN device name, with flags added to
// IFF_TUN|IFF_NO_PI.
func createTUN(name string, flags uint16) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, fmt.Errorf("netlab: open /dev/net/tun (is the tun module loaded?): %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("netlab: TUN name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("netlab: create TUN %s: %w", name, err)
	}
	return fd, nil
}
