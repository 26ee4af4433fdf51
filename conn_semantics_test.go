// net.Conn semantics: the nettest conformance suite on one path, writes that never
// interleave, deadlines, and a Close that delivers what was written and then stops, during a
// migration too.

package rendr_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/internal/testlink"
	"golang.org/x/net/nettest"
)

func TestNettestOnePath(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		d, ln := pair(t, 1, rendr.Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c1, err = d.DialContext(ctx)
		if err != nil {
			return nil, nil, nil, err
		}
		c2, err = ln.AcceptContext(ctx)
		if err != nil {
			return nil, nil, nil, err
		}
		return c1, c2, func() {
			c1.Close()
			c2.Close()
			d.Close()
			ln.Close()
		}, nil
	})
}

// Dialer.Close documents "Close the Conns first to deliver what they hold", and Conn.Close
// documents that written bytes are delivered in the background. Doing exactly that loses the
// bytes: Dialer.Close puts CLOSE on the path ahead of the data still queued (SendControl),
// waits 20ms and tears the session down, and the listener fails the flow on CLOSE.
func TestDialerCloseAfterConnCloseDelivers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		link := testlink.Config{Delay: 5 * time.Millisecond, Rate: 8 << 20, Buffer: 256 << 10, Seed: 3}
		lb := testkit.NewMemLab(t, rendr.Options{}, testkit.LinkSpec{Name: "a", AB: link, BA: link})
		dc, lc := lb.Open()
		data := stPattern(200<<10, 150) // within the initial windows: Write returns at once
		if n, err := dc.Write(data); n != len(data) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		dc.Close()
		lb.D.Close()
		lc.SetReadDeadline(time.Now().Add(time.Minute))
		b, err := io.ReadAll(lc)
		lc.Close()
		if err != nil || !bytes.Equal(b, data) {
			t.Fatalf("peer read %d of %d bytes, then %v: the bytes written before Conn.Close and "+
				"Dialer.Close were lost", len(b), len(data), err)
		}
	})
}

// TestConcurrentWritesDoNotInterleave: two Writes of 1 MiB racing on one Conn arrive each in
// one piece, as on a TCP connection, even though each is larger than the flow's window and so
// blocks on the way.
func TestConcurrentWritesDoNotInterleave(t *testing.T) {
	_, _, c, s := flowPair(t)
	const n = 1 << 20
	var wg sync.WaitGroup
	for _, b := range []byte{'a', 'b'} {
		wg.Go(func() {
			if _, err := c.Write(bytes.Repeat([]byte{b}, n)); err != nil {
				t.Error(err)
			}
		})
	}
	got := make([]byte, 2*n)
	s.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	first, second := got[:n], got[n:]
	if !bytes.Equal(first, bytes.Repeat(first[:1], n)) || !bytes.Equal(second, bytes.Repeat(second[:1], n)) || first[0] == second[0] {
		t.Fatal("the two Writes interleaved")
	}
	c.Close()
	s.Close()
}

func TestSynctestDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := testkit.NewMemLab(t, rendr.Options{}, testkit.LinkSpec{Name: "a", AB: stGoodLink, BA: stGoodLink})
		dc, lc := lb.Open()
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

func TestSynctestCloseDuringMigration(t *testing.T) {
	t.Parallel() // virtual time: its verdict owes nothing to what runs beside it
	for i := range 4 {
		synctest.Test(t, func(t *testing.T) {
			lb, dc, lc := stTwoGoodPaths(t)
			defer dc.Close()
			defer lc.Close()
			const size = 8 << 20
			up, down := stDuplex(dc, lc, size, 130)
			lb.MustWait("progress", time.Minute, func() bool { return up.read.Load() >= size/4 })
			// Kill the active path and close, at the same instant or a little after.
			killActive(lb, i%2 == 0)
			time.Sleep(time.Duration(i) * time.Millisecond)
			lb.D.Close()
			lb.LN.Close()
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
		lb := testkit.NewMemLab(t, rendr.Options{}, testkit.LinkSpec{Name: "a", AB: stGoodLink, BA: stGoodLink})
		// Close right after a large Write: every byte still arrives, then io.EOF.
		dc, lc := lb.Open()
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
		dc, lc = lb.Open()
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
