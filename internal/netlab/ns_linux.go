package netlab

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// platformErr is nil: Linux has the network namespaces a lab is made of.
func platformErr() error { return nil }

// within runs fn on a fresh goroutine whose thread is locked and moved
// into namespace ns. A fresh goroutine is used rather than the caller's so
// that a caller which is itself locked to a thread is never disturbed, and
// so that a failed restore can kill just this thread.
func within[T io.Closer](ns string, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		v, restored, err := enterAndRun(ns, fn)
		if restored {
			runtime.UnlockOSThread()
		}
		// If the thread could not be moved back it stays locked, and
		// the runtime terminates it when this goroutine returns instead
		// of reusing a thread that sits in the wrong namespace.
		done <- result{v, err}
	}()
	r := <-done
	return r.v, r.err
}

// enterAndRun must be called on a locked thread. restored reports whether
// the thread is back in its original namespace.
func enterAndRun[T io.Closer](ns string, fn func() (T, error)) (v T, restored bool, err error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return v, true, fmt.Errorf("netlab: open current netns: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join(netnsDir, ns))
	if err != nil {
		return v, true, fmt.Errorf("netlab: open netns %s: %w", ns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		// A failed setns leaves the thread where it was.
		return v, true, fmt.Errorf("netlab: setns %s: %w", ns, err)
	}
	v, err = fn()
	if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
		if err == nil {
			v.Close()
		}
		var zero T
		return zero, false, errors.Join(err, fmt.Errorf("netlab: restore netns after %s: %w", ns, rerr))
	}
	return v, true, err
}
