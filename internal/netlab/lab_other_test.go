//go:build !linux

package netlab

import (
	"errors"
	"net"
	"testing"
)

// Without Linux there is no lab: Available and New say so with errors.ErrUnsupported before
// running any command, and the namespace primitives fail the same way rather than act in the
// process's own network.
func TestUnsupportedHere(t *testing.T) {
	if err := Available(); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Available() = %v, want errors.ErrUnsupported", err)
	}
	l, err := New(Config{})
	if l != nil || !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("New = %v, %v; want nil, errors.ErrUnsupported", l, err)
	}
	called := false
	ln, err := within("netlab-x-c", func() (net.Listener, error) {
		called = true
		return net.Listen("tcp", "127.0.0.1:0")
	})
	if ln != nil || called || !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("within = %v, %v (fn called: %v); want nil, errors.ErrUnsupported, not called", ln, err, called)
	}
	if err := flushConntrack(); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("flushConntrack() = %v, want errors.ErrUnsupported", err)
	}
}
