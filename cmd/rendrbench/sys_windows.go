package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/windows"
)

// cpuTime is the CPU time the process has used so far, user and system.
func cpuTime() time.Duration {
	var creation, exit, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(windows.CurrentProcess(), &creation, &exit, &kernel, &user); err != nil {
		return 0
	}
	// A FILETIME counts 100 ns intervals; as a duration it is an interval, not a date.
	ticks := func(ft windows.Filetime) int64 { return int64(ft.HighDateTime)<<32 | int64(ft.LowDateTime) }
	return time.Duration((ticks(kernel) + ticks(user)) * 100)
}

// setNice fails: Windows has no nice values, and the attack scenario that wants them reads
// Linux's /proc anyway.
func setNice(int) error {
	return fmt.Errorf("nice values: %w", errors.ErrUnsupported)
}

// lowatControl fails: Windows has no TCP_NOTSENT_LOWAT. Only the lab scenarios use it, and a lab
// needs Linux.
func lowatControl(_, _ string, _ syscall.RawConn) error {
	return fmt.Errorf("TCP_NOTSENT_LOWAT: %w", errors.ErrUnsupported)
}

// stopProcess fails: Windows has no SIGSTOP, and the stability scenario's stopped peer is
// skipped there.
func stopProcess(*os.Process) error {
	return fmt.Errorf("stopping a process: %w", errors.ErrUnsupported)
}

// resumeProcess does nothing: no process is stopped on Windows.
func resumeProcess(*os.Process) error { return nil }
