package flow

import (
	"testing"
	"time"

	"github.com/rendr-go/rendr/internal/record"
)

// etaLink is a Link whose Bond estimates the test sets.
type etaLink struct {
	linkDefaults
	id      uint32
	room    int
	srtt    time.Duration
	rate    float64
	backlog int
	arrival time.Duration // 0: the link cannot tell (Arrival's ok is false)
}

func (l *etaLink) LinkID() uint32                       { return l.id }
func (l *etaLink) Space() int                           { return l.room }
func (l *etaLink) SRTT() (time.Duration, time.Duration) { return l.srtt, 0 }
func (l *etaLink) Rate() float64                        { return l.rate }
func (l *etaLink) Backlog() int                         { return l.backlog }
func (l *etaLink) Arrival(int) (time.Duration, bool)    { return l.arrival, l.arrival > 0 }
func (l *etaLink) Send(r *record.Record) bool           { r.Release(); return true }

func bondOf(ls ...*etaLink) *Route {
	rt := &Route{Mode: ModeBond}
	for _, l := range ls {
		rt.Kids = append(rt.Kids, &Route{Mode: ModeLink, Link: l})
	}
	return rt
}

func picked(rt *Route) []uint32 {
	var ids []uint32
	for _, l := range rt.pick(nil) {
		ids = append(ids, l.LinkID())
	}
	return ids
}

// A Bond sends each record on the link expected to deliver it first, and on none while that
// link is full and sure of its estimate (Link.Arrival, from the kernel): a slower link with
// room would deliver the record later than waiting does, and would hold the flow's later
// bytes behind it at the receiver (earliest completion first).
func TestBondWaitsForTheQuickerLink(t *testing.T) {
	fast := &etaLink{id: 1, arrival: 30 * time.Millisecond}
	slow := &etaLink{id: 2, room: 1 << 20, arrival: 45 * time.Millisecond}

	fast.room = 1 << 20
	if got := picked(bondOf(fast, slow)); len(got) != 1 || got[0] != 1 {
		t.Fatalf("both with room: picked %v, want the quicker link 1", got)
	}
	// Full, the fast link still delivers a record sooner than the slow one would: wait.
	fast.room = 0
	if got := picked(bondOf(fast, slow)); len(got) != 0 {
		t.Fatalf("the quicker link full: picked %v, want none (wait for it)", got)
	}
	// Once its queue would make the fast link the later one, the slow link takes the record.
	fast.arrival = 60 * time.Millisecond
	if got := picked(bondOf(fast, slow)); len(got) != 1 || got[0] != 2 {
		t.Fatalf("the fast link 60 ms away: picked %v, want the slow link 2", got)
	}
}

// An estimate from probes and write rates alone cannot see what a carrier has queued, and may
// be too low: a full link with such an estimate does not hold the others back.
func TestBondUnsureEstimateDoesNotWait(t *testing.T) {
	fast := &etaLink{id: 1, srtt: 10 * time.Millisecond, rate: 12.5e6, backlog: 256 << 10}
	slow := &etaLink{id: 2, room: 1 << 20, srtt: 80 * time.Millisecond, rate: 2.5e6}
	if got := picked(bondOf(fast, slow)); len(got) != 1 || got[0] != 2 {
		t.Fatalf("the quicker link full, by probes and rate alone: picked %v, want the slow link 2", got)
	}
}

// A link's own estimate (Link.Arrival: what a TCP carrier holds in the network) overrides the
// one from its probes and write rate, which cannot see the queue the carrier built.
func TestBondUsesTheLinksArrival(t *testing.T) {
	// By probes and rate, the deep link looks quick; its carrier knows a second of queue.
	deep := &etaLink{id: 1, room: 1 << 20, srtt: 40 * time.Millisecond, rate: 2.5e6, arrival: time.Second}
	fast := &etaLink{id: 2, room: 1 << 20, srtt: 50 * time.Millisecond, rate: 12.5e6, backlog: 128 << 10}
	if got := picked(bondOf(deep, fast)); len(got) != 1 || got[0] != 2 {
		t.Fatalf("picked %v, want link 2: link 1's carrier holds a second of queue", got)
	}
	deep.arrival = 20 * time.Millisecond
	if got := picked(bondOf(deep, fast)); len(got) != 1 || got[0] != 1 {
		t.Fatalf("picked %v, want link 1 once it would deliver first", got)
	}
}

// A Race inside a Bond has room when any of its members has; a Bond inside a Bond only when
// its own choice has, if that choice is sure.
func TestBondNestedRoom(t *testing.T) {
	full := &etaLink{id: 1, arrival: 10 * time.Millisecond}
	free := &etaLink{id: 2, room: 1 << 20, arrival: 20 * time.Millisecond}
	other := &etaLink{id: 3, room: 1 << 20, arrival: 30 * time.Millisecond}
	race := &Route{Mode: ModeRace, Kids: []*Route{{Mode: ModeLink, Link: full}, {Mode: ModeLink, Link: free}}}
	if got := picked(&Route{Mode: ModeBond, Kids: []*Route{race, {Mode: ModeLink, Link: other}}}); len(got) != 1 || got[0] != 2 {
		t.Fatalf("race of (full, free) beside a slower link: picked %v, want the race's free member 2", got)
	}
	inner := bondOf(full, free) // its choice, link 1, is full: it takes nothing now
	if got := picked(&Route{Mode: ModeBond, Kids: []*Route{inner, {Mode: ModeLink, Link: other}}}); len(got) != 0 {
		t.Fatalf("bond whose quickest member is full, beside a slower link: picked %v, want none", got)
	}
	full.arrival, free.arrival = 0, 0 // unsure: the inner bond sends on its free member
	full.srtt, free.srtt = 10*time.Millisecond, 20*time.Millisecond
	if got := picked(&Route{Mode: ModeBond, Kids: []*Route{inner, {Mode: ModeLink, Link: other}}}); len(got) != 1 || got[0] != 2 {
		t.Fatalf("bond whose quickest member is full but unsure, beside a slower link: picked %v, want its free member 2", got)
	}
}
