// Reliability matrix rows 3a and 3b: every path down for a while, then for good.

package rendr_test

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/internal/testlink"
	"go.uber.org/goleak"
)

// Row 3 of the reliability matrix: every path down at once. Shorter than ReconnectTimeout, the
// flow waits and resumes with every byte; longer, its reads and writes fail with ErrNoPath
// (rendr.go: "no path could be attached for longer than the reconnect timeout") instead of
// hanging, and once everything is closed no goroutine and no file descriptor is left.
// TestSynctestAllPathsDownThenBack and TestSynctestNoPathTimeout do the same over stream links
// in virtual time; these add datagram links, and real sockets where descriptors can leak.

// rlOutageShort blackholes every path for holeFor while two flows run, then lifts it, waits
// for bytes to move again and checks both flows.
func rlOutageShort(t *testing.T, hole func(on bool), up, down *rlFlow, holeFor time.Duration, limit time.Duration) {
	t.Helper()
	hole(true)
	time.Sleep(holeFor)
	select {
	case <-up.done:
		t.Fatalf("flow ended during an outage shorter than ReconnectTimeout: write %v, read %v", up.werr, up.rerr)
	case <-down.done:
		t.Fatalf("flow ended during an outage shorter than ReconnectTimeout: write %v, read %v", down.werr, down.rerr)
	default:
	}
	hole(false)
	// Let bytes flow again for a while before stopping: the check is that they did.
	mark := up.read.Load() + down.read.Load()
	deadline := time.Now().Add(limit)
	for up.read.Load()+down.read.Load() < mark+64<<10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	up.finish(t, "dialer to listener", limit)
	down.finish(t, "listener to dialer", limit)
}

// rlExpectNoPath waits (bounded) for both ends of a flow to fail, and checks the error.
func rlExpectNoPath(t *testing.T, c1, c2 *rendr.Conn, limit time.Duration) {
	t.Helper()
	errs := make(chan error, 2)
	for _, c := range []*rendr.Conn{c1, c2} {
		go func() {
			_, err := c.Read(make([]byte, 1024))
			errs <- err
		}()
	}
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, rendr.ErrNoPath) {
				t.Errorf("Read after an outage longer than ReconnectTimeout = %v, want ErrNoPath", err)
			}
		case <-time.After(limit):
			t.Fatalf("a Read still waits %v into an outage longer than ReconnectTimeout", limit)
		}
	}
	if _, err := c1.Write([]byte("x")); !errors.Is(err, rendr.ErrNoPath) {
		t.Errorf("Write after the flow failed = %v, want ErrNoPath", err)
	}
}

func TestReliabilityOutageDatagramPaths(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const reconnect = 5 * time.Second
		link := testlink.PacketConfig{Delay: 5 * time.Millisecond, Jitter: time.Millisecond, Seed: 31}
		lb := rlNewLab(t, rendr.Options{ReconnectTimeout: reconnect, HandshakeTimeout: time.Second}, rlSelector,
			rlSpec{name: "a", packet: true, pab: link, pba: link},
			rlSpec{name: "b", packet: true, pab: link, pba: link})
		dc, lc := lb.open()
		defer dc.Close()
		defer lc.Close()
		lb.mustWait("paths up", 10*time.Second, lb.allUp)
		hole := func(on bool) {
			for _, p := range lb.paths {
				p.hole(on)
			}
		}
		up := rlStartFlow(dc, lc, 16<<10, 20*time.Millisecond, 3)
		down := rlStartFlow(lc, dc, 16<<10, 20*time.Millisecond, 4)
		time.Sleep(time.Second)
		start := time.Now()
		rlOutageShort(t, hole, up, down, reconnect-time.Second, time.Minute)
		t.Logf("outage of %v (ReconnectTimeout %v): longest gap %v up, %v down; back to exact delivery in %v",
			reconnect-time.Second, reconnect, up.gap(), down.gap(), time.Since(start))

		dc2, lc2 := lb.open()
		defer dc2.Close()
		defer lc2.Close()
		hole(true)
		start = time.Now()
		rlExpectNoPath(t, dc2, lc2, 4*reconnect)
		t.Logf("outage longer than ReconnectTimeout: flows failed with ErrNoPath after %v", time.Since(start))
	})
}

// The same over real loopback sockets (TCP, and udpflow over UDP), behind relays that
// blackhole: goroutines and open descriptors must come back to where they were.
func TestReliabilityOutageKernel(t *testing.T) {
	for _, carrier := range []string{"tcp", "udpflow"} {
		t.Run(carrier, func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			fds := rlOpenFDs(t)
			const reconnect = 1500 * time.Millisecond
			opts := rendr.Options{ReconnectTimeout: reconnect, HandshakeTimeout: 500 * time.Millisecond}
			r := testkit.NewRig(t, testkit.RigConfig{Paths: 2, Carrier: carrier, Options: opts})
			c1, c2 := r.Open()
			testkit.WaitUp(t, "dialer", c1.Status, 2, 20*time.Second)
			hole := func(on bool) {
				for _, rl := range r.Relays {
					rl.Block(on)
				}
			}
			up := rlStartFlow(c1, c2, 16<<10, 5*time.Millisecond, 5)
			down := rlStartFlow(c2, c1, 16<<10, 5*time.Millisecond, 6)
			time.Sleep(200 * time.Millisecond)
			rlOutageShort(t, hole, up, down, reconnect/2, 30*time.Second)
			t.Logf("%s: outage of %v (ReconnectTimeout %v): longest gap %v up, %v down; %d and %d bytes",
				carrier, reconnect/2, reconnect, up.gap(), down.gap(), up.wcount, down.wcount)

			d1, d2 := r.Open()
			hole(true)
			start := time.Now()
			rlExpectNoPath(t, d1, d2, 30*time.Second)
			t.Logf("%s: flows failed with ErrNoPath %v into an outage (ReconnectTimeout %v)",
				carrier, time.Since(start).Round(time.Millisecond), reconnect)
			for _, c := range []*rendr.Conn{c1, c2, d1, d2} {
				c.Close()
			}
			r.Close()
			if err := goleak.Find(leaks); err != nil {
				t.Fatalf("goroutines left after Close: %v", err)
			}
			after := rlWaitFDs(t, fds)
			t.Logf("%s: %d open descriptors before, %d after Close", carrier, fds, after)
		})
	}
}
