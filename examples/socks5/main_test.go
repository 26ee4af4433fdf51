package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/examples/internal/extest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// keyFiles writes a fresh private key for each side and returns their files and public keys.
func keyFiles(t *testing.T) (cliFile, srvFile string, cliPub, srvPub string) {
	t.Helper()
	cliFile, cliPub = extest.KeyFile(t)
	srvFile, srvPub = extest.KeyFile(t)
	return
}

// testLookup is the server's resolver in the tests: target.test is the loopback, every other
// name does not exist.
func testLookup(_ context.Context, name string) ([]netip.Addr, error) {
	if name == "target.test" {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// proxy is both halves running on loopback over two TCP paths, the second a backup.
type proxy struct {
	addr string // the SOCKS listener
	cli  *client
	srv  *server
}

// startProxy runs both halves until the test ends; extraCli and extraSrv are flags added to
// each side's (the server's -allow among them).
func startProxy(t *testing.T, extraCli, extraSrv []string) *proxy {
	t.Helper()
	cliKey, srvKey, cliPub, srvPub := keyFiles(t)
	h := osHost()
	h.lookup = testLookup
	var mu sync.Mutex
	var carriers []string
	listenCarrier := h.listenCarrier
	h.listenCarrier = func(a string) (net.Listener, error) {
		l, err := listenCarrier(a)
		if err == nil {
			mu.Lock()
			carriers = append(carriers, l.Addr().String())
			mu.Unlock()
		}
		return l, err
	}
	srv, err := newServer(append([]string{"-key", srvKey, "-peer", cliPub,
		"-listen", "127.0.0.1:0", "-listen", "127.0.0.1:0"}, extraSrv...), io.Discard, h)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := newClient(append([]string{"-key", cliKey, "-peer", srvPub, "-listen", "127.0.0.1:0",
		"-path", carriers[0], "-path", carriers[1] + ",backup"}, extraCli...), io.Discard, h)
	if err != nil {
		srv.ln.Close()
		t.Fatal(err)
	}
	extest.Run(t, map[string]func(context.Context) error{"server": srv.serve, "client": cli.serve})
	return &proxy{addr: cli.ln.Addr().String(), cli: cli, srv: srv}
}

// socksConnect is a SOCKS5 client: it negotiates (with user and pass when user is not empty),
// sends req, and returns the connection and the reply code.
func socksConnect(t *testing.T, proxy string, req request, user, pass string) (net.Conn, byte, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fail := func(err error) (net.Conn, byte, error) { c.Close(); return nil, 0, err }
	method := byte(methodNone)
	if user != "" {
		method = methodUserPass
	}
	if _, err := c.Write([]byte{socksVersion, 1, method}); err != nil {
		return fail(err)
	}
	var sel [2]byte
	if _, err := io.ReadFull(c, sel[:]); err != nil {
		return fail(err)
	}
	if sel[1] != method {
		return fail(fmt.Errorf("method %#x chosen, want %#x", sel[1], method))
	}
	if user != "" {
		msg := append([]byte{userPassVersion, byte(len(user))}, user...)
		msg = append(append(msg, byte(len(pass))), pass...)
		if _, err := c.Write(msg); err != nil {
			return fail(err)
		}
		var st [2]byte
		if _, err := io.ReadFull(c, st[:]); err != nil {
			return fail(err)
		}
		if st[1] != 0 {
			return fail(fmt.Errorf("authentication failed: status %d", st[1]))
		}
	}
	if _, err := c.Write(appendRequest(nil, req)); err != nil {
		return fail(err)
	}
	var rep [4]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		return fail(err)
	}
	n := 4
	if rep[3] == atypIPv6 {
		n = 16
	}
	if _, err := io.ReadFull(c, make([]byte, n+2)); err != nil {
		return fail(err)
	}
	if rep[1] != repSucceeded {
		c.Close()
		return nil, rep[1], nil
	}
	c.SetDeadline(time.Time{})
	return c, rep[1], nil
}

// startTarget is a destination on network (tcp4 or tcp6 loopback): it reads until the
// client's end of stream, answers the SHA-256 of what it read, then sends reply and closes.
// Its listener closes when the test ends.
func startTarget(t *testing.T, network, addr string, reply []byte) (*net.TCPListener, *sync.WaitGroup) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				h := sha256.New()
				if _, err := io.Copy(h, c); err != nil {
					return
				}
				c.Write(h.Sum(nil))
				c.Write(reply)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.(*net.TCPListener), &wg
}

// exchange sends up, half-closes, and checks that the target saw exactly up and that exactly
// down came back.
func exchange(t *testing.T, c net.Conn, up, down []byte) {
	t.Helper()
	got, err := extest.Exchange(c, up)
	if err != nil {
		t.Fatal(err)
	}
	extest.CheckDigestReply(t, got, up, down)
}

// TestConnect carries connections to an IPv4 address, an IPv6 address, a name the server
// resolves, and an address sent as a name, each both ways with a half-close.
func TestConnect(t *testing.T) {
	p := startProxy(t, nil, []string{"-allow", "127.0.0.0/8", "-allow", "::1/128"})
	up, down := extest.Payload(1, 1<<20), extest.Payload(2, 3<<20)
	ln4, _ := startTarget(t, "tcp4", "127.0.0.1:0", down)
	port := uint16(ln4.Addr().(*net.TCPAddr).Port)
	reqs := []request{
		{cmd: cmdConnect, addr: netip.MustParseAddr("127.0.0.1"), port: port},
		{cmd: cmdConnect, name: "target.test", port: port},
		{cmd: cmdConnect, name: "127.0.0.1", port: port},
	}
	// ::1 is on every loopback this runs on; a host without IPv6 has no IPv6 case to test.
	if ln6, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		ln6.Close()
		l6, _ := startTarget(t, "tcp6", "[::1]:0", down)
		reqs = append(reqs, request{cmd: cmdConnect, addr: netip.IPv6Loopback(), port: uint16(l6.Addr().(*net.TCPAddr).Port)})
	}
	for _, req := range reqs {
		t.Run(req.String(), func(t *testing.T) {
			c, code, err := socksConnect(t, p.addr, req, "", "")
			if err != nil {
				t.Fatal(err)
			}
			if code != repSucceeded {
				t.Fatalf("reply %d, want %d", code, repSucceeded)
			}
			exchange(t, c, up, down)
		})
	}
}

// TestReplies checks the reply for each way a connect can fail.
func TestReplies(t *testing.T) {
	p := startProxy(t, nil, []string{"-allow", "127.0.0.0/8"})
	closed, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := uint16(closed.Addr().(*net.TCPAddr).Port)
	closed.Close()
	ln, _ := startTarget(t, "tcp4", "127.0.0.1:0", nil)
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	cases := []struct {
		name string
		req  request
		want byte
	}{
		{"refused", request{cmd: cmdConnect, addr: netip.MustParseAddr("127.0.0.1"), port: closedPort}, repConnectionRefused},
		{"not allowed", request{cmd: cmdConnect, addr: netip.MustParseAddr("192.0.2.1"), port: port}, repNotAllowed},
		{"no such name", request{cmd: cmdConnect, name: "nowhere.test", port: port}, repHostUnreachable},
		{"port 0", request{cmd: cmdConnect, addr: netip.MustParseAddr("127.0.0.1"), port: 0}, repGeneralFailure},
		{"bind", request{cmd: cmdBind, addr: netip.MustParseAddr("127.0.0.1"), port: port}, repCommandUnsupported},
		{"udp associate", request{cmd: cmdUDPAssociate, addr: netip.MustParseAddr("127.0.0.1"), port: port}, repCommandUnsupported},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, code, err := socksConnect(t, p.addr, tc.req, "", "")
			if err != nil {
				t.Fatal(err)
			}
			if c != nil {
				c.Close()
			}
			if code != tc.want {
				t.Fatalf("reply %d, want %d", code, tc.want)
			}
		})
	}
	t.Run("address type", func(t *testing.T) {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte{5, 1, methodNone, 5, cmdConnect, 0, 9, 1, 2, 3, 4})
		got, _ := io.ReadAll(c)
		if len(got) < 4 || got[1] != methodNone || got[3] != repAddrUnsupported {
			t.Fatalf("answer % x, want method 0 then reply %d", got, repAddrUnsupported)
		}
	})
}

// TestAuth: with -auth the proxy asks for username/password, takes the right one, and turns
// down a wrong one and a client that offers no authentication.
func TestAuth(t *testing.T) {
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("# users\nalice:s3cret\nbob:hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, []string{"-auth", users}, []string{"-allow", "127.0.0.0/8"})
	down := extest.Payload(3, 64<<10)
	ln, _ := startTarget(t, "tcp4", "127.0.0.1:0", down)
	req := request{cmd: cmdConnect, addr: netip.MustParseAddr("127.0.0.1"), port: uint16(ln.Addr().(*net.TCPAddr).Port)}

	c, code, err := socksConnect(t, p.addr, req, "bob", "hunter2")
	if err != nil || code != repSucceeded {
		t.Fatalf("right password: reply %d, %v", code, err)
	}
	exchange(t, c, []byte("hello"), down)

	if _, _, err := socksConnect(t, p.addr, req, "bob", "hunter3"); err == nil {
		t.Fatal("a wrong password was taken")
	}
	if _, _, err := socksConnect(t, p.addr, req, "mallory", "hunter2"); err == nil {
		t.Fatal("an unknown user was taken")
	}
	if _, _, err := socksConnect(t, p.addr, req, "", ""); err == nil || !strings.Contains(err.Error(), "0xff") {
		t.Fatalf("no authentication offered: %v, want method 0xff chosen", err)
	}
}

// TestFlags: each missing or wrong flag is an error that says what to give.
func TestFlags(t *testing.T) {
	cliKey, srvKey, cliPub, srvPub := keyFiles(t)
	h := osHost()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"client", "-peer", srvPub, "-path", "127.0.0.1:1"}, "-key is required"},
		{[]string{"client", "-key", cliKey, "-path", "127.0.0.1:1"}, "-peer is required"},
		{[]string{"client", "-key", cliKey, "-peer", srvPub}, "-path is required"},
		{[]string{"client", "-key", cliKey, "-peer", srvPub, "-path", "nowhere"}, "-path"},
		{[]string{"client", "-key", cliKey, "-peer", srvPub, "-path", "127.0.0.1:1,from=x"}, "from"},
		{[]string{"client", "-key", cliKey, "-peer", srvPub, "-path", "127.0.0.1:1,fast"}, "unknown option"},
		{[]string{"client", "-key", cliKey, "-peer", srvPub, "-path", "127.0.0.1:1", "-policy", "fastest"}, "-policy"},
		{[]string{"client", "-key", srvPub, "-peer", srvPub, "-path", "127.0.0.1:1"}, "-key"},
		{[]string{"server", "-key", srvKey, "-listen", "127.0.0.1:0", "-allow", "0.0.0.0/0"}, "-peer is required"},
		{[]string{"server", "-key", srvKey, "-peer", cliPub, "-allow", "0.0.0.0/0"}, "-listen is required"},
		{[]string{"server", "-key", srvKey, "-peer", cliPub, "-listen", "127.0.0.1:0"}, "-allow is required"},
		{[]string{"server", "-key", srvKey, "-peer", cliPub, "-listen", "127.0.0.1:0", "-allow", "10.0.0.0"}, "-allow"},
		{[]string{"server", "-key", srvKey, "-peer", "nonsense", "-listen", "127.0.0.1:0", "-allow", "0.0.0.0/0"}, "-peer"},
		{[]string{"frobnicate"}, "usage"},
	}
	for _, tc := range cases {
		err := run(context.Background(), tc.args, nil, io.Discard, io.Discard, h)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}

// TestShutdown: both halves return nil when their context ends, with a connection open, and
// leave no goroutine behind (TestMain checks).
func TestShutdown(t *testing.T) {
	cliKey, srvKey, cliPub, srvPub := keyFiles(t)
	h := osHost()
	carrier, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.listenCarrier = func(string) (net.Listener, error) { return carrier, nil }
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := newServer([]string{"-key", srvKey, "-peer", cliPub, "-listen", "x", "-allow", "127.0.0.0/8"}, io.Discard, h)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := newClient([]string{"-key", cliKey, "-peer", srvPub, "-listen", "127.0.0.1:0", "-path", carrier.Addr().String()}, io.Discard, h)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { errs <- srv.serve(ctx) }()
	go func() { errs <- cli.serve(ctx) }()
	ln, _ := startTarget(t, "tcp4", "127.0.0.1:0", nil)
	c, code, err := socksConnect(t, cli.ln.Addr().String(), request{cmd: cmdConnect,
		addr: netip.MustParseAddr("127.0.0.1"), port: uint16(ln.Addr().(*net.TCPAddr).Port)}, "", "")
	if err != nil || code != repSucceeded {
		t.Fatalf("connect: reply %d, %v", code, err)
	}
	defer c.Close()
	cancel()
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	// The proxy closed the open connection.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the connection is still open after shutdown: %v", err)
	}
	if _, err := cli.d.DialContext(context.Background()); !errors.Is(err, rendr.ErrClosed) && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the dialer still dials after shutdown: %v", err)
	}
}
