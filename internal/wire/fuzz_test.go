package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/rendr-go/rendr/internal/wire"
)

// FuzzParse decodes every frame of a buffer, as the path layer does with a record. A frame
// that parses must re-encode to bytes that parse back to the same frame; the re-encoding
// (minimal varints) is never longer, and when it is as long the input was minimal and the
// bytes are identical.
func FuzzParse(f *testing.F) {
	var all []byte
	for _, g := range golden {
		enc := encode(nil, &g.f)
		if len(enc) < 4096 {
			f.Add(enc)
			all = append(all, enc...)
		}
	}
	f.Add(all)
	f.Add([]byte{byte(wire.TypePing), 0xc0, 0, 0, 0, 0, 0, 0, 0x25}) // non-minimal
	f.Add(wire.AppendAck(nil, 1, 9, 3, 0))                           // limit < delivered
	f.Add(wire.AppendAck(nil, 1, 0, 3, 4))                           // bad flags
	f.Add(wire.AppendAck(nil, 1, 0, 3, wire.AckOpen|wire.AckFin))    // both flags
	f.Add(wire.AppendOpen(nil, 3, wire.KindStream, []byte{1, 6, 4})) // metadata
	f.Add([]byte{byte(wire.TypeOpen), 1, wire.OpenMeta, 0})          // empty metadata
	f.Add(wire.AppendOpen(nil, 1, 7, nil))                           // bad kind
	f.Add([]byte{0x13})                                              // unknown type
	f.Add([]byte{byte(wire.TypePathAck), 5, 0, 1, 2, 3, 0})          // a range below packet 0
	f.Add([]byte{byte(wire.TypePathAckCE), 5, 0, 0, 0, 7})           // more marked than sent
	f.Add(wire.AppendPadding(nil, 66))                               // a non-minimal length
	f.Add([]byte{byte(wire.TypeRoute), 1, 1, 2, 0, 1, 'a', 0, 0})    // a leaf with an empty name
	f.Fuzz(func(t *testing.T, b []byte) {
		for rest := b; len(rest) > 0; {
			fr, n, err := wire.Parse(rest)
			if err != nil {
				if n != 0 {
					t.Fatalf("error %v with n=%d", err, n)
				}
				if !errors.Is(err, wire.ErrTruncated) && !errors.Is(err, wire.ErrUnknownType) && !errors.Is(err, wire.ErrMalformed) {
					t.Fatalf("error %v wraps no sentinel", err)
				}
				return
			}
			if n <= 0 || n > len(rest) {
				t.Fatalf("Parse used %d of %d bytes", n, len(rest))
			}
			in := rest[:n]
			rest = rest[n:]
			if len(fr.Payload) > wire.MaxRecord {
				t.Fatalf("payload of %d bytes", len(fr.Payload))
			}
			if fr.Type == wire.TypeAck && fr.Limit < fr.Delivered() {
				t.Fatalf("ACK limit %d below delivered %d", fr.Limit, fr.Delivered())
			}
			out := encode(nil, &fr)
			if len(out) > n {
				t.Fatalf("%v: re-encoding %x is longer than the input %x", fr.Type, out, in)
			}
			if len(out) == n && !bytes.Equal(out, in) {
				t.Fatalf("%v: minimal input %x re-encodes as %x", fr.Type, in, out)
			}
			if minimal(in) != (len(out) == n) {
				t.Fatalf("%v: input %x minimal=%v, re-encoding %x", fr.Type, in, minimal(in), out)
			}
			back, m, err := wire.Parse(out)
			if err != nil || m != len(out) || !sameFrame(&back, &fr) {
				t.Fatalf("%v: re-encoding %x parses as %+v, %d, %v", fr.Type, out, back, m, err)
			}
		}
	})
}

// minimal reports whether every varint of the frame enc uses the shortest encoding, walking
// the layout independently of the package under test.
func minimal(enc []byte) bool {
	off := 1
	ok := true
	varint := func() uint64 {
		v, n := wire.ReadVarint(enc[off:])
		if n != wire.VarintLen(v) {
			ok = false
		}
		off += n
		return v
	}
	switch wire.Type(enc[0]) {
	case wire.TypePing, wire.TypePong, wire.TypeMaxData, wire.TypeClose, wire.TypeRoute:
		varint() // a ROUTE's plan has no varints
	case wire.TypeOpen:
		varint()
		if kind := enc[off]; kind&0x80 != 0 { // metadata: its length follows the Kind byte
			off++
			varint()
		}
	case wire.TypeStop:
		varint()
		varint()
	case wire.TypeData, wire.TypeDataFin, wire.TypeReset, wire.TypeDatagram:
		varint()
		varint()
		varint()
	case wire.TypeAck:
		varint()
		varint()
		varint()
	case wire.TypePadding:
		varint()
	case wire.TypePathAck, wire.TypePathAckCE:
		varint()
		varint()
		count := varint()
		varint()
		for range 2 * count {
			varint()
		}
		if wire.Type(enc[0]) == wire.TypePathAckCE {
			varint()
		}
	}
	return ok
}

// FuzzReadVarint checks ReadVarint against the RFC 9000 layout: the top two bits give the
// size, the rest is the big-endian value; the minimal re-encoding is never longer.
func FuzzReadVarint(f *testing.F) {
	for _, v := range []uint64{0, b1, b1 + 1, b2, b2 + 1, b4, b4 + 1, bM} {
		f.Add(wire.AppendVarint(nil, v))
	}
	f.Add([]byte{0x40, 0x25})
	f.Add([]byte{0xc0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, n := wire.ReadVarint(b)
		if len(b) == 0 {
			if n != 0 {
				t.Fatalf("read %d bytes of nothing", n)
			}
			return
		}
		size := 1 << (b[0] >> 6)
		if len(b) < size {
			if n != 0 || v != 0 {
				t.Fatalf("ReadVarint(%x) = %d, %d on a short buffer", b, v, n)
			}
			return
		}
		if n != size {
			t.Fatalf("ReadVarint(%x) used %d bytes, want %d", b, n, size)
		}
		if v > wire.MaxVarint {
			t.Fatalf("value %d over MaxVarint", v)
		}
		var full [8]byte
		copy(full[8-size:], b[:size])
		full[8-size] &= 0x3f
		if want := binary.BigEndian.Uint64(full[:]); v != want {
			t.Fatalf("ReadVarint(%x) = %d, want %d", b[:size], v, want)
		}
		out := wire.AppendVarint(nil, v)
		if len(out) != wire.VarintLen(v) || len(out) > n {
			t.Fatalf("AppendVarint(%d) = %x (VarintLen %d), input used %d", v, out, wire.VarintLen(v), n)
		}
		if len(out) == n && !bytes.Equal(out, b[:n]) {
			t.Fatalf("AppendVarint(%d) = %x, input %x", v, out, b[:n])
		}
		if w, m := wire.ReadVarint(out); w != v || m != len(out) {
			t.Fatalf("round trip of %d: %d, %d", v, w, m)
		}
	})
}
