package rendr_test

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
)

// TestConcurrentWritesDoNotInterleave: two Writes of 1 MiB racing on one Conn arrive each in
// one piece, as on a TCP connection, even though each is larger than the flow's window and so
// blocks on the way.
func TestConcurrentWritesDoNotInterleave(t *testing.T) {
	d, ln := pair(t, 1, rendr.Options{})
	defer ln.Close()
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.AcceptContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
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
