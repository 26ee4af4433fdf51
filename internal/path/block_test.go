package path

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rendr-go/rendr/internal/wire"
)

// holdingHandler keeps every DATA payload by reference, as the flow engine does with large
// ones: it holds the path's memory instead of copying.
type holdingHandler struct {
	mu      sync.Mutex
	held    []heldPayload
	refused int
	frames  int
	bytes   int // payload bytes seen
	down    chan error
}

type heldPayload struct {
	offset uint64
	b      []byte
	pin    Pin
}

func (h *holdingHandler) Frame(p *Path, f *wire.Frame) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.frames++
	if f.Type != wire.TypeData && f.Type != wire.TypeDataFin {
		return nil
	}
	h.bytes += len(f.Payload)
	pin := p.Hold()
	if pin == nil {
		h.refused++
		return nil
	}
	h.held = append(h.held, heldPayload{f.Offset, f.Payload, pin})
	return nil
}
func (h *holdingHandler) Writable(*Path)            {}
func (h *holdingHandler) Measured(*Path)            {}
func (h *holdingHandler) Down(p *Path, cause error) { h.down <- cause }

// TestHeldPayloadsSurviveReads sends several read blocks' worth of records, plain and split,
// to a path whose handler holds every payload: the opener must move to new blocks instead of
// overwriting held bytes, charge the blocks it leaves behind to the budget, stop granting
// holds when the budget is spent, and give everything back when the holders let go, even
// after the path is gone.
func TestHeldPayloadsSurviveReads(t *testing.T) {
	for _, tc := range []struct {
		name      string
		limit     int64
		wantRefus bool
	}{
		{"roomy budget", 64 << 20, false},
		{"one block", readBuffer, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			near, far := net.Pipe()
			nsend, recv := noiseCipherPair()
			send := newRecordCipher(nsend)
			budget := &HoldBudget{Limit: tc.limit}
			h := &holdingHandler{down: make(chan error, 1)}
			p := New(1, far, nil, recv, Config{ProbeIdle: time.Hour, Hold: budget}, h)
			p.Start()
			go io.Copy(io.Discard, near)
			s := sealer{cs: send}
			data := payload(40*readBuffer/10, 5) // four read blocks
			var records [][]byte
			for off, i := 0, 0; off < len(data); i++ {
				n := min(len(data)-off, 30000+i*997%20000)
				r := NewRecord()
				if i%2 == 0 { // a plain record: the payload next to its header
					r.B = wire.AppendData(r.B, 1, uint64(off), false, data[off:off+n])
				} else { // a split record: the payload in parts of its own
					r.B = wire.AppendDataHeader(r.B, 1, uint64(off), false, n)
					r.AppendExt(data[off:off+n/2], &countPin{})
					r.AppendExt(data[off+n/2:off+n], &countPin{})
				}
				if err := s.seal(r); err != nil {
					t.Fatal(err)
				}
				records = append(records, bytes.Clone(r.B))
				r.Release()
				off += n
			}
			// One record per write, so reads end on record boundaries: the opener must not
			// start over at the front of a block whose last record's payload is held.
			for _, rec := range records {
				if _, err := near.Write(rec); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				h.mu.Lock()
				seen := h.bytes
				h.mu.Unlock()
				if seen >= len(data) || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			if tc.wantRefus != (h.refused > 0) {
				t.Fatalf("%d holds refused with a budget of %d", h.refused, tc.limit)
			}
			p.Close(nil)
			p.Wait()
			<-h.down
			h.mu.Lock()
			got := h.held
			h.mu.Unlock()
			if len(got) < 3 {
				t.Fatalf("only %d payloads held", len(got))
			}
			// Every held payload still reads as sent, after the path read past it and closed.
			for _, x := range got {
				if !bytes.Equal(x.b, data[x.offset:int(x.offset)+len(x.b)]) {
					t.Fatalf("held payload at %d was overwritten", x.offset)
				}
			}
			if budget.Used() <= 0 || budget.Used() > tc.limit {
				t.Fatalf("budget used %d with payloads held in retired blocks (limit %d)", budget.Used(), tc.limit)
			}
			for _, x := range got {
				x.pin.Unpin()
			}
			if budget.Used() != 0 {
				t.Fatalf("budget used %d after every hold was let go", budget.Used())
			}
		})
	}
}

// TestHoldWithoutBudget: a path configured without a HoldBudget grants no holds.
func TestHoldWithoutBudget(t *testing.T) {
	near, far := net.Pipe()
	h := &holdingHandler{down: make(chan error, 1)}
	p := New(1, far, nil, nil, Config{ProbeIdle: time.Hour}, h)
	p.Start()
	go io.Copy(io.Discard, near)
	r := NewRecord()
	r.B = wire.AppendData(r.B, 1, 0, false, make([]byte, 5000))
	var s sealer
	s.seal(r)
	near.Write(r.B)
	r.Release()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.mu.Lock()
		n := h.refused + len(h.held)
		h.mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	p.Close(nil)
	p.Wait()
	<-h.down
	if h.refused != 1 || len(h.held) != 0 {
		t.Fatalf("%d holds granted, %d refused, without a budget", len(h.held), h.refused)
	}
}

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*131) ^ seed ^ byte(i>>9)
	}
	return b
}
