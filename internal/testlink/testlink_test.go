package testlink

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/bits"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/nettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestNetConn runs the x/net conformance suite in real time (it uses
// wall-clock sleeps), so the shaping is kept small.
func TestNetConn(t *testing.T) {
	for name, cfg := range map[string]Config{
		"ideal":  {},
		"shaped": {Delay: time.Millisecond, Jitter: 200 * time.Microsecond, Rate: 100 << 20, Buffer: 64 << 10, Seed: 7},
	} {
		t.Run(name, func(t *testing.T) {
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				a, b, _ := Pipe(cfg, cfg)
				return a, b, func() { a.Close(); b.Close() }, nil
			})
		})
	}
}

// started runs f in a goroutine and returns a flag set when it returns.
func started(f func()) *atomic.Bool {
	var done atomic.Bool
	go func() { f(); done.Store(true) }()
	return &done
}

func TestTimingExact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, _ := Pipe(Config{Delay: 10 * time.Millisecond, Rate: 100000}, Config{})
		defer a.Close()
		defer b.Close()
		start := time.Now()
		// Two back-to-back writes: the second queues behind the first.
		for range 2 {
			if n, err := a.Write(make([]byte, 1000)); n != 1000 || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
		}
		if time.Since(start) != 0 {
			t.Fatal("Write waited although the buffer had room")
		}
		type read struct {
			at  time.Duration
			n   int
			err error
		}
		reads := make(chan read, 2)
		go func() { // reports to the test rather than calling t, so a failure cannot outlive it
			buf := make([]byte, 4000)
			for range 2 {
				n, err := b.Read(buf)
				reads <- read{time.Since(start), n, err}
				if err != nil {
					return
				}
			}
		}()
		time.Sleep(20*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		if len(reads) != 0 {
			t.Fatalf("read %+v before 20ms", <-reads)
		}
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		for _, want := range []read{{20 * time.Millisecond, 1000, nil}, {30 * time.Millisecond, 1000, nil}} {
			select {
			case got := <-reads:
				if got != want {
					t.Errorf("read %+v, want %+v", got, want)
				}
			default:
				t.Fatal("reader still blocked at 40ms")
			}
		}
	})
}

// jitterTimeline sends numbered 4-byte messages through a jittery link and
// returns each message's latency.
func jitterTimeline(t *testing.T, seed int64) []time.Duration {
	const msgs, gap = 500, 100 * time.Microsecond
	cfg := Config{Delay: 5 * time.Millisecond, Jitter: 20 * time.Millisecond, Seed: seed}
	var lat []time.Duration
	synctest.Test(t, func(t *testing.T) {
		a, b, _ := Pipe(cfg, cfg)
		defer b.Close()
		start := time.Now()
		go func() {
			defer a.Close()
			for i := range msgs {
				a.Write([]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
				time.Sleep(gap)
			}
		}()
		buf := make([]byte, 4)
		var maxDue time.Duration
		for i := range msgs {
			if _, err := io.ReadFull(b, buf); err != nil {
				t.Fatalf("ReadFull: %v", err)
			}
			if v := int(buf[0])<<24 | int(buf[1])<<16 | int(buf[2])<<8 | int(buf[3]); v != i {
				t.Fatalf("message %d arrived as %d", i, v)
			}
			sent := time.Duration(i) * gap
			maxDue = max(maxDue, sent+cfg.Delay+cfg.Jitter)
			now := time.Since(start)
			if now < sent+cfg.Delay || now > maxDue {
				t.Fatalf("message %d sent at %v arrived at %v", i, sent, now)
			}
			lat = append(lat, now-sent)
		}
	})
	return lat
}

func TestJitterKeepsOrderAndRepeats(t *testing.T) {
	l1, l2, l3 := jitterTimeline(t, 1), jitterTimeline(t, 1), jitterTimeline(t, 2)
	distinct := map[time.Duration]bool{}
	for _, d := range l1 {
		distinct[d] = true
	}
	if len(distinct) < 50 {
		t.Errorf("only %d distinct latencies: jitter is not applied", len(distinct))
	}
	if !slicesEqual(l1, l2) {
		t.Error("same seed gave different timelines")
	}
	if slicesEqual(l1, l3) {
		t.Error("different seeds gave the same timeline")
	}
}

func slicesEqual(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBlackhole(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := Config{Delay: 10 * time.Millisecond, Buffer: 1000}
		a, b, l := Pipe(cfg, cfg)
		defer a.Close()
		defer b.Close()
		// Bytes on the wire when the blackhole opens are lost too.
		a.Write([]byte("lost"))
		time.Sleep(time.Millisecond)
		l.Blackhole(true)
		if n, err := a.Write(make([]byte, 600)); n != 600 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		second := bytes.Repeat([]byte{1}, 400)
		second = append(second, bytes.Repeat([]byte{2}, 200)...)
		var werr error
		done := started(func() { _, werr = a.Write(second) })
		time.Sleep(time.Hour)
		synctest.Wait()
		if done.Load() {
			t.Fatalf("Write returned (%v) although the buffer is full", werr)
		}
		b.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := b.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read through blackhole = %d, %v", n, err)
		}
		b.SetReadDeadline(time.Time{})
		// Off: the swallowed 1000 bytes free their space but stay lost,
		// so only the blocked Write's last 200 bytes come through.
		l.Blackhole(false)
		synctest.Wait()
		if !done.Load() || werr != nil {
			t.Fatalf("Write after blackhole: done %v err %v", done.Load(), werr)
		}
		buf := make([]byte, 1000)
		n, err := b.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], second[400:]) {
			t.Fatalf("Read = %d bytes %v, want the last 200 of the blocked Write", n, err)
		}
		if ab, ba := l.Stats(); ab != 200 || ba != 0 {
			t.Fatalf("Stats = %d, %d; want 200, 0", ab, ba)
		}
	})
}

// TestHold: nothing is readable during a hold, in either direction: not what has arrived and
// waits unread, not what is on the wire, not what is written meanwhile. At its end all of it
// is readable at once, in order.
func TestHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := Config{Delay: 10 * time.Millisecond}
		a, b, l := Pipe(cfg, cfg)
		defer a.Close()
		defer b.Close()
		a.Write([]byte("arrived "))
		time.Sleep(20 * time.Millisecond)
		a.Write([]byte("on-the-wire "))
		b.Write([]byte("back"))
		start := time.Now()
		l.Hold(start.Add(200 * time.Millisecond))
		time.Sleep(50 * time.Millisecond)
		a.Write([]byte("meanwhile"))
		want := "arrived on-the-wire meanwhile"
		got := make([]byte, 0, len(want))
		for len(got) < len(want) {
			buf := make([]byte, 64)
			n, err := b.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if at := time.Since(start); at < 200*time.Millisecond {
				t.Fatalf("%q readable %v into a 200ms hold", buf[:n], at)
			}
			got = append(got, buf[:n]...)
		}
		if string(got) != want {
			t.Fatalf("read %q, want %q", got, want)
		}
		buf := make([]byte, 8)
		if n, err := a.Read(buf); err != nil || string(buf[:n]) != "back" || time.Since(start) < 200*time.Millisecond {
			t.Fatalf("the other direction: %q, %v at %v", buf[:n], err, time.Since(start))
		}
	})
}

func TestKill(t *testing.T) {
	for _, reset := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			cfg := Config{Delay: 10 * time.Millisecond}
			a, b, l := Pipe(cfg, cfg)
			defer a.Close()
			defer b.Close()
			a.Write([]byte("hello"))
			time.Sleep(20 * time.Millisecond) // arrived, not yet read
			a.Write([]byte("on the wire"))
			var aErr error
			aDone := started(func() { _, aErr = a.Read(make([]byte, 10)) })
			synctest.Wait()
			l.Kill(reset)
			synctest.Wait() // no time passes: the blocked Read wakes at once
			if !aDone.Load() {
				t.Fatal("pending Read not woken by Kill")
			}
			buf := make([]byte, 100)
			n, err := b.Read(buf)
			if reset {
				for _, err := range []error{aErr, err} {
					if !errors.Is(err, syscall.ECONNRESET) {
						t.Errorf("Read after Kill(true) = %v, want ECONNRESET", err)
					}
				}
			} else {
				if string(buf[:n]) != "hello" || err != nil {
					t.Errorf("Read = %q, %v; want the arrived bytes", buf[:n], err)
				}
				if _, err := b.Read(buf); err != io.EOF {
					t.Errorf("second Read = %v, want io.EOF", err)
				}
				if aErr != io.EOF {
					t.Errorf("pending Read = %v, want io.EOF", aErr)
				}
			}
			want := syscall.EPIPE
			if reset {
				want = syscall.ECONNRESET
			}
			for _, c := range []*Conn{a, b} {
				if _, err := c.Write([]byte("x")); !errors.Is(err, want) {
					t.Errorf("Write after Kill(%v) = %v, want %v", reset, err, want)
				}
			}
		})
	}
}

func TestCorrupt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, l := Pipe(Config{Seed: 3}, Config{Seed: 3})
		defer a.Close()
		defer b.Close()
		l.Corrupt(3)
		for _, p := range [][2]*Conn{{a, b}, {b, a}} {
			for round, want := range []int{3, 0} {
				p[0].Write(make([]byte, 100))
				buf := make([]byte, 100)
				io.ReadFull(p[1], buf)
				flipped := 0
				for i, c := range buf {
					if c != 0 {
						flipped++
						if bits.OnesCount8(c) != 1 || i >= 3 {
							t.Errorf("byte %d = %08b, want one flipped bit in the first 3", i, c)
						}
					}
				}
				if flipped != want {
					t.Errorf("round %d: %d bytes corrupted, want %d", round, flipped, want)
				}
			}
		}
	})
}

func TestDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, _ := Pipe(Config{Buffer: 10}, Config{})
		defer a.Close()
		defer b.Close()
		start := time.Now()
		checkTimeout := func(err error, at time.Duration) {
			t.Helper()
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("err = %v, want a timeout", err)
			}
			if got := time.Since(start); got != at {
				t.Errorf("timed out at %v, want %v", got, at)
			}
		}
		b.SetReadDeadline(start.Add(50 * time.Millisecond))
		_, err := b.Read(make([]byte, 1))
		checkTimeout(err, 50*time.Millisecond)

		// Extending a pending Read's deadline takes effect.
		b.SetReadDeadline(start.Add(80 * time.Millisecond))
		go func() {
			time.Sleep(10 * time.Millisecond)
			b.SetReadDeadline(start.Add(100 * time.Millisecond))
		}()
		_, err = b.Read(make([]byte, 1))
		checkTimeout(err, 100*time.Millisecond)

		// Clearing it lets a Read wait for data however long it takes.
		b.SetReadDeadline(time.Time{})
		go func() {
			time.Sleep(time.Hour)
			a.Write([]byte("late"))
		}()
		if n, err := b.Read(make([]byte, 10)); n != 4 || err != nil {
			t.Fatalf("Read = %d, %v", n, err)
		}

		// A Write that outlives its deadline reports what it got in.
		start = time.Now()
		a.SetWriteDeadline(start.Add(10 * time.Millisecond))
		n, err := a.Write(make([]byte, 20))
		checkTimeout(err, 10*time.Millisecond)
		if n != 10 {
			t.Errorf("Write accepted %d bytes, want 10", n)
		}
	})
}

func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, _ := Pipe(Config{Delay: 10 * time.Millisecond}, Config{})
		a.Write([]byte("bye"))
		var aErr error
		aDone := started(func() { _, aErr = a.Read(make([]byte, 1)) })
		synctest.Wait()
		start := time.Now()
		a.Close()
		synctest.Wait()
		if !aDone.Load() || !errors.Is(aErr, net.ErrClosed) {
			t.Fatalf("pending Read after Close: done %v err %v", aDone.Load(), aErr)
		}
		if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write on closed conn = %v", err)
		}
		buf := make([]byte, 10)
		if n, err := b.Read(buf); string(buf[:n]) != "bye" || err != nil {
			t.Errorf("Read = %q, %v", buf[:n], err)
		}
		if _, err := b.Read(buf); err != io.EOF || time.Since(start) != 10*time.Millisecond {
			t.Errorf("Read = %v at %v, want io.EOF at 10ms", err, time.Since(start))
		}
		if _, err := b.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
			t.Errorf("Write to closed peer = %v, want EPIPE", err)
		}
		b.Close()
		if err := b.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close = %v", err)
		}
	})
}

func TestListener(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := Listen("srv")
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				t.Errorf("Accept: %v", err)
				return
			}
			defer c.Close()
			if c.LocalAddr().String() != "testlink:srv" {
				t.Errorf("LocalAddr = %v", c.LocalAddr())
			}
			io.Copy(c, c) // echo until the dialer closes
		}()
		c, _, err := ln.Dial(context.Background(), Config{Delay: time.Millisecond}, Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo = %q, %v", buf, err)
		}
		if c.RemoteAddr().Network() != "testlink" || c.RemoteAddr().String() != "testlink:srv" {
			t.Errorf("RemoteAddr = %v", c.RemoteAddr())
		}
		c.Close()

		// Nobody accepts: Dial gives up when its context does.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		if _, _, err := ln.Dial(ctx, Config{}, Config{}); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Errorf("Dial = %v after %v", err, time.Since(start))
		}

		var acceptErr error
		done := started(func() { _, acceptErr = ln.Accept() })
		synctest.Wait()
		if done.Load() {
			t.Fatal("Accept returned without a Dial")
		}
		ln.Close()
		synctest.Wait()
		if !done.Load() || !errors.Is(acceptErr, net.ErrClosed) {
			t.Errorf("Accept after Close = %v", acceptErr)
		}
		if _, _, err := ln.Dial(context.Background(), Config{}, Config{}); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Dial after Close = %v", err)
		}
	})
}

// TestIntegrity pushes a few MiB each way at once through a shaped link with
// random write and read sizes and compares SHA-256 sums.
func TestIntegrity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size = 3 << 20
		cfg := Config{Delay: 3 * time.Millisecond, Jitter: 2 * time.Millisecond, Rate: 20 << 20, Buffer: 64 << 10, Seed: 9}
		a, b, l := Pipe(cfg, cfg)
		start := time.Now()
		var wg sync.WaitGroup
		for i, p := range [][2]*Conn{{a, b}, {b, a}} {
			data := make([]byte, size)
			rng := rand.New(rand.NewPCG(uint64(i), 0))
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			want := sha256.Sum256(data)
			wg.Add(2)
			go func() {
				defer wg.Done()
				for rest := data; len(rest) > 0; {
					n := min(len(rest), 1+rng.IntN(70000))
					if _, err := p[0].Write(rest[:n]); err != nil {
						t.Errorf("Write: %v", err)
						return
					}
					rest = rest[n:]
				}
			}()
			go func() {
				defer wg.Done()
				h, buf := sha256.New(), make([]byte, 100000)
				rng := rand.New(rand.NewPCG(uint64(i), 1))
				// Both ends stay open until both directions finish, so
				// read exactly size bytes rather than waiting for EOF.
				for got := 0; got < size; {
					n, err := p[1].Read(buf[:min(size-got, 1+rng.IntN(len(buf)))])
					h.Write(buf[:n])
					got += n
					if err != nil {
						t.Errorf("Read: %v", err)
						return
					}
				}
				if !bytes.Equal(h.Sum(nil), want[:]) {
					t.Errorf("direction %d: SHA-256 mismatch", i)
				}
			}()
		}
		wg.Wait()
		a.Close()
		b.Close()
		if ab, ba := l.Stats(); ab != size || ba != size {
			t.Errorf("Stats = %d, %d; want %d each", ab, ba, size)
		}
		if min := time.Duration(size) * time.Second / (20 << 20); time.Since(start) < min {
			t.Errorf("took %v, faster than the rate allows (%v)", time.Since(start), min)
		}
	})
}

// TestLossDelaysLikeTCP: with Loss, about that share of segments arrives Retransmit late, and a
// segment written right behind a lost one waits for it (the stream stays ordered).
func TestLossDelaysLikeTCP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const delay, rto = 10 * time.Millisecond, 200 * time.Millisecond
		a, b, _ := Pipe(Config{Delay: delay, Loss: 0.3, Retransmit: rto, Seed: 3}, Config{})
		defer a.Close()
		defer b.Close()
		const n = 400
		const spacing = rto + 50*time.Millisecond // far apart: no segment waits behind another
		late := 0
		t0 := time.Now()
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			for i := range n {
				if i > 0 {
					time.Sleep(spacing)
				}
				a.Write([]byte{byte(i)})
			}
		}()
		defer func() { <-wrote }()
		buf := make([]byte, 1)
		for i := range n {
			if _, err := io.ReadFull(b, buf); err != nil || buf[0] != byte(i) {
				t.Fatalf("segment %d: %v (got %d)", i, err, buf[0])
			}
			switch d := time.Since(t0.Add(time.Duration(i) * spacing)); d {
			case delay:
			case delay + rto:
				late++
			default:
				t.Fatalf("segment %d arrived after %v: want %v, or %v when lost", i, d, delay, delay+rto)
			}
		}
		if share := float64(late) / n; share < 0.22 || share > 0.38 {
			t.Fatalf("%d of %d segments lost (%.2f), want about 0.3", late, n, share)
		}
		// Two segments back to back: when the first is lost, the second waits behind it.
		c, d, _ := Pipe(Config{Delay: delay, Loss: 1, Retransmit: rto}, Config{})
		defer c.Close()
		defer d.Close()
		start := time.Now()
		c.Write([]byte{1})
		c.Write([]byte{2})
		two := make([]byte, 2)
		if _, err := io.ReadFull(d, two); err != nil || time.Since(start) != delay+rto {
			t.Fatalf("both segments after %v (%v), want %v", time.Since(start), err, delay+rto)
		}
	})
}
