// Attach stage: what a carrier's handshake settles between the two ends, and the path made
// from it. The dialing side asks (the hello's flags), the listening side answers (the
// reply's), each from what its carrier can do: records in the clear on a carrier both ends
// declare secure, datagrams beside the stream, or a carrier of packets rather than a stream.
// Both ends then make the link's path the same way from the handshake's result.

package rendr

import (
	"errors"
	"fmt"
	"net"

	"github.com/rendr-go/rendr/internal/handshake"
	"github.com/rendr-go/rendr/internal/path"
	"github.com/rendr-go/rendr/transport"
)

// carrierCaps is what a carrier can do beside carrying a stream of bytes.
type carrierCaps struct {
	datagrams bool                        // transport.Datagrammer: datagrams beside the stream
	packets   bool                        // transport.PacketCarrier: packets, not a stream
	ext       transport.HandshakeExtender // data of its own in the handshake; nil if none
}

func capsOf(c net.Conn) carrierCaps {
	_, dg := c.(transport.Datagrammer)
	_, pk := c.(transport.PacketCarrier)
	ext, _ := c.(transport.HandshakeExtender)
	return carrierCaps{datagrams: dg, packets: pk, ext: ext}
}

// helloFlags is what the dialing side asks for: plain records if its path is declared
// secure (SecureCarrier), and what its carrier can do.
func (k carrierCaps) helloFlags(secure bool) uint8 {
	var f uint8
	if secure {
		f |= handshake.FlagPlain
	}
	if k.datagrams {
		f |= handshake.FlagDatagrams
	}
	if k.packets {
		f |= handshake.FlagPackets
	}
	return f
}

// replyFlags is the listening side's answer to a hello's flags: datagrams if both carriers
// take them, packets if its carrier is one, plain records if the hello asks and the source is
// declared secure (SecureSource). ok is false when the two ends cannot agree: a stream at one
// end and packets at the other, or plain records asked of a source not declared secure.
func (k carrierCaps) replyFlags(hello uint8, secureSource bool) (flags uint8, ok bool) {
	if k.datagrams && hello&handshake.FlagDatagrams != 0 {
		flags |= handshake.FlagDatagrams
	}
	if k.packets {
		flags |= handshake.FlagPackets
	}
	if k.packets != (hello&handshake.FlagPackets != 0) {
		return flags, false
	}
	if hello&handshake.FlagPlain != 0 {
		if !secureSource {
			return flags, false
		}
		flags |= handshake.FlagPlain
	}
	return flags, true
}

// checkReply is the dialing side's check of the listening side's answer to what it asked:
// plain records exactly when asked, datagrams only when asked, packets at both ends or at
// neither.
func checkReply(asked, got uint8) error {
	switch {
	case asked&handshake.FlagPlain != 0 && got&handshake.FlagPlain == 0:
		return errors.New("rendr: listener does not treat this carrier as secure (SecureSource)")
	case asked&handshake.FlagPlain == 0 && got&handshake.FlagPlain != 0:
		// Never drop encryption we did not ask to drop.
		return errors.New("rendr: listener offered plain records that were not requested")
	case asked&handshake.FlagDatagrams == 0 && got&handshake.FlagDatagrams != 0:
		return errors.New("rendr: listener offered datagram records that were not requested")
	case asked&handshake.FlagPackets != got&handshake.FlagPackets:
		return errors.New("rendr: one end's carrier moves datagrams and the other's a stream")
	}
	return nil
}

// checkExtra bounds what a carrier gives to the handshake.
func checkExtra(c net.Conn, extra []byte) error {
	if len(extra) > transport.MaxHandshakeExtra {
		return fmt.Errorf("rendr: carrier %T gave %d bytes for the handshake, more than %d", c, len(extra), transport.MaxHandshakeExtra)
	}
	return nil
}

// openPath makes the link's path over c from the handshake's result: records sealed with the
// handshake's keys unless both ends agreed on plain ones, datagrams if both agreed. A path on
// the listening side is unvalidated until the dialer's first packet proves its address.
func (l *link) openPath(c net.Conn, res *handshake.Result, base path.Config, listening bool) {
	send, recv := res.Send, res.Recv
	if res.Reply.Flags&handshake.FlagPlain != 0 {
		send, recv = nil, nil
	}
	pc := base
	pc.Name, pc.Tier, pc.Hold = l.name, l.tier, l.s.hold
	pc.Datagrams = res.Reply.Flags&handshake.FlagDatagrams != 0
	pc.Unvalidated = listening
	l.setPath(path.New(l.id, c, send, recv, pc, l))
}
