//go:build !linux

package netlab

import (
	"errors"
	"fmt"
	"io"
	"runtime"
)

// A lab is made of Linux network namespaces, veth pairs, tc and nftables; no other system has
// them. Available and New fail here with errors.ErrUnsupported before any command runs, so no
// Lab exists and the functions below are never reached through one. They still fail the same
// way rather than pretend.

func platformErr() error {
	return fmt.Errorf("network namespaces need Linux, not %s: %w", runtime.GOOS, errors.ErrUnsupported)
}

func within[T io.Closer](ns string, _ func() (T, error)) (T, error) {
	var zero T
	return zero, fmt.Errorf("netlab: enter namespace %s: %w", ns, platformErr())
}

func flushConntrack() error {
	return fmt.Errorf("netlab: conntrack flush: %w", platformErr())
}

func openTUN(name string, _ Offload) (tunDev, error) {
	return tunDev{}, fmt.Errorf("netlab: create TUN %s: %w", name, platformErr())
}
