package rendrtest

import (
	"crypto/sha256"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRelayForwards: without faults, 1 MiB crosses each way intact at once, both are counted,
// and a FIN passes as a FIN in each direction (a half-close), after the bytes before it.
func TestRelayForwards(t *testing.T) {
	ln := target(t)
	r := relayTo(t, ln)
	cli, srv := connect(t, r, ln)
	up, upSum := random(1 << 20)
	down, downSum := random(1 << 20)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); cli.Write(up); cli.CloseWrite() }()
	go func() { defer wg.Done(); srv.Write(down) }()
	if got := readN(t, srv, len(up)); got != upSum {
		t.Error("up: the target read other bytes than the client wrote")
	}
	if err := readEnd(srv); err != nil {
		t.Errorf("up: after the client's FIN the target read %v, want EOF", err)
	}
	if got := readN(t, cli, len(down)); got != downSum {
		t.Error("down: the client read other bytes than the target wrote")
	}
	wg.Wait()
	if _, err := srv.Write([]byte("bye")); err != nil {
		t.Fatalf("the target cannot write after the client's half-close: %v", err)
	}
	srv.CloseWrite()
	cli.SetReadDeadline(time.Now().Add(patience))
	if b, err := io.ReadAll(cli); string(b) != "bye" || err != nil {
		t.Errorf("the client read %q, %v; want \"bye\" then EOF", b, err)
	}
	waitFor(t, "the relay to drop the connection both ends closed", func() bool { return r.Stats().Active == 0 })
	st := r.Stats()
	if st.Accepted != 1 || st.Up != 1<<20 || st.Down != 1<<20+3 || st.DroppedUp+st.DroppedDown != 0 {
		t.Errorf("stats %+v; want 1 accepted, %d bytes up, %d down, none dropped", st, 1<<20, 1<<20+3)
	}
}

// TestRelayCloseConns: CloseConns sends each end a FIN, even while both stream: each reads
// EOF (not a reset), and a new connection passes.
func TestRelayCloseConns(t *testing.T) {
	ln := target(t)
	r := relayTo(t, ln)
	cli, srv := connect(t, r, ln)
	// Both ends stream until the connection ends under them; each writer keeps writing
	// after its read side saw EOF, which must not turn the FIN into an RST.
	var wg sync.WaitGroup
	for _, c := range []net.Conn{cli, srv} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 16<<10)
			for range 1 << 12 {
				c.SetWriteDeadline(time.Now().Add(patience))
				if _, err := c.Write(b); err != nil {
					return
				}
			}
		}()
	}
	waitFor(t, "bytes to flow both ways", func() bool { st := r.Stats(); return st.Up > 0 && st.Down > 0 })
	if n := r.CloseConns(); n != 1 {
		t.Fatalf("CloseConns ended %d connections, want 1", n)
	}
	for name, c := range map[string]net.Conn{"client": cli, "target": srv} {
		if err := readEnd(c); err != nil {
			t.Errorf("the %s read %v after CloseConns, want EOF", name, err)
		}
	}
	cli.Close()
	srv.Close()
	wg.Wait()
	if st := r.Stats(); st.Active != 0 {
		t.Errorf("%d connections active after CloseConns", st.Active)
	}
	mustPass(t, r, ln)
}

// TestRelayResetConns: ResetConns gives each end ECONNRESET, and a new connection passes.
func TestRelayResetConns(t *testing.T) {
	ln := target(t)
	r := relayTo(t, ln)
	cli, srv := connect(t, r, ln)
	if n := r.ResetConns(); n != 1 {
		t.Fatalf("ResetConns ended %d connections, want 1", n)
	}
	for name, c := range map[string]net.Conn{"client": cli, "target": srv} {
		if err := readEnd(c); !isReset(err) {
			t.Errorf("the %s read %v after ResetConns, want ECONNRESET", name, err)
		}
	}
	mustPass(t, r, ln)
}

// TestRelayRefuse: while refusing, a new connection is reset before the target sees it; the
// open one carries on; Heal ends the refusal.
func TestRelayRefuse(t *testing.T) {
	ln := target(t)
	r := relayTo(t, ln)
	cli, srv := connect(t, r, ln)
	r.Refuse(true)
	// The reset can come before the dialer saw its connect complete, or after.
	c, err := net.Dial("tcp", r.Addr())
	if err == nil {
		defer c.Close()
		err = readEnd(c)
	}
	if !isReset(err) {
		t.Errorf("a refused connection got %v, want ECONNRESET", err)
	}
	if st := r.Stats(); st.Refused != 1 || st.Accepted != 2 || st.Active != 1 {
		t.Errorf("stats %+v; want 2 accepted, 1 refused, 1 active", st)
	}
	msg, sum := random(1 << 10)
	cli.Write(msg)
	if readN(t, srv, len(msg)) != sum {
		t.Error("the open connection did not carry on")
	}
	r.Heal()
	mustPass(t, r, ln)
}

// TestRelayBlackhole: a blackhole in one direction swallows every byte sent that way while
// the other direction flows; in both, nothing moves. Nothing errors, the connection stays
// open, and Heal resets it (its stream has a hole) while new connections pass again.
func TestRelayBlackhole(t *testing.T) {
	for _, dark := range []Dir{Up, Down, Both} {
		t.Run(dark.String(), func(t *testing.T) {
			ln := target(t)
			r := relayTo(t, ln)
			cli, srv := connect(t, r, ln)
			r.Blackhole(dark)
			const n = 256 << 10
			for _, d := range dirs {
				from, to := net.Conn(cli), net.Conn(srv)
				if d == Down {
					from, to = srv, cli
				}
				b, sum := random(n)
				if _, err := from.Write(b); err != nil {
					t.Fatalf("%v: writing into the relay failed: %v", d, err)
				}
				if dark&d == 0 {
					if readN(t, to, n) != sum {
						t.Errorf("%v: the lit direction did not carry its bytes intact", d)
					}
					continue
				}
				// The relay has read every byte and forwarded none.
				waitFor(t, d.String()+" bytes to be swallowed", func() bool {
					st := r.Stats()
					return (d == Up && st.DroppedUp == n) || (d == Down && st.DroppedDown == n)
				})
				to.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				if k, err := to.Read(make([]byte, 1)); !isTimeout(err) {
					t.Errorf("%v: through the blackhole came %d bytes, %v", d, k, err)
				}
			}
			st := r.Stats()
			if (dark&Up != 0 && st.Up != 0) || (dark&Down != 0 && st.Down != 0) {
				t.Errorf("stats %+v: bytes went the dark way", st)
			}
			if st.Active != 1 {
				t.Errorf("%d connections active in the blackhole, want 1", st.Active)
			}
			r.Heal()
			for name, c := range map[string]net.Conn{"client": cli, "target": srv} {
				if err := readEnd(c); !isReset(err) {
					t.Errorf("the %s read %v once the blackhole lifted, want ECONNRESET", name, err)
				}
			}
			mustPass(t, r, ln)
		})
	}
}

// TestRelayBlackholeNewConns: a blackhole applies to connections made after it too.
func TestRelayBlackholeNewConns(t *testing.T) {
	ln := target(t)
	r := relayTo(t, ln)
	r.Blackhole(Up)
	cli, srv := connect(t, r, ln)
	cli.Write([]byte("lost"))
	waitFor(t, "the bytes to be swallowed", func() bool { return r.Stats().DroppedUp == 4 })
	srv.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if k, err := srv.Read(make([]byte, 1)); !isTimeout(err) {
		t.Errorf("through the blackhole came %d bytes, %v", k, err)
	}
	msg, sum := random(1 << 10)
	srv.Write(msg)
	if readN(t, cli, len(msg)) != sum {
		t.Error("the lit direction of a new connection did not flow")
	}
}

// TestRelayDelay: with a delay one way, each message arrives no sooner than the delay after
// it was written, in order; the same holds for the FIN that follows them.
func TestRelayDelay(t *testing.T) {
	const delay = 100 * time.Millisecond
	for _, d := range dirs {
		t.Run(d.String(), func(t *testing.T) {
			ln := target(t)
			r := relayTo(t, ln)
			cli, srv := connect(t, r, ln)
			from, to := cli, srv
			if d == Down {
				from, to = srv, cli
			}
			r.Delay(d, delay)
			const msgs = 20
			sent := make([]time.Time, msgs)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range msgs {
					sent[i] = time.Now()
					from.Write(binary.BigEndian.AppendUint64(nil, uint64(i)))
					time.Sleep(5 * time.Millisecond) // spreads the sends; not a measurement
				}
				sent = append(sent, time.Now())
				from.CloseWrite()
			}()
			to.SetReadDeadline(time.Now().Add(patience))
			var b [8]byte
			var arrived []time.Time
			for i := range msgs {
				if _, err := io.ReadFull(to, b[:]); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				arrived = append(arrived, time.Now())
				if got := binary.BigEndian.Uint64(b[:]); got != uint64(i) {
					t.Fatalf("message %d arrived as number %d: out of order", i, got)
				}
			}
			if _, err := to.Read(b[:]); err != io.EOF {
				t.Errorf("after the messages: %v, want EOF", err)
			}
			arrived = append(arrived, time.Now())
			wg.Wait()
			for i, at := range arrived {
				if lag := at.Sub(sent[i]); lag < delay {
					t.Errorf("message %d (the FIN if %d) arrived %v after it was sent, before the %v delay", i, msgs, lag, delay)
				}
			}
		})
	}
}

// TestRelayRate: a capped direction never passes more than the burst plus the rate times the
// time since the cap, every byte arrives intact, and Heal lifts the cap.
func TestRelayRate(t *testing.T) {
	const rate, n = 2 << 20, 1 << 20
	ln := target(t)
	r := relayTo(t, ln)
	cli, srv := connect(t, r, ln)
	start := time.Now() // before the cap: the bound below only grows looser
	r.Rate(Up, rate)
	b, sum := random(n)
	go cli.Write(b)
	var got atomic.Int64
	h := sha256.New()
	done := make(chan error, 1)
	go func() {
		srv.SetReadDeadline(time.Now().Add(patience))
		_, err := io.CopyN(io.MultiWriter(h, counter{&got}), srv, n)
		done <- err
	}()
	bound := func() int64 { return burstFor(rate) + int64(time.Since(start).Seconds()*rate) }
	samples := 0
	for over := false; !over; samples++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			over = true
		case <-time.After(time.Millisecond):
		}
		// The count first, the time since the start after it: the bound is never early.
		if k, most := got.Load(), bound(); k > most {
			t.Fatalf("%d bytes passed where the cap allows %d", k, most)
		}
	}
	if [32]byte(h.Sum(nil)) != sum {
		t.Error("the capped direction did not carry its bytes intact")
	}
	if least := time.Duration(float64(n-burstFor(rate)) / rate * float64(time.Second)); time.Since(start) < least {
		t.Errorf("%d bytes passed a %d B/s cap in %v, less than %v", n, rate, time.Since(start), least)
	}
	t.Logf("%d samples", samples)
	r.Heal()
	mustPass(t, r, ln)
}

type counter struct{ n *atomic.Int64 }

func (c counter) Write(b []byte) (int, error) { c.n.Add(int64(len(b))); return len(b), nil }

// TestRelayClose: Close ends the open connections (each end sees its connection end), the
// blackholed ones included, and stops listening.
func TestRelayClose(t *testing.T) {
	ln := target(t)
	r := relayTo(t, ln)
	cli, srv := connect(t, r, ln)
	cli2, srv2 := connect(t, r, ln)
	r.Blackhole(Both)
	r.Delay(Down, time.Hour)
	cli2.Write([]byte("into the dark"))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []net.Conn{cli, srv, cli2, srv2} {
		if err := readEnd(c); isTimeout(err) {
			t.Errorf("a connection was still open after Close")
		}
	}
	if c, err := net.Dial("tcp", r.Addr()); err == nil {
		c.Close()
		t.Error("the relay still listens after Close")
	}
	if err := r.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}
