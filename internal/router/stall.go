package router

// Stalls: when a path of the route stops moving data, it is suspected and routed around
// until it answers probes again. Three things suspect a path: its data going unacknowledged
// (Stalled, from the flow engine), its probes going unanswered while it carries a Race or
// Bond (refreshSuspectsLocked), and the peer's data arriving on another path (PeerData).

import (
	"slices"
	"time"

	"github.com/rendr-go/rendr/status"
)

// refreshSuspectsLocked returns a suspect path to Up once it has answered two probes since it
// was suspected: it is moving data again. It also suspects a path that carries traffic and
// has not answered a probe within silenceFloor or 3*srtt + 4*rttvar: datagrams are
// never acknowledged, so for packet flows nothing else would notice a blackhole before the
// path is declared dead.
func (r *Router) refreshSuspectsLocked(now time.Time) {
	for _, p := range r.paths {
		if st := p.Standing(); st.State == status.Suspect && p.Quality().Samples >= st.suspectSamples+2 {
			st.State, st.Since = status.Up, now
		}
	}
	if len(r.active) < 2 {
		return // one path: nowhere to move to; the stall check and probes handle it
	}
	for _, p := range r.active {
		if p.Standing().State != status.Up {
			continue
		}
		q := p.Quality()
		if p.Silence() > max(3*q.SRTT+4*q.RTTVar, silenceFloor) {
			r.suspectLocked(p, now)
			r.c.Log.Debug("rendr: path silent", "path", p.Name())
		}
	}
}

// Stalled says data sent on the path of id went unacknowledged too long (the flow engine's
// verdict). The path is suspected if another path is Up to take over; with nothing better,
// traffic stays. A path no longer attached is already routed around.
func (r *Router) Stalled(id uint32) {
	r.c.Lock.Lock()
	defer r.c.Lock.Unlock()
	p := r.paths[id]
	if p == nil || p.Standing().State != status.Up {
		return
	}
	for _, o := range r.paths {
		if o != p && o.Standing().State == status.Up && o.Joined() {
			r.suspectLocked(p, time.Now())
			r.c.Log.Debug("rendr: path stalled", "path", p.Name())
			return
		}
	}
}

// suspectLocked routes around p until it answers probes again (refreshSuspectsLocked).
func (r *Router) suspectLocked(p Path, now time.Time) {
	st := p.Standing()
	st.State, st.Since = status.Suspect, now
	st.suspectSamples = p.Quality().Samples
	r.dirty.Store(true)
}

// PeerData notes flow data from the peer on p (dialing side), and reports whether it
// suspected the route. The listening side follows our route, so data that keeps arriving on
// another path, longer than a round trip after we last moved, means the peer found our route
// stalled for its traffic (a download: we have nothing outstanding, so our own stall check
// cannot fire). Suspect the route then, as the peer did, instead of waiting for the probes
// to declare it dead.
//
// Over a route of several paths (Race, Bond) the peer's answers may come on any of them; only
// data on a path outside the route counts, and only a route of one path is suspected.
func (r *Router) PeerData(p Path) bool {
	set := r.activeSet.Load()
	if set == nil || len(*set) != 1 || slices.Contains(*set, p) {
		return false
	}
	cur := (*set)[0]
	q := p.Quality()
	grace := max(2*q.SRTT+4*q.RTTVar, 50*time.Millisecond)
	now := time.Now()
	if now.UnixNano()-r.movedAt.Load() < int64(grace) {
		return false // the peer has not seen our move yet: its data on the old path is in flight
	}
	r.c.Lock.Lock()
	defer r.c.Lock.Unlock()
	if len(r.active) != 1 || r.active[0] != cur || cur.Standing().State != status.Up || p.Standing().State != status.Up {
		return false
	}
	r.suspectLocked(cur, now)
	r.c.Log.Debug("rendr: peer moved away from route", "route", cur.Name(), "peer", p.Name())
	return true
}
