package testkit

// Stream: seeded pseudo-random bytes moved across a net.Conn and checked by SHA-256, so a
// test proves that every byte arrived exactly once and in order.

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"
)

// Send writes n pseudo-random bytes drawn from seed to w, in writes of random sizes that
// reuse one buffer (the flow must not keep it), and returns their SHA-256.
func Send(w io.Writer, n int64, seed uint64) ([32]byte, error) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	src := rand.NewChaCha8(key)
	sizes := rand.New(rand.NewPCG(seed, 0x5e1d))
	h := sha256.New()
	buf := make([]byte, 192<<10)
	for sent := int64(0); sent < n; {
		b := buf[:min(int64(1+sizes.IntN(len(buf))), n-sent)]
		src.Read(b)
		h.Write(b)
		k, err := w.Write(b)
		sent += int64(k)
		if err == nil && k < len(b) {
			err = io.ErrShortWrite
		}
		if err != nil {
			return [32]byte(h.Sum(nil)), fmt.Errorf("write at byte %d of %d: %w", sent, n, err)
		}
	}
	return [32]byte(h.Sum(nil)), nil
}

// Recv reads exactly n bytes from r and returns their SHA-256 and how many it read, adding
// each read to progress (which may be nil).
func Recv(r io.Reader, n int64, progress *atomic.Int64) ([32]byte, int64, error) {
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var got int64
	for got < n {
		k, err := r.Read(buf[:min(int64(len(buf)), n-got)])
		h.Write(buf[:k])
		got += int64(k)
		if progress != nil {
			progress.Add(int64(k))
		}
		if err != nil {
			return [32]byte(h.Sum(nil)), got, fmt.Errorf("read at byte %d of %d: %w", got, n, err)
		}
	}
	return [32]byte(h.Sum(nil)), got, nil
}

// Transfer sends n seeded bytes from w to r and checks that r got exactly those bytes. If
// the reading side fails, the writer is released through its write deadline, so the call
// always returns.
func Transfer(w, r net.Conn, n int64, seed uint64, progress *atomic.Int64) error {
	type sent struct {
		sum [32]byte
		err error
	}
	done := make(chan sent, 1)
	go func() {
		sum, err := Send(w, n, seed)
		done <- sent{sum, err}
	}()
	got, count, rerr := Recv(r, n, progress)
	if rerr != nil {
		w.SetWriteDeadline(time.Unix(1, 0))
	}
	s := <-done
	switch {
	case rerr != nil || s.err != nil:
		return errors.Join(rerr, s.err)
	case count != n:
		return fmt.Errorf("received %d bytes, sent %d", count, n)
	case got != s.sum:
		return fmt.Errorf("SHA-256 of %d bytes differs: sent %x, received %x", n, s.sum[:8], got[:8])
	}
	return nil
}

// Both runs Transfer in both directions at once (a to b with seed, b to a with seed+1).
func Both(a, b net.Conn, n int64, seed uint64, progress *atomic.Int64) error {
	errc := make(chan error, 1)
	go func() { errc <- Transfer(b, a, n, seed+1, progress) }()
	err := Transfer(a, b, n, seed, progress)
	if err != nil {
		b.SetWriteDeadline(time.Unix(1, 0)) // release the other direction's writer too
		a.SetReadDeadline(time.Unix(1, 0))
	}
	back := <-errc
	if err != nil || back != nil {
		return errors.Join(dir("a->b", err), dir("b->a", back))
	}
	return nil
}

func dir(dir string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", dir, err)
}

// ExpectEOF checks that c has nothing more to read and reports io.EOF.
func ExpectEOF(c net.Conn) error {
	var b [1]byte
	n, err := c.Read(b[:])
	if n != 0 || err != io.EOF {
		return fmt.Errorf("read after the peer's CloseWrite: %d bytes, %v; want 0, io.EOF", n, err)
	}
	return nil
}
