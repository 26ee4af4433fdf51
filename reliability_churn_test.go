// Reliability matrix row 7: lifecycle churn of many sessions at once leaks nothing.

package rendr_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/tcp"
	"github.com/rendr-go/rendr/transport/udpflow"
	"go.uber.org/goleak"
)

// Row 7 of the reliability matrix: lifecycle churn. Ten rounds of fifty sessions, each its own
// Dialer, opened at once against one Listener over real loopback sockets; each moves some bytes
// both ways on a flow, then closes. After every round the listener must have forgotten every
// session and the process must be back to the goroutines and open descriptors it had with the
// listener alone; after the last, with the listener closed too, to where it started.
//
// Fifty handshakes take about a second under the race detector on two cores, so the udpflow
// variant runs 4 rounds in a normal run and all 10 when RENDR_SOAK is set.
func TestReliabilityChurn(t *testing.T) {
	const sessions, bytes = 50, 32 << 10
	for _, carrier := range []string{"tcp", "udpflow"} {
		rounds := 10
		if carrier == "udpflow" && os.Getenv("RENDR_SOAK") == "" {
			rounds = 4
		}
		t.Run(carrier, func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			fds0 := rlOpenFDs(t)
			var src net.Listener
			var err error
			var dial transport.DialFunc
			if carrier == "tcp" {
				src, err = tcp.Listen("127.0.0.1:0")
				if err == nil {
					dial = tcp.Dialer(src.Addr().String())
				}
			} else {
				src, err = udpflow.Listen("127.0.0.1:0")
				if err == nil {
					dial = udpflow.Dialer(src.Addr().String())
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			srv := rendr.MustNewKey()
			var peers []rendr.PublicKey
			var keys []rendr.PrivateKey
			for range sessions {
				k := rendr.MustNewKey()
				keys = append(keys, k)
				peers = append(peers, k.Public())
			}
			// A dialer's CLOSE is one datagram on udpflow; if it is lost, the listener learns of
			// the end only when the path falls silent and ReconnectTimeout passes. Both ends get
			// the same, shorter timeout: a listener that gives up sooner than its dialer would
			// answer the dialer's re-dial after a path death (possible on a starved machine)
			// with "unknown session", and the flow would fail with ErrPeerRestarted.
			opts := rendr.Options{ReconnectTimeout: rlChurnReconnect}
			ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: peers, Options: opts}, src)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			// The listener serves each flow it accepts: it echoes every byte back, then
			// closes.
			var serve sync.WaitGroup
			serve.Add(1)
			go func() {
				defer serve.Done()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					serve.Add(1)
					go func() {
						defer serve.Done()
						defer c.Close()
						c.SetDeadline(time.Now().Add(time.Minute))
						buf := make([]byte, 16<<10)
						for {
							n, err := c.Read(buf)
							if n > 0 {
								if _, werr := c.Write(buf[:n]); werr != nil {
									return
								}
							}
							if err != nil {
								c.(*rendr.Conn).CloseWrite()
								return
							}
						}
					}()
				}
			}()
			// What the listener alone holds: its sources, its accept loop, the echo server.
			base := rlSettle()
			fdsL := rlOpenFDs(t)
			var peakG, peakFD int
			var slowest time.Duration
			var lingered int
			start := time.Now()
			for round := range rounds {
				rs := time.Now()
				var wg sync.WaitGroup
				errs := make(chan error, sessions)
				var mu sync.Mutex
				for i := range sessions {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := rlChurnOne(keys[i], srv.Public(), dial, opts, bytes, uint64(round*sessions+i)); err != nil {
							errs <- fmt.Errorf("round %d session %d: %w", round, i, err)
						}
						mu.Lock()
						peakG = max(peakG, runtime.NumGoroutine())
						peakFD = max(peakFD, rlOpenFDs(t))
						mu.Unlock()
					}()
				}
				wg.Wait()
				tRun := time.Since(rs)
				close(errs)
				for err := range errs {
					t.Error(err)
				}
				if t.Failed() {
					t.FailNow()
				}
				// Sessions still there a moment after their dialers closed: their CLOSE was lost
				// (a figure, not a check: the wait below is the check).
				testkit.Wait(200*time.Millisecond, func() bool { return len(ln.Sessions()) == 0 })
				lingered += len(ln.Sessions())
				if !testkit.Wait(rlChurnReconnect+20*time.Second, func() bool { return len(ln.Sessions()) == 0 }) {
					t.Fatalf("round %d: the listener still holds %d sessions after every dialer closed", round, len(ln.Sessions()))
				}
				var g int
				if !testkit.Wait(20*time.Second, func() bool { g = runtime.NumGoroutine(); return g <= base }) {
					t.Fatalf("round %d: %d goroutines after the sessions closed, %d with the listener alone", round, g, base)
				}
				var fds int
				if !testkit.Wait(20*time.Second, func() bool { fds = rlOpenFDs(t); return fds <= fdsL }) {
					t.Fatalf("round %d: %d open descriptors after the sessions closed, %d with the listener alone", round, fds, fdsL)
				}
				slowest = max(slowest, tRun)
			}
			took := time.Since(start)
			ln.Close()
			serve.Wait()
			if err := goleak.Find(leaks); err != nil {
				t.Fatalf("goroutines left after the listener closed: %v", err)
			}
			fds := rlWaitFDs(t, fds0)
			t.Logf("%s: %d sessions in %d rounds of %d, %d bytes each way each, in %v (slowest round %v); %d sessions outlived their dialer by 200ms; goroutines: %d with the listener alone, %d at the peak; descriptors: %d at the start, %d with the listener, %d at the peak, %d at the end",
				carrier, rounds*sessions, rounds, sessions, bytes, took.Round(time.Millisecond), slowest.Round(time.Millisecond), lingered, base, peakG, fds0, fdsL, peakFD, fds)
		})
	}
}

// rlChurnReconnect is both ends' ReconnectTimeout in the churn.
const rlChurnReconnect = 5 * time.Second

// rlSettle waits (bounded) for the goroutine count to stop falling and returns it.
func rlSettle() int {
	n := runtime.NumGoroutine()
	for range 100 {
		time.Sleep(10 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return n
		}
		n = m
	}
	return n
}

// rlChurnOne is one session's life: a Dialer, one flow that sends n bytes and reads them back
// from the echo, and Close.
func rlChurnOne(key rendr.PrivateKey, peer rendr.PublicKey, dial transport.DialFunc, opts rendr.Options, n int, seed uint64) error {
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: key, PeerKey: peer, Root: rendr.Path("p", dial), Options: opts})
	if err != nil {
		return err
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	sent := make(chan error, 1)
	want := stPattern(n, seed)
	go func() {
		_, err := c.Write(want)
		if err == nil {
			err = c.CloseWrite()
		}
		sent <- err
	}()
	got := make([]byte, 0, n)
	buf := make([]byte, 16<<10)
	for {
		k, err := c.Read(buf)
		got = append(got, buf[:k]...)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return fmt.Errorf("read after %d bytes: %w", len(got), err)
			}
			break
		}
	}
	if err := <-sent; err != nil {
		return err
	}
	if string(got) != string(want) {
		return fmt.Errorf("echo: %d bytes back of %d, equal %v", len(got), n, string(got) == string(want))
	}
	return nil
}
