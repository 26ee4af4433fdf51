//go:build !windows

package main

import (
	"fmt"
	"os"
	"syscall"
	"time"

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

// lowatControl gives the lab's sockets the options transport/tcp gives its own
// (TCP_NOTSENT_LOWAT and pacing), since the lab creates sockets inside a namespace with its own
// dialer and listener.
func lowatControl(network, address string, rc syscall.RawConn) error {
	return tcp.Control(network, address, rc)
}

// stopProcess stops p (SIGSTOP) until resumeProcess continues it.
func stopProcess(p *os.Process) error { return p.Signal(syscall.SIGSTOP) }

// resumeProcess continues p after stopProcess (SIGCONT); a process not stopped carries on.
func resumeProcess(p *os.Process) error { return p.Signal(syscall.SIGCONT) }
