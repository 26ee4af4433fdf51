// The reliability matrix's lab: in-memory paths that can be cut, holed and shaped, and
// paced flows checked by SHA-256 (docs/reliability.md).

package rendr_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/internal/testlink"
	"github.com/rendr-go/rendr/status"
)

// The reliability matrix (docs/reliability.md): each row does one thing to the paths and
// checks that every byte still arrives exactly once. This file holds the in-memory rig the
// rows share: unlike the testkit.MemLab of the synctest scenarios, a path here may be a stream
// link or a datagram link, and a fault set on a path (a blackhole, a cut) holds for the
// carriers it dials later too, as a real broken link does.

// rlSpec describes one in-memory path.
type rlSpec struct {
	name   string
	ab, ba testlink.Config // stream shaping, dialer->listener and back
	// packet makes the path a datagram link with this shaping instead of a stream.
	packet   bool
	pab, pba testlink.PacketConfig
	opts     []rendr.PathOption
}

// Datagram sizes of the in-memory packet links: what udpflow reports on a 1500-byte Ethernet
// path (IPv4) and the base every path is assumed to carry.
const (
	rlMaxDatagram  = 1472
	rlBaseDatagram = 1200
)

// rlPath is one path and every carrier it dialed.
type rlPath struct {
	spec rlSpec
	src  net.Listener // a *testlink.Listener or *testlink.PacketListener

	mu struct {
		sync.Mutex
		links  []*testlink.Link
		plinks []*testlink.PacketLink
		holed  bool // every carrier, new ones included, is a blackhole
		cut    bool // dials fail
	}
}

var rlErrCut = errors.New("test: path is cut")

func (p *rlPath) dial(ctx context.Context) (net.Conn, error) {
	p.mu.Lock()
	cut, pab, pba := p.mu.cut, p.spec.pab, p.spec.pba
	p.mu.Unlock()
	if cut {
		return nil, rlErrCut
	}
	if p.spec.packet {
		c, l, err := p.src.(*testlink.PacketListener).Dial(ctx, pab, pba)
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		p.mu.plinks = append(p.mu.plinks, l)
		if p.mu.holed {
			l.Blackhole(true)
		}
		p.mu.Unlock()
		return c, nil
	}
	c, l, err := p.src.(*testlink.Listener).Dial(ctx, p.spec.ab, p.spec.ba)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.mu.links = append(p.mu.links, l)
	if p.mu.holed {
		l.Blackhole(true)
	}
	p.mu.Unlock()
	return c, nil
}

// hole turns the path's blackhole on or off. On: every carrier of the path, and every one it
// dials until it is off, delivers nothing and reports nothing. Off: datagram links carry on;
// a stream carrier that sat in the hole is killed, since the bytes it swallowed left a gap a
// real stream would have filled by retransmission (and rendr has given it up by then anyway).
func (p *rlPath) hole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.holed = on
	for _, l := range p.mu.plinks {
		l.Blackhole(on)
	}
	for _, l := range p.mu.links {
		if on {
			l.Blackhole(true)
		} else {
			l.Kill(true)
		}
	}
}

// kill ends every carrier of the path at once (a reset; for datagram links, both sockets
// closed).
func (p *rlPath) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.mu.links {
		l.Kill(true)
	}
	for _, l := range p.mu.plinks {
		l.Kill()
	}
}

func (p *rlPath) setCut(on bool) {
	p.mu.Lock()
	p.mu.cut = on
	p.mu.Unlock()
}

// setPacket changes the datagram shaping of the path's live links and of later ones.
func (p *rlPath) setPacket(ab, ba testlink.PacketConfig) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.spec.pab, p.spec.pba = ab, ba
	for _, l := range p.mu.plinks {
		l.Set(ab, ba)
	}
}

// dials is how many carriers the path dialed.
func (p *rlPath) dials() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.mu.links) + len(p.mu.plinks)
}

// packetStats adds up the datagram counters of every carrier of the path.
func (p *rlPath) packetStats() (ab, ba testlink.PacketStats) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.mu.plinks {
		x, y := l.Stats()
		rlAddStats(&ab, x)
		rlAddStats(&ba, y)
	}
	return ab, ba
}

func rlAddStats(s *testlink.PacketStats, x testlink.PacketStats) {
	s.Sent += x.Sent
	s.Delivered += x.Delivered
	s.Lost += x.Lost
	s.Oversize += x.Oversize
	s.Duplicated += x.Duplicated
	s.Corrupted += x.Corrupted
	s.Overflow += x.Overflow
}

// rlLab is a Listener and a Dialer over rlPaths.
type rlLab struct {
	t     *testing.T
	ln    *rendr.Listener
	d     *rendr.Dialer
	paths map[string]*rlPath
	names []string
	logs  *testkit.ErrorLog
}

// rlSelector and rlBond make the root of a lab's graph from its paths, in spec order.
func rlSelector(ts []*rendr.Target) *rendr.Target { return rendr.Selector("root", ts...) }
func rlBond(ts []*rendr.Target) *rendr.Target     { return rendr.Bond("root", ts...) }

// rlNewLab builds the lab inside the calling synctest bubble; Close runs in Cleanup.
func rlNewLab(t *testing.T, opts rendr.Options, root func([]*rendr.Target) *rendr.Target, specs ...rlSpec) *rlLab {
	t.Helper()
	lb := &rlLab{t: t, paths: map[string]*rlPath{}, logs: &testkit.ErrorLog{}}
	if opts.Logger == nil {
		opts.Logger = slog.New(lb.logs)
	}
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	var srcs []net.Listener
	var targets []*rendr.Target
	for _, s := range specs {
		p := &rlPath{spec: s}
		if s.packet {
			p.src = testlink.ListenPacket(s.name, rlMaxDatagram, rlBaseDatagram)
		} else {
			p.src = testlink.Listen(s.name)
		}
		lb.paths[s.name] = p
		lb.names = append(lb.names, s.name)
		srcs = append(srcs, p.src)
		targets = append(targets, rendr.Path(s.name, p.dial, s.opts...))
	}
	var err error
	lb.ln, err = rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}, Options: opts}, srcs...)
	if err != nil {
		t.Fatal(err)
	}
	lb.d, err = rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(), Root: root(targets), Options: opts})
	if err != nil {
		lb.ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		lb.d.Close()
		lb.ln.Close()
	})
	return lb
}

// open dials a flow and accepts it.
func (lb *rlLab) open() (dc, lc *rendr.Conn) {
	lb.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dc, err := lb.d.DialContext(ctx)
	if err != nil {
		lb.t.Fatalf("DialContext: %v (%s)", err, testkit.Describe(lb.d.Status()))
	}
	lc, err = lb.ln.AcceptContext(ctx)
	if err != nil {
		dc.Close()
		lb.t.Fatalf("AcceptContext: %v", err)
	}
	return dc, lc
}

// allUp reports whether every path is Up on the dialer's side.
func (lb *rlLab) allUp() bool { return testkit.AllUp(lb.d.Status(), len(lb.paths)) }

// pathStatus is the dialer's snapshot of one path.
func (lb *rlLab) pathStatus(name string) status.Path { return testkit.PathStatus(lb.d.Status(), name) }

// mustWait is testkit.MustWait on the dialer's status.
func (lb *rlLab) mustWait(what string, limit time.Duration, cond func() bool) time.Duration {
	lb.t.Helper()
	return testkit.MustWait(lb.t, what, limit, lb.d.Status, cond)
}

// rlFlow is one direction of a flow carrying numbered bytes for as long as the test says:
// the writer sends pseudo-random chunks, paced, until stop (then half-closes); the reader
// hashes everything it reads and notes the longest time it went without a byte while the
// writer was still writing.
type rlFlow struct {
	stop   chan struct{}
	done   chan struct{}
	read   atomic.Int64
	mu     sync.Mutex // guards last and maxGap
	last   time.Time
	maxGap time.Duration

	// Set before done closes.
	werr, rerr      error
	wcount, rcount  int64
	sent, got       [sha256.Size]byte
	eofBeforeFinish bool
}

// rlStartFlow starts one direction from w to r: chunk bytes at most every interval.
func rlStartFlow(w, r net.Conn, chunk int, every time.Duration, seed uint64) *rlFlow {
	f := &rlFlow{stop: make(chan struct{}), done: make(chan struct{}), last: time.Now()}
	var wg sync.WaitGroup
	wg.Add(2)
	var writing atomic.Bool
	writing.Store(true)
	go func() {
		defer wg.Done()
		defer writing.Store(false) // on an error; a stop clears it before the half-close
		rng := rand.New(rand.NewPCG(seed, 2))
		h := sha256.New()
		buf := make([]byte, chunk)
		for {
			select {
			case <-f.stop:
				h.Sum(f.sent[:0])
				writing.Store(false) // the reader may see EOF as soon as CloseWrite starts
				if cw, ok := w.(interface{ CloseWrite() error }); ok {
					if err := cw.CloseWrite(); err != nil {
						f.werr = fmt.Errorf("CloseWrite: %w", err)
					}
				}
				return
			case <-time.After(every):
			}
			b := buf[:1+rng.IntN(chunk)]
			stFill(b, rng)
			h.Write(b)
			n, err := w.Write(b)
			f.wcount += int64(n)
			if err != nil {
				f.werr = err
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		f.got, f.rcount, f.rerr = stReadAll(r, 64<<10, func(n int) {
			now := time.Now()
			f.mu.Lock()
			f.maxGap = max(f.maxGap, now.Sub(f.last))
			f.last = now
			f.mu.Unlock()
			f.read.Add(int64(n))
		})
		if f.rerr == nil {
			f.eofBeforeFinish = writing.Load()
		}
	}()
	go func() {
		wg.Wait()
		close(f.done)
	}()
	return f
}

// gap is the longest time the reader went without a byte.
func (f *rlFlow) gap() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxGap
}

// finish stops the writer and fails the test unless the reader got exactly the bytes written,
// then io.EOF, and nothing failed on the way. limit bounds the wait (virtual time under
// synctest).
func (f *rlFlow) finish(t *testing.T, what string, limit time.Duration) {
	t.Helper()
	close(f.stop)
	select {
	case <-f.done:
	case <-time.After(limit):
		t.Fatalf("%s: not done within %v after the writer stopped: read %d bytes", what, limit, f.read.Load())
	}
	if f.werr != nil || f.rerr != nil {
		t.Fatalf("%s: write error %v, read error %v (wrote %d, read %d)", what, f.werr, f.rerr, f.wcount, f.rcount)
	}
	if f.eofBeforeFinish {
		t.Fatalf("%s: io.EOF before the writer half-closed", what)
	}
	if f.rcount != f.wcount || f.sent != f.got {
		t.Fatalf("%s: wrote %d bytes, read %d; SHA-256 equal: %v", what, f.wcount, f.rcount, f.sent == f.got)
	}
}

// rlOpenFDs counts this process's open file descriptors: the entries of /proc/self/fd on
// Linux, of /dev/fd on macOS (where it lists every descriptor of the process, as /proc/self/fd
// does). Elsewhere there is no such list, and the test skips, saying so.
func rlOpenFDs(t *testing.T) int {
	t.Helper()
	dir := ""
	switch runtime.GOOS {
	case "linux":
		dir = "/proc/self/fd"
	case "darwin":
		dir = "/dev/fd"
	default:
		t.Skipf("cannot count open files on %s", runtime.GOOS)
	}
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(es)
}

// rlWaitFDs waits (bounded) for the open file count to come back to at most base, since the
// kernel and the runtime release some descriptors a moment after Close returns, and fails
// the test with the count if it does not.
func rlWaitFDs(t *testing.T, base int) int {
	t.Helper()
	var n int
	ok := testkit.Wait(10*time.Second, func() bool {
		n = rlOpenFDs(t)
		return n <= base
	})
	if !ok {
		t.Fatalf("%d open file descriptors after Close, %d before: %s", n, base, rlDescribeFDs())
	}
	return n
}

// rlDescribeFDs lists what each open descriptor is (Linux: a socket's inode, an epoll set, a
// file), so that a leak says what leaked.
func rlDescribeFDs() string {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return "(no /proc/self/fd)"
	}
	kinds := map[string]int{}
	socks := rlSockets()
	for _, e := range es {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue
		}
		if inode, ok := strings.CutPrefix(target, "socket:["); ok {
			if s, ok := socks[strings.TrimSuffix(inode, "]")]; ok {
				kinds["socket "+s]++ // by protocol, ports and state
				continue
			}
		}
		for _, kind := range []string{"socket:", "pipe:"} {
			if strings.HasPrefix(target, kind) {
				target = kind // by kind, not by inode
			}
		}
		kinds[target]++
	}
	return fmt.Sprint(kinds)
}

// rlSockets maps the inodes of this network namespace's TCP and UDP sockets to
// "proto local->remote state" (ports in hex, as /proc/net lists them).
func rlSockets() map[string]string {
	out := map[string]string{}
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		b, err := os.ReadFile("/proc/net/" + proto)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 {
				continue
			}
			out[f[9]] = fmt.Sprintf("%s %s->%s st%s", proto, f[1], f[2], f[3])
		}
	}
	return out
}
