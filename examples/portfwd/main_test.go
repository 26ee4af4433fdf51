package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rendr-go/rendr/examples/internal/extest"
)

// mainEnv makes this test binary portfwd itself: TestSignals starts it again with the
// arguments in this variable, to see the real main end on a signal.
const mainEnv = "PORTFWD_TEST_MAIN"

func TestMain(m *testing.M) {
	if args := os.Getenv(mainEnv); args != "" {
		os.Args = append([]string{"portfwd"}, strings.Fields(args)...)
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// keyFiles writes a fresh private key for each side and returns their files and public keys.
func keyFiles(t *testing.T) (fwdFile, srvFile string, fwdPub, srvPub string) {
	t.Helper()
	fwdFile, fwdPub = extest.KeyFile(t)
	srvFile, srvPub = extest.KeyFile(t)
	return
}

// startPair runs both sides until the test ends, on hosts fwdHost and srvHost: the serving side
// listens on each of srvListen and forwards to target, and the forwarding side listens on
// fwdListen with a path to each of paths (flags: ADDR[,options]).
func startPair(t *testing.T, fwdHost, srvHost host, fwdListen string, srvListen, paths []string, target string) (*forwarder, *server) {
	t.Helper()
	fwdKey, srvKey, fwdPub, srvPub := keyFiles(t)
	sargs := []string{"-key", srvKey, "-peer", fwdPub, "-target", target}
	for _, a := range srvListen {
		sargs = append(sargs, "-listen", a)
	}
	srv, err := newServer(sargs, io.Discard, srvHost)
	if err != nil {
		t.Fatal(err)
	}
	fargs := []string{"-key", fwdKey, "-peer", srvPub, "-listen", fwdListen}
	for _, p := range paths {
		fargs = append(fargs, "-path", p)
	}
	fwd, err := newForwarder(fargs, io.Discard, fwdHost)
	if err != nil {
		srv.ln.Close()
		t.Fatal(err)
	}
	extest.Run(t, map[string]func(context.Context) error{"serve": srv.serve, "forward": fwd.serve})
	return fwd, srv
}

// loopbackPair is startPair on this host's loopback, over two TCP paths, the second a backup.
func loopbackPair(t *testing.T, target string) *forwarder {
	t.Helper()
	h := osHost()
	var srcs []string
	listenCarrier := h.listenCarrier
	h.listenCarrier = func(a string) (net.Listener, error) {
		l, err := listenCarrier(a)
		if err == nil {
			srcs = append(srcs, l.Addr().String())
		}
		return l, err
	}
	// The serving side is made first: its carriers' addresses are the forwarding side's paths.
	fwdKey, srvKey, fwdPub, srvPub := keyFiles(t)
	srv, err := newServer([]string{"-key", srvKey, "-peer", fwdPub, "-target", target,
		"-listen", "127.0.0.1:0", "-listen", "127.0.0.1:0"}, io.Discard, h)
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := newForwarder([]string{"-key", fwdKey, "-peer", srvPub, "-listen", "127.0.0.1:0",
		"-path", srcs[0], "-path", srcs[1] + ",backup"}, io.Discard, h)
	if err != nil {
		srv.ln.Close()
		t.Fatal(err)
	}
	extest.Run(t, map[string]func(context.Context) error{"serve": srv.serve, "forward": fwd.serve})
	return fwd
}

// digestServer is the forwarded service in the tests: it reads until the client's end of
// stream, answers the SHA-256 of what it read, then sends reply and closes: its first bytes,
// and when that is not all of it, the rest once the test calls resume.
type digestServer struct {
	ln      net.Listener
	reply   []byte
	first   int           // bytes sent before waiting for resume
	sent    chan struct{} // closed when the first part of a reply is written
	release chan struct{}
	relOnce sync.Once
	wg      sync.WaitGroup
}

func startDigestServer(t *testing.T, ln net.Listener, reply []byte, first int) *digestServer {
	t.Helper()
	s := &digestServer{ln: ln, reply: reply, first: first, sent: make(chan struct{}), release: make(chan struct{})}
	var sentOnce sync.Once
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				h := sha256.New()
				if _, err := io.Copy(h, c); err != nil {
					return
				}
				c.Write(h.Sum(nil))
				if _, err := c.Write(s.reply[:s.first]); err != nil {
					return
				}
				if s.first == len(s.reply) {
					return
				}
				sentOnce.Do(func() { close(s.sent) })
				<-s.release
				c.Write(s.reply[s.first:])
			})
		}
	})
	t.Cleanup(func() {
		s.resume()
		ln.Close()
		s.wg.Wait()
	})
	return s
}

// resume lets every reply go on past its first part.
func (s *digestServer) resume() { s.relOnce.Do(func() { close(s.release) }) }

// TestForward carries several connections at once, each both ways with a half-close.
func TestForward(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := extest.Payload(2, 2<<20)
	startDigestServer(t, ln, down, len(down))
	fwd := loopbackPair(t, ln.Addr().String())
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			up := extest.Payload(uint64(10+i), (i+1)<<18)
			c, err := net.Dial("tcp", fwd.ln.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			got, err := extest.Exchange(c, up)
			if err != nil {
				t.Errorf("connection %d: %v", i, err)
				return
			}
			extest.CheckDigestReply(t, got, up, down)
		})
	}
	wg.Wait()
}

// TestRefusedTarget: a target that refuses the connection resets the local one.
func TestRefusedTarget(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := closed.Addr().String()
	closed.Close()
	fwd := loopbackPair(t, target)
	c, err := net.Dial("tcp", fwd.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read: %v, want a reset", err)
	}
}

// TestFlags: each missing or wrong flag is an error that says what to give.
func TestFlags(t *testing.T) {
	fwdKey, srvKey, fwdPub, srvPub := keyFiles(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"forward", "-peer", srvPub, "-listen", "127.0.0.1:0", "-path", "127.0.0.1:1"}, "-key is required"},
		{[]string{"forward", "-key", fwdKey, "-listen", "127.0.0.1:0", "-path", "127.0.0.1:1"}, "-peer is required"},
		{[]string{"forward", "-key", fwdKey, "-peer", srvPub, "-path", "127.0.0.1:1"}, "-listen is required"},
		{[]string{"forward", "-key", fwdKey, "-peer", srvPub, "-listen", "127.0.0.1:0"}, "-path is required"},
		{[]string{"forward", "-key", fwdKey, "-peer", srvPub, "-listen", "127.0.0.1:0", "-path", "127.0.0.1:1,tier=-1"}, "tier"},
		{[]string{"forward", "-key", fwdKey, "-peer", srvPub, "-listen", "127.0.0.1:0", "-path", "127.0.0.1:1,from=nowhere"}, "from"},
		{[]string{"forward", "-key", fwdKey, "-peer", srvPub, "-listen", "127.0.0.1:0", "-path", "127.0.0.1:1", "-policy", "x"}, "-policy"},
		{[]string{"serve", "-key", srvKey, "-listen", "127.0.0.1:0", "-target", "127.0.0.1:1"}, "-peer is required"},
		{[]string{"serve", "-key", srvKey, "-peer", fwdPub, "-target", "127.0.0.1:1"}, "-listen is required"},
		{[]string{"serve", "-key", srvKey, "-peer", fwdPub, "-listen", "127.0.0.1:0"}, "-target is required"},
		{[]string{"serve", "-key", srvKey, "-peer", "nonsense", "-listen", "127.0.0.1:0", "-target", "127.0.0.1:1"}, "-peer"},
		{[]string{"serve", "-key", fwdPub, "-peer", fwdPub, "-listen", "127.0.0.1:0", "-target", "127.0.0.1:1"}, "-key"},
		{nil, "usage"},
	}
	for _, tc := range cases {
		err := run(context.Background(), tc.args, nil, io.Discard, io.Discard, osHost())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}

// TestSignals runs the program itself, each side, and stops it with SIGINT and SIGTERM: it
// must exit with status 0 once it has started.
func TestSignals(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows has no SIGINT or SIGTERM to send to a process")
	}
	fwdKey, srvKey, fwdPub, srvPub := keyFiles(t)
	sides := map[string]string{
		"serve":   "serve -key " + srvKey + " -peer " + fwdPub + " -listen 127.0.0.1:0 -target 127.0.0.1:1",
		"forward": "forward -key " + fwdKey + " -peer " + srvPub + " -listen 127.0.0.1:0 -path 127.0.0.1:1",
	}
	for name, args := range sides {
		for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGTERM} {
			t.Run(name+"/"+sig.String(), func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
				cmd.Env = append(os.Environ(), mainEnv+"="+args)
				stderr, err := cmd.StderrPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				// The program has its signal handler once it says it listens.
				sc := bufio.NewScanner(stderr)
				var log []string
				for sc.Scan() {
					log = append(log, sc.Text())
					if strings.Contains(sc.Text(), "listening") {
						break
					}
				}
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				rest, _ := io.ReadAll(stderr)
				if err := cmd.Wait(); err != nil {
					t.Fatalf("exit: %v; log:\n%s\n%s", err, strings.Join(log, "\n"), rest)
				}
			})
		}
	}
}
