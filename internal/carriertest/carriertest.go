// Package carriertest holds checks shared by the carrier packages' tests: a carrier is a
// net.Conn, and every one must move bytes exactly.
package carriertest

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// Stream sends n pseudo-random bytes from w to r, running mid (if set) once halfway, and fails
// t unless r reads exactly what w wrote (SHA-256 of both compared). Reads are bounded by a
// generous deadline, against a hang.
func Stream(t testing.TB, w, r net.Conn, n int, mid func()) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	sent := sha256.New()
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		for left := n; left > 0; {
			k := min(left, len(buf))
			for i := range buf[:k] {
				buf[i] = byte(rng.Uint32())
			}
			sent.Write(buf[:k])
			if _, err := w.Write(buf[:k]); err != nil {
				errc <- err
				return
			}
			left -= k
			if left <= n/2 && left+k > n/2 && mid != nil {
				mid()
			}
		}
		errc <- nil
	}()
	got := sha256.New()
	r.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.CopyN(got, r, int64(n)); err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatal("SHA-256 of the bytes read differs from the bytes written")
	}
}
