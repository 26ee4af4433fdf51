package record

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/rendr-go/rendr/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type countPin struct{ n int }

func (p *countPin) Unpin() { p.n++ }

// TestRoomAndExt: a record's room follows its limit and its frames, is gone once payload by
// reference is appended, and its pins are let go once, by Unpin or Release.
func TestRoomAndExt(t *testing.T) {
	r := New()
	if len(r.B) != 2 || r.Room() != wire.MaxPlaintext || r.Cap() != wire.MaxPlaintext {
		t.Fatalf("new record: %d bytes, room %d, cap %d", len(r.B), r.Room(), r.Cap())
	}
	r.SetLimit(1200)
	r.B = append(r.B, make([]byte, 200)...)
	if r.Room() != 1000 || r.Cap() != 1200 || len(r.Frames()) != 200 {
		t.Fatalf("limit 1200, 200 bytes in: room %d, cap %d, frames %d", r.Room(), r.Cap(), len(r.Frames()))
	}
	a, b := &countPin{}, &countPin{}
	r.AppendExt(make([]byte, 300), a)
	r.AppendExt(make([]byte, 400), b)
	if r.Room() != 0 || r.ExtLen() != 700 || r.Len() != 2+200+700 {
		t.Fatalf("with 700 bytes by reference: room %d, ext %d, len %d", r.Room(), r.ExtLen(), r.Len())
	}
	r.Unpin()
	r.Unpin()
	if a.n != 1 || b.n != 1 || r.ExtLen() != 0 || len(r.Ext) != 0 {
		t.Fatalf("pins let go %d and %d times; ext %d", a.n, b.n, r.ExtLen())
	}
	c := &countPin{}
	r.AppendExt([]byte("x"), c)
	r.SetCritical()
	r.Carried = append(r.Carried, Carried{Kind: CarriedData, Flow: 1, Len: 1})
	r.Release()
	if c.n != 1 {
		t.Fatalf("Release let a pin go %d times", c.n)
	}
	r = New()
	if r.Critical() || len(r.Carried) != 0 || r.Room() != wire.MaxPlaintext || r.ExtLen() != 0 {
		t.Fatal("a record from the pool kept what its last use left")
	}
	r.Release()
}

// TestSplitOverhead: a split record of k parts adds its part count, k lengths and a tag for
// every part beyond the first (docs/wire.md section 5).
func TestSplitOverhead(t *testing.T) {
	for ext, want := range map[int]int{1: 1 + 4 + wire.TagSize, 2: 1 + 6 + 2*wire.TagSize, 0: 1 + 2} {
		if got := SplitOverhead(ext); got != want {
			t.Errorf("SplitOverhead(%d) = %d, want %d", ext, got, want)
		}
	}
}
