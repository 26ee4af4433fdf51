// What the in-memory scenarios share around testkit.MemLab: link shapes, streams checked by
// SHA-256 through to io.EOF, paced writers, and the common starting labs. They run inside
// testing/synctest bubbles: virtual time makes delays, rates and the liveness deadlines exact,
// so the checks on when things happen are deterministic, not timing guesses.

package rendr_test

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
)

// stTwoGoodPaths is the common start: a lab of two good paths "a" and "b", default options, one
// flow open, both paths up.
func stTwoGoodPaths(t *testing.T) (lb *testkit.MemLab, dc, lc *rendr.Conn) {
	t.Helper()
	lb = stTwoLinks(t)
	dc, lc = lb.Open()
	lb.MustWait("all paths up", 10*time.Second, lb.AllUp)
	return lb, dc, lc
}

// stTwoLinks is a lab of two good paths "a" and "b", default options, no flow open yet.
func stTwoLinks(t *testing.T) *testkit.MemLab {
	return testkit.NewMemLab(t, rendr.Options{},
		testkit.LinkSpec{Name: "a", AB: stGoodLink, BA: stGoodLink},
		testkit.LinkSpec{Name: "b", AB: stGoodLink, BA: stGoodLink})
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
func stSend(w, r net.Conn, n int64, seed uint64) *stStream { return stSendPaced(w, r, n, seed, 0, 0) }

// stSendPaced is stSend writing chunk bytes every interval instead (0: as fast as it can), as
// an application with a steady rate does.
func stSendPaced(w, r net.Conn, n int64, seed uint64, chunk int, every time.Duration) *stStream {
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
			if chunk > 0 {
				k = min(int64(chunk), n-s.wcount)
			}
			stFill(buf[:k], rng)
			h.Write(buf[:k])
			m, err := w.Write(buf[:k])
			s.wcount += int64(m)
			if err != nil {
				s.werr = err
				return
			}
			if every > 0 {
				time.Sleep(every)
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
func stRaceLab(t *testing.T) *testkit.MemLab {
	t.Helper()
	return testkit.NewMemLabGraph(t, rendr.Options{}, func(p map[string]*rendr.Target) *rendr.Target {
		return rendr.Race("race", p["good"], p["lossy"])
	}, testkit.LinkSpec{Name: "good", AB: stGoodLink, BA: stGoodLink},
		testkit.LinkSpec{Name: "lossy", AB: stLossy, BA: stLossy})
}

func p99(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)*99/100]
}

// listenerActive names the paths the listening side sends on.
func listenerActive(lb *testkit.MemLab) []string {
	var out []string
	for _, s := range lb.LN.Sessions() {
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

// stWatch records the migrations of one flow, as its dialing side reports them.
func stWatch(c *rendr.Conn) *testkit.Migrations {
	m := &testkit.Migrations{}
	c.OnMigrate(m.Record)
	return m
}

// killActive kills the live carrier of the active path.
func killActive(lb *testkit.MemLab, reset bool) (name string, id uint32) {
	lb.T.Helper()
	name = lb.Active()
	if name == "" {
		lb.T.Fatalf("no active path: %s", testkit.Describe(lb.Status()))
	}
	id = lb.PathStatus(name).ID
	lb.Paths[name].Live().Kill(reset)
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
