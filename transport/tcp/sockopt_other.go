//go:build !linux

package tcp

import "syscall"

// tune does nothing here: TCP_NOTSENT_LOWAT is set on Linux only (NotSentLowat says so), and
// elsewhere the kernel's default applies. Failing would refuse a carrier that works.
func tune(syscall.RawConn, int) error { return nil }
