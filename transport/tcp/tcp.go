// Package tcp is rendr's kernel TCP carrier: dialers and listeners with socket options tuned
// for failover.
//
// TCP_NOTSENT_LOWAT keeps the kernel from queueing more than a little unsent data per socket.
// Without it Linux grows a socket's send buffer to megabytes; a dying path would then hold
// seconds of data in the kernel, acknowledgements would lag by that much, and rendr could not
// tell a stalled path from a full one. With it, unsent bytes wait in rendr, where they can
// move to another path.
//
// Sockets also pace: Linux's TCP, under CUBIC or Reno, sends each window in bursts at the
// speed of the first link, and a shallow queue further on (a few milliseconds of buffer on a
// slow uplink) drops the end of every burst. A path carrying a share of a Bond has few
// packets in flight, so such a loss is often not followed by enough packets to trigger a fast
// retransmit, and it ends in a retransmission timeout: on a 20 Mbit/s, 80 ms link with a
// 10 ms queue, plain TCP moved 4.5-11 Mbit/s and paced TCP 17-18. Pacing spreads each window
// over the round trip at the rate the congestion control computes (SO_MAX_PACING_RATE set to
// no real limit turns the kernel's own pacing on; BBR paces anyway). NoPacing turns it off.
package tcp

import (
	"context"
	"net"
	"syscall"
	"time"

	"github.com/rendr-go/rendr/transport"
)

// DefaultNotSentLowat is the unsent-bytes limit set on every socket (Linux only).
const DefaultNotSentLowat = 128 << 10

// Option configures a dialer or listener.
type Option func(*options)

type options struct {
	local     net.Addr
	lowat     int
	noPace    bool
	keepAlive time.Duration
	dialer    *net.Dialer
}

// LocalAddr binds the dialing socket to a local address (an interface's address, to pin a
// path to one uplink). Port 0 picks any.
func LocalAddr(ip string) Option {
	return func(o *options) {
		if a, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(ip, "0")); err == nil {
			o.local = a
		}
	}
}

// NotSentLowat sets TCP_NOTSENT_LOWAT in bytes; 0 leaves the kernel default.
func NotSentLowat(n int) Option { return func(o *options) { o.lowat = n } }

// Control gives a socket the embedder makes itself (in another network namespace, say) the
// options this package's dialers and listeners set: TCP_NOTSENT_LOWAT at DefaultNotSentLowat
// and pacing, on Linux. Use it as a net.Dialer's or net.ListenConfig's Control, and on each
// accepted connection (through its SyscallConn), which does not keep all of a listening
// socket's options.
func Control(_, _ string, c syscall.RawConn) error { return tune(c, DefaultNotSentLowat, true) }

// NoPacing leaves the kernel's TCP pacing off (Linux only; see the package comment).
func NoPacing() Option { return func(o *options) { o.noPace = true } }

// WithDialer uses d (its Control, LocalAddr, MPTCP setting...) as the base dialer.
func WithDialer(d *net.Dialer) Option { return func(o *options) { o.dialer = d } }

func build(opts []Option) options {
	o := options{lowat: DefaultNotSentLowat, keepAlive: -1}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// Dialer returns a path dialer for address ("host:port").
func Dialer(address string, opts ...Option) transport.DialFunc {
	o := build(opts)
	d := net.Dialer{}
	if o.dialer != nil {
		d = *o.dialer
	}
	if o.local != nil {
		d.LocalAddr = o.local
	}
	// rendr probes paths itself, far faster than TCP keepalive.
	d.KeepAlive = o.keepAlive
	ctl := d.Control
	d.Control = func(network, address string, c syscall.RawConn) error {
		if ctl != nil {
			if err := ctl(network, address, c); err != nil {
				return err
			}
		}
		return tune(c, o.lowat, !o.noPace)
	}
	return func(ctx context.Context) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", address)
		if err != nil {
			return nil, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		return c, nil
	}
}

// Listen listens on address with the same socket tuning as Dialer. Its socket is plain TCP,
// not MPTCP (which Go picks by default for listeners where the kernel has it): a rendr path
// is one TCP connection, rendr spreads traffic over paths itself, and a plain listening socket
// takes the socket filter RefuseSource puts on it.
func Listen(address string, opts ...Option) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	return ListenConfig(context.Background(), &lc, address, opts...)
}

// ListenConfig listens with the caller's ListenConfig (for Control hooks, MPTCP, a network
// namespace's socket...) plus rendr's tuning.
func ListenConfig(ctx context.Context, lc *net.ListenConfig, address string, opts ...Option) (net.Listener, error) {
	o := build(opts)
	c := *lc
	c.KeepAlive = o.keepAlive
	ctl := c.Control
	c.Control = func(network, address string, rc syscall.RawConn) error {
		if ctl != nil {
			if err := ctl(network, address, rc); err != nil {
				return err
			}
		}
		return tune(rc, o.lowat, !o.noPace)
	}
	l, err := c.Listen(ctx, "tcp", address)
	if err != nil {
		return nil, err
	}
	return &listener{Listener: l, lowat: o.lowat, pace: !o.noPace}, nil
}
