// Package netstack is what rendr's two gVisor user-space stacks share: the stack of the TCP
// carrier over UDP (transport/gvisor) and the stack that terminates a host's TCP behind a
// TUN (tun). The TCP options are chosen here once, for the gVisor version in go.mod.
package netstack

import (
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TCP is the TCP tuning of a stack: the send and receive buffer ranges in bytes. A receive
// buffer starts at RecvDefault and grows with what the connection carries (moderation) up to
// RecvMax, so a peer cannot make the stack hold RecvMax of out-of-order data before it has
// earned it.
type TCP struct {
	SendDefault, SendMax int
	RecvDefault, RecvMax int
}

// TuneTCP sets s's TCP options: SACK on, CUBIC congestion control, receive buffer moderation,
// and t's buffer ranges. RACK stays at the version's default (on): the version pinned in
// go.mod carries the fixes to spurious retransmissions and the window overflow that made
// others turn it off.
func TuneTCP(s *stack.Stack, t TCP) error {
	sack := tcpip.TCPSACKEnabled(true)
	cc := tcpip.CongestionControlOption("cubic")
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	for _, opt := range []tcpip.SettableTransportProtocolOption{&sack, &cc, &moderate,
		&tcpip.TCPSendBufferSizeRangeOption{Min: 4096, Default: t.SendDefault, Max: t.SendMax},
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: t.RecvDefault, Max: t.RecvMax},
	} {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			return fmt.Errorf("TCP option %T: %v", opt, err)
		}
	}
	return nil
}
