//go:build linux

// Stability over real kernel paths: a peer process stopped with SIGSTOP and continued, again
// and again, moves no traffic and kills no path, on either side, and loses no byte.

package rendr_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/status"
)

// The peer process: this test binary started again, in one of the lab's namespaces, with its
// part in these variables. It echoes one flow and prints its session's status.
const (
	peerRoleEnv  = "RENDR_TEST_PEER_ROLE" // "listen" or "dial"
	peerKeyEnv   = "RENDR_TEST_PEER_KEY"  // its private key, hex
	peerPubEnv   = "RENDR_TEST_PEER_PUB"  // the test's public key, hex
	peerAddrsEnv = "RENDR_TEST_PEER_ADDRS"
	peerLocalEnv = "RENDR_TEST_PEER_LOCAL" // dial: the local address of each path
	peerMark     = "rendr-peer: "
)

// peerReport is what the peer prints of its session when its flow has ended.
type peerReport struct {
	Migrations, Spurious int
	Moves                [status.Causes]int
	Paths                []peerPath
	Err                  string
}

type peerPath struct {
	Name, LastError string
	State           status.PathState
	Dials           int
}

// session is the report as a status.Session, for the checks both sides share.
func (r peerReport) session() status.Session {
	st := status.Session{Migrations: r.Migrations, Spurious: r.Spurious, Moves: r.Moves}
	for _, p := range r.Paths {
		st.Paths = append(st.Paths, status.Path{Name: p.Name, State: p.State, Dials: p.Dials, LastError: p.LastError})
	}
	return st
}

// TestNetnsStoppedPeer runs one flow over two healthy kernel paths and stops the process at
// the other end with SIGSTOP for 300ms, ten times, while data flows both ways: once with the
// listening side stopped, once with the dialing side. Neither side moves traffic or declares
// a path dead (each path keeps its first carrier), and the echo of every byte is exact.
func TestNetnsStoppedPeer(t *testing.T) {
	if role := os.Getenv(peerRoleEnv); role != "" {
		runPeer(t, role)
		return
	}
	for _, stopped := range []string{"listen", "dial"} {
		t.Run(stopped+"er-stopped", func(t *testing.T) {
			t.Parallel() // each in a lab of its own; most of the time is the pauses'
			stoppedPeer(t, stopped)
		})
	}
}

func stoppedPeer(t *testing.T, role string) {
	lab := testkit.NetLab(t, netlab.Config{Paths: 2, Name: "rendr"})
	mine, theirs := rendr.MustNewKey(), rendr.MustNewKey()
	ring := &testkit.Ring{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last log lines:\n%s", ring)
		}
	})
	log := testkit.Logger(ring, "test")
	opts := rendr.Options{Logger: log}
	pub := mine.Public()
	env := []string{peerRoleEnv + "=" + role, peerKeyEnv + "=" + hex.EncodeToString(theirs[:]),
		peerPubEnv + "=" + hex.EncodeToString(pub[:])}

	var conn *rendr.Conn
	var snap func() status.Session
	var peer *exec.Cmd
	var out *bufio.Scanner
	var stdin io.Closer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if role == "listen" {
		// The peer listens in the server namespace; this side dials from the client's.
		var addrs []string
		for i := range lab.Paths() {
			addrs = append(addrs, netip.AddrPortFrom(lab.ServerAddr(i), 0).String())
		}
		peer, out, stdin = startPeer(t, lab.ServerNS(), append(env, peerAddrsEnv+"="+strings.Join(addrs, ",")))
		bound := strings.Split(peerLine(t, out, "ready "), ",")
		var paths []*rendr.Target
		for i, addr := range bound {
			dial := lab.Dialer(netlab.Client, &net.Dialer{
				LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(lab.ClientAddr(i), 0))})
			paths = append(paths, rendr.Path(testkit.PathName(i), func(ctx context.Context) (net.Conn, error) {
				return dial(ctx, "tcp", addr)
			}))
		}
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: mine, PeerKey: theirs.Public(),
			Root: rendr.Selector("root", paths...), Options: opts})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		if conn, err = d.DialContext(ctx); err != nil {
			t.Fatalf("dial: %v", err)
		}
		snap = d.Status
	} else {
		// This side listens in the server namespace; the peer dials from the client's.
		var srcs []net.Listener
		var addrs, locals []string
		for i := range lab.Paths() {
			l, err := lab.Listen(netlab.Server, "tcp", netip.AddrPortFrom(lab.ServerAddr(i), 0).String())
			if err != nil {
				t.Fatal(err)
			}
			srcs = append(srcs, l)
			addrs = append(addrs, l.Addr().String())
			locals = append(locals, netip.AddrPortFrom(lab.ClientAddr(i), 0).String())
		}
		ln, err := rendr.Listen(rendr.ListenConfig{Key: mine, Peers: []rendr.PublicKey{theirs.Public()}, Options: opts}, srcs...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		peer, out, stdin = startPeer(t, lab.ClientNS(), append(env, peerAddrsEnv+"="+strings.Join(addrs, ","),
			peerLocalEnv+"="+strings.Join(locals, ",")))
		if conn, err = ln.AcceptContext(ctx); err != nil {
			t.Fatalf("accept: %v", err)
		}
		snap = conn.Status
	}
	defer conn.Close()
	testkit.WaitUp(t, "this side", snap, 2, 30*time.Second)

	// Paced both ways: the peer echoes what this side writes, for as long as the pauses last.
	const chunk, every, total = 32 << 10, 8 * time.Millisecond, 32 << 20
	sent := make(chan [sha256.Size]byte, 1)
	go func() {
		h := sha256.New()
		b := make([]byte, chunk)
		rng := rand.New(rand.NewPCG(7, 7))
		for n := 0; n < total; n += chunk {
			stFill(b, rng)
			h.Write(b)
			if _, err := conn.Write(b); err != nil {
				break
			}
			time.Sleep(every)
		}
		conn.CloseWrite()
		sent <- [sha256.Size]byte(h.Sum(nil))
	}()
	echoed := make(chan [sha256.Size]byte, 1)
	var echoN int64
	go func() {
		h := sha256.New()
		echoN, _ = io.Copy(h, conn)
		echoed <- [sha256.Size]byte(h.Sum(nil))
	}()
	time.Sleep(500 * time.Millisecond)
	for range 10 {
		if err := peer.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		log.Info("peer stopped")
		time.Sleep(300 * time.Millisecond)
		if err := peer.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		log.Info("peer continued")
		time.Sleep(400 * time.Millisecond)
	}
	var want, got [sha256.Size]byte
	select {
	case want = <-sent:
	case <-time.After(2 * time.Minute):
		t.Fatal("the writer did not finish")
	}
	select {
	case got = <-echoed:
	case <-time.After(2 * time.Minute):
		t.Fatal("the echo did not end")
	}
	if got != want || echoN != total {
		t.Errorf("echo of %d bytes differs from the %d sent", echoN, total)
	}
	var rep peerReport
	if err := json.Unmarshal([]byte(peerLine(t, out, "done ")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Err != "" {
		t.Errorf("peer: %s", rep.Err)
	}
	// Both sides' counts are taken while the session lives: its end is a move of its own.
	here := snap()
	stdin.Close()
	if err := peer.Wait(); err != nil {
		t.Errorf("peer: %v", err)
	}
	t.Logf("%d bytes echoed exact through 10 stops of 300ms; this side: %d migrations, %d spurious; the stopped side: %d migrations, %d spurious",
		echoN, here.Migrations, here.Spurious, rep.Migrations, rep.Spurious)
	onlyFirstMoves(t, "this side", here)
	onlyFirstMoves(t, "the stopped peer", rep.session())
	for _, side := range []status.Session{here, rep.session()} {
		for _, p := range side.Paths {
			if p.Dials > 1 || p.State != status.Up {
				t.Errorf("path %s: %v after %d dials (%s): a pause killed it", p.Name, p.State, p.Dials, p.LastError)
			}
		}
	}
}

// startPeer starts this test binary again in namespace ns as the peer, and returns it with a
// scanner over its standard output and its standard input, whose end ends it.
func startPeer(t *testing.T, ns string, env []string) (*exec.Cmd, *bufio.Scanner, io.Closer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe, "-test.run=^TestNetnsStoppedPeer$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("peer's stderr:\n%s", stderr.String())
		}
	})
	return cmd, bufio.NewScanner(pipe), in
}

// peerLine reads the peer's output up to its next line that starts with the mark and prefix,
// and returns the rest of that line.
func peerLine(t *testing.T, out *bufio.Scanner, prefix string) string {
	t.Helper()
	for out.Scan() {
		if s, ok := strings.CutPrefix(out.Text(), peerMark+prefix); ok {
			return s
		}
	}
	t.Fatalf("the peer ended without a %q line: %v", prefix, out.Err())
	return ""
}

// runPeer is the peer process: it listens or dials as told, echoes the first flow to its end,
// then prints its session's status, and ends when its standard input does.
func runPeer(t *testing.T, role string) {
	report := func(st status.Session, err error) {
		rep := peerReport{Migrations: st.Migrations, Spurious: st.Spurious, Moves: st.Moves}
		for _, p := range st.Paths {
			rep.Paths = append(rep.Paths, peerPath{Name: p.Name, LastError: p.LastError, State: p.State, Dials: p.Dials})
		}
		if err != nil {
			rep.Err = err.Error()
		}
		b, _ := json.Marshal(rep)
		fmt.Printf("%sdone %s\n", peerMark, b)
		io.Copy(io.Discard, os.Stdin)
	}
	key, err1 := hex.DecodeString(os.Getenv(peerKeyEnv))
	pub, err2 := hex.DecodeString(os.Getenv(peerPubEnv))
	if err1 != nil || err2 != nil || len(key) != 32 || len(pub) != 32 {
		t.Fatal("peer: bad keys")
	}
	mine, theirs := rendr.PrivateKey(key), rendr.PublicKey(pub)
	// Its log goes to its standard error, which the test prints when it fails.
	opts := rendr.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	addrs := strings.Split(os.Getenv(peerAddrsEnv), ",")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var conn *rendr.Conn
	var snapshot func() status.Session
	if role == "listen" {
		var srcs []net.Listener
		var bound []string
		for _, a := range addrs {
			l, err := net.Listen("tcp", a)
			if err != nil {
				t.Fatal(err)
			}
			srcs = append(srcs, l)
			bound = append(bound, l.Addr().String())
		}
		ln, err := rendr.Listen(rendr.ListenConfig{Key: mine, Peers: []rendr.PublicKey{theirs}, Options: opts}, srcs...)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		fmt.Printf("%sready %s\n", peerMark, strings.Join(bound, ","))
		if conn, err = ln.AcceptContext(ctx); err != nil {
			report(status.Session{}, err)
			return
		}
		snapshot = conn.Status
	} else {
		locals := strings.Split(os.Getenv(peerLocalEnv), ",")
		var paths []*rendr.Target
		for i, a := range addrs {
			d := &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(locals[i]))}
			paths = append(paths, rendr.Path(testkit.PathName(i), func(ctx context.Context) (net.Conn, error) {
				return d.DialContext(ctx, "tcp", a)
			}))
		}
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: mine, PeerKey: theirs, Root: rendr.Selector("root", paths...), Options: opts})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if conn, err = d.DialContext(ctx); err != nil {
			report(status.Session{}, err)
			return
		}
		snapshot = d.Status
	}
	defer conn.Close()
	_, err := io.Copy(conn, conn)
	if err == nil {
		err = conn.CloseWrite()
	}
	report(snapshot(), err)
}
