package main

import (
	"testing"
	"time"

	"github.com/rendr-go/rendr/status"
)

// TestStabilityCounts: every move but a path's first choice is a false alarm on healthy
// paths, and carriers dialed beyond one a path are deaths; the session's spurious and undone
// counts are carried as they are.
func TestStabilityCounts(t *testing.T) {
	m := &moveCounter{}
	for _, c := range []status.Cause{status.CauseFirst, status.CauseFirst, status.CauseStall, status.CausePeer, status.CauseUndo} {
		m.record(status.Migration{Time: time.Now(), Cause: c})
	}
	r := reportOf(m, status.Session{Spurious: 1, Undone: 1,
		Paths: []status.Path{{Name: "p0", Dials: 1}, {Name: "p1", Dials: 3}, {Name: "p2"}}})
	if got := r.falseMoves(); got != 3 {
		t.Errorf("false moves %d, want 3 (stall, peer, undo)", got)
	}
	if r.Redials != 2 || r.Spurious != 1 || r.Undone != 1 {
		t.Errorf("report %+v, want 2 re-dials, 1 spurious, 1 undone", r)
	}
	if s := r.String(); s != "stall 1, peer 1, undo 1, spurious 1, undone 1" {
		t.Errorf("String() = %q", s)
	}
}
