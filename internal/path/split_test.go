package path

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rendr-go/rendr/internal/wire"
)

// countPin counts how often a record lets go of the memory it refers to.
type countPin struct{ n int }

func (c *countPin) Unpin() { c.n++ }

// splitRecord builds a record whose frames end with a DATA header for the payload parts, the
// way the engine does on a zero-copy link: the payload stays in parts, referenced by Ext.
func splitRecord(ctl []byte, flow, offset uint64, fin bool, parts [][]byte, pin Pin) *Record {
	r := NewRecord()
	r.B = append(r.B, ctl...)
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	r.B = wire.AppendDataHeader(r.B, flow, offset, fin, n)
	for _, p := range parts {
		r.AppendExt(p, pin)
	}
	return r
}

// payloadParts returns n deterministic pieces of the given sizes.
func payloadParts(sizes ...int) [][]byte {
	var out [][]byte
	for i, n := range sizes {
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(i*31 + j*7)
		}
		out = append(out, p)
	}
	return out
}

// TestSplitRecordLayout seals records whose payload is referenced, in one to seven pieces, and
// checks the layout of docs/wire.md section 5 with the standard library's AES-GCM: a zero
// length, the part count, the part lengths, then one AEAD message per part at consecutive
// nonces, each with the record's header as associated data. The opener must hand back the
// frames and the pieces, and the send buffers must be let go once the record is sealed.
func TestSplitRecordLayout(t *testing.T) {
	shapes := [][]int{
		{4096},
		{16384, 16384, 16384, 16290},
		{100, 16384, 16384, 16384, 16000},
		{1, 2, 3, 4, 5, 6, 7},
	}
	var s sealer
	var o opener
	s.cs, o.cs = recordCipherPair()
	g := newGCM(t, recordKey[:])
	nonce := uint64(0)
	var stream []byte
	var want [][][]byte // per record: frames, then parts
	for i, sizes := range shapes {
		parts := payloadParts(sizes...)
		pin := &countPin{}
		ctl := wire.AppendAck(nil, 3, uint64(i), 1<<20, 0)
		r := splitRecord(ctl, 5, uint64(1000*i), i == len(shapes)-1, parts, pin)
		frames := bytes.Clone(r.Frames())
		if err := s.seal(r); err != nil {
			t.Fatal(err)
		}
		if pin.n != len(parts) || len(r.Ext) != 0 {
			t.Fatalf("record %d: %d of %d pieces let go after sealing, %d left in Ext", i, pin.n, len(parts), len(r.Ext))
		}
		b := r.B
		k := 1 + len(parts)
		hdr := 3 + 2*k
		if b[0] != 0 || b[1] != 0 || int(b[2]) != k {
			t.Fatalf("record %d: header %x, want a zero length and %d parts", i, b[:3], k)
		}
		off := hdr
		for j, pt := range append([][]byte{frames}, parts...) {
			l := int(binary.BigEndian.Uint16(b[3+2*j:]))
			if l != len(pt)+wire.TagSize {
				t.Fatalf("record %d part %d: length %d, want %d", i, j, l, len(pt)+wire.TagSize)
			}
			got, err := g.Open(nil, gcmNonce(nonce), b[off:off+l], b[:hdr])
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("record %d part %d does not open with the documented nonce and associated data: %v", i, j, err)
			}
			nonce++
			off += l
		}
		if off != len(b) {
			t.Fatalf("record %d: %d bytes after its last part", i, len(b)-off)
		}
		stream = append(stream, b...)
		want = append(want, append([][]byte{frames}, parts...))
		r.Release()
	}
	stream = append(stream, sealRecords(t, &s, wire.AppendPing(nil, 9))...)
	o.r = bytes.NewReader(stream)
	for i, w := range want {
		frames, n, err := o.next()
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if !bytes.Equal(frames, w[0]) || len(o.parts) != len(w)-1 {
			t.Fatalf("record %d: frames %x and %d parts, want %x and %d", i, frames, len(o.parts), w[0], len(w)-1)
		}
		for j, p := range o.parts {
			if !bytes.Equal(p, w[j+1]) {
				t.Fatalf("record %d part %d differs", i, j+1)
			}
		}
		if n <= 0 {
			t.Fatalf("record %d: n = %d", i, n)
		}
	}
	if frames, _, err := o.next(); err != nil || !bytes.Equal(frames, wire.AppendPing(nil, 9)) || len(o.parts) != 0 {
		t.Fatalf("the record after the split ones: %x, %d parts, %v", frames, len(o.parts), err)
	}
	if _, _, err := o.next(); err != io.EOF {
		t.Fatalf("after the last record: %v", err)
	}
}

// TestSplitRecordFull seals the largest split record the engine can make (MaxPlaintext bytes of
// frames and payload, in MaxParts parts) and checks it fits the record buffer without growing.
func TestSplitRecordFull(t *testing.T) {
	var s sealer
	var o opener
	s.cs, o.cs = recordCipherPair()
	r := NewRecord()
	hdr := wire.DataOverhead(1, 0, wire.MaxPlaintext)
	total := wire.MaxPlaintext - hdr
	sizes := make([]int, wire.MaxParts-1)
	for i := range sizes {
		sizes[i] = total / len(sizes)
	}
	sizes[0] += total % len(sizes)
	parts := payloadParts(sizes...)
	r.Release()
	r = splitRecord(nil, 1, 0, false, parts, &countPin{})
	if r.Room() != 0 || r.Len() != 2+wire.MaxPlaintext {
		t.Fatalf("record of %d bytes, room %d", r.Len(), r.Room())
	}
	before := cap(r.B)
	if err := s.seal(r); err != nil {
		t.Fatal(err)
	}
	if cap(r.B) != before || len(r.B) != 2+wire.MaxSplitBody {
		t.Fatalf("sealed to %d bytes (cap %d, was %d), want 2+MaxSplitBody = %d", len(r.B), cap(r.B), before, 2+wire.MaxSplitBody)
	}
	o.r = bytes.NewReader(r.B)
	frames, n, err := o.next()
	if err != nil || len(o.parts) != len(parts) || n != len(r.B) || len(frames) != hdr {
		t.Fatalf("opened %d frame bytes, %d parts, n=%d: %v", len(frames), len(o.parts), n, err)
	}
	r.Release()
}

func TestSplitRecordRejects(t *testing.T) {
	seal := func(rs ...*Record) []byte {
		var s sealer
		s.cs, _ = recordCipherPair()
		var out []byte
		for _, r := range rs {
			if err := s.seal(r); err != nil {
				t.Fatal(err)
			}
			out = append(out, r.B...)
			r.Release()
		}
		return out
	}
	good := seal(splitRecord(nil, 1, 0, false, payloadParts(100, 200), &countPin{}))
	hdr := 3 + 2*3
	withByte := func(b []byte, i int, x byte) []byte {
		c := bytes.Clone(b)
		c[i] ^= x
		return c
	}
	// Two ordinary records put under one split header: each part authenticates alone with
	// empty associated data, but a split record's parts must carry the header.
	var ps sealer
	ps.cs, _ = recordCipherPair()
	plain := sealRecords(t, &ps, wire.AppendPing(nil, 1), wire.AppendPing(nil, 2))
	l1 := int(binary.BigEndian.Uint16(plain))
	l2 := int(binary.BigEndian.Uint16(plain[2+l1:]))
	regrouped := []byte{0, 0, 2, byte(l1 >> 8), byte(l1), byte(l2 >> 8), byte(l2)}
	regrouped = append(regrouped, plain[2:2+l1]...)
	regrouped = append(regrouped, plain[2+l1+2:]...)
	big := []byte{0, 0, 2, 0xff, 0xff, 0x00, 0x11}
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"zero parts", []byte{0, 0, 0}, ErrRecord},
		{"one part", []byte{0, 0, 1, 0, 20}, ErrRecord},
		{"too many parts", []byte{0, 0, wire.MaxParts + 1}, ErrRecord},
		{"part of a tag only", append([]byte{0, 0, 2, 0, 16, 0, 20}, make([]byte, 36)...), ErrRecord},
		{"more than MaxPlaintext", big, ErrRecord},
		{"tampered first part", withByte(good, hdr+1, 1), ErrRecord},
		{"tampered last part", withByte(good, len(good)-20, 0x40), ErrRecord},
		{"tampered length", withByte(good, 4, 1), ErrRecord},
		{"tampered count", withByte(good, 2, 1), ErrRecord},
		{"regrouped records", regrouped, ErrRecord},
		{"header cut", good[:5], io.ErrUnexpectedEOF},
		{"count cut", good[:2], io.ErrUnexpectedEOF},
		{"body cut", good[:len(good)-1], io.ErrUnexpectedEOF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := opener{r: bytes.NewReader(c.in)}
			_, o.cs = recordCipherPair()
			p, n, err := o.next()
			if !errors.Is(err, c.want) || p != nil || n != 0 || len(o.parts) != 0 {
				t.Fatalf("next = %x, %d, %d parts, %v; want %v", p, n, len(o.parts), err, c.want)
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		o := opener{r: bytes.NewReader(good)}
		_, o.cs = recordCipherPair()
		if _, n, err := o.next(); err != nil || n != len(good) || len(o.parts) != 2 {
			t.Fatalf("the untampered record: n=%d, %d parts, %v", n, len(o.parts), err)
		}
	})
}

// TestSplitRecordRekey crosses the rekey boundary inside a split record: both ends count AEAD
// messages, not records, so the boundary may fall between two parts of one record.
func TestSplitRecordRekey(t *testing.T) {
	const start = rekeyEvery - 2
	var s sealer
	var o opener
	s.cs, o.cs = recordCipherPair()
	s.cs.setNonce(start)
	o.cs.setNonce(start)
	s.n, o.n = start, start
	parts := payloadParts(5000, 6000, 7000)
	r := splitRecord(nil, 1, 0, false, parts, &countPin{})
	if err := s.seal(r); err != nil {
		t.Fatal(err)
	}
	stream := append(bytes.Clone(r.B), sealRecords(t, &s, wire.AppendPing(nil, 1))...)
	r.Release()
	o.r = bytes.NewReader(stream)
	if _, _, err := o.next(); err != nil || len(o.parts) != 3 || !bytes.Equal(o.parts[2], parts[2]) {
		t.Fatalf("split record across the rekey: %d parts, %v", len(o.parts), err)
	}
	if f, _, err := o.next(); err != nil || !bytes.Equal(f, wire.AppendPing(nil, 1)) {
		t.Fatalf("record after it: %x, %v", f, err)
	}
	// Parts 3 and 4 (nonces 2^30 and 2^30+1) and the ping (2^30+2) use the new key.
	g := newGCM(t, recordKey[:])
	g2 := newGCM(t, g.Seal(nil, gcmNonce(1<<64-1), make([]byte, 32), nil)[:32])
	tail := stream[len(stream)-(2+len(wire.AppendPing(nil, 1))+wire.TagSize):]
	if _, err := g2.Open(nil, gcmNonce(rekeyEvery+2), tail[2:], nil); err != nil {
		t.Fatalf("the record after the boundary does not open with REKEY(k) at nonce 2^30+2: %v", err)
	}
}

// payloadHandler keeps DATA frames with their payloads.
type payloadHandler struct {
	mu     sync.Mutex
	frames []wire.Frame
	down   chan error
}

func (h *payloadHandler) Frame(p *Path, f *wire.Frame) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := *f
	g.Payload = bytes.Clone(f.Payload)
	h.frames = append(h.frames, g)
	return nil
}
func (h *payloadHandler) Writable(*Path)            {}
func (h *payloadHandler) Measured(*Path)            {}
func (h *payloadHandler) Down(p *Path, cause error) { h.down <- cause }

// TestSplitRecordPath runs split records through a path's reader: the handler sees one DATA
// frame per part (same offsets, end of stream on the last only), and a split record whose
// frames do not end with the DATA header its parts belong to closes the path.
func TestSplitRecordPath(t *testing.T) {
	parts := payloadParts(3000, 4000, 5000)
	cases := []struct {
		name string
		rec  func() *Record
		want error // nil: the path stays up and the frames arrive
	}{
		{"data", func() *Record { return splitRecord(wire.AppendMaxData(nil, 9), 7, 100, false, parts, &countPin{}) }, nil},
		{"data fin", func() *Record { return splitRecord(nil, 7, 100, true, parts, &countPin{}) }, nil},
		{"header not last", func() *Record {
			r := splitRecord(nil, 7, 100, false, parts, &countPin{})
			r.B = wire.AppendMaxData(r.B, 9)
			return r
		}, ErrRecord},
		{"no data header", func() *Record {
			r := NewRecord()
			r.B = wire.AppendMaxData(r.B, 9)
			for _, p := range parts {
				r.AppendExt(p, &countPin{})
			}
			return r
		}, ErrRecord},
		{"parts alone", func() *Record {
			r := NewRecord()
			for _, p := range parts {
				r.AppendExt(p, &countPin{})
			}
			return r
		}, ErrRecord},
		{"wrong length", func() *Record {
			r := NewRecord()
			r.B = wire.AppendDataHeader(r.B, 7, 100, false, 11999)
			for _, p := range parts {
				r.AppendExt(p, &countPin{})
			}
			return r
		}, ErrRecord},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			near, far := net.Pipe()
			nsend, recv := noiseCipherPair()
			send := newRecordCipher(nsend)
			h := &payloadHandler{down: make(chan error, 1)}
			p := New(1, far, nil, recv, Config{ProbeIdle: time.Hour}, h)
			p.Start()
			defer func() { p.Close(nil); p.Wait() }()
			go io.Copy(io.Discard, near) // the path's own probes
			s := sealer{cs: send}
			r := c.rec()
			frames := bytes.Clone(r.Frames())
			if err := s.seal(r); err != nil {
				t.Fatal(err)
			}
			stream := append(bytes.Clone(r.B), sealRecords(t, &s, wire.AppendMaxData(nil, 5))...)
			r.Release()
			if _, err := near.Write(stream); err != nil && c.want == nil {
				t.Fatal(err)
			}
			if c.want != nil {
				select {
				case err := <-h.down:
					if !errors.Is(err, c.want) {
						t.Fatalf("path closed with %v, want %v", err, c.want)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the path did not close")
				}
				return
			}
			ctl := 0
			if _, _, _, ok := wire.DataHeader(frames); !ok {
				ctl = 1 // the MAX_DATA before the header
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				h.mu.Lock()
				n := len(h.frames)
				h.mu.Unlock()
				if n >= ctl+len(parts)+1 || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			got := h.frames
			if len(got) != ctl+len(parts)+1 {
				t.Fatalf("%d frames, want %d", len(got), ctl+len(parts)+1)
			}
			off := uint64(100)
			for i, p := range parts {
				f := got[ctl+i]
				fin := c.name == "data fin" && i == len(parts)-1
				if f.Flow != 7 || f.Offset != off || !bytes.Equal(f.Payload, p) || f.Fin() != fin {
					t.Fatalf("part %d: %v flow %d offset %d, %d bytes, fin %v", i, f.Type, f.Flow, f.Offset, len(f.Payload), f.Fin())
				}
				off += uint64(len(p))
			}
			if last := got[len(got)-1]; last.Type != wire.TypeMaxData || last.Limit != 5 {
				t.Fatalf("the record after the split one gave %v", last.Type)
			}
		})
	}
}
