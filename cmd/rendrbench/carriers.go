package main

import (
	"context"
	"fmt"
	"net"
	"runtime/debug"

	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/gvisor"
	"github.com/rendr-go/rendr/transport/quic"
	"github.com/rendr-go/rendr/transport/udpflow"
)

// quicVersion is the quic-go module version this binary was built with.
func quicVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/quic-go/quic-go" {
				return m.Version
			}
		}
	}
	return "(version unknown)"
}

// setupQUIC connects transport/quic's dialer to its listener on loopback: bare quic-go, one
// stream, with exactly the configuration rendr's QUIC paths run with.
func setupQUIC(ctx context.Context, cfg *tlsConfigs) (*stream, error) {
	ln, err := quic.Listen("127.0.0.1:0", cfg.server)
	if err != nil {
		return nil, err
	}
	d := quic.NewClient(ln.Addr().String(), cfg.client)
	snd, rcv, err := quicPair(ctx, ln, d.Dial)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("quic pair: %w", err)
	}
	return &stream{snd: snd, rcv: rcv, close: func() {
		snd.Close()
		rcv.Close()
		ln.Close()
	}}, nil
}

// setupRendrQUIC is setupRendr over one transport/quic path.
func setupRendrQUIC(ctx context.Context, k benchKeys, cfg *tlsConfigs, secure bool) (*stream, error) {
	src, err := quic.Listen("127.0.0.1:0", cfg.server)
	if err != nil {
		return nil, err
	}
	return setupRendrOver(ctx, k, src, quic.Dialer(src.Addr().String(), cfg.client), secure)
}

// setupGVisor connects transport/gvisor's dialer to its listener on loopback: two user-space
// stacks, one TCP connection, IP packets in UDP datagrams.
func setupGVisor(ctx context.Context) (*stream, error) {
	ln, err := gvisor.Listen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	snd, rcv, err := tcpPair(ctx, ln, gvisor.Dialer(ln.Addr().String()))
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &stream{snd: snd, rcv: rcv, close: func() {
		snd.Close()
		rcv.Close()
		ln.Close()
	}}, nil
}

// setupRendrGVisor is setupRendr over one transport/gvisor path.
func setupRendrGVisor(ctx context.Context, k benchKeys) (*stream, error) {
	src, err := gvisor.Listen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return setupRendrOver(ctx, k, src, gvisor.Dialer(src.Addr().String()), false)
}

// setupRendrUDPFlow is setupRendr over one transport/udpflow path; maxDatagram caps the UDP
// payload (0: none), batch turns on sendmmsg, recvmmsg, GSO and GRO.
func setupRendrUDPFlow(ctx context.Context, k benchKeys, maxDatagram int, batch bool) (*stream, error) {
	src, err := udpflow.Listen("127.0.0.1:0", udpflowOpts(maxDatagram, batch)...)
	if err != nil {
		return nil, err
	}
	return setupRendrOver(ctx, k, src, udpflow.Dialer(src.Addr().String(), udpflowOpts(maxDatagram, batch)...), false)
}

func udpflowOpts(maxDatagram int, batch bool) []udpflow.Option {
	var o []udpflow.Option
	if maxDatagram > 0 {
		o = append(o, udpflow.MaxDatagram(maxDatagram))
	}
	if !batch {
		o = append(o, udpflow.NoBatching())
	}
	return o
}

// ppsUDPFlow is a ppsCarrier over udpflow.
func ppsUDPFlow() (net.Listener, transport.DialFunc, error) {
	src, err := udpflow.Listen("127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	return src, udpflow.Dialer(src.Addr().String()), nil
}

// quicPair opens one QUIC stream with dial and accepts it from ln. The listener sees a stream
// once a byte is on it: the dialer writes one, which the receiver drops.
func quicPair(ctx context.Context, ln net.Listener, dial transport.DialFunc) (snd, rcv net.Conn, err error) {
	snd, rcv, err = tcpPair(ctx, ln, func(ctx context.Context) (net.Conn, error) {
		c, err := dial(ctx)
		if err == nil {
			if _, err = c.Write([]byte{0}); err != nil {
				c.Close()
			}
		}
		return c, err
	})
	if err == nil {
		if _, err = rcv.Read(make([]byte, 1)); err != nil {
			snd.Close()
			rcv.Close()
		}
	}
	return snd, rcv, err
}
