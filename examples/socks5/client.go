package main

// The client half: a SOCKS5 server whose every CONNECT is a rendr flow with the destination as
// its L3 identity; the far side's egress makes the connection, and the SOCKS reply says how
// that went.

import (
	"bufio"
	"context"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/examples/internal/excli"
	"github.com/rendr-go/rendr/l3"
)

const (
	// handshakeTimeout bounds the SOCKS negotiation and request, so a client that connects and
	// sends nothing holds nothing for long.
	handshakeTimeout = 10 * time.Second
	// connectTimeout bounds a connect: the server bounds its own attempt (its listener's
	// EgressTimeout, 30 s), and this catches a server that cannot be reached at all.
	connectTimeout = 40 * time.Second
	// resolveTimeout bounds a lookup at the server.
	resolveTimeout = 15 * time.Second
)

type client struct {
	d     *rendr.Dialer
	ln    net.Listener
	users map[string]string // username/password required when not nil
	log   *slog.Logger
}

// newClient reads the client's flags and opens its SOCKS listener.
func newClient(args []string, stderr io.Writer, h host) (*client, error) {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	side := excli.DialFlags(fs, "socks5", "server")
	listen := fs.String("listen", "127.0.0.1:1080", "the SOCKS5 listener's address")
	authFile := fs.String("auth", "", "file of user:password lines; without it no authentication is asked")
	if err := fs.Parse(args); err != nil {
		return nil, excli.ErrUsage
	}
	c := &client{}
	var err error
	if *authFile != "" {
		if c.users, err = readUsers(*authFile); err != nil {
			return nil, err
		}
	}
	if c.d, c.log, err = side.Dialer(stderr, h.dialCarrier); err != nil {
		return nil, err
	}
	if c.ln, err = h.listen(*listen); err != nil {
		c.d.Close()
		return nil, fmt.Errorf("-listen: %w", err)
	}
	return c, nil
}

// readUsers reads user:password lines.
func readUsers(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-auth: %w", err)
	}
	defer f.Close()
	users := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		u, p, ok := strings.Cut(line, ":")
		if !ok || u == "" || len(u) > 255 || len(p) > 255 {
			return nil, fmt.Errorf("-auth %s: each line is user:password, each of 1 to 255 bytes", path)
		}
		users[u] = p
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("-auth %s: %w", path, err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("-auth %s: no user:password line", path)
	}
	return users, nil
}

// serve accepts SOCKS connections until ctx ends, then closes every connection and flow.
func (c *client) serve(ctx context.Context) error {
	c.log.Info("socks5 client: listening", "addr", c.ln.Addr())
	return excli.Serve(ctx, c.ln, func(conn net.Conn) { c.handle(ctx, conn) }, func() { c.d.Close() })
}

// handle serves one SOCKS connection.
func (c *client) handle(ctx context.Context, conn net.Conn) {
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	req, err := c.negotiate(conn)
	if err != nil {
		c.log.Debug("socks5: negotiation", "client", conn.RemoteAddr(), "err", err)
		conn.Close()
		return
	}
	conn.SetDeadline(time.Time{})
	f, err := c.connect(ctx, req, conn.RemoteAddr())
	code := replyCode(err)
	// The server's egress does not tell where its socket is bound; clients use BND only for
	// BIND, which this proxy does not serve.
	if _, werr := conn.Write(appendReply(nil, code, netip.AddrPort{})); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		c.log.Debug("socks5: connect", "client", conn.RemoteAddr(), "dest", req, "reply", code, "err", err)
		if f != nil {
			f.Reset()
		}
		conn.Close()
		return
	}
	c.log.Debug("socks5: connected", "client", conn.RemoteAddr(), "dest", req, "flow", f.FlowID())
	if err := excli.Splice(conn, f); err != nil {
		c.log.Debug("socks5: connection ended", "client", conn.RemoteAddr(), "dest", req, "err", err)
	}
}

// negotiate runs the method negotiation, authentication when required, and reads a CONNECT
// request. A request it turns down is answered here.
func (c *client) negotiate(conn net.Conn) (request, error) {
	methods, err := readGreeting(conn)
	if err != nil {
		return request{}, err
	}
	m := chooseMethod(methods, c.users != nil)
	if _, err := conn.Write([]byte{socksVersion, m}); err != nil {
		return request{}, err
	}
	if m == methodNoneOK {
		return request{}, errors.New("socks5: the client offers no acceptable method")
	}
	if m == methodUserPass {
		u, p, err := readUserPass(conn)
		if err != nil {
			return request{}, err
		}
		ok := c.checkUser(u, p)
		status := byte(1)
		if ok {
			status = 0
		}
		if _, err := conn.Write([]byte{userPassVersion, status}); err != nil {
			return request{}, err
		}
		if !ok {
			return request{}, fmt.Errorf("socks5: wrong password for user %q", u)
		}
	}
	req, err := readRequest(conn)
	var re *replyError
	if errors.As(err, &re) {
		conn.Write(appendReply(nil, re.code, netip.AddrPort{}))
		return request{}, err
	}
	if err != nil {
		return request{}, err
	}
	if req.cmd != cmdConnect {
		conn.Write(appendReply(nil, repCommandUnsupported, netip.AddrPort{}))
		return request{}, fmt.Errorf("socks5: command %d: only CONNECT is served", req.cmd)
	}
	return req, nil
}

// checkUser compares in constant time, so the time taken does not tell how much of a
// password was right.
func (c *client) checkUser(user, pass string) bool {
	want, ok := c.users[user]
	if !ok {
		want = pass // an unknown user takes as long as a known one
	}
	return subtle.ConstantTimeCompare([]byte(want), []byte(pass)) == 1 && ok
}

// connect opens the flow for req and waits until the server's egress has the connection made:
// to the address, or to each of the name's addresses in turn (resolved at the server) until
// one answers. from is the SOCKS client's address, the connection's source.
func (c *client) connect(ctx context.Context, req request, from net.Addr) (*rendr.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	addrs := []netip.Addr{req.addr}
	if req.name != "" {
		var err error
		if addrs, err = c.resolve(ctx, req.name); err != nil {
			return nil, err
		}
	}
	var last error
	for _, a := range addrs {
		dst := netip.AddrPortFrom(a.Unmap(), req.port)
		id := l3.Identity{Proto: l3.TCP, Src: source(from, dst.Addr()), Dst: dst}
		f, err := c.d.DialIdentity(ctx, id)
		if err != nil {
			return nil, err
		}
		if err = f.WaitAccepted(ctx); err == nil {
			return f, nil
		}
		f.Close()
		last = err
		if !errors.Is(err, rendr.ErrDestRefused) && !errors.Is(err, rendr.ErrDestUnreachable) &&
			!errors.Is(err, rendr.ErrDestTimeout) {
			break // the server said no, or the tunnel failed: another address fares no better
		}
	}
	return nil, last
}

// resolve asks the server for name's addresses (resolve.go).
func (c *client) resolve(ctx context.Context, name string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	f, err := c.d.DialContext(ctx)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	stop := context.AfterFunc(ctx, func() { f.Reset() })
	defer stop()
	if _, err := f.Write(appendResolveRequest(nil, name)); err != nil {
		return nil, err
	}
	f.CloseWrite()
	b, err := io.ReadAll(io.LimitReader(f, maxAnswer+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return parseAnswer(b)
}

// source is the identity's source address: the SOCKS client's, or, when it is of the other
// family than the destination (a client on 127.0.0.1 going to an IPv6 address), the
// unspecified address of the destination's family with the client's port. The server's egress
// does not use it; it names the connection in logs.
func source(from net.Addr, dst netip.Addr) netip.AddrPort {
	var ap netip.AddrPort
	if ta, ok := from.(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	}
	a, port := ap.Addr().Unmap().WithZone(""), ap.Port()
	if port == 0 {
		port = 1 // a port is part of a TCP identity; this listener did not say it
	}
	if !a.IsValid() || a.Is4() != dst.Is4() {
		a = netip.IPv6Unspecified()
		if dst.Is4() {
			a = netip.IPv4Unspecified()
		}
	}
	return netip.AddrPortFrom(a, port)
}

// replyCode is the SOCKS reply for the outcome of a connect.
func replyCode(err error) byte {
	switch {
	case err == nil:
		return repSucceeded
	case errors.Is(err, rendr.ErrDestRefused):
		return repConnectionRefused
	case errors.Is(err, rendr.ErrDestUnreachable), errors.Is(err, errNotFound):
		return repHostUnreachable
	case errors.Is(err, rendr.ErrDestTimeout), errors.Is(err, context.DeadlineExceeded):
		// RFC 1928 has no code for a timeout; TTL expired is the nearest, and what
		// clients show as a timeout.
		return repTTLExpired
	case errors.Is(err, rendr.ErrRejected):
		// The server's allow-list (or its bounds) turned the destination down.
		return repNotAllowed
	}
	return repGeneralFailure
}
