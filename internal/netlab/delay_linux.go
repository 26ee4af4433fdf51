package netlab

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openTUN creates the TUN device name in the namespace of the calling thread (run it through
// within) and returns its descriptor. IFF_NO_PI makes each read and write exactly one IP
// packet; without IFF_VNET_HDR the device offers no offloads, so the kernel segments large
// packets before they reach it and none exceeds its MTU. The descriptor is non-blocking so
// that the runtime's poller serves it and Close wakes a pending Read. Closing it removes the
// device.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("netlab: open /dev/net/tun (is the tun module loaded?): %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlab: TUN name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlab: create TUN %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tun "+name), nil
}
