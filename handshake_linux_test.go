// Handshake cost (Linux): a stream carrier that connects and says nothing holds no goroutine
// and at most 1 KiB of the listener's memory while it waits, and is counted.

package rendr_test

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"golang.org/x/sys/unix"
)

// rawConnect opens a loopback TCP connection with plain system calls, so that the test's
// own side of it costs nothing on the Go heap that is being measured.
func rawConnect(t *testing.T, addr string) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	return fd
}

// live is the process's heap in use after a collection, plus its goroutines' stacks.
func live() (heap, stacks uint64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.StackInuse
}

// TestSilentCarriersCostNoGoroutine: a stream carrier that connects and says nothing (a
// slow-loris flood is made of them) holds no goroutine at the listener and at most 1 KiB of
// its memory until its handshake can start, and is counted; once the peers go away every
// one is let go.
func TestSilentCarriersCostNoGoroutine(t *testing.T) {
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	const n = 400
	// Under an eighth of MaxHandshakes in progress, so that the listener is not under load:
	// under load it would take at most 32 carriers of one host at once.
	ln, addrs := lmListen(t, rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()},
		MaxHandshakes: 16 * n, Options: rendr.Options{HandshakeTimeout: time.Minute}}, 1)
	// One carrier first, so the listener's waiting set and its goroutine exist before the
	// measure.
	first := rawConnect(t, addrs[0])
	waitFor(t, "the first carrier waiting", func() bool { return ln.Stats().Waiting == 1 })
	fds := make([]int, 0, n)
	g0 := runtime.NumGoroutine()
	heap0, stacks0 := live()
	for range n {
		fds = append(fds, rawConnect(t, addrs[0]))
	}
	waitFor(t, "every carrier waiting", func() bool { return ln.Stats().Waiting == n+1 })
	heap1, stacks1 := live()
	g1 := runtime.NumGoroutine()
	perCarrier := (float64(heap1) + float64(stacks1) - float64(heap0) - float64(stacks0)) / n
	t.Logf("%d silent carriers: %+d goroutines, %.0f bytes each (heap %+d, stacks %+d)",
		n, g1-g0, perCarrier, int64(heap1-heap0), int64(stacks1)-int64(stacks0))
	if g1-g0 > 2 { // the runtime's own come and go
		t.Fatalf("%d silent carriers made %d goroutines", n, g1-g0)
	}
	if perCarrier > 1024 {
		t.Fatalf("a silent carrier holds %.0f bytes at the listener, want at most 1024", perCarrier)
	}
	if st := ln.Stats(); st.Handshaking != n+1 || st.Evicted != 0 {
		t.Fatalf("Handshaking %d, Evicted %d; want %d and 0", st.Handshaking, st.Evicted, n+1)
	}
	unix.Close(first)
	for _, fd := range fds {
		unix.Close(fd)
	}
	waitFor(t, "every carrier let go", func() bool {
		st := ln.Stats()
		return st.Handshaking == 0 && st.Waiting == 0
	})
	if st := ln.Stats(); st.HandshakeTimeouts != 0 || st.Handshakes != 0 {
		t.Fatalf("carriers that hung up: %d timeouts, %d handshakes; want none", st.HandshakeTimeouts, st.Handshakes)
	}
}
