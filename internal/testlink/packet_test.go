package testlink

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"testing/synctest"
	"time"
)

// readAll reads datagrams from c until none arrives for a second of virtual time.
func readAll(t *testing.T, c *PacketConn) [][]byte {
	t.Helper()
	var got [][]byte
	buf := make([]byte, 2048)
	for {
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, bytes.Clone(buf[:n]))
	}
}

func TestPacketOrderDelayAndDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, _ := PacketPipe(PacketConfig{Delay: 10 * time.Millisecond}, PacketConfig{}, 1500, 1200)
		start := time.Now()
		for i := range 5 {
			if n, err := a.Write([]byte{byte(i)}); n != 1 || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
		}
		buf := make([]byte, 16)
		for i := range 5 {
			n, err := b.Read(buf)
			if err != nil || n != 1 || buf[0] != byte(i) {
				t.Fatalf("Read %d = %v, %v", i, buf[:n], err)
			}
		}
		if d := time.Since(start); d != 10*time.Millisecond {
			t.Fatalf("delivered after %v, want the 10ms delay", d)
		}
		b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := b.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read past the deadline = %v", err)
		}
		if _, err := a.Write(make([]byte, 1501)); err == nil {
			t.Fatal("a datagram over MaxDatagramSize was taken")
		}
		if a.MaxDatagramSize() != 1500 || a.BaseDatagramSize() != 1200 {
			t.Fatalf("sizes %d, %d", a.MaxDatagramSize(), a.BaseDatagramSize())
		}
	})
}

func TestPacketFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := PacketConfig{Delay: 5 * time.Millisecond, Jitter: 5 * time.Millisecond, Dup: 0.25, Corrupt: 0.05,
			MTU: 100, DropFirst: 3, Seed: 9}
		a, b, l := PacketPipe(cfg, PacketConfig{}, 1500, 1200)
		const n = 2000
		for i := range n {
			p := bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 20)
			a.Write(p)
			if i%10 == 5 {
				a.Write(make([]byte, 101)) // over the MTU: vanishes
			}
			time.Sleep(time.Millisecond)
		}
		got := readAll(t, b)
		st, _ := l.Stats()
		if st.Lost != 3 || st.Oversize != n/10 || st.Sent != n+n/10 {
			t.Fatalf("stats %+v: want 3 lost (DropFirst), %d oversize, %d sent", st, n/10, n+n/10)
		}
		if len(got) != st.Delivered || st.Delivered != n-3+st.Duplicated {
			t.Fatalf("read %d, delivered %d, want %d", len(got), st.Delivered, n-3+st.Duplicated)
		}
		if st.Duplicated < n/5 || st.Duplicated > n*3/10 || st.Corrupted == 0 {
			t.Fatalf("stats %+v: want about 25%% duplicated and some corrupted", st)
		}
		bad, late := 0, 0
		last := -1
		for _, p := range got {
			if !bytes.Equal(p, bytes.Repeat(p[:2], 20)) {
				bad++
				continue
			}
			if k := int(p[0]) | int(p[1])<<8; k < last {
				late++
			} else {
				last = k
			}
		}
		if bad != st.Corrupted || late == 0 {
			t.Fatalf("%d corrupted read (stats say %d), %d out of order", bad, st.Corrupted, late)
		}
	})
}

func TestPacketBlackholeKillAndListener(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := ListenPacket("x", 1400, 1200)
		defer ln.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				t.Error(err)
			}
			accepted <- c
		}()
		a, l, err := ln.Dial(context.Background(), PacketConfig{Delay: time.Millisecond}, PacketConfig{})
		if err != nil {
			t.Fatal(err)
		}
		b := (<-accepted).(*PacketConn)
		if b.MaxDatagramSize() != 1400 || b.LocalAddr() != ln.Addr() {
			t.Fatalf("accepted end: max %d, address %v", b.MaxDatagramSize(), b.LocalAddr())
		}
		a.Write([]byte("in flight"))
		l.Blackhole(true) // loses what is on the way too
		a.Write([]byte("swallowed"))
		if got := readAll(t, b); len(got) != 0 {
			t.Fatalf("read %q through a blackhole", got)
		}
		l.Blackhole(false)
		a.Write([]byte("after"))
		if got := readAll(t, b); len(got) != 1 || string(got[0]) != "after" {
			t.Fatalf("read %q after the blackhole, want [after]", got)
		}
		b.SetReadDeadline(time.Time{})
		done := make(chan error, 1)
		go func() {
			_, err := b.Read(make([]byte, 16))
			done <- err
		}()
		synctest.Wait()
		l.Kill()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read on a killed link = %v", err)
		}
		if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Write on a killed link = %v", err)
		}
		ln.Close()
		if _, _, err := ln.Dial(context.Background(), PacketConfig{}, PacketConfig{}); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Dial on a closed listener = %v", err)
		}
	})
}
