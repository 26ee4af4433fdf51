package flow

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
)

// zcLossyLink is a packet path as the engine sees it: records of at most max frame bytes, and
// zero-copy (payloads stay in the send buffer, as the path seals them in parts). It records
// each DATA frame's payload size and checks that the record's parts fit a packet.
type zcLossyLink struct {
	linkDefaults
	t     *testing.T
	max   int
	sizes chan int    // payload bytes of each DATA frame sent
	open  atomic.Bool // Space is 0 until set: the test lines up the writes first
}

func (l *zcLossyLink) LinkID() uint32 { return 1 }
func (l *zcLossyLink) Space() int {
	if !l.open.Load() {
		return 0
	}
	return 1 << 20
}
func (l *zcLossyLink) MaxRecord() int { return l.max }
func (l *zcLossyLink) ZeroCopy() bool { return true }
func (l *zcLossyLink) SRTT() (time.Duration, time.Duration) {
	return 10 * time.Millisecond, time.Millisecond
}

func (l *zcLossyLink) Send(r *record.Record) bool {
	defer r.Release()
	// The path seals a payload kept by reference in parts when they fit its packet, and
	// copies it otherwise: the engine must leave room for the parts' tags.
	if len(r.Ext) > 0 && r.Len()-2+record.SplitOverhead(len(r.Ext)) > l.max {
		l.t.Errorf("a record of %d bytes in %d pieces: with its parts' overhead, over %d", r.Len()-2, len(r.Ext), l.max)
	}
	for b := r.Frames(); len(b) > 0; {
		if _, m, n, ok := wire.DataHeader(b); ok && m == len(b) {
			l.sizes <- int(n) // the payload is Ext
			break
		}
		f, n, err := wire.Parse(b)
		if err != nil {
			l.t.Errorf("frame: %v", err)
			return true
		}
		if f.Type == wire.TypeData {
			l.sizes <- len(f.Payload)
		}
		b = b[n:]
	}
	return true
}

type zcRouter struct{ l Link }

func (r zcRouter) Route() *Route                                                { return one(r.l) }
func (r zcRouter) Stalled(Link, time.Time, time.Duration) (bool, time.Duration) { return false, 0 }

// TestPacketRecordsFillTheMTU: a flow alone on a packet path fills each record up to the
// path's MaxRecord, less the overhead of sealing its payload in parts, rather than stopping
// at the quantum that keeps flows taking turns; two flows still take turns a quantum each.
func TestPacketRecordsFillTheMTU(t *testing.T) {
	for _, flows := range []int{1, 2} {
		synctest.Test(t, func(t *testing.T) {
			l := &zcLossyLink{t: t, max: 65000, sizes: make(chan int, 4096)}
			e := New(Config{Dialer: true}, zcRouter{l})
			defer e.Fail(ErrClosed)
			for range flows {
				s, err := e.Open()
				if err != nil {
					t.Fatal(err)
				}
				go s.Write(make([]byte, 200<<10)) // within the peer's initial window
			}
			synctest.Wait() // every flow's bytes are buffered: now the link takes them
			l.open.Store(true)
			e.Kick()
			synctest.Wait()
			close(l.sizes)
			biggest := 0
			for n := range l.sizes {
				biggest = max(biggest, n)
			}
			switch {
			case flows == 1 && biggest <= dataQuantum:
				t.Errorf("alone: the largest DATA payload is %d bytes, want more than the %d quantum", biggest, dataQuantum)
			case flows == 1 && biggest+record.SplitOverhead(5) < 65000-64:
				t.Errorf("alone: the largest DATA payload is %d bytes, far short of a 65000-byte record", biggest)
			case flows == 2 && biggest > dataQuantum:
				t.Errorf("two flows: a DATA payload of %d bytes, over the %d quantum", biggest, dataQuantum)
			}
		})
	}
}
