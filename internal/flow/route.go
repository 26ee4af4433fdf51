// Route stage: where the engine sends. A Route is a link or a Race or Bond of routes, given by
// the Router (in rendr, internal/router) at each round; this file schedules a record onto it:
// every member of a Race that has room, the member of a Bond expected to deliver first.

package flow

import (
	"math"
	"time"

	"github.com/rendr-go/rendr/internal/wire"
)

// Mode says how a Route group uses its children.
type Mode uint8

const (
	// ModeLink is a leaf: one link.
	ModeLink Mode = iota
	// ModeRace sends every record on every child that has room for it; the receiver keeps
	// the first copy of each byte. A child without room misses the record instead of holding
	// the others back.
	ModeRace
	// ModeBond sends each record on the one child expected to deliver it first.
	ModeBond
)

func (m Mode) String() string {
	switch m {
	case ModeLink:
		return "link"
	case ModeRace:
		return "race"
	case ModeBond:
		return "bond"
	}
	return "mode?"
}

// Route is where the engine sends now: a link, or a group of routes. The Router resolves
// Selectors itself, so a Route holds only what carries traffic.
type Route struct {
	Mode Mode
	Link Link     // ModeLink
	Kids []*Route // ModeRace, ModeBond
}

// links appends every link of rt to dst.
func (rt *Route) links(dst []Link) []Link {
	if rt == nil {
		return dst
	}
	if rt.Mode == ModeLink {
		if rt.Link != nil {
			dst = append(dst, rt.Link)
		}
		return dst
	}
	for _, k := range rt.Kids {
		dst = k.links(dst)
	}
	return dst
}

// pick appends the links the next record goes to: every child of a Race with room, the child
// of a Bond expected to deliver first. It appends nothing when no link has room.
func (rt *Route) pick(dst []Link) []Link {
	switch rt.Mode {
	case ModeLink:
		if rt.Link != nil && rt.Link.Space() > 0 {
			dst = append(dst, rt.Link)
		}
	case ModeRace:
		for _, k := range rt.Kids {
			dst = k.pick(dst)
		}
	case ModeBond:
		// Earliest completion first (ECF, BLEST): the record is for the child expected to
		// deliver it first, counting what each has queued. When that child has no room and
		// its estimate is sure (Link.Arrival: what the kernel says of a TCP carrier), nothing
		// goes now: a slower child would deliver the record later than waiting for the
		// quicker one does, and the flow's later bytes would wait for it at the receiver, so
		// a Bond would do worse than its best path alone. Estimates from probes and write
		// rates alone cannot see the queues a carrier builds, and too low a one would leave
		// the other children idle: then the quickest child with room takes the record. Ties
		// (equal round trips, rates not known yet) go to the shorter backlog, which spreads
		// records until the rates are measured.
		var best, open *Route
		bestAt, openAt := time.Duration(math.MaxInt64), time.Duration(math.MaxInt64)
		bestQ, openQ := 0, 0
		bestRoom, bestSure := false, false
		for _, k := range rt.Kids {
			at, q, room, sure, ok := k.eta()
			if !ok {
				continue
			}
			if at < bestAt || (at == bestAt && (q < bestQ || q == bestQ && room && !bestRoom)) {
				best, bestAt, bestQ, bestRoom, bestSure = k, at, q, room, sure
			}
			if room && (at < openAt || (at == openAt && q < openQ)) {
				open, openAt, openQ = k, at, q
			}
		}
		switch {
		case best != nil && bestRoom:
			dst = best.pick(dst)
		case open != nil && !bestSure:
			dst = open.pick(dst)
		}
	}
	return dst
}

// eta estimates how long a full record sent now on rt would take to arrive (earliest
// completion first, in the spirit of ECF and BLEST): the link's own estimate where it has one
// (Link.Arrival; sure is then true), or else the time to write out the link's backlog and the
// record at its rate, plus half a round trip; and the backlog it waits behind. room says
// whether rt takes a record now; ok is false when rt has no link at all.
func (rt *Route) eta() (at time.Duration, backlog int, room, sure, ok bool) {
	switch rt.Mode {
	case ModeLink:
		l := rt.Link
		if l == nil {
			return 0, 0, false, false, false
		}
		backlog = l.Backlog()
		if a, known := l.Arrival(wire.MaxRecord); known {
			return a, backlog, l.Space() > 0, true, true
		}
		srtt, _ := l.SRTT()
		at = srtt / 2
		if rate := l.Rate(); rate > 0 {
			at += time.Duration(float64(backlog+wire.MaxRecord) / rate * float64(time.Second))
		}
		return at, backlog, l.Space() > 0, false, true
	default:
		// A group delivers a record as soon as its quickest child does (a Race sends it on
		// every child with room; a Bond on its quickest, or on none while that one is full
		// and sure of itself).
		at = time.Duration(math.MaxInt64)
		anyRoom, bestRoom := false, false
		for _, k := range rt.Kids {
			a, q, r, su, kok := k.eta()
			if !kok {
				continue
			}
			anyRoom = anyRoom || r
			if a < at || (a == at && q < backlog) {
				at, backlog, bestRoom, sure, ok = a, q, r, su, true
			}
		}
		room = anyRoom
		if rt.Mode == ModeBond && sure {
			room = bestRoom
		}
		return at, backlog, room, sure, ok
	}
}
