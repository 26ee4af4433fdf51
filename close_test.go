package rendr_test

import (
	"bytes"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testlink"
)

// Dialer.Close documents "Close the Conns first to deliver what they hold", and Conn.Close
// documents that written bytes are delivered in the background. Doing exactly that loses the
// bytes: Dialer.Close puts CLOSE on the path ahead of the data still queued (SendControl),
// waits 20ms and tears the session down, and the listener fails the flow on CLOSE.
func TestDialerCloseAfterConnCloseDelivers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		link := testlink.Config{Delay: 5 * time.Millisecond, Rate: 8 << 20, Buffer: 256 << 10, Seed: 3}
		lb := stNewLab(t, rendr.Options{}, stLinkSpec{name: "a", ab: link, ba: link})
		dc, lc := lb.open()
		data := stPattern(200<<10, 150) // within the initial windows: Write returns at once
		if n, err := dc.Write(data); n != len(data) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		dc.Close()
		lb.d.Close()
		lc.SetReadDeadline(time.Now().Add(time.Minute))
		b, err := io.ReadAll(lc)
		lc.Close()
		if err != nil || !bytes.Equal(b, data) {
			t.Fatalf("peer read %d of %d bytes, then %v: the bytes written before Conn.Close and "+
				"Dialer.Close were lost", len(b), len(data), err)
		}
	})
}
