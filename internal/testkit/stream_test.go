package testkit

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// flipConn flips one bit of the byte at offset at of what is written through it.
type flipConn struct {
	net.Conn
	at, off int64
}

func (c *flipConn) Write(b []byte) (int, error) {
	if c.at >= c.off && c.at < c.off+int64(len(b)) {
		b = bytes.Clone(b)
		b[c.at-c.off] ^= 0x10
	}
	c.off += int64(len(b))
	return c.Conn.Write(b)
}

func TestTransferExact(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	var progress atomic.Int64
	if err := Transfer(a, b, 1<<20, 1, &progress); err != nil {
		t.Fatal(err)
	}
	if got := progress.Load(); got != 1<<20 {
		t.Fatalf("progress %d, want %d", got, 1<<20)
	}
}

// A single changed bit anywhere must fail the check: that is all a lossless test leans on.
func TestTransferCatchesAFlippedBit(t *testing.T) {
	for _, at := range []int64{0, 300_000, 1<<20 - 1} {
		a, b := net.Pipe()
		err := Transfer(&flipConn{Conn: a, at: at}, b, 1<<20, 2, nil)
		a.Close()
		b.Close()
		if err == nil || !strings.Contains(err.Error(), "SHA-256") {
			t.Fatalf("bit flipped at %d: err = %v, want a SHA-256 mismatch", at, err)
		}
	}
}

// Send draws the same bytes from the same seed and other bytes from another.
func TestSendIsSeeded(t *testing.T) {
	var x, y, z bytes.Buffer
	sx, err := Send(&x, 100_000, 7)
	if err != nil {
		t.Fatal(err)
	}
	sy, _ := Send(&y, 100_000, 7)
	sz, _ := Send(&z, 100_000, 8)
	if !bytes.Equal(x.Bytes(), y.Bytes()) || sx != sy {
		t.Fatal("one seed gave two streams")
	}
	if bytes.Equal(x.Bytes(), z.Bytes()) || sx == sz {
		t.Fatal("two seeds gave one stream")
	}
	if x.Len() != 100_000 {
		t.Fatalf("sent %d bytes, want 100000", x.Len())
	}
}

// A reader that fails must not leave the writer blocked on a peer nobody reads: Transfer
// releases it through its write deadline and returns both errors.
func TestTransferReleasesWriterOnReadError(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	err := Transfer(a, shortReader{Conn: b}, 1<<20, 3, nil)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want the read error and the released write", err)
	}
}

// shortReader fails every read, as a dead carrier does.
type shortReader struct{ net.Conn }

func (shortReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestBothDirections(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	var progress atomic.Int64
	if err := Both(a, b, 256<<10, 4, &progress); err != nil {
		t.Fatal(err)
	}
	if got := progress.Load(); got != 2*256<<10 {
		t.Fatalf("progress %d, want %d", got, 2*256<<10)
	}
}

func TestExpectEOF(t *testing.T) {
	a, b := net.Pipe()
	a.Close()
	if err := ExpectEOF(b); err != nil {
		t.Fatal(err)
	}
	c, d := net.Pipe()
	defer c.Close()
	defer d.Close()
	go c.Write([]byte{1})
	d.SetReadDeadline(time.Now().Add(time.Minute))
	if err := ExpectEOF(d); err == nil {
		t.Fatal("a byte read counted as EOF")
	}
}
