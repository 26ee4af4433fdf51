package netlab

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// ctMsgDelete is IPCTNL_MSG_CT_DELETE of ctnetlink (linux/netfilter/nfnetlink_conntrack.h):
// with no tuple attribute it deletes every entry, as `conntrack -F` does.
const ctMsgDelete = 2

func flushConntrack() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("netlab: ctnetlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlab: ctnetlink bind: %w", err)
	}
	// struct nlmsghdr (16 bytes), then struct nfgenmsg: family, version, resource id (big
	// endian).
	const seq = 1
	msg := make([]byte, unix.NLMSG_HDRLEN+4)
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], unix.NFNL_SUBSYS_CTNETLINK<<8|ctMsgDelete)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(msg[8:], seq)
	msg[16], msg[17] = unix.AF_INET, unix.NFNETLINK_V0
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlab: ctnetlink send: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlab: ctnetlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("netlab: ctnetlink answer: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return fmt.Errorf("netlab: ctnetlink answer of %d bytes", len(m.Data))
			}
			if code := int32(ne.Uint32(m.Data)); code != 0 {
				return fmt.Errorf("netlab: conntrack flush: %w", unix.Errno(-code))
			}
			return nil
		}
	}
}
