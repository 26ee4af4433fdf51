package main

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr/status"
)

// report collects what happened during the run: byte counters, events for the view, the
// errors that make the verdict FAIL, and migrations as rendr announces them. Every goroutine
// of the demo writes to it; only the view and the verdict read it.
type report struct {
	start time.Time

	kills      atomic.Int64 // paths killed by the fault schedule
	shortFlows atomic.Int64 // short flows that echoed their data intact

	mu struct {
		sync.Mutex
		events     []event // the most recent events; evBase is the sequence number of events[0]
		evBase     int
		errors     []string
		migrations int              // moves from one path to another
		last       status.Migration // the latest of them
	}
}

// event is one line of the event log, stamped with the time since the start.
type event struct {
	at   time.Duration
	text string
}

// maxEvents bounds the log kept in memory; the view has printed older ones long before.
const maxEvents = 256

func newReport() *report { return &report{start: time.Now()} }

// event records a line for the view.
func (r *report) event(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addLocked(fmt.Sprintf(format, args...))
}

func (r *report) addLocked(text string) {
	r.mu.events = append(r.mu.events, event{at: time.Since(r.start), text: text})
	if len(r.mu.events) > maxEvents {
		drop := len(r.mu.events) - maxEvents/2
		r.mu.events = slices.Delete(r.mu.events, 0, drop)
		r.mu.evBase += drop
	}
}

// fail records an error: the run will end with a FAIL verdict.
func (r *report) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mu.errors = append(r.mu.errors, fmt.Sprintf("%6.1fs %s", time.Since(r.start).Seconds(), msg))
	r.addLocked("ERROR " + msg)
}

func (r *report) errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.mu.errors)
}

// eventsSince returns the events numbered seq and later, and the number to ask for next.
func (r *report) eventsSince(seq int) ([]event, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seq = max(seq, r.mu.evBase)
	return slices.Clone(r.mu.events[seq-r.mu.evBase:]), r.mu.evBase + len(r.mu.events)
}

// migrated is the Dialer's OnMigrate callback. rendr calls it on its engine goroutine, so it
// only records and returns.
func (r *report) migrated(m status.Migration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case m.From == "":
		r.addLocked(fmt.Sprintf("traffic starts on %s", m.To))
		return
	case m.To == "":
		r.addLocked(fmt.Sprintf("no path left after %s (%s): flows wait for one", m.From, m.Cause))
		return
	}
	r.mu.migrations++
	r.mu.last = m
	r.addLocked(fmt.Sprintf("migrate %s -> %s (%s)", m.From, m.To, m.Cause))
}

// migrations returns the number of moves and the latest one.
func (r *report) migrations() (int, status.Migration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mu.migrations, r.mu.last
}
