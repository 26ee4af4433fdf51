package rendr_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testlink"
	"github.com/rendr-go/rendr/path"
	"github.com/rendr-go/rendr/status"
)

// These scenarios run the whole library (handshake, paths, engine, policy) over in-memory
// links inside testing/synctest bubbles: virtual time makes delays, rates and the liveness
// deadlines exact, so the checks on when things happen are deterministic, not timing guesses.

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

// link shapes shared by the scenarios.
var (
	stGoodLink = testlink.Config{Delay: 2 * time.Millisecond, Jitter: 500 * time.Microsecond, Rate: 20 << 20, Buffer: 256 << 10, Seed: 1}
	stPoorLink = testlink.Config{Delay: 40 * time.Millisecond, Jitter: 15 * time.Millisecond, Rate: 4 << 20, Buffer: 256 << 10, Seed: 2}
)

func TestSynctestSelectorPicksBetterPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := stNewLab(t, rendr.Options{Dwell: 500 * time.Millisecond},
			stLinkSpec{name: "poor", ab: stPoorLink, ba: stPoorLink},
			stLinkSpec{name: "good", ab: stGoodLink, ba: stGoodLink})
		// The session starts with the first flow. Let both paths attach and measure their
		// round trips before traffic starts.
		dc, lc := lb.open()
		defer dc.Close()
		defer lc.Close()
		lb.mustWait("both paths up and measured", 10*time.Second, func() bool {
			if !lb.allUp() {
				return false
			}
			for _, p := range lb.status().Paths {
				if p.SRTT == 0 {
					return false
				}
			}
			return true
		})
		time.Sleep(2 * time.Second) // a few idle probes each
		up, down := stDuplex(dc, lc, 8<<20, 10)
		up.check(t, "up", time.Minute)
		down.check(t, "down", time.Minute)
		if a := lb.active(); a != "good" {
			t.Fatalf("active path %q, want good; %s", a, stDescribe(lb.status()))
		}
		good, poor := lb.pathStatus("good"), lb.pathStatus("poor")
		if good.BytesSent < 4<<20 || poor.BytesSent > good.BytesSent {
			t.Errorf("carrier bytes sent: good %d, poor %d; the transfer should have used the good path", good.BytesSent, poor.BytesSent)
		}

		// The good path gets worse, gradually (a sudden jump would look like a stall): once it
		// has been clearly worse for Dwell, traffic moves for quality.
		dc2, lc2 := lb.open()
		defer dc2.Close()
		defer lc2.Close()
		m := stWatch(dc2)
		stop := stTrickle(dc2, lc2) // keeps the engine asking where to send, however slow
		gp := lb.paths["good"]
		for d := stGoodLink.Delay; d <= 100*time.Millisecond; d += 5 * time.Millisecond {
			bad := stGoodLink
			bad.Delay, bad.Jitter = d, 0
			gp.setShape(bad, bad)
			time.Sleep(100 * time.Millisecond)
		}
		lb.mustWait("traffic moves to the better path", 20*time.Second, func() bool { return lb.active() == "poor" })
		if err := stop(); err != nil {
			t.Fatalf("trickle: %v", err)
		}
		evs := m.list()
		if len(evs) == 0 || evs[0].From != "good" || evs[0].To != "poor" || evs[0].Cause != status.CauseQuality {
			t.Errorf("migrations %+v, want good->poor for quality first", evs)
		}
	})
}

// killActive kills the live carrier of the active path.
func (lb *stLab) killActive(reset bool) (name string, id uint32) {
	lb.t.Helper()
	name = lb.active()
	if name == "" {
		lb.t.Fatalf("no active path: %s", stDescribe(lb.status()))
	}
	id = lb.pathStatus(name).ID
	lb.paths[name].live().Kill(reset)
	return name, id
}

func TestSynctestKillActiveRepeatedly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := stNewLab(t, rendr.Options{},
			stLinkSpec{name: "a", ab: stGoodLink, ba: stGoodLink},
			stLinkSpec{name: "b", ab: stGoodLink, ba: stGoodLink})
		dc, lc := lb.open()
		defer dc.Close()
		defer lc.Close()
		m := stWatch(dc)
		lb.mustWait("all paths up", 10*time.Second, lb.allUp)
		const size, kills = 24 << 20, 6
		up, down := stDuplex(dc, lc, size, 30)
		for i := range kills {
			lb.mustWait("progress", time.Minute, func() bool { return up.read.Load() >= int64(i+1)*(size/(kills+2)) })
			lb.mustWait("all paths up before a kill", 30*time.Second, lb.allUp)
			name, id := lb.killActive(i%2 == 1)
			lb.mustWait("traffic leaves the killed path", 5*time.Second, func() bool {
				a := lb.active()
				return a != "" && a != name
			})
			lb.mustWait("killed path re-dialed and up", 30*time.Second, func() bool {
				p := lb.pathStatus(name)
				return p.State == status.Up && p.ID != id
			})
		}
		up.check(t, "up", 5*time.Minute)
		down.check(t, "down", 5*time.Minute)
		if got := dc.Migrations(); got < kills {
			t.Errorf("Migrations() = %d, want at least %d", got, kills)
		}
		deaths := 0
		for _, ev := range m.list() {
			if ev.Cause == status.CauseDeath {
				deaths++
			}
		}
		if deaths < kills {
			t.Errorf("%d stMigrations caused by death, want %d: %+v", deaths, kills, m.list())
		}
		if d := lb.paths["a"].dials() + lb.paths["b"].dials(); d < 2+kills {
			t.Errorf("%d carriers dialed, want at least %d", d, 2+kills)
		}
		lb.mustWait("all paths up at the end", 30*time.Second, lb.allUp)
	})
}

// deadAfter blackholes the active path's live carrier and returns how long (virtual time) it
// took until the path was declared dead: it is Down or re-dialed under a new ID.
func (lb *stLab) deadAfter() (name string, took time.Duration) {
	lb.t.Helper()
	name = lb.active()
	if name == "" {
		lb.t.Fatalf("no active path: %s", stDescribe(lb.status()))
	}
	id := lb.pathStatus(name).ID
	lb.paths[name].live().Blackhole(true)
	took = lb.mustWait("blackholed path declared dead", 30*time.Second, func() bool {
		p := lb.pathStatus(name)
		return p.ID != id || p.State == status.Down || p.State == status.Connecting
	})
	return name, took
}

func TestSynctestBlackholeActive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb, dc, lc := stTwoGoodPaths(t)
		defer dc.Close()
		defer lc.Close()
		m := stWatch(dc)
		const size = 16 << 20
		up, down := stDuplex(dc, lc, size, 40)
		lb.mustWait("progress", time.Minute, func() bool { return up.read.Load() >= size/4 })
		name, took := lb.deadAfter()
		if took > time.Second {
			t.Errorf("silent path %s declared dead %v after the blackhole while data flows, want within 1s", name, took)
		}
		up.check(t, "up", 5*time.Minute)
		down.check(t, "down", 5*time.Minute)
		evs := m.list()
		if len(evs) == 0 || evs[0].From != name || (evs[0].Cause != status.CauseStall && evs[0].Cause != status.CauseDeath) {
			t.Errorf("migrations %+v, want one away from %s for stall or death first", evs, name)
		}

		// Idle: no data for a while, so the paths probe at the idle rate.
		lb.mustWait("all paths up again", 30*time.Second, lb.allUp)
		time.Sleep(5 * time.Second)
		name, took = lb.deadAfter()
		if took > 3*time.Second {
			t.Errorf("idle silent path %s declared dead %v after the blackhole, want within 3s", name, took)
		}
		// The session still carries flows after all that.
		dc2, lc2 := lb.open()
		defer dc2.Close()
		defer lc2.Close()
		up, down = stDuplex(dc2, lc2, 1<<20, 41)
		up.check(t, "up after idle blackhole", time.Minute)
		down.check(t, "down after idle blackhole", time.Minute)
	})
}

func TestSynctestCorruptActive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb, dc, lc := stTwoGoodPaths(t)
		defer dc.Close()
		defer lc.Close()
		const size = 8 << 20
		up, down := stDuplex(dc, lc, size, 50)
		lb.mustWait("progress", time.Minute, func() bool { return up.read.Load() >= size/4 })
		name := lb.active()
		id := lb.pathStatus(name).ID
		lb.paths[name].live().Corrupt(3)
		lb.mustWait("corrupted path dies", 10*time.Second, func() bool { return lb.pathStatus(name).ID != id })
		up.check(t, "up", 5*time.Minute)
		down.check(t, "down", 5*time.Minute)
		if !lb.logs.logged(path.ErrRecord) {
			t.Errorf("no path died with a record error (path.ErrRecord); %s", stDescribe(lb.status()))
		}
	})
}

func TestSynctestIdleFlowsCostNoGoroutines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := stNewLab(t, rendr.Options{},
			stLinkSpec{name: "a", ab: stGoodLink, ba: stGoodLink},
			stLinkSpec{name: "b", ab: stGoodLink, ba: stGoodLink})
		first, firstL := lb.open()
		lb.mustWait("all paths up", 10*time.Second, lb.allUp)
		synctest.Wait()
		before := runtime.NumGoroutine()
		const flows = 10000
		conns := make([]*rendr.Conn, 0, 2*flows)
		// Open in batches, accepting each batch, as a server keeps up with its Accept loop.
		for len(conns) < 2*flows {
			var batch []*rendr.Conn
			for range 500 {
				dc, err := lb.d.Dial()
				if err != nil {
					t.Fatalf("Dial after %d flows: %v", len(conns)/2, err)
				}
				batch = append(batch, dc)
			}
			for range batch {
				lc, err := lb.ln.Accept()
				if err != nil {
					t.Fatalf("Accept after %d flows: %v", len(conns)/2, err)
				}
				conns = append(conns, lc.(*rendr.Conn))
			}
			conns = append(conns, batch...)
		}
		synctest.Wait()
		time.Sleep(time.Second)
		synctest.Wait()
		after := runtime.NumGoroutine()
		if after > before+4 {
			t.Errorf("goroutines: %d before, %d with %d more idle flows", before, after, flows)
		}
		if got := lb.status().Flows; got != flows+1 {
			t.Errorf("dialer has %d flows, want %d", got, flows+1)
		}
		// The first flow still moves data among them.
		up, down := stDuplex(first, firstL, 1<<20, 60)
		up.check(t, "up", time.Minute)
		down.check(t, "down", time.Minute)
		for _, c := range conns {
			c.Close()
		}
		first.Close()
		firstL.Close()
		lb.mustWait("every flow forgotten on both sides", time.Minute, func() bool {
			ss := lb.ln.Sessions()
			return lb.status().Flows == 0 && len(ss) == 1 && ss[0].Flows == 0
		})
	})
}

// stPattern is n deterministic pseudo-random bytes.
func stPattern(n int, seed uint64) []byte {
	b := make([]byte, n)
	stFill(b, rand.New(rand.NewPCG(seed, 0)))
	return b
}

func stIsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}

func TestSynctestFlowControlBackPressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := stNewLab(t, rendr.Options{}, stLinkSpec{name: "a", ab: stGoodLink, ba: stGoodLink})
		dc, lc := lb.open()
		defer dc.Close()
		defer lc.Close()
		data := stPattern(16<<20, 70)
		// Nobody reads: Write must block once the windows are full, and time out.
		dc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		n, err := dc.Write(data)
		if !stIsTimeout(err) {
			t.Fatalf("Write to a flow nobody reads = %d, %v; want a timeout", n, err)
		}
		if n <= 0 || n > 4<<20 {
			t.Fatalf("Write buffered %d bytes before blocking, want a bounded amount (0 < n <= 4 MiB)", n)
		}
		t.Logf("buffered %d bytes before blocking", n)
		dc.SetWriteDeadline(time.Time{})
		got := make(chan []byte, 1)
		go func() {
			b, err := io.ReadAll(lc)
			if err != nil {
				t.Errorf("ReadAll: %v", err)
			}
			got <- b
		}()
		if m, err := dc.Write(data[n:]); err != nil || m != len(data)-n {
			t.Fatalf("Write of the rest = %d, %v", m, err)
		}
		dc.CloseWrite()
		if b := <-got; !bytes.Equal(b, data) {
			t.Fatalf("read %d bytes, want exactly the %d written", len(b), len(data))
		}
	})
}

func TestSynctestWindowGrowsWithBDP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 50ms each way at 100 MB/s: a bandwidth-delay product of 10 MB. A fixed 256 KiB
		// window would allow 256 KiB per 100ms round trip, about 2.6 MB/s.
		fat := testlink.Config{Delay: 50 * time.Millisecond, Rate: 100e6, Buffer: 32 << 20}
		lb := stNewLab(t, rendr.Options{}, stLinkSpec{name: "fat", ab: fat, ba: fat})
		dc, lc := lb.open()
		defer dc.Close()
		defer lc.Close()
		lb.mustWait("path measured", 10*time.Second, func() bool { return lb.pathStatus("fat").SRTT > 0 })
		const size = 48 << 20
		s := stSend(dc, lc, size, 80)
		s.check(t, "transfer", 5*time.Minute)
		el := s.finished.Sub(s.start)
		rate := float64(size) / el.Seconds()
		t.Logf("%d MiB in %v of virtual time: %.1f MB/s", size>>20, el, rate/1e6)
		if rate < 10e6 {
			t.Errorf("throughput %.1f MB/s over a 10 MB bandwidth-delay product, want > 10 MB/s: windows do not grow", rate/1e6)
		}
	})
}

func TestSynctestDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := stNewLab(t, rendr.Options{}, stLinkSpec{name: "a", ab: stGoodLink, ba: stGoodLink})
		dc, lc := lb.open()
		defer dc.Close()
		defer lc.Close()
		buf := make([]byte, 100)

		start := time.Now()
		lc.SetReadDeadline(start.Add(50 * time.Millisecond))
		if _, err := lc.Read(buf); !stIsTimeout(err) || time.Since(start) != 50*time.Millisecond {
			t.Errorf("Read = %v at %v, want a timeout at 50ms", err, time.Since(start))
		}
		// A deadline in the past fails at once, even with data waiting.
		dc.Write([]byte("x"))
		synctest.Wait()
		time.Sleep(10 * time.Millisecond)
		start = time.Now()
		lc.SetReadDeadline(start.Add(-time.Second))
		if _, err := lc.Read(buf); !stIsTimeout(err) || time.Since(start) != 0 {
			t.Errorf("Read with a past deadline = %v", err)
		}

		// Extending a pending Read's deadline moves it.
		lc.SetReadDeadline(time.Time{})
		if n, err := lc.Read(buf); n != 1 || err != nil {
			t.Fatalf("Read = %d, %v", n, err)
		}
		start = time.Now()
		lc.SetReadDeadline(start.Add(80 * time.Millisecond))
		go func() {
			time.Sleep(10 * time.Millisecond)
			lc.SetReadDeadline(start.Add(100 * time.Millisecond))
		}()
		if _, err := lc.Read(buf); !stIsTimeout(err) || time.Since(start) != 100*time.Millisecond {
			t.Errorf("Read = %v at %v, want a timeout at the extended 100ms", err, time.Since(start))
		}

		// Cleared: a Read waits as long as it takes.
		lc.SetReadDeadline(time.Time{})
		go func() {
			time.Sleep(time.Minute)
			dc.Write([]byte("late"))
		}()
		start = time.Now()
		if n, err := lc.Read(buf); n != 4 || err != nil || time.Since(start) < time.Minute {
			t.Errorf("Read = %d, %v after %v", n, err, time.Since(start))
		}

		// A Write blocked by flow control times out exactly at its deadline.
		start = time.Now()
		dc.SetWriteDeadline(start.Add(200 * time.Millisecond))
		if _, err := dc.Write(make([]byte, 8<<20)); !stIsTimeout(err) || time.Since(start) != 200*time.Millisecond {
			t.Errorf("Write = %v at %v, want a timeout at 200ms", err, time.Since(start))
		}
		dc.SetWriteDeadline(time.Time{})

		// Close unblocks a pending Read and a pending Write with ErrClosed.
		errs := make(chan error, 2)
		go func() {
			_, err := dc.Write(make([]byte, 8<<20))
			errs <- err
		}()
		go func() {
			_, err := dc.Read(buf)
			errs <- err
		}()
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if len(errs) != 0 {
			t.Fatalf("Read or Write returned early: %v", <-errs)
		}
		dc.Close()
		synctest.Wait()
		for range 2 {
			select {
			case err := <-errs:
				if !errors.Is(err, net.ErrClosed) || !errors.Is(err, rendr.ErrClosed) {
					t.Errorf("pending call after Close = %v, want ErrClosed", err)
				}
			default:
				t.Fatal("Close did not unblock a pending call")
			}
		}
	})
}

func TestSynctestHalfClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := stNewLab(t, rendr.Options{}, stLinkSpec{name: "a", ab: stGoodLink, ba: stGoodLink})
		dc, lc := lb.open()
		defer dc.Close()
		defer lc.Close()
		// stSend half-closes the writer when done, and the reader checks io.EOF after every byte.
		stSend(dc, lc, 3<<20, 90).check(t, "dialer to listener", time.Minute)
		if _, err := dc.Write([]byte("x")); !errors.Is(err, rendr.ErrWriteClosed) {
			t.Errorf("Write after CloseWrite = %v, want ErrWriteClosed", err)
		}
		stSend(lc, dc, 3<<20, 91).check(t, "listener to dialer after the dialer's EOF", time.Minute)
		dc.Close()
		lc.Close()
		lb.mustWait("flow forgotten on both sides once both closed", 10*time.Second, func() bool {
			ss := lb.ln.Sessions()
			return lb.status().Flows == 0 && len(ss) == 1 && ss[0].Flows == 0
		})
	})
}

// stTrickle keeps a little data moving on a flow, so the engine keeps asking the policy where
// to send, and checks every byte arrives.
func stTrickle(dc, lc *rendr.Conn) (stop func() error) {
	quit := make(chan struct{})
	werr := make(chan error, 1)
	rerr := make(chan error, 1)
	go func() {
		var seq byte
		for {
			select {
			case <-quit:
				werr <- dc.CloseWrite()
				return
			case <-time.After(5 * time.Millisecond):
			}
			b := make([]byte, 512)
			for i := range b {
				b[i] = seq
				seq++
			}
			if _, err := dc.Write(b); err != nil {
				werr <- err
				return
			}
		}
	}()
	go func() {
		var seq byte
		buf := make([]byte, 4096)
		for {
			n, err := lc.Read(buf)
			for _, c := range buf[:n] {
				if c != seq {
					rerr <- errors.New("trickle: byte out of sequence")
					return
				}
				seq++
			}
			if err == io.EOF {
				rerr <- nil
				return
			}
			if err != nil {
				rerr <- err
				return
			}
		}
	}()
	return func() error {
		close(quit)
		return errors.Join(<-werr, <-rerr)
	}
}

func TestSynctestPriorityTiers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const recover = 400 * time.Millisecond
		// The backup is the faster link: tiers, not scores, keep traffic on the primary.
		slow := testlink.Config{Delay: 20 * time.Millisecond, Rate: 20 << 20, Buffer: 256 << 10}
		lb := stNewLab(t, rendr.Options{RecoverDwell: recover, Dwell: 300 * time.Millisecond},
			stLinkSpec{name: "primary", ab: slow, ba: slow},
			stLinkSpec{name: "backup", ab: stGoodLink, ba: stGoodLink, opts: []rendr.PathOption{rendr.Backup()}})
		dc, lc := lb.open()
		defer dc.Close()
		defer lc.Close()
		m := stWatch(dc)
		stop := stTrickle(dc, lc)
		lb.mustWait("all paths up", 10*time.Second, lb.allUp)
		lb.mustWait("primary active", 5*time.Second, func() bool { return lb.active() == "primary" })
		if _, ok := stWaitUntil(5*time.Second, time.Millisecond, func() bool { return lb.active() != "primary" }); ok {
			t.Fatalf("traffic left the primary while it was up: %s", stDescribe(lb.status()))
		}

		// The primary dies and cannot come back for a while: the backup carries traffic.
		seen := len(m.list())
		lb.paths["primary"].setCut(true)
		lb.paths["primary"].live().Kill(true)
		lb.mustWait("backup active", 5*time.Second, func() bool { return lb.active() == "backup" })
		time.Sleep(2 * time.Second)
		if a := lb.active(); a != "backup" {
			t.Fatalf("active %q while the primary is cut", a)
		}

		// The primary returns: traffic goes back to it once it has been up for RecoverDwell.
		lb.paths["primary"].setCut(false)
		lb.mustWait("primary up again", 10*time.Second, func() bool { return lb.pathStatus("primary").State == status.Up })
		back, ok := stWaitUntil(5*time.Second, time.Millisecond, func() bool { return lb.active() == "primary" })
		if !ok {
			t.Fatalf("traffic did not return to the primary: %s", stDescribe(lb.status()))
		}
		if back < recover-2*time.Millisecond || back > recover+100*time.Millisecond {
			t.Errorf("traffic returned to the primary %v after it came up, want after RecoverDwell (%v)", back, recover)
		}
		if err := stop(); err != nil {
			t.Fatalf("trickle: %v", err)
		}
		var causes []status.Cause
		for _, ev := range m.list()[seen:] {
			causes = append(causes, ev.Cause)
		}
		want := []status.Cause{status.CauseDeath, status.CauseRecovery}
		if len(causes) != len(want) || causes[0] != want[0] || causes[1] != want[1] {
			t.Errorf("migration causes %v, want %v", causes, want)
		}
	})
}

func TestSynctestAllPathsDownThenBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb, dc, lc := stTwoGoodPaths(t)
		defer dc.Close()
		defer lc.Close()
		const size = 8 << 20
		up, down := stDuplex(dc, lc, size, 100)
		lb.mustWait("progress", time.Minute, func() bool { return up.read.Load() >= size/4 })
		for _, p := range lb.paths {
			p.setCut(true)
			p.live().Kill(true)
		}
		lb.mustWait("no path left", 5*time.Second, func() bool { return lb.active() == "" })
		// A long outage (below ReconnectTimeout) is no error for the flow: it just waits.
		time.Sleep(10 * time.Second)
		select {
		case <-up.done:
			t.Fatalf("transfer ended with no path: write %v, read %v", up.werr, up.rerr)
		case <-down.done:
			t.Fatalf("transfer ended with no path: write %v, read %v", down.werr, down.rerr)
		default:
		}
		for _, p := range lb.paths {
			p.setCut(false)
		}
		up.check(t, "up", 5*time.Minute)
		down.check(t, "down", 5*time.Minute)
	})
}

func TestSynctestNoPathTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const reconnect = 3 * time.Second
		lb := stNewLab(t, rendr.Options{ReconnectTimeout: reconnect},
			stLinkSpec{name: "a", ab: stGoodLink, ba: stGoodLink})
		dc, lc := lb.open()
		defer dc.Close()
		defer lc.Close()
		lb.mustWait("path up", 10*time.Second, lb.allUp)
		errs := make(chan error, 2)
		for _, c := range []*rendr.Conn{dc, lc} {
			go func() {
				_, err := c.Read(make([]byte, 10))
				errs <- err
			}()
		}
		lb.paths["a"].setCut(true)
		start := time.Now()
		lb.paths["a"].live().Kill(false)
		for range 2 {
			select {
			case err := <-errs:
				if !errors.Is(err, rendr.ErrNoPath) {
					t.Errorf("Read with no path for ReconnectTimeout = %v, want ErrNoPath", err)
				}
			case <-time.After(2 * reconnect):
				t.Fatalf("flows still waiting %v after the last path died (ReconnectTimeout %v)", 2*reconnect, reconnect)
			}
		}
		if took := time.Since(start); took < reconnect {
			t.Errorf("flows failed %v after the last path died, before ReconnectTimeout (%v)", took, reconnect)
		}
		// The Dialer starts a new session once paths come back.
		lb.paths["a"].setCut(false)
		dc2, lc2 := lb.open()
		defer dc2.Close()
		defer lc2.Close()
		stSend(dc2, lc2, 1<<20, 110).check(t, "new session", time.Minute)
	})
}

// A carrier buffer as deep as a kernel socket's on a slow uplink: under a bulk transfer the
// queue ahead of each probe grows to seconds, but the path keeps delivering, so it is not
// silent and must not be declared dead.
func TestSynctestDeepBufferPathStaysUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := testlink.Config{Delay: 20 * time.Millisecond, Rate: 2e6} // Buffer: the 4 MiB default
		lb := stNewLab(t, rendr.Options{}, stLinkSpec{name: "uplink", ab: slow, ba: slow})
		dc, lc := lb.open()
		defer dc.Close()
		defer lc.Close()
		stSend(dc, lc, 16<<20, 120).check(t, "transfer", 5*time.Minute)
		if n := lb.paths["uplink"].dials(); n != 1 {
			t.Errorf("a path that kept delivering was declared dead and re-dialed %d times: %s", n-1, stDescribe(lb.status()))
		}
	})
}

func TestSynctestCloseDuringMigration(t *testing.T) {
	for i := range 4 {
		synctest.Test(t, func(t *testing.T) {
			lb, dc, lc := stTwoGoodPaths(t)
			defer dc.Close()
			defer lc.Close()
			const size = 8 << 20
			up, down := stDuplex(dc, lc, size, 130)
			lb.mustWait("progress", time.Minute, func() bool { return up.read.Load() >= size/4 })
			// Kill the active path and close, at the same instant or a little after.
			lb.killActive(i%2 == 0)
			time.Sleep(time.Duration(i) * time.Millisecond)
			lb.d.Close()
			lb.ln.Close()
			for _, s := range []*stStream{up, down} {
				select {
				case <-s.done:
				case <-time.After(time.Minute):
					t.Fatal("transfer still blocked after Close")
				}
				// Close lingers to deliver what was written, so the transfer may complete;
				// if it does not, the reader must see the close, never an EOF.
				if s.rerr == nil && s.count == size {
					if s.sent != s.got {
						t.Errorf("delivered by the linger, but SHA-256 differs")
					}
					continue
				}
				if s.rerr == nil || !errors.Is(s.rerr, net.ErrClosed) {
					t.Errorf("Read after Close = %v after %d of %d bytes; want all bytes or an error wrapping net.ErrClosed, never EOF", s.rerr, s.count, size)
				}
			}
		})
	}
}

func TestSynctestCloseDeliversAndStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := stNewLab(t, rendr.Options{}, stLinkSpec{name: "a", ab: stGoodLink, ba: stGoodLink})
		// Close right after a large Write: every byte still arrives, then io.EOF.
		dc, lc := lb.open()
		data := stPattern(2<<20, 140)
		go func() {
			dc.Write(data)
			dc.Close()
		}()
		lc.SetReadDeadline(time.Now().Add(time.Minute))
		if b, err := io.ReadAll(lc); err != nil || !bytes.Equal(b, data) {
			t.Fatalf("ReadAll after the peer's Close = %d bytes, %v; want the %d written, then EOF", len(b), err, len(data))
		}
		lc.Close()

		// CloseRead: the peer's writes fail with ErrStopped; this side can still write.
		dc, lc = lb.open()
		defer dc.Close()
		defer lc.Close()
		if err := lc.CloseRead(); err != nil {
			t.Fatal(err)
		}
		dc.SetWriteDeadline(time.Now().Add(time.Minute))
		var err error
		for i := 0; i < 1000 && err == nil; i++ {
			_, err = dc.Write(make([]byte, 64<<10))
		}
		if !errors.Is(err, rendr.ErrStopped) {
			t.Fatalf("Write to a flow whose peer stopped reading = %v, want ErrStopped", err)
		}
		stSend(lc, dc, 1<<20, 141).check(t, "the stopped side still writes", time.Minute)
	})
}
