package splice_test

import (
	"errors"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/splice"
)

// TestDatagrams: datagrams pass both ways; the splice ends when nothing passed either way for
// the idle time (not while one way is busy), or when a side's Read fails, says which, and
// closes both sides.
func TestDatagrams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, aPeer := net.Pipe()
		b, bPeer := net.Pipe()
		why := make(chan [2]error, 1)
		go splice.Datagrams(a, b, time.Second, 2048, func(aErr, bErr error) { why <- [2]error{aErr, bErr} })
		buf := make([]byte, 2048)
		// One way only, for longer than the idle time: not idle.
		for i := range 30 {
			if _, err := aPeer.Write([]byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
			if n, err := bPeer.Read(buf); err != nil || n != 1 || buf[0] != byte(i) {
				t.Fatalf("datagram %d: %v %v", i, buf[:n], err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := bPeer.Write([]byte("back")); err != nil {
			t.Fatal(err)
		}
		if n, err := aPeer.Read(buf); err != nil || string(buf[:n]) != "back" {
			t.Fatalf("the other way: %q %v", buf[:n], err)
		}
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		select {
		case w := <-why:
			if w[0] != nil || !errors.Is(w[1], splice.ErrIdle) {
				t.Fatalf("ended with %v, want ErrIdle", w)
			}
		default:
			t.Fatal("not ended after the idle time")
		}
		if _, err := aPeer.Write([]byte("x")); err == nil {
			t.Fatal("a is still open")
		}

		// A side that ends: the splice ends with its error.
		a, aPeer = net.Pipe()
		b, bPeer = net.Pipe()
		go splice.Datagrams(a, b, time.Minute, 2048, func(aErr, bErr error) { why <- [2]error{aErr, bErr} })
		aPeer.Close()
		if w := <-why; w[0] == nil || w[1] != nil {
			t.Fatalf("a's end: %v", w)
		}
		if _, err := bPeer.Write([]byte("x")); err == nil {
			t.Fatal("b is still open")
		}
	})
}
