// Package deadline is a settable deadline after net.Pipe's: a timer that closes a channel when
// the deadline passes, for anything that blocks in a select (a flow's Read and Write, a
// datagram carrier's Read) rather than in a system call that takes a deadline itself; and
// Overslept, which tells a timer that fired on time from one this process was too stopped to
// run, so liveness checks do not blame a path for the host's pause.
package deadline

import (
	"sync"
	"time"
)

// Deadline is one deadline. The zero value is not usable: call New.
type Deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline has passed
}

// New returns a deadline that is not set.
func New() *Deadline { return &Deadline{cancel: make(chan struct{})} }

// Set arms the deadline at t; the zero time clears it. Setting a deadline in the past expires
// it at once; extending an expired one re-opens it.
func (d *Deadline) Set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired and closed cancel: wait for nothing, it is closed
	}
	d.timer = nil
	closed := Closed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		c := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(c) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

// Wait returns a channel closed once the deadline has passed. Set may replace it: a waiter
// that must see a later Set reads it again.
func (d *Deadline) Wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

// Closed reports, without blocking, whether c (a channel from Wait) is closed: whether the
// deadline it stood for has passed.
func Closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Overslept reports how long past due a timer's callback runs at now, when that is more than
// a sixteenth of the span d the timer was set to end (at least 2ms), and zero otherwise. A
// timer that late says this process was not running (stopped, a stalled VM, a long pause):
// what was to be heard meanwhile may be waiting unread, so silence measured across the gap is
// no evidence against a path, and the verdict waits until the readers have run.
func Overslept(due, now time.Time, d time.Duration) time.Duration {
	late := now.Sub(due)
	if due.IsZero() || late <= max(d/16, 2*time.Millisecond) {
		return 0
	}
	return late
}
