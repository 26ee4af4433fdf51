//go:build !linux

package tcp

import "syscall"

func tune(syscall.RawConn, int) error { return nil }
