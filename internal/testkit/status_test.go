package testkit

import (
	"testing"

	"github.com/rendr-go/rendr/status"
)

func TestPathNames(t *testing.T) {
	for i := range 12 {
		if got := PathIndex(PathName(i)); got != i {
			t.Fatalf("PathIndex(PathName(%d)) = %d", i, got)
		}
	}
	for _, name := range []string{"", "p", "p01", "q1", "p1x", "root"} {
		if got := PathIndex(name); got != -1 {
			t.Fatalf("PathIndex(%q) = %d, want -1", name, got)
		}
	}
}

func TestActive(t *testing.T) {
	st := status.Session{Paths: []status.Path{
		{Name: "p0", ID: 4, State: status.Up},
		{Name: "p1", ID: 9, State: status.Down, Active: true}, // a dead path still flagged
		{Name: "p2", ID: 7, State: status.Up, Active: true},
	}}
	if i, id := ActiveID(st); i != 2 || id != 7 {
		t.Fatalf("ActiveID = %d, %d; want 2, 7", i, id)
	}
	st.Paths[2].Active = false
	if i := Active(st); i != -1 {
		t.Fatalf("Active with none carrying = %d, want -1", i)
	}
}

func TestMigrationsMoves(t *testing.T) {
	var m Migrations
	m.Record(status.Migration{To: "p0"})
	m.Record(status.Migration{From: "p0", To: "p1"})
	m.Record(status.Migration{To: "p2"})
	m.Record(status.Migration{From: "p1", To: "p2"})
	if got := m.Moves(); got != 2 {
		t.Fatalf("Moves = %d, want 2 (first choices are not moves)", got)
	}
	if got := len(m.All()); got != 4 {
		t.Fatalf("All has %d, want 4", got)
	}
}
