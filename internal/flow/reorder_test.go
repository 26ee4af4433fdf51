package flow

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
)

// TestReorderPieces inserts random overlapping ranges of one byte string in random order and
// takes them out as a gap-free prefix grows: every byte must come out exactly once and equal,
// pieces must never overlap, and held pieces must be let go exactly once.
func TestReorderPieces(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for round := range 50 {
		data := payload(1+rng.IntN(200<<10), uint64(round))
		var q reorder
		var mu sync.Mutex
		unpins, holds := 0, 0
		h := &countingHolder{mu: &mu, holds: &holds, unpins: &unpins}
		var got []byte
		next := uint64(0)
		for len(got) < len(data) {
			off := rng.IntN(len(data))
			n := 1 + rng.IntN(min(len(data)-off, 40<<10))
			if rng.IntN(4) == 0 {
				off = int(next) // now and then, the bytes the gap waits for
				n = min(n, len(data)-off)
			}
			if uint64(off+n) > next && uint64(off) > next {
				q.insert(uint64(off), bytes.Clone(data[off:off+n]), h, 1<<20)
			} else if uint64(off+n) > next {
				got = append(got, data[next:off+n]...) // in order: delivered at once
				next = uint64(off + n)
			}
			for {
				seg, _, ok := q.next(next)
				if !ok {
					break
				}
				got = append(got, seg.b...)
				next += uint64(len(seg.b))
				seg.release()
			}
			for i := 1; i < len(q.segs); i++ {
				if q.segs[i-1].end() > q.segs[i].off {
					t.Fatalf("round %d: pieces %d and %d overlap", round, i-1, i)
				}
			}
			held := 0
			for _, s := range q.segs {
				held += len(s.b)
			}
			if held != q.n {
				t.Fatalf("round %d: n = %d, pieces hold %d", round, q.n, held)
			}
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("round %d: reassembled bytes differ", round)
		}
		q.reset()
		if q.segs != nil || q.n != 0 || holds != unpins {
			t.Fatalf("round %d: after reset %d pieces, %d bytes; %d holds, %d let go", round, len(q.segs), q.n, holds, unpins)
		}
	}
}

// countingHolder grants holds and counts them and their release.
type countingHolder struct {
	mu            *sync.Mutex
	holds, unpins *int
}

func (h *countingHolder) Hold() record.Pin {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.holds++
	return poisonPin{b: nil, unpin: h.unpins, mu: h.mu}
}

// TestEngineReordersAcrossPaths delivers a transfer's DATA frames shuffled, with duplicates,
// as two paths of different speeds would: every byte must reach the reader once and in order,
// the session credit must come back in full, and nothing may be left held.
func TestEngineReordersAcrossPaths(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{}, Config{})
		s, err := r.a.Open()
		if err != nil {
			t.Fatal(err)
		}
		data := payload(3<<20, 11)
		go func() {
			s.Write(data)
			s.CloseWrite()
		}()
		rng := rand.New(rand.NewPCG(7, 8))
		got := make(chan []byte, 1)
		var peer *Stream
		go func() {
			ps, err := r.b.Accept(t.Context())
			if err != nil {
				t.Error(err)
				got <- nil
				return
			}
			peer = ps
			got <- readN(t, ps, len(data))
		}()
		for range 2000 {
			synctest.Wait()
			ab := frames(t, r.ab.take())
			// Shuffle the DATA frames of this round and send some twice; control frames first.
			var ctl, dat []wire.Frame
			for _, f := range ab {
				if f.Type == wire.TypeData || f.Type == wire.TypeDataFin {
					f.Payload = bytes.Clone(f.Payload)
					dat = append(dat, f)
					if rng.IntN(5) == 0 {
						dat = append(dat, f)
					}
				} else {
					ctl = append(ctl, f)
				}
			}
			rng.Shuffle(len(dat), func(i, j int) { dat[i], dat[j] = dat[j], dat[i] })
			r.deliver(r.b, ctl)
			r.deliver(r.b, dat)
			synctest.Wait()
			r.deliver(r.a, frames(t, r.ba.take()))
			if len(got) == 1 {
				break
			}
		}
		if b := <-got; !bytes.Equal(b, data) {
			t.Fatal("the bytes read differ from the bytes written")
		}
		r.settle()
		r.b.mu.Lock()
		defer r.b.mu.Unlock()
		if r.b.mu.recvUsed != r.b.mu.recvRead || r.b.mu.reorderPieces != 0 || peer.ooo.pieces() != 0 {
			t.Fatalf("after the transfer: %d bytes of credit used, %d read, %d pieces still held",
				r.b.mu.recvUsed, r.b.mu.recvRead, r.b.mu.reorderPieces)
		}
		if r.b.mu.reordered < uint64(len(data))/4 {
			t.Fatalf("only %d of %d bytes arrived ahead of a gap: the shuffle did not reorder", r.b.mu.reordered, len(data))
		}
		if r.b.mu.dupBytes == 0 {
			t.Fatal("no duplicate counted, though frames were delivered twice")
		}
	})
}

// TestReorderMergesRuns: small pieces that continue one another (a datagram path's records
// after one lost) become a few pieces, not one each, within the same bounds; filling the gap
// gives every byte back in order.
func TestReorderMergesRuns(t *testing.T) {
	const rec, n = 1200, 5000
	data := payload(rec*(n+1), 11)
	var q reorder
	for i := 1; i <= n; i++ { // record 0 is the lost one
		off := i * rec
		if _, kept := q.insert(uint64(off), bytes.Clone(data[off:off+rec]), nil, 16); !kept {
			t.Fatalf("record %d refused with %d pieces held", i, q.pieces())
		}
	}
	if want := rec*n/mergeMax + 1; q.pieces() > want {
		t.Fatalf("%d records after a gap take %d pieces; want at most %d", n, q.pieces(), want)
	}
	got := bytes.Clone(data[:rec]) // the lost record, resent
	next := uint64(rec)
	for {
		seg, _, ok := q.next(next)
		if !ok {
			break
		}
		got = append(got, seg.b...)
		next += uint64(len(seg.b))
		seg.release()
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("reassembled %d bytes differ from the %d sent", len(got), len(data))
	}
}
