//go:build !windows

package main

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rendr-go/rendr/transport/tcp"
)

// cpuTime is the CPU time the process has used so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// setNice sets the nice value of the calling thread (the process, on systems without
// per-thread nice values).
func setNice(nice int) error {
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, 0, nice); err != nil {
		return fmt.Errorf("setpriority: %w", err)
	}
	return nil
}

// lowatControl gives the lab's sockets the TCP_NOTSENT_LOWAT transport/tcp gives its own, since
// the lab creates sockets inside a namespace with its own dialer and listener.
func lowatControl(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, tcp.DefaultNotSentLowat)
	}); err != nil {
		return err
	}
	return serr
}

// stopProcess stops p (SIGSTOP) until resumeProcess continues it.
func stopProcess(p *os.Process) error { return p.Signal(syscall.SIGSTOP) }

// resumeProcess continues p after stopProcess (SIGCONT); a process not stopped carries on.
func resumeProcess(p *os.Process) error { return p.Signal(syscall.SIGCONT) }
