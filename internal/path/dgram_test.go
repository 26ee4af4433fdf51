package path

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/flynn/noise"

	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/transport"
)

// fakeDgCarrier records the datagrams a channel sends; max is its limit.
type fakeDgCarrier struct {
	mu   sync.Mutex
	max  int
	sent [][]byte
	in   chan []byte
}

func (c *fakeDgCarrier) SendDatagram(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(b) > c.max {
		return &transport.DatagramTooLargeError{Max: c.max}
	}
	c.sent = append(c.sent, bytes.Clone(b))
	return nil
}

func (c *fakeDgCarrier) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	select {
	case b := <-c.in:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *fakeDgCarrier) MaxDatagramSize() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max
}

// offload is what the path writer does with one record: take its datagrams, then send them.
// It returns the bytes sent, whether r is left empty, and the frames refused as too large.
func offload(d *dgChannel, r *Record) (int, bool, []byte, error) {
	empty, err := d.take(r)
	if err != nil {
		return 0, false, nil, err
	}
	n, spill, err := d.send()
	return n, empty, spill, err
}

// dgPair returns a sending and a receiving channel sharing keys (encrypted) or none.
func dgPair(encrypted bool, max int) (*dgChannel, *dgChannel, *fakeDgCarrier) {
	car := &fakeDgCarrier{max: max}
	if !encrypted {
		return newDgChannel(car, nil, nil), newDgChannel(car, nil, nil), car
	}
	// One key per direction, so that a channel that mixed up its send and receive keys
	// would open nothing.
	other := [32]byte{0: 0x02, 9: 0x99}
	s1, r1 := noiseCipherPair()
	s2 := noise.UnsafeNewCipherState(recordSuite, other, 0)
	r2 := noise.UnsafeNewCipherState(recordSuite, other, 0)
	return newDgChannel(car, s1, r2), newDgChannel(car, s2, r1), car
}

// frameTypes parses frames into their types and datagram payloads.
func frameTypes(t *testing.T, b []byte) (types []wire.Type, payloads [][]byte) {
	t.Helper()
	for len(b) > 0 {
		f, n, err := wire.Parse(b)
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		types = append(types, f.Type)
		if f.Type == wire.TypeDatagram {
			payloads = append(payloads, bytes.Clone(f.Payload))
		}
		b = b[n:]
	}
	return types, payloads
}

// TestDgOffload: DATAGRAM frames leave the record, packed several to a carrier datagram;
// everything else stays in the stream record in its order; a record of datagrams only is
// empty afterwards.
func TestDgOffload(t *testing.T) {
	for _, enc := range []bool{false, true} {
		snd, rcv, car := dgPair(enc, 1200)
		r := NewRecord()
		r.B = wire.AppendAck(r.B, 1, 10, 20, 0)
		var want [][]byte
		for i := range 5 {
			p := bytes.Repeat([]byte{byte(i)}, 500)
			want = append(want, p)
			r.B = wire.AppendDatagram(r.B, 2, uint64(i+1), p)
			if i == 2 {
				r.B = wire.AppendMaxData(r.B, 99)
			}
		}
		big := bytes.Repeat([]byte{9}, 1500) // over the carrier's limit: stays in the stream
		r.B = wire.AppendDatagram(r.B, 2, 6, big)
		n, empty, spill, err := offload(snd, r)
		if err != nil || empty || n == 0 || len(spill) != 0 {
			t.Fatalf("offload: %d bytes, empty %v, spill %d, %v", n, empty, len(spill), err)
		}
		types, left := frameTypes(t, r.Frames())
		if !slices.Equal(types, []wire.Type{wire.TypeAck, wire.TypeMaxData, wire.TypeDatagram}) || !bytes.Equal(left[0], big) {
			t.Fatalf("left in the stream: %v", types)
		}
		r.Release()
		if len(car.sent) != 3 { // 500+500 fit 1200 with headers; five make three datagrams
			t.Fatalf("%d carrier datagrams for five 500-byte frames", len(car.sent))
		}
		var got [][]byte
		for _, b := range car.sent {
			fr, err := rcv.openRecord(b)
			if err != nil {
				t.Fatal(err)
			}
			_, p := frameTypes(t, fr)
			got = append(got, p...)
		}
		if len(got) != len(want) {
			t.Fatalf("received %d datagrams, sent %d", len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("datagram %d differs", i)
			}
		}

		only := NewRecord()
		only.B = wire.AppendDatagram(only.B, 2, 7, []byte("x"))
		if _, empty, _, err := offload(snd, only); err != nil || !empty {
			t.Fatalf("a record of one small datagram: empty %v, %v", empty, err)
		}
		only.Release()
	}
}

// TestDgSpill: a carrier whose limit shrinks under the channel refuses the datagram; its
// frames come back for the stream instead of being lost.
func TestDgSpill(t *testing.T) {
	for _, enc := range []bool{false, true} {
		snd, _, car := dgPair(enc, 1200)
		r := NewRecord()
		r.B = wire.AppendDatagram(r.B, 2, 1, bytes.Repeat([]byte{1}, 900))
		r.B = wire.AppendAck(r.B, 1, 10, 20, 0)
		car.max = 1 << 20 // MaxDatagramSize says plenty...
		shrink := &shrinkCarrier{fakeDgCarrier: car, limit: 600}
		snd.c = shrink // ...but the send finds the limit lower
		_, empty, spill, err := offload(snd, r)
		if err != nil || empty {
			t.Fatalf("offload: empty %v, %v", empty, err)
		}
		if types, _ := frameTypes(t, r.Frames()); !slices.Equal(types, []wire.Type{wire.TypeAck}) {
			t.Fatalf("the record kept %v", types)
		}
		types, p := frameTypes(t, spill)
		if !slices.Equal(types, []wire.Type{wire.TypeDatagram}) || len(p[0]) != 900 {
			t.Fatalf("after a refused datagram the spill holds %v", types)
		}
		r.Release()
	}
}

type shrinkCarrier struct {
	*fakeDgCarrier
	limit int
}

func (c *shrinkCarrier) SendDatagram(b []byte) error {
	if len(b) > c.limit {
		return &transport.DatagramTooLargeError{Max: c.limit}
	}
	return c.fakeDgCarrier.SendDatagram(b)
}

// TestDgReplayWindow: copies and datagrams behind the window are dropped without closing
// anything; reordered ones within it are taken; a forged one is bad input.
func TestDgReplayWindow(t *testing.T) {
	snd, rcv, car := dgPair(true, 1200)
	send := func() []byte {
		r := NewRecord()
		r.B = wire.AppendDatagram(r.B, 2, 1, []byte("payload"))
		if _, _, _, err := offload(snd, r); err != nil {
			t.Fatal(err)
		}
		r.Release()
		return bytes.Clone(car.sent[len(car.sent)-1])
	}
	var recs [][]byte
	for range dgWindow + 10 {
		recs = append(recs, send())
	}
	open := func(b []byte) error {
		_, err := rcv.openRecord(bytes.Clone(b))
		return err
	}
	if err := open(recs[5]); err != nil {
		t.Fatal(err)
	}
	if err := open(recs[3]); err != nil { // reordered, within the window
		t.Fatal(err)
	}
	if err := open(recs[5]); !errors.Is(err, errReplay) {
		t.Fatalf("a copy: %v", err)
	}
	if err := open(recs[dgWindow+9]); err != nil {
		t.Fatal(err)
	}
	if err := open(recs[0]); !errors.Is(err, errOld) {
		t.Fatalf("a datagram behind the window: %v", err)
	}
	if err := open(recs[20]); err != nil { // still within the window, never seen
		t.Fatal(err)
	}
	if err := open(recs[20]); !errors.Is(err, errReplay) {
		t.Fatalf("a copy after the window slid: %v", err)
	}
	forged := bytes.Clone(recs[dgWindow+8])
	forged[len(forged)-1] ^= 1
	if err := open(forged); !errors.Is(err, ErrRecord) {
		t.Fatalf("a forged datagram: %v", err)
	}
	// The forged one did not mark its counter: the real one still counts.
	if err := open(recs[dgWindow+8]); err != nil {
		t.Fatal(err)
	}
	if err := open([]byte("short")); !errors.Is(err, ErrRecord) {
		t.Fatalf("a truncated datagram: %v", err)
	}
	// A record with no frame at all is malformed too.
	empty := make([]byte, dgCounterSize, 64)
	binary.BigEndian.PutUint64(empty, dgWindow+100)
	empty = snd.seal.aead.Seal(empty, snd.seal.nonceOf(dgWindow+100), nil, empty[:dgCounterSize])
	if err := open(empty); !errors.Is(err, ErrRecord) {
		t.Fatalf("an empty datagram record: %v", err)
	}
}

// TestDgWindowEdge: with the newest counter N accepted, N-8191 (the oldest the window holds)
// is taken and N-8192 is not.
func TestDgWindowEdge(t *testing.T) {
	snd, rcv, car := dgPair(true, 1200)
	for range dgWindow + 8 {
		r := NewRecord()
		r.B = wire.AppendDatagram(r.B, 2, 1, []byte("x"))
		if _, _, _, err := offload(snd, r); err != nil {
			t.Fatal(err)
		}
		r.Release()
	}
	newest := len(car.sent) - 1
	for _, tc := range []struct {
		i    int
		want error
	}{{newest, nil}, {newest - (dgWindow - 1), nil}, {newest - dgWindow, errOld}, {newest - 1, nil}} {
		if _, err := rcv.openRecord(bytes.Clone(car.sent[tc.i])); !errors.Is(err, tc.want) {
			t.Fatalf("counter %d with %d the newest: %v, want %v", tc.i, newest, err, tc.want)
		}
	}
}

// TestDgRekey: counters cross a key epoch; datagrams from both sides of the boundary open,
// in either order, and the epoch before the last is refused.
func TestDgRekey(t *testing.T) {
	snd, rcv, car := dgPair(true, 1200)
	snd.sent = dgEpoch - 2
	for range 4 { // counters epoch-2 .. epoch+1
		r := NewRecord()
		r.B = wire.AppendDatagram(r.B, 2, 1, []byte("x"))
		if _, _, _, err := offload(snd, r); err != nil {
			t.Fatal(err)
		}
		r.Release()
	}
	rcv.high = dgEpoch - 3
	// The receiver's first key is epoch 0's: it must find epoch 1's from it.
	order := []int{2, 0, 3, 1}
	for _, i := range order {
		if _, err := rcv.openRecord(bytes.Clone(car.sent[i])); err != nil {
			t.Fatalf("datagram %d across the rekey: %v", i, err)
		}
	}
	if rcv.openEpoch != 1 {
		t.Fatalf("receiver at epoch %d", rcv.openEpoch)
	}
	// Two epochs ahead of the receiver's is dropped unopened, as is two behind.
	for _, n := range []uint64{3 * dgEpoch, 3*dgEpoch + 5} {
		b := make([]byte, dgCounterSize+wire.TagSize+4)
		binary.BigEndian.PutUint64(b, n)
		if _, err := rcv.openRecord(b); !errors.Is(err, errEpoch) {
			t.Fatalf("counter in epoch %d: %v", n/dgEpoch, err)
		}
	}
}

// TestDgKeyDerivation pins the datagram key to docs/wire.md, section 5: HKDF-SHA256 of the direction's
// stream key with an empty salt and the info "rendr datagram key v1", written out here from
// RFC 5869 so the test does not share the code it checks.
func TestDgKeyDerivation(t *testing.T) {
	send, _ := noiseCipherPair()
	k := send.UnsafeKey()
	prk := hmac.New(sha256.New, make([]byte, sha256.Size))
	prk.Write(k[:])
	okm := hmac.New(sha256.New, prk.Sum(nil))
	okm.Write([]byte("rendr datagram key v1"))
	okm.Write([]byte{1})
	got := dgKey(send)
	if !bytes.Equal(got[:], okm.Sum(nil)) {
		t.Fatal("datagram key is not HKDF-SHA256(stream key, salt empty, \"rendr datagram key v1\")")
	}
	if bytes.Equal(got[:], k[:]) {
		t.Fatal("datagram key equals the stream key")
	}
}
