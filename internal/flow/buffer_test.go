package flow

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestBufferAcrossChunks(t *testing.T) {
	var b buffer
	var want []byte
	rng := rand.New(rand.NewPCG(1, 2))
	// Writes and discards of sizes around the chunk size, so every boundary case (a write
	// ending exactly on a boundary, a head crossing one, a read spanning several) happens.
	sizes := []int{1, chunkSize - 1, 1, chunkSize, 3*chunkSize + 7, 5, chunkSize + 1}
	for round := range 200 {
		p := make([]byte, sizes[round%len(sizes)])
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		b.write(p)
		want = append(want, p...)
		if b.len() != len(want) {
			t.Fatalf("round %d: len %d, want %d", round, b.len(), len(want))
		}
		// readAt from random offsets sees the right bytes and consumes nothing.
		for range 3 {
			off := rng.IntN(len(want) + 1)
			dst := make([]byte, rng.IntN(3*chunkSize))
			n := b.readAt(dst, off)
			if wantN := min(len(dst), len(want)-off); n != wantN || !bytes.Equal(dst[:n], want[off:off+n]) {
				t.Fatalf("round %d: readAt(%d bytes, %d) = %d, want %d matching bytes", round, len(dst), off, n, wantN)
			}
		}
		if b.readAt(make([]byte, 10), len(want)) != 0 {
			t.Fatal("readAt at the end returned bytes")
		}
		d := rng.IntN(len(want) + 1)
		if round%5 == 0 {
			d = len(want) // empty it now and then
		}
		b.discard(d)
		want = want[d:]
		if b.len() != len(want) {
			t.Fatalf("round %d: len %d after discarding %d, want %d", round, b.len(), d, len(want))
		}
		// Only the chunks the bytes need are held.
		if need := (b.head + b.n + chunkSize - 1) / chunkSize; len(b.chunks) != need {
			t.Fatalf("round %d: %d chunks held for %d bytes at head %d, want %d", round, len(b.chunks), b.n, b.head, need)
		}
		if len(want) == 0 && (b.chunks != nil || b.head != 0) {
			t.Fatalf("round %d: empty buffer holds %d chunks (head %d)", round, len(b.chunks), b.head)
		}
	}
	got := make([]byte, len(want))
	if n := b.readAt(got, 0); n != len(want) || !bytes.Equal(got, want) {
		t.Fatal("final contents differ")
	}
	b.reset()
	if b.len() != 0 || b.chunks != nil {
		t.Fatalf("reset left %d bytes in %d chunks", b.len(), len(b.chunks))
	}
}

func TestBufferDiscardMoreThanHeld(t *testing.T) {
	var b buffer
	b.write(make([]byte, chunkSize+10))
	b.discard(10 * chunkSize)
	if b.len() != 0 || b.chunks != nil || b.head != 0 {
		t.Fatalf("after over-discard: len %d, %d chunks, head %d", b.len(), len(b.chunks), b.head)
	}
	// Still usable afterwards.
	b.write([]byte("abc"))
	dst := make([]byte, 3)
	if b.readAt(dst, 0) != 3 || string(dst) != "abc" {
		t.Fatalf("reuse after empty: %q", dst)
	}
}

func TestBufferExactChunkBoundary(t *testing.T) {
	var b buffer
	b.write(make([]byte, 2*chunkSize))
	if len(b.chunks) != 2 {
		t.Fatalf("%d chunks for exactly two chunks of bytes", len(b.chunks))
	}
	b.discard(chunkSize)
	if len(b.chunks) != 1 || b.head != 0 {
		t.Fatalf("after discarding one whole chunk: %d chunks, head %d", len(b.chunks), b.head)
	}
	b.write([]byte{7})
	if len(b.chunks) != 2 {
		t.Fatalf("one byte past a full chunk needs a new chunk, have %d", len(b.chunks))
	}
	dst := make([]byte, 1)
	if b.readAt(dst, chunkSize) != 1 || dst[0] != 7 {
		t.Fatal("byte past the boundary lost")
	}
}
