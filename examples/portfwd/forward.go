package main

// The forwarding side: a local TCP port whose every connection is a rendr flow. The flow
// carries the connection's L3 identity (the local client's address, and the forwarded port's
// address it connected to); the serving side's Egress sends it on to its target instead, as a
// destination NAT would.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/examples/internal/excli"
	"github.com/rendr-go/rendr/l3"
)

type forwarder struct {
	d   *rendr.Dialer
	ln  net.Listener
	log *slog.Logger
}

// newForwarder reads the forwarding side's flags and opens its listener.
func newForwarder(args []string, stderr io.Writer, h host) (*forwarder, error) {
	fs := flag.NewFlagSet("forward", flag.ContinueOnError)
	fs.SetOutput(stderr)
	side := excli.DialFlags(fs, "portfwd", "serving side")
	listen := fs.String("listen", "", "the forwarded port's local address, as 127.0.0.1:8080")
	if err := fs.Parse(args); err != nil {
		return nil, excli.ErrUsage
	}
	if *listen == "" {
		return nil, errors.New("-listen is required: the local address to forward, as 127.0.0.1:8080")
	}
	f := &forwarder{}
	var err error
	if f.d, f.log, err = side.Dialer(stderr, h.dialCarrier); err != nil {
		return nil, err
	}
	if f.ln, err = h.listen(*listen); err != nil {
		f.d.Close()
		return nil, fmt.Errorf("-listen: %w", err)
	}
	return f, nil
}

// serve accepts local connections until ctx ends, then closes every connection and flow.
func (f *forwarder) serve(ctx context.Context) error {
	f.log.Info("portfwd forward: listening", "addr", f.ln.Addr())
	return excli.Serve(ctx, f.ln, func(c net.Conn) { f.handle(ctx, c) }, func() { f.d.Close() })
}

// handle carries one local connection.
func (f *forwarder) handle(ctx context.Context, conn net.Conn) {
	id, err := identity(conn)
	if err != nil {
		f.log.Warn("portfwd forward: a connection without a TCP identity", "err", err)
		conn.Close()
		return
	}
	// The first flow waits for a path; a serving side that cannot be reached at all leaves
	// the local client waiting no longer than this.
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	fl, err := f.d.DialIdentity(dctx, id)
	cancel()
	if err != nil {
		f.log.Warn("portfwd forward: no flow", "client", id.Src, "err", err)
		resetConn(conn)
		return
	}
	f.log.Debug("portfwd forward: connection", "client", id.Src, "flow", fl.FlowID())
	if err := excli.Splice(conn, fl); err != nil {
		f.log.Debug("portfwd forward: connection ended", "client", id.Src, "err", err)
	}
}

// identity is the local connection as the host saw it: the client's address to the forwarded
// port's. An IPv4 client of a dual-stack listener shows as an IPv4-mapped address, which an
// identity spells as IPv4.
func identity(c net.Conn) (l3.Identity, error) {
	src, ok1 := c.RemoteAddr().(*net.TCPAddr)
	dst, ok2 := c.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return l3.Identity{}, fmt.Errorf("not a TCP connection: %v to %v", c.RemoteAddr(), c.LocalAddr())
	}
	norm := func(a *net.TCPAddr) netip.AddrPort {
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
	}
	id := l3.Identity{Proto: l3.TCP, Src: norm(src), Dst: norm(dst)}
	return id, id.Valid()
}

// resetConn closes c with an RST, as a refused connection would be.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
