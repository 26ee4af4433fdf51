package rendr_test

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"
)

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
