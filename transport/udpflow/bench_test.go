package udpflow

import (
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkReceiveQueue: 1200-byte datagrams from a dialer to its listener's connection, sent
// in batches (GSO, so GRO runs lent to the queue) and read with ReadPacket, in windows of
// 256 so the socket drops none: the cost per datagram of the socket, the demultiplexer and
// the receive queue.
func BenchmarkReceiveQueue(b *testing.B) {
	l, err := Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	nc, err := Dialer(l.Addr().String(), LocalAddr("127.0.0.1"))(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	d := nc.(*Conn)
	defer d.Close()
	d.Write([]byte("hello"))
	ac, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	c := ac.(*Conn)
	c.SetReadDeadline(time.Now().Add(time.Minute))
	c.ReadPacket()
	c.Write([]byte("reply"))
	d.SetReadDeadline(time.Now().Add(time.Minute))
	if _, _, err := d.ReadPacket(); err != nil {
		b.Fatal(err)
	}
	batch := make([][]byte, 32)
	for i := range batch {
		batch[i] = make([]byte, 1200)
	}
	var got, want atomic.Int64
	caught := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, _, err := c.ReadPacket(); err != nil {
				return
			}
			if got.Add(1) == want.Load() {
				caught <- struct{}{}
			}
		}
	}()
	b.SetBytes(1200)
	b.ResetTimer()
	for sent := int64(0); sent < int64(b.N); {
		for range 8 {
			if err := d.WriteBatch(batch); err != nil {
				b.Fatal(err)
			}
			sent += int64(len(batch))
		}
		want.Store(sent)
		if got.Load() < sent {
			select {
			case <-caught:
			case <-time.After(time.Second):
				b.Fatalf("%d of %d datagrams arrived", got.Load(), sent)
			}
		}
		select {
		case <-caught: // the reader's signal for this window, if it raced with the check
		default:
		}
	}
	b.StopTimer()
	c.Close()
	<-done
}
