package main

import (
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/rendrtest"
	"github.com/rendr-go/rendr/status"
)

// The fault schedule. Every killEvery the path carrying traffic is killed, in turn by close
// (FIN), by reset (RST) and by a silent stall (a blackhole: nothing errors, nothing moves).
// A closed or reset path is re-dialed by rendr at once; a stalled one stays a blackhole for
// stallFor, longer than killEvery, so the next kill takes the other primary path while this
// one is still dark and traffic has to fall back to the backup path ("lte").
const (
	killEvery = 2 * time.Second
	stallFor  = 3 * time.Second
	// quietEnd keeps the last seconds free of faults, so the flow ends on a settled path.
	quietEnd = 3 * time.Second
)

// killMode is a way to kill a path, through its relay.
type killMode int

const (
	byClose killMode = iota // a FIN to both ends
	byReset                 // an RST to both ends
	byStall                 // a blackhole both ways
)

func (k killMode) String() string { return [...]string{"close", "reset", "stall"}[k] }

// faults kills and restores paths through their relays.
type faults struct {
	relays  map[string]*rendrtest.Relay // by path name
	conn    *rendr.Conn                 // its Status says which path is active
	rep     *report
	stalled map[string]time.Time // stalled path -> when to restore it
}

func (f *faults) run(duration time.Duration, stop <-chan struct{}) {
	modes := []killMode{byClose, byReset, byStall}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	next := f.rep.start.Add(killEvery)
	planned := int((duration - quietEnd) / killEvery)
	n := 0
	for {
		select {
		case <-stop:
			f.restore(time.Time{}) // all of them: the flows must be able to drain
			return
		case now := <-tick.C:
			f.restore(now)
			// If no path is active right now (between a death and the next path), try
			// again at the next tick.
			if n >= planned || now.Before(next) || !f.kill(modes[n%len(modes)]) {
				continue
			}
			n++
			next = next.Add(killEvery)
		}
	}
}

// kill kills the active path by m and reports whether there was one.
func (f *faults) kill(m killMode) bool {
	name := activePath(f.conn.Status())
	if name == "" {
		return false
	}
	r := f.relays[name]
	f.rep.kills.Add(1)
	// The event goes first: the migration it causes is logged from rendr's goroutine.
	switch m {
	case byStall:
		f.rep.event("KILL %s by silent stall (blackhole for %v)", name, stallFor)
		// The blackhole takes the re-dialed connections too, or the path would come
		// straight back.
		r.Blackhole(rendrtest.Both)
		f.stalled[name] = time.Now().Add(stallFor)
	case byClose:
		f.rep.event("KILL %s by %s", name, m)
		r.CloseConns()
	case byReset:
		f.rep.event("KILL %s by %s", name, m)
		r.ResetConns()
	}
	return true
}

// restore lifts the stalls due by now (every stall if now is zero).
func (f *faults) restore(now time.Time) {
	for name, at := range f.stalled {
		if !now.IsZero() && now.Before(at) {
			continue
		}
		// Heal resets the connections that lost bytes in the blackhole, so the handshake
		// rendr is waiting on fails now and the path is re-dialed at once, rather than
		// after the handshake timeout.
		f.relays[name].Heal()
		delete(f.stalled, name)
		f.rep.event("restore %s", name)
	}
}

// activePath is the name of the path carrying the session's traffic, or "".
func activePath(s status.Session) string {
	for _, p := range s.Paths {
		if p.Active {
			return p.Name
		}
	}
	return ""
}
