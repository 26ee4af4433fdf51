// The in-memory lab: a Listener and a Dialer joined by in-memory links inside
// testing/synctest bubbles. Virtual time makes delays, rates and the liveness deadlines exact,
// so the checks on when things happen are deterministic, not timing guesses.

package rendr_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/internal/testlink"
	"github.com/rendr-go/rendr/status"
)

// The rig of the synctest scenarios: a Listener and a Dialer joined by in-memory links, one
// testlink listener per path, with every carrier's Link kept so a test can inject faults on the
// path's live carrier. Everything here must be created inside the bubble that uses it.

// stLinkSpec describes one path: its name, the shaping of each direction, and target options.
type stLinkSpec struct {
	name   string
	ab, ba testlink.Config // dialer->listener and listener->dialer
	opts   []rendr.PathOption
}

// stPath is one configured path and every carrier it has dialed.
type stPath struct {
	name string
	src  *testlink.Listener

	mu struct {
		sync.Mutex
		ab, ba testlink.Config
		links  []*testlink.Link
		cut    bool // while set, dials fail: the path cannot come back
	}
}

var stErrCut = errors.New("test: path is cut")

func (p *stPath) dial(ctx context.Context) (net.Conn, error) {
	p.mu.Lock()
	ab, ba, cut := p.mu.ab, p.mu.ba, p.mu.cut
	p.mu.Unlock()
	if cut {
		return nil, stErrCut
	}
	c, l, err := p.src.Dial(ctx, ab, ba)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.mu.links = append(p.mu.links, l)
	p.mu.Unlock()
	return c, nil
}

// live is the newest carrier: the one the path runs on while it is Up.
func (p *stPath) live() *testlink.Link {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.mu.links) == 0 {
		return nil
	}
	return p.mu.links[len(p.mu.links)-1]
}

// dials is how many carriers the path has dialed so far.
func (p *stPath) dials() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.mu.links)
}

// setShape changes the shaping of the live carrier and of every later one.
func (p *stPath) setShape(ab, ba testlink.Config) {
	p.mu.Lock()
	p.mu.ab, p.mu.ba = ab, ba
	p.mu.Unlock()
	if l := p.live(); l != nil {
		l.Set(ab, ba)
	}
}

func (p *stPath) setCut(on bool) {
	p.mu.Lock()
	p.mu.cut = on
	p.mu.Unlock()
}

// stLab is a Listener and a Dialer over stPaths.
type stLab struct {
	t     *testing.T
	ln    *rendr.Listener
	d     *rendr.Dialer
	paths map[string]*stPath
	logs  *testkit.ErrorLog
}

// stNewLab builds the lab with a Selector over the specs, in order. Close runs in Cleanup.
func stNewLab(t *testing.T, opts rendr.Options, specs ...stLinkSpec) *stLab {
	t.Helper()
	return stNewLabGraph(t, opts, func(paths map[string]*rendr.Target) *rendr.Target {
		var targets []*rendr.Target
		for _, s := range specs {
			targets = append(targets, paths[s.name])
		}
		return rendr.Selector("root", targets...)
	}, specs...)
}

// stNewLabGraph builds the lab with the target graph root makes from the specs' paths.
func stNewLabGraph(t *testing.T, opts rendr.Options, root func(map[string]*rendr.Target) *rendr.Target, specs ...stLinkSpec) *stLab {
	t.Helper()
	lb := &stLab{t: t, paths: map[string]*stPath{}, logs: &testkit.ErrorLog{}}
	opts.Logger = slog.New(lb.logs)
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	var srcs []net.Listener
	targets := map[string]*rendr.Target{}
	for _, s := range specs {
		p := &stPath{name: s.name, src: testlink.Listen(s.name)}
		p.mu.ab, p.mu.ba = s.ab, s.ba
		lb.paths[s.name] = p
		srcs = append(srcs, p.src)
		targets[s.name] = rendr.Path(s.name, p.dial, s.opts...)
	}
	var err error
	lb.ln, err = rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}, Options: opts}, srcs...)
	if err != nil {
		t.Fatal(err)
	}
	lb.d, err = rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root: root(targets), Options: opts})
	if err != nil {
		lb.ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(lb.close)
	return lb
}

func (lb *stLab) close() {
	lb.d.Close()
	lb.ln.Close()
}

// open dials a flow and accepts it on the other side.
// stTwoGoodPaths is the common start: a lab of two good paths "a" and "b", default options, one
// flow open, both paths up.
func stTwoGoodPaths(t *testing.T) (lb *stLab, dc, lc *rendr.Conn) {
	t.Helper()
	lb = stNewLab(t, rendr.Options{},
		stLinkSpec{name: "a", ab: stGoodLink, ba: stGoodLink},
		stLinkSpec{name: "b", ab: stGoodLink, ba: stGoodLink})
	dc, lc = lb.open()
	lb.mustWait("all paths up", 10*time.Second, lb.allUp)
	return lb, dc, lc
}

func (lb *stLab) open() (dc, lc *rendr.Conn) {
	lb.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dc, err := lb.d.DialContext(ctx)
	if err != nil {
		lb.t.Fatalf("DialContext: %v", err)
	}
	lc, err = lb.ln.AcceptContext(ctx)
	if err != nil {
		dc.Close()
		lb.t.Fatalf("AcceptContext: %v", err)
	}
	return dc, lc
}

// status is the dialer's view of its session.
func (lb *stLab) status() status.Session { return lb.d.Status() }

// pathStatus is the dialer's snapshot of one path.
func (lb *stLab) pathStatus(name string) status.Path { return testkit.PathStatus(lb.d.Status(), name) }

// active is the name of the path the dialer sends on ("" for none).
func (lb *stLab) active() string {
	for _, p := range lb.d.Status().Paths {
		if p.Active {
			return p.Name
		}
	}
	return ""
}

// allUp reports whether every path is Up.
func (lb *stLab) allUp() bool { return testkit.AllUp(lb.d.Status(), len(lb.paths)) }

// mustWait is testkit.WaitUntil that fails the test.
func (lb *stLab) mustWait(what string, limit time.Duration, cond func() bool) time.Duration {
	lb.t.Helper()
	d, ok := testkit.WaitUntil(limit, time.Millisecond, cond)
	if !ok {
		lb.t.Fatalf("%s: not within %v; status %s", what, limit, testkit.Describe(lb.d.Status()))
	}
	return d
}

// stStream sends n pseudo-random bytes from w to r (w half-closes at the end) and checks that r
// reads exactly those bytes, then io.EOF.
type stStream struct {
	n        int64
	read     atomic.Int64 // bytes read so far
	done     chan struct{}
	start    time.Time
	finished time.Time // when the reader saw io.EOF

	// Set before done closes.
	werr, rerr    error
	sent, got     [sha256.Size]byte
	count, wcount int64
}

// stSend starts both halves of a stream; Writes have random sizes up to 96 KiB.
func stSend(w, r net.Conn, n int64, seed uint64) *stStream {
	s := &stStream{n: n, done: make(chan struct{}), start: time.Now()}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 1))
		h := sha256.New()
		buf := make([]byte, 96<<10)
		for s.wcount < n {
			k := min(int64(1+rng.IntN(len(buf))), n-s.wcount)
			stFill(buf[:k], rng)
			h.Write(buf[:k])
			m, err := w.Write(buf[:k])
			s.wcount += int64(m)
			if err != nil {
				s.werr = err
				return
			}
		}
		h.Sum(s.sent[:0])
		if cw, ok := w.(interface{ CloseWrite() error }); ok {
			if err := cw.CloseWrite(); err != nil {
				s.werr = fmt.Errorf("CloseWrite: %w", err)
			}
		}
	}()
	go func() {
		defer wg.Done()
		s.got, s.count, s.rerr = stReadAll(r, 80<<10, func(m int) { s.read.Add(int64(m)) })
		if s.rerr == nil {
			s.finished = time.Now()
		}
	}()
	go func() {
		wg.Wait()
		close(s.done)
	}()
	return s
}

// check waits for the stream (at most limit of virtual time) and fails the test unless every
// byte arrived exactly once and in order.
func (s *stStream) check(t *testing.T, what string, limit time.Duration) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(limit):
		t.Fatalf("%s: not done within %v: read %d of %d", what, limit, s.read.Load(), s.n)
	}
	if s.werr != nil || s.rerr != nil {
		t.Fatalf("%s: write error %v, read error %v (wrote %d, read %d of %d)", what, s.werr, s.rerr, s.wcount, s.count, s.n)
	}
	if s.count != s.n || s.wcount != s.n {
		t.Fatalf("%s: wrote %d, read %d, want %d", what, s.wcount, s.count, s.n)
	}
	if s.sent != s.got {
		t.Fatalf("%s: SHA-256 of the bytes read differs from the bytes written", what)
	}
}

// stReadAll reads r to its end in reads of up to size bytes, calling each with every read's
// count, and returns the SHA-256 of what it read, how much, and the error that ended it
// (nil for io.EOF).
func stReadAll(r io.Reader, size int, each func(n int)) (sum [sha256.Size]byte, count int64, err error) {
	h := sha256.New()
	buf := make([]byte, size)
	for {
		n, err := r.Read(buf)
		h.Write(buf[:n])
		count += int64(n)
		if n > 0 {
			each(n)
		}
		if err == io.EOF {
			return [sha256.Size]byte(h.Sum(nil)), count, nil
		}
		if err != nil {
			return sum, count, err
		}
	}
}

// stFill fills b with pseudo-random bytes, eight at a time.
func stFill(b []byte, rng *rand.Rand) {
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, rng.Uint64())
		b = b[8:]
	}
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

// stDuplex runs a stream each way over a flow.
func stDuplex(dc, lc net.Conn, n int64, seed uint64) (up, down *stStream) {
	return stSend(dc, lc, n, seed), stSend(lc, dc, n, seed+1)
}

// stPaced writes n messages of size bytes to w, one every interval, each stamped with its
// number and send time (the first 16 bytes), and returns a wait for the writer: the writer
// must end inside the synctest bubble, even when the reader got everything while the writer
// was still between two writes.
func stPaced(w net.Conn, n, size int, every time.Duration) (wait func()) {
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		b := make([]byte, size)
		for i := range n {
			if i > 0 {
				time.Sleep(every)
			}
			binary.BigEndian.PutUint64(b, uint64(i))
			binary.BigEndian.PutUint64(b[8:], uint64(time.Now().UnixNano()))
			if _, err := w.Write(b); err != nil {
				return
			}
		}
	}()
	return func() { <-wrote }
}

// stRaceLab is a lab of a good path and one losing 30%, under Race("race", good, lossy).
func stRaceLab(t *testing.T) *stLab {
	t.Helper()
	return stNewLabGraph(t, rendr.Options{}, func(p map[string]*rendr.Target) *rendr.Target {
		return rendr.Race("race", p["good"], p["lossy"])
	}, stLinkSpec{name: "good", ab: stGoodLink, ba: stGoodLink},
		stLinkSpec{name: "lossy", ab: stLossy, ba: stLossy})
}

func p99(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)*99/100]
}

// listenerActive names the paths the listening side sends on.
func (lb *stLab) listenerActive() []string {
	var out []string
	for _, s := range lb.ln.Sessions() {
		for _, p := range s.Paths {
			if p.Active {
				out = append(out, p.Name)
			}
		}
	}
	return out
}

// link shapes shared by the scenarios.
var (
	stGoodLink = testlink.Config{Delay: 2 * time.Millisecond, Jitter: 500 * time.Microsecond, Rate: 20 << 20, Buffer: 256 << 10, Seed: 1}
	stPoorLink = testlink.Config{Delay: 40 * time.Millisecond, Jitter: 15 * time.Millisecond, Rate: 4 << 20, Buffer: 256 << 10, Seed: 2}
)

// stPattern is n deterministic pseudo-random bytes.
func stPattern(n int, seed uint64) []byte {
	b := make([]byte, n)
	stFill(b, rand.New(rand.NewPCG(seed, 0)))
	return b
}

// stMigrations collects the dialer side's migration events of one flow.
type stMigrations struct {
	mu  sync.Mutex
	evs []status.Migration
}

func stWatch(c *rendr.Conn) *stMigrations {
	m := &stMigrations{}
	c.OnMigrate(func(ev status.Migration) {
		m.mu.Lock()
		m.evs = append(m.evs, ev)
		m.mu.Unlock()
	})
	return m
}

func (m *stMigrations) list() []status.Migration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]status.Migration(nil), m.evs...)
}

// killActive kills the live carrier of the active path.
func (lb *stLab) killActive(reset bool) (name string, id uint32) {
	lb.t.Helper()
	name = lb.active()
	if name == "" {
		lb.t.Fatalf("no active path: %s", testkit.Describe(lb.status()))
	}
	id = lb.pathStatus(name).ID
	lb.paths[name].live().Kill(reset)
	return name, id
}

func stIsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}

// stLossy is a path whose network loses 30% of segments: its byte stream delivers them a
// retransmission timeout late, and everything behind them waits.
var stLossy = testlink.Config{Delay: 2 * time.Millisecond, Rate: 20 << 20, Buffer: 256 << 10,
	Loss: 0.3, Retransmit: 200 * time.Millisecond, Seed: 9}
