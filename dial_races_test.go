package rendr_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/internal/testlink"
)

// TestSynctestFounderHangsNotTheOthers: path "black" connects at once but its handshake is
// never answered (a TCP-terminating middlebox, a stale port); path "good" connects 10ms later.
// Good waits for black's founding handshake, and then gets a handshake timeout of its own:
// the session comes up once black's times out. When the wait took from good's own timeout,
// both timed out together, black won the next race for founding, and the session never came
// up.
func TestSynctestFounderHangsNotTheOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := testlink.Listen("good")
		var mu sync.Mutex
		var held []net.Conn
		var blackDials atomic.Int32
		dialBlack := func(ctx context.Context) (net.Conn, error) {
			blackDials.Add(1)
			a, b := net.Pipe()
			mu.Lock()
			held = append(held, b)
			mu.Unlock()
			go func() { // swallow everything, answer nothing
				buf := make([]byte, 4096)
				for {
					if _, err := b.Read(buf); err != nil {
						return
					}
				}
			}()
			return a, nil
		}
		dialGood := func(ctx context.Context) (net.Conn, error) {
			select {
			case <-time.After(10 * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			c, _, err := src.Dial(ctx, stGoodLink, stGoodLink)
			return c, err
		}
		srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
		ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}}, src)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
			Root:    rendr.Selector("s", rendr.Path("black", dialBlack), rendr.Path("good", dialGood)),
			Options: rendr.Options{HandshakeTimeout: 2 * time.Second, ReconnectTimeout: 60 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			d.Close()
			mu.Lock()
			for _, c := range held {
				c.Close()
			}
			mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		_, _, err = testkit.OpenFlow(ctx, d, ln)
		t.Logf("after %v: err %v; black dials %d; status %+v", time.Since(start), err, blackDials.Load(), d.Status().Paths)
		if err != nil {
			t.Fatal("session never came up although one path works")
		}
	})
}

// TestSynctestRefusedOnceThenConnects: one path has no network (ENETUNREACH: no IPv6 here),
// the other is refused once (its listener starting) and then connects over a 120ms round
// trip. The session comes up: a path that connected and is handshaking is not "refused", and
// an unreachable network is waited for, not taken for a refusal.
func TestSynctestRefusedOnceThenConnects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := testlink.Listen("b")
		var n atomic.Int32
		wan := testlink.Config{Delay: 60 * time.Millisecond, Rate: 20 << 20, Buffer: 256 << 10, Seed: 1}
		dialB := func(ctx context.Context) (net.Conn, error) {
			if n.Add(1) == 1 {
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
			}
			c, _, err := src.Dial(ctx, wan, wan)
			return c, err
		}
		dialA := func(context.Context) (net.Conn, error) {
			return nil, &net.OpError{Op: "dial", Net: "tcp6", Err: syscall.ENETUNREACH}
		}
		srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
		ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}}, src)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
			Root: rendr.Selector("s", rendr.Path("v6", dialA), rendr.Path("v4", dialB))})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		if _, _, err := testkit.OpenFlow(ctx, d, ln); err != nil {
			t.Fatalf("after %v: %v (v4 dials %d)", time.Since(start), err, n.Load())
		}
	})
}
