// Half-close: CloseWrite ends one direction only; each side reads exactly what the other
// wrote, then io.EOF, and writing after CloseWrite fails with ErrWriteClosed.

package rendr_test

import (
	"errors"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
)

// TestHalfCloseBothWays closes the two directions one after the other with different final
// sizes: each side must read exactly what the other wrote, then io.EOF, and the flow must be
// forgotten by both ends once both close.
func TestHalfCloseBothWays(t *testing.T) {
	d, ln, c, s := flowPair(t)
	if _, err := c.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, rendr.ErrWriteClosed) {
		t.Fatalf("Write after CloseWrite: %v, want ErrWriteClosed", err)
	}
	// A missing EOF must fail the test, not hang it.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "0123456789" {
		t.Fatalf("listener read %q, %v", got, err)
	}
	if _, err := s.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(c)
	if err != nil || string(back) != "abc" {
		t.Fatalf("dialer read %q, %v", back, err)
	}
	// Reading again at the end keeps returning io.EOF on both sides.
	for _, x := range []interface{ Read([]byte) (int, error) }{c, s} {
		if n, err := x.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Fatalf("read after EOF: %d, %v", n, err)
		}
	}
	c.Close()
	s.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ss := ln.Sessions()
		if len(ss) == 1 && ss[0].Flows == 0 && d.Status().Flows == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("flows not forgotten after both ends closed: listener %+v, dialer %d", ss, d.Status().Flows)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSynctestHalfClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := testkit.NewMemLab(t, rendr.Options{}, testkit.LinkSpec{Name: "a", AB: stGoodLink, BA: stGoodLink})
		dc, lc := lb.Open()
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
		lb.MustWait("flow forgotten on both sides once both closed", 10*time.Second, func() bool {
			ss := lb.LN.Sessions()
			return lb.Status().Flows == 0 && len(ss) == 1 && ss[0].Flows == 0
		})
	})
}
