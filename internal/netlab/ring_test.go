package netlab

import (
	"bytes"
	"testing"
)

func TestRing(t *testing.T) {
	r := newRing(100)
	type held struct {
		start, end int64
		data       []byte
	}
	var fifo []held
	put := func(n int, fill byte) bool {
		t.Helper()
		start, b := r.reserve(n)
		if b == nil {
			return false
		}
		if len(b) != n {
			t.Fatalf("reserve(%d) gave %d bytes", n, len(b))
		}
		for i := range b {
			b[i] = fill
		}
		r.commit(start + int64(n))
		fifo = append(fifo, held{start, start + int64(n), bytes.Repeat([]byte{fill}, n)})
		return true
	}
	take := func() {
		t.Helper()
		h := fifo[0]
		fifo = fifo[1:]
		if got := r.at(h.start, h.end); !bytes.Equal(got, h.data) {
			t.Fatalf("packet %d..%d reads %v, want %v", h.start, h.end, got, h.data)
		}
		r.release(h.end)
	}

	if !put(40, 1) || !put(40, 2) {
		t.Fatal("80 bytes do not fit an empty ring of 100")
	}
	if put(30, 3) {
		t.Fatal("30 more bytes fit where 20 are free")
	}
	if !put(20, 3) {
		t.Fatal("20 bytes do not fit exactly")
	}
	if put(1, 4) {
		t.Fatal("a byte fits a full ring")
	}
	take()
	// 40 bytes free at the start; the end has none left, so the next goes to the start.
	if !put(30, 4) {
		t.Fatal("30 bytes do not fit after the first packet left")
	}
	take()
	take()
	// Free: 30..100 minus nothing held there; the tail is at 30, 70 bytes of room.
	if !put(70, 5) {
		t.Fatal("70 bytes do not fit the room before the end")
	}
	take()
	take()
	// Empty, tail at the end of the buffer: a packet goes to the start.
	if !put(100, 6) {
		t.Fatal("a full-size packet does not fit an empty ring")
	}
	take()
	// 60 bytes at 0..60, tail at 60: 50 bytes do not fit before the end (40) and only
	// 0 at the start while the first is held.
	if !put(60, 7) || put(50, 8) {
		t.Fatal("room at the end or the start miscounted")
	}
	take()
	// Now the 40 at the end are skipped and the 50 go to the start.
	if !put(50, 8) {
		t.Fatal("50 bytes do not fit the start of an empty ring")
	}
	take()
	if len(fifo) != 0 {
		t.Fatalf("%d packets left", len(fifo))
	}
}
