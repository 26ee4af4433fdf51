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
		// Ties (equal round trips, rates not known yet) go to the shorter backlog, which
		// spreads records until the rates are measured.
		var best *Route
		bestAt, bestQ := time.Duration(math.MaxInt64), 0
		for _, k := range rt.Kids {
			if at, q, ok := k.eta(); ok && (at < bestAt || (at == bestAt && q < bestQ)) {
				best, bestAt, bestQ = k, at, q
			}
		}
		if best != nil {
			dst = best.pick(dst)
		}
	}
	return dst
}

// eta estimates how long a full record sent now on rt would take to arrive: the time to
// write out the link's backlog and the record at its rate, plus half a round trip (earliest
// completion first, in the spirit of ECF and BLEST), and the backlog it waits behind. ok is
// false when rt has no room.
func (rt *Route) eta() (at time.Duration, backlog int, ok bool) {
	switch rt.Mode {
	case ModeLink:
		l := rt.Link
		if l == nil || l.Space() <= 0 {
			return 0, 0, false
		}
		srtt, _ := l.SRTT()
		at = srtt / 2
		backlog = l.Backlog()
		if rate := l.Rate(); rate > 0 {
			at += time.Duration(float64(backlog+wire.MaxRecord) / rate * float64(time.Second))
		}
		return at, backlog, true
	default:
		// A group delivers a record as soon as its quickest child does (a Race sends it on
		// every child with room; a Bond on its quickest).
		at = time.Duration(math.MaxInt64)
		for _, k := range rt.Kids {
			if a, q, kok := k.eta(); kok && (a < at || (a == at && q < backlog)) {
				at, backlog, ok = a, q, true
			}
		}
		return at, backlog, ok
	}
}
