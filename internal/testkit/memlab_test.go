package testkit

import (
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testlink"
	"github.com/rendr-go/rendr/status"
)

// A lab's path carries a flow over its live carrier; cut, it dials nothing more and stays
// down when that carrier dies; uncut, it comes back on a new carrier.
func TestMemLabCutAndBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		link := testlink.Config{Delay: time.Millisecond, Rate: 10 << 20, Buffer: 64 << 10, Seed: 1}
		lb := NewMemLab(t, rendr.Options{}, LinkSpec{Name: "a", AB: link, BA: link})
		dc, lc := lb.Open()
		defer dc.Close()
		defer lc.Close()
		lb.MustWait("path up", 10*time.Second, lb.AllUp)
		if lb.Active() != "a" || lb.Paths["a"].Dials() != 1 || lb.Paths["a"].Live() == nil {
			t.Fatalf("active %q, %d dials: %s", lb.Active(), lb.Paths["a"].Dials(), Describe(lb.Status()))
		}
		if _, err := dc.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(lc, b); err != nil || string(b) != "ping" {
			t.Fatalf("read %q, %v", b, err)
		}

		lb.Paths["a"].SetCut(true)
		lb.Paths["a"].Live().Kill(true)
		lb.MustWait("path down", time.Minute, func() bool { return lb.PathStatus("a").State != status.Up })
		time.Sleep(10 * time.Second)
		if n, st := lb.Paths["a"].Dials(), lb.PathStatus("a").State; n != 1 || st == status.Up {
			t.Fatalf("a cut path is %v after %d carriers, want it not Up on the first only", st, n)
		}
		lb.Paths["a"].SetCut(false)
		lb.MustWait("path back", time.Minute, lb.AllUp)
		if n := lb.Paths["a"].Dials(); n != 2 {
			t.Fatalf("%d carriers dialed, want 2", n)
		}
	})
}
