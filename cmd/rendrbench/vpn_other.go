//go:build !linux

package main

import (
	"errors"
	"fmt"
	"time"
)

// procCPU fails: the vpn scenarios read Linux's /proc, and their lab needs Linux anyway, so
// they are skipped before this is reached.
func procCPU(int) (user, sys time.Duration, err error) {
	return 0, 0, fmt.Errorf("a process's CPU time from /proc: %w", errors.ErrUnsupported)
}
