package flow

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
)

// poisonPin stands for a held read block: on Unpin it overwrites the bytes it kept alive, so a
// rope that reads a piece after letting it go returns poison instead of data, and counts how
// often it was let go.
type poisonPin struct {
	b     []byte
	unpin *int
	mu    *sync.Mutex
}

func (p poisonPin) Unpin() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.b {
		p.b[i] = 0xee
	}
	*p.unpin++
}

func TestRopeMixed(t *testing.T) {
	var r rope
	var want []byte
	var mu sync.Mutex
	unpins, holds := 0, 0
	rng := rand.New(rand.NewPCG(3, 4))
	sizes := []int{1, 100, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 5, holdMin, 7}
	for round := range 400 {
		p := payload(sizes[rng.IntN(len(sizes))], uint64(round))
		if rng.IntN(2) == 0 {
			held := bytes.Clone(p)
			r.writeHeld(held, poisonPin{b: held, unpin: &unpins, mu: &mu})
			holds++
		} else {
			r.write(p)
		}
		want = append(want, p...)
		if r.len() != len(want) {
			t.Fatalf("round %d: len %d, want %d", round, r.len(), len(want))
		}
		// Small writes share chunks: no copied piece but the last has room left.
		for i, s := range r.segs[:max(len(r.segs)-1, 0)] {
			if _, ok := s.pin.(*chunk); ok && cap(s.b) > len(s.b) {
				if _, nextChunk := r.segs[i+1].pin.(*chunk); nextChunk {
					t.Fatalf("round %d: piece %d has %d bytes of room, yet a new chunk follows it", round, i, cap(s.b)-len(s.b))
				}
			}
		}
		n := rng.IntN(len(want) + 1)
		if round%7 == 0 {
			n = len(want)
		}
		dst := make([]byte, n)
		if got := r.read(dst); got != n || !bytes.Equal(dst, want[:n]) {
			t.Fatalf("round %d: read %d of %d bytes, equal %v", round, got, n, bytes.Equal(dst[:got], want[:got]))
		}
		want = want[n:]
		if len(want) == 0 && r.segs != nil {
			t.Fatalf("round %d: an empty rope keeps %d pieces", round, len(r.segs))
		}
	}
	heldLeft := 0
	for _, s := range r.segs {
		if _, ok := s.pin.(poisonPin); ok {
			heldLeft++
		}
	}
	if unpins != holds-heldLeft {
		t.Fatalf("%d held pieces let go, want %d (%d held, %d still buffered)", unpins, holds-heldLeft, holds, heldLeft)
	}
	r.reset()
	if unpins != holds || r.len() != 0 || r.segs != nil {
		t.Fatalf("after reset: %d of %d held pieces let go, %d bytes in %d pieces", unpins, holds, r.len(), len(r.segs))
	}
}

// testHolder hands out poisonPins for the payload of the frame being handled.
type testHolder struct {
	mu      sync.Mutex
	cur     []byte
	refuse  bool
	holds   int
	unpins  int
	payload int // bytes held
}

func (h *testHolder) Hold() record.Pin {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refuse {
		return nil
	}
	h.holds++
	h.payload += len(h.cur)
	return poisonPin{b: h.cur, unpin: &h.unpins, mu: &h.mu}
}

func (h *testHolder) counts() (holds, unpins, payload int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.holds, h.unpins, h.payload
}

// TestEngineHoldsPayloads delivers a transfer whose reader is not waiting, through a Holder: large
// payloads must be kept by reference (and never read after they are let go: the holder
// poisons them), small ones copied, and every hold let go once the bytes are read, or when the
// reading side closes with bytes unread. A Holder that refuses gets copies and the same bytes.
func TestEngineHoldsPayloads(t *testing.T) {
	for _, tc := range []struct {
		name        string
		refuse      bool
		closeUnread bool
	}{{"held", false, false}, {"refused", true, false}, {"closed unread", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, Config{}, Config{})
				h := &testHolder{refuse: tc.refuse}
				s, err := r.a.Open()
				if err != nil {
					t.Fatal(err)
				}
				// Large writes, then small ones: records of both kinds.
				data := payload(200<<10, 7)
				small := payload(3000, 8)
				go func() {
					s.Write(data)
					for i := 0; i < len(small); i += 100 {
						s.Write(small[i : i+100])
					}
				}()
				synctest.Wait()
				for range 100 {
					ab := frames(t, r.ab.take())
					if len(ab) == 0 {
						break
					}
					for i := range ab {
						f := &ab[i]
						h.mu.Lock()
						f.Payload = bytes.Clone(f.Payload) // memory of its own, for the poison
						h.cur = f.Payload
						h.mu.Unlock()
						if err := r.b.HandleFrom(f, h); err != nil {
							t.Fatal(err)
						}
					}
					r.deliver(r.a, frames(t, r.ba.take()))
					synctest.Wait()
				}
				peer := accept(t, r.b)
				holds, unpins, held := h.counts()
				switch {
				case tc.refuse && holds != 0:
					t.Fatalf("%d holds from a holder that refuses", holds)
				case !tc.refuse && (holds == 0 || held < len(data)/2):
					t.Fatalf("%d holds of %d bytes for %d bytes of large writes", holds, held, len(data))
				case unpins != 0:
					t.Fatalf("%d holds let go before anything was read", unpins)
				}
				if tc.closeUnread {
					peer.CloseRead()
				} else {
					got := readN(t, peer, len(data)+len(small))
					if !bytes.Equal(got, append(bytes.Clone(data), small...)) {
						t.Fatal("the bytes read differ from the bytes written")
					}
				}
				if holds, unpins, _ = h.counts(); unpins != holds {
					t.Fatalf("%d of %d holds let go after %s", unpins, holds, tc.name)
				}
				peer.SetReadDeadline(time.Now().Add(time.Second))
				var want error = ErrTimeout // nothing more was written
				if tc.closeUnread {
					want = ErrClosed
				}
				if n, err := peer.Read(make([]byte, 1)); n != 0 || err != want {
					t.Fatalf("Read after the transfer = %d, %v; want %v", n, err, want)
				}
			})
		})
	}
}

// Payloads arriving large (held by reference), small, large, small... used to take a chunk
// each for the small bytes after every held one: 16 KiB for a byte, a buffer four times the
// bytes it held. Large payloads that fit the last chunk are copied into it instead, so chunks
// fill up, whether the large ones come in order or from ahead of a gap.
func TestRopeChunksFillBetweenHeldPayloads(t *testing.T) {
	for _, ahead := range []bool{false, true} {
		e := listener(t, Config{})
		h := &countHolder{keep: true}
		big := payload(holdMin, 1)
		var off uint64
		const rounds = 40
		for range rounds {
			large := wire.Frame{Type: wire.TypeData, Flow: 1, Offset: off, Payload: big}
			small := wire.Frame{Type: wire.TypeData, Flow: 1, Offset: off + holdMin, Payload: []byte{1}}
			if ahead {
				// The large one waits ahead of the byte before it, then follows it.
				large.Offset, small.Offset = off+1, off
			}
			for _, f := range []*wire.Frame{&large, &small} {
				if err := e.HandleFrom(f, h); err != nil {
					t.Fatal(err)
				}
			}
			off += holdMin + 1
		}
		e.mu.Lock()
		s := e.mu.flows[1]
		chunks, held := 0, 0
		for _, sg := range s.rbuf.segs {
			if _, ok := sg.pin.(*chunk); ok {
				chunks++
			} else {
				held++
			}
		}
		n := s.rbuf.len()
		e.mu.Unlock()
		if n != rounds*(holdMin+1) {
			t.Fatalf("ahead %v: %d bytes buffered, want %d", ahead, n, rounds*(holdMin+1))
		}
		// Every chunk but the last is at least three quarters full.
		if limit := n/(chunkSize-holdMin) + 1; chunks > limit {
			t.Fatalf("ahead %v: %d chunks and %d held payloads for %d bytes; at most %d chunks", ahead, chunks, held, n, limit)
		}
	}
}
