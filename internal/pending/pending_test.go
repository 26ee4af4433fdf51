//go:build linux

package pending

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The messages these tests send: "HI", a 2-byte length, that many bytes. A head that does
// not start with "HI" is one Need refuses.
var testCfg = Config{Head: 4, Timeout: time.Minute, Need: func(h []byte) int {
	if string(h[:2]) != "HI" {
		return 0
	}
	return 4 + int(binary.BigEndian.Uint16(h[2:]))
}}

func message(body int) []byte {
	b := []byte{'H', 'I', 0, 0}
	binary.BigEndian.PutUint16(b[2:], uint16(body))
	return append(b, make([]byte, body)...)
}

// pair returns the two ends of a loopback TCP connection: the accepted one first.
func pair(t *testing.T, ln net.Listener) (server, client net.Conn) {
	t.Helper()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return server, client
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func newSet(t *testing.T, cfg Config) *Set {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// queued waits until the kernel holds n bytes for c to read.
func queued(t *testing.T, c net.Conn, n int) {
	t.Helper()
	for {
		raw, _ := c.(*net.TCPConn).SyscallConn()
		var q int
		raw.Control(func(fd uintptr) { q = inq(int(fd)) })
		if q >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReadyOnlyWhenWhole looks at one connection's readiness as its message arrives in
// pieces: not before the whole message is queued, at once when it is, and the bytes are all
// still there for the reader.
func TestReadyOnlyWhenWhole(t *testing.T) {
	s := newSet(t, testCfg)
	srv, cli := pair(t, listen(t))
	raw, _ := srv.(*net.TCPConn).SyscallConn()
	e := &entry{c: srv, raw: raw}
	msg := message(300)
	sent := 0
	for _, cut := range []int{1, 3, 4, 5, 200, len(msg) - 1} {
		if _, err := cli.Write(msg[sent:cut]); err != nil {
			t.Fatal(err)
		}
		sent = cut
		queued(t, srv, sent)
		if s.ready(e) {
			t.Fatalf("ready with %d of %d bytes queued", sent, len(msg))
		}
	}
	cli.Write(msg[sent:])
	queued(t, srv, len(msg))
	if !s.ready(e) {
		t.Fatal("not ready with the whole message queued")
	}
	got := make([]byte, len(msg)+1)
	srv.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := srv.Read(got)
	if err != nil || n != len(msg) {
		t.Fatalf("reader got %d bytes (%v), want the %d the Set peeked at", n, err, len(msg))
	}
}

// TestReadyWhenTheReaderWouldFail: a head Need refuses, and the end of the stream, are handed
// on at once, for the reader to fail on.
func TestReadyWhenTheReaderWouldFail(t *testing.T) {
	s := newSet(t, testCfg)
	ln := listen(t)

	srv, cli := pair(t, ln)
	cli.Write([]byte("NOPE"))
	queued(t, srv, 4)
	raw, _ := srv.(*net.TCPConn).SyscallConn()
	if !s.ready(&entry{c: srv, raw: raw}) {
		t.Fatal("a head Need refuses is not handed on")
	}

	srv2, cli2 := pair(t, ln)
	got := make(chan bool, 1)
	if !s.Add(srv2, func(ready bool) { got <- ready }) {
		t.Fatal("Add refused a TCP connection")
	}
	cli2.Write([]byte("HI"))
	cli2.(*net.TCPConn).CloseWrite()
	if !<-got {
		t.Fatal("a stream ended short of its message was timed out, not handed on")
	}
}

// TestDoneOnceEach adds connections whose messages came before Add, after it, and never, and
// checks each Done is called once with the right verdict, and that no goroutine is made per
// connection.
func TestDoneOnceEach(t *testing.T) {
	cfg := testCfg
	cfg.Timeout = 200 * time.Millisecond
	s := newSet(t, cfg)
	ln := listen(t)
	const n = 30
	type verdict struct {
		i     int
		ready bool
	}
	got := make(chan verdict, 3*n)
	var silent []net.Conn
	for i := range 3 * n {
		srv, cli := pair(t, ln)
		if i%3 == 0 {
			cli.Write(message(i))
			queued(t, srv, 4+i)
		}
		if !s.Add(srv, func(ready bool) { got <- verdict{i, ready} }) {
			t.Fatal("Add refused a TCP connection")
		}
		switch i % 3 {
		case 1:
			cli.Write(message(i))
		case 2:
			silent = append(silent, cli)
		}
	}
	seen := map[int]bool{}
	for range 3 * n {
		v := <-got
		if seen[v.i] {
			t.Fatalf("Done of connection %d called twice", v.i)
		}
		seen[v.i] = true
		if want := v.i%3 != 2; v.ready != want {
			t.Fatalf("connection %d: ready %v, want %v", v.i, v.ready, want)
		}
	}
	if s.Len() != 0 || s.TimedOut() != n {
		t.Fatalf("Len %d, TimedOut %d; want 0 and %d", s.Len(), s.TimedOut(), n)
	}
	select {
	case v := <-got:
		t.Fatalf("extra Done for connection %d", v.i)
	default:
	}
	// With nothing to watch, the poller ends: an idle Set holds no goroutine.
	for {
		s.mu.Lock()
		running := s.mu.p != nil
		s.mu.Unlock()
		if !running {
			break
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRemoveAndClose: Remove takes a connection back without its Done; Close calls Done(false)
// for the rest, and refuses later Adds.
func TestRemoveAndClose(t *testing.T) {
	s, err := New(testCfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	a, _ := pair(t, ln)
	b, _ := pair(t, ln)
	calls := make(chan string, 4)
	s.Add(a, func(ready bool) { calls <- "a" })
	s.Add(b, func(ready bool) {
		if ready {
			calls <- "b ready"
		} else {
			calls <- "b"
		}
	})
	if s.Add(a, func(bool) { calls <- "a again" }) {
		t.Fatal("the same connection added twice")
	}
	if !s.Remove(a) || s.Remove(a) {
		t.Fatal("Remove does not report whether it took the connection back")
	}
	s.Close()
	if got := <-calls; got != "b" {
		t.Fatalf("Close called %q, want b's Done(false)", got)
	}
	if len(calls) != 0 {
		t.Fatalf("%q called too", <-calls)
	}
	c, _ := pair(t, ln)
	if s.Add(c, func(bool) {}) {
		t.Fatal("Add after Close")
	}
	s.Close() // again: a no-op
}

func TestNotWatchable(t *testing.T) {
	s := newSet(t, testCfg)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if s.Add(a, func(bool) {}) {
		t.Fatal("a connection without a socket was taken")
	}
	for _, bad := range []Config{{}, {Head: 65, Need: testCfg.Need, Timeout: 1}, {Head: 4, Timeout: 1}, {Head: 4, Need: testCfg.Need}} {
		if s, err := New(bad); err == nil {
			s.Close()
			t.Fatalf("New(%+v) took a config it cannot use", bad)
		}
	}
}

func inq(fd int) int {
	q, _ := unix.IoctlGetInt(fd, unix.SIOCINQ)
	return q
}
