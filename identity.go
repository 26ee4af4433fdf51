// Flows that stand for an IP connection: the L3 identity a flow carries from the dialing side
// to the listening side (docs/wire.md 8.12).

package rendr

import (
	"context"
	"fmt"

	"github.com/rendr-go/rendr/internal/flow"
	"github.com/rendr-go/rendr/l3"
)

// DialIdentity opens a stream flow that stands for the IP connection id (a TCP connection a TUN
// ingress took, say): the listening side reads id from the accepted Conn's Identity and
// decides where the flow goes. The identity rides the flow's OPEN, again after every path
// change until the listener has it, so no migration loses it; the listener hands the flow to
// its application only with it. A listener that does not take identities
// (ListenConfig.AcceptIdentities) turns the flow down: Read and Write return ErrRejected.
func (d *Dialer) DialIdentity(ctx context.Context, id l3.Identity) (*Conn, error) {
	meta, err := identityMeta(id, "DialIdentity")
	if err != nil {
		return nil, err
	}
	s, st, err := d.open(ctx, func(e *flow.Engine) (*flow.Stream, error) { return e.OpenMeta(false, meta) })
	if err != nil {
		return nil, err
	}
	return newConn(s, st), nil
}

// DialPacketIdentity opens a packet flow that stands for the IP connection id (a UDP flow a
// TUN ingress took, say), as DialIdentity does a stream flow.
func (d *Dialer) DialPacketIdentity(ctx context.Context, id l3.Identity) (*PacketConn, error) {
	meta, err := identityMeta(id, "DialPacketIdentity")
	if err != nil {
		return nil, err
	}
	s, st, err := d.open(ctx, func(e *flow.Engine) (*flow.Stream, error) { return e.OpenMeta(true, meta) })
	if err != nil {
		return nil, err
	}
	return newPacketConn(s, st), nil
}

// identityMeta is id's encoding for a flow's OPEN, or an error that says what to do.
func identityMeta(id l3.Identity, call string) ([]byte, error) {
	if id.IsZero() {
		return nil, fmt.Errorf("rendr: %s with the zero l3.Identity: use DialContext or DialPacket for a flow without one", call)
	}
	meta, err := id.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("rendr: %s: %w", call, err)
	}
	return meta, nil
}

// checkIdentity is a listener's flow.Config.CheckMeta when it takes identities: the metadata
// must be an identity in its canonical encoding.
func checkIdentity(meta []byte) error {
	var id l3.Identity
	return id.UnmarshalBinary(meta)
}

// identityOf is the identity a flow carries (the zero Identity when none, or when its
// metadata is not one, which a listener never hands over).
func identityOf(st *flow.Stream) l3.Identity {
	var id l3.Identity
	if m := st.Meta(); m != nil && id.UnmarshalBinary(m) != nil {
		return l3.Identity{}
	}
	return id
}

// Identity is the IP connection the flow stands for (DialIdentity), on both sides; the zero
// Identity when it stands for none.
func (c *flowEnd) Identity() l3.Identity { return c.id }

// WaitAccepted waits until the listening side has taken the flow, and returns nil: queued it
// for its Accept, or, when the listener carries flows with an identity on (ListenConfig.Egress),
// made the connection it goes on by. When the flow was turned down instead it returns why:
// ErrRejected, ErrDestRefused, ErrDestUnreachable or ErrDestTimeout (each an ErrRejected),
// ErrReset when the accept backlog was full; or ctx's error. A TUN ingress completes its
// application's TCP handshake only after it returns nil. The flow needs no call to it: bytes
// written before are sent at once, and delivered once the flow is taken.
func (c *flowEnd) WaitAccepted(ctx context.Context) error { return c.st.WaitOpen(ctx) }
