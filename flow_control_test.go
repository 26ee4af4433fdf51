// Flow control: a slow reader holds a writer back, the window grows to the path's
// bandwidth-delay product, and an idle flow costs no goroutine.

package rendr_test

import (
	"bytes"
	"io"
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/internal/testlink"
)

func TestSynctestIdleFlowsCostNoGoroutines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := testkit.NewMemLab(t, rendr.Options{},
			testkit.LinkSpec{Name: "a", AB: stGoodLink, BA: stGoodLink},
			testkit.LinkSpec{Name: "b", AB: stGoodLink, BA: stGoodLink})
		first, firstL := lb.Open()
		lb.MustWait("all paths up", 10*time.Second, lb.AllUp)
		synctest.Wait()
		before := runtime.NumGoroutine()
		const flows = 10000
		conns := make([]*rendr.Conn, 0, 2*flows)
		// Open in batches, accepting each batch, as a server keeps up with its Accept loop.
		for len(conns) < 2*flows {
			var batch []*rendr.Conn
			for range 500 {
				dc, err := lb.D.Dial()
				if err != nil {
					t.Fatalf("Dial after %d flows: %v", len(conns)/2, err)
				}
				batch = append(batch, dc)
			}
			for range batch {
				lc, err := lb.LN.Accept()
				if err != nil {
					t.Fatalf("Accept after %d flows: %v", len(conns)/2, err)
				}
				conns = append(conns, lc.(*rendr.Conn))
			}
			conns = append(conns, batch...)
		}
		synctest.Wait()
		time.Sleep(time.Second)
		synctest.Wait()
		after := runtime.NumGoroutine()
		if after > before+4 {
			t.Errorf("goroutines: %d before, %d with %d more idle flows", before, after, flows)
		}
		if got := lb.Status().Flows; got != flows+1 {
			t.Errorf("dialer has %d flows, want %d", got, flows+1)
		}
		// The first flow still moves data among them.
		up, down := stDuplex(first, firstL, 1<<20, 60)
		up.check(t, "up", time.Minute)
		down.check(t, "down", time.Minute)
		for _, c := range conns {
			c.Close()
		}
		first.Close()
		firstL.Close()
		lb.MustWait("every flow forgotten on both sides", time.Minute, func() bool {
			ss := lb.LN.Sessions()
			return lb.Status().Flows == 0 && len(ss) == 1 && ss[0].Flows == 0
		})
	})
}

func TestSynctestFlowControlBackPressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := testkit.NewMemLab(t, rendr.Options{}, testkit.LinkSpec{Name: "a", AB: stGoodLink, BA: stGoodLink})
		dc, lc := lb.Open()
		defer dc.Close()
		defer lc.Close()
		data := stPattern(16<<20, 70)
		// Nobody reads: Write must block once the windows are full, and time out.
		dc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		n, err := dc.Write(data)
		if !stIsTimeout(err) {
			t.Fatalf("Write to a flow nobody reads = %d, %v; want a timeout", n, err)
		}
		if n <= 0 || n > 4<<20 {
			t.Fatalf("Write buffered %d bytes before blocking, want a bounded amount (0 < n <= 4 MiB)", n)
		}
		t.Logf("buffered %d bytes before blocking", n)
		dc.SetWriteDeadline(time.Time{})
		got := make(chan []byte, 1)
		go func() {
			b, err := io.ReadAll(lc)
			if err != nil {
				t.Errorf("ReadAll: %v", err)
			}
			got <- b
		}()
		if m, err := dc.Write(data[n:]); err != nil || m != len(data)-n {
			t.Fatalf("Write of the rest = %d, %v", m, err)
		}
		dc.CloseWrite()
		if b := <-got; !bytes.Equal(b, data) {
			t.Fatalf("read %d bytes, want exactly the %d written", len(b), len(data))
		}
	})
}

func TestSynctestWindowGrowsWithBDP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 50ms each way at 100 MB/s: a bandwidth-delay product of 10 MB. A fixed 256 KiB
		// window would allow 256 KiB per 100ms round trip, about 2.6 MB/s.
		fat := testlink.Config{Delay: 50 * time.Millisecond, Rate: 100e6, Buffer: 32 << 20}
		lb := testkit.NewMemLab(t, rendr.Options{}, testkit.LinkSpec{Name: "fat", AB: fat, BA: fat})
		dc, lc := lb.Open()
		defer dc.Close()
		defer lc.Close()
		lb.MustWait("path measured", 10*time.Second, func() bool { return lb.PathStatus("fat").SRTT > 0 })
		const size = 48 << 20
		s := stSend(dc, lc, size, 80)
		s.check(t, "transfer", 5*time.Minute)
		el := s.finished.Sub(s.start)
		rate := float64(size) / el.Seconds()
		t.Logf("%d MiB in %v of virtual time: %.1f MB/s", size>>20, el, rate/1e6)
		if rate < 10e6 {
			t.Errorf("throughput %.1f MB/s over a 10 MB bandwidth-delay product, want > 10 MB/s: windows do not grow", rate/1e6)
		}
	})
}
