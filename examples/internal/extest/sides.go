package extest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Run runs each of a program's sides, by name, until the test ends; a side that fails fails
// the test. The sides must return when their context ends.
func Run(t testing.TB, sides map[string]func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for name, serve := range sides {
		wg.Go(func() {
			if err := serve(ctx); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// Exchange sends up on c, half-closes it, and reads everything back until the end of
// stream; it returns what came back, and the first error either way. It closes c.
func Exchange(c net.Conn, up []byte) ([]byte, error) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(up)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		return got, werr
	}
	return got, err
}

// CheckDigestReply checks what a digest server sent back, got: the SHA-256 of exactly up,
// then exactly down. It may be called from any goroutine.
func CheckDigestReply(t testing.TB, got, up, down []byte) {
	t.Helper()
	sum := sha256.Sum256(up)
	want := append(sum[:], down...)
	if !bytes.Equal(got, want) {
		t.Errorf("got %d bytes back (sha256 %x), want %d (sha256 %x)", len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}
