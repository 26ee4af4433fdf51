// Lossless migration for a real program: iperf3's TCP stream, carried by a rendr flow,
// survives the failing paths under it.

package rendr_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/relay"
	"github.com/rendr-go/rendr/internal/testkit"
)

// TestIperf3ThroughFailingPaths runs a real program across rendr: iperf3's client talks to
// its server through a port forwarder built on rendr (a local TCP port on the dialing side,
// flows carried to the listening side and on to the server), while the active path is reset
// and then silently stalled. iperf3 opens a control and a data connection, so two flows share
// the session; a flow that lost a byte or saw a reset would make iperf3 fail or hang.
func TestIperf3ThroughFailingPaths(t *testing.T) {
	bin, err := exec.LookPath("iperf3")
	if err != nil {
		t.Skip("iperf3 not installed (.ci/run installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The iperf3 server, for one test, on a free loopback port.
	port := rtFreePort(t)
	srv := exec.CommandContext(ctx, bin, "-s", "-1", "-B", "127.0.0.1", "-p", fmt.Sprint(port))
	srvOut := &lockedBuffer{}
	srv.Stdout, srv.Stderr = srvOut, srvOut
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()

	r := testkit.NewRig(t, testkit.RigConfig{Paths: 2, Options: rendr.Options{HandshakeTimeout: time.Second}})
	var wg sync.WaitGroup
	defer wg.Wait()

	// Listening side: each accepted flow goes on to the iperf3 server.
	wg.Go(func() {
		for {
			c, err := r.LN.AcceptContext(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				up, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
				if err != nil {
					c.Close()
					return
				}
				rtSplice(c, up)
			})
		}
	})
	// Dialing side: a local port whose connections each become a flow.
	fwd, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fwd.Close()
	wg.Go(func() {
		for {
			c, err := fwd.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				f, err := r.D.DialContext(ctx)
				if err != nil {
					c.Close()
					return
				}
				rtSplice(c, f)
			})
		}
	})

	// Faults while iperf3 runs: reset the active path at 1s, stall the next active one at 2s.
	wg.Go(func() {
		for i, mode := range []relay.Mode{relay.Reset, relay.Stall} {
			select {
			case <-time.After(time.Duration(i+1) * time.Second):
			case <-ctx.Done():
				return
			}
			if a := testkit.Active(r.D.Status()); a >= 0 {
				if mode == relay.Stall {
					rl := r.Relays[a]
					rl.Block(true)
					select { // a blackhole of 1.5s, then the path may come back
					case <-time.After(1500 * time.Millisecond):
					case <-ctx.Done():
					}
					rl.Block(false)
					rl.Kill(relay.Close)
				} else {
					r.Relays[a].Kill(mode)
				}
			}
		}
	})

	out, err := exec.CommandContext(ctx, bin, "-c", "127.0.0.1", "-p", fmt.Sprint(fwd.Addr().(*net.TCPAddr).Port),
		"-t", "4", "-J").CombinedOutput()
	if err != nil {
		t.Fatalf("iperf3 client: %v\n%s\nserver:\n%s", err, out, srvOut.String())
	}
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumSent     struct{ Bytes int64 } `json:"sum_sent"`
			SumReceived struct{ Bytes int64 } `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("iperf3 output: %v\n%s", err, out)
	}
	if res.Error != "" || res.End.SumReceived.Bytes == 0 {
		t.Fatalf("iperf3: error %q, received %d bytes\n%s", res.Error, res.End.SumReceived.Bytes, out)
	}
	if m := r.Mig.Moves(); m < 2 {
		t.Fatalf("%d migrations: the faults did not hit the active path", m)
	}
	t.Logf("iperf3: sent %d, received %d bytes; migrations: %v", res.End.SumSent.Bytes, res.End.SumReceived.Bytes, r.Mig)
	cancel()
	fwd.Close()
}

// rtSplice copies both ways until both directions end, passing half-closes on.
func rtSplice(a, b net.Conn) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go half(a, b)
	go half(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

func rtFreePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
