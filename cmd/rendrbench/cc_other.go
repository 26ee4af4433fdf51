//go:build !linux

package main

import (
	"errors"
	"fmt"
	"syscall"
)

// setCongestion fails: only Linux chooses a socket's congestion control this way, and only
// the lab scenarios, which need Linux, ask for it.
func setCongestion(_ syscall.RawConn, cc string) error {
	return fmt.Errorf("TCP_CONGESTION %s: %w", cc, errors.ErrUnsupported)
}
