//go:build !linux

package tcp

import "syscall"

// tune does nothing here: TCP_NOTSENT_LOWAT and pacing are set on Linux only (NotSentLowat and
// NoPacing say so), and elsewhere the kernel's defaults apply. Failing would refuse a carrier
// that works.
func tune(syscall.RawConn, int, bool) error { return nil }
