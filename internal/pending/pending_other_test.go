//go:build !linux

package pending

import (
	"errors"
	"net"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Without epoll there is no Set: New says so with errors.ErrUnsupported, so that the caller
// waits on each connection itself, and no connection counts as watchable.
func TestUnsupportedHere(t *testing.T) {
	s, err := New(Config{})
	if s != nil || !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("New = %v, %v; want nil, errors.ErrUnsupported", s, err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Watchable(a) {
		t.Fatal("Watchable(net.Pipe end) = true with no Set to watch it")
	}
}
