package path

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"

	"github.com/flynn/noise"

	"github.com/rendr-go/rendr/internal/wire"
)

var recordSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashSHA256)

var recordKey = [32]byte{0: 0x01, 7: 0x77, 31: 0xfe}

// recordCipherPair returns the two ends of one direction: what the sender seals, the receiver opens.
// noiseCipherPair is the same as the handshake hands it to New.
func noiseCipherPair() (send, recv *noise.CipherState) {
	return noise.UnsafeNewCipherState(recordSuite, recordKey, 0), noise.UnsafeNewCipherState(recordSuite, recordKey, 0)
}

func recordCipherPair() (send, recv *recordCipher) {
	return newRecordCipher(noise.UnsafeNewCipherState(recordSuite, recordKey, 0)),
		newRecordCipher(noise.UnsafeNewCipherState(recordSuite, recordKey, 0))
}

// sealRecords seals one record per frames slice and returns the carrier bytes.
func sealRecords(t testing.TB, s *sealer, records ...[]byte) []byte {
	t.Helper()
	var out []byte
	for _, frames := range records {
		r := NewRecord()
		if len(frames) > r.Room() {
			t.Fatalf("%d frame bytes do not fit a record (room %d)", len(frames), r.Room())
		}
		r.B = append(r.B, frames...)
		if err := s.seal(r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r.B...)
		r.Release()
	}
	return out
}

func sampleRecords() [][]byte {
	big := wire.AppendData(nil, 1, 0, false, bytes.Repeat([]byte{0x55}, wire.MaxPlaintext-7))
	return [][]byte{
		wire.AppendPing(nil, 1),
		wire.AppendAck(wire.AppendData(wire.AppendOpen(nil, 1, wire.KindStream, nil), 1, 0, false, []byte("hello")), 1, 0, 1<<18, 0),
		big, // exactly MaxPlaintext bytes of frames
		wire.AppendClose(nil, 0),
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, encrypted := range []bool{true, false} {
		t.Run(fmt.Sprintf("encrypted=%v", encrypted), func(t *testing.T) {
			var s sealer
			var o opener
			if encrypted {
				s.cs, o.cs = recordCipherPair()
			}
			recs := sampleRecords()
			stream := sealRecords(t, &s, recs...)
			overhead := 0
			if encrypted {
				overhead = wire.TagSize
			}
			// Each record is a 2-byte big-endian length, then the body.
			off := 0
			for i, frames := range recs {
				l := int(binary.BigEndian.Uint16(stream[off:]))
				if l != len(frames)+overhead {
					t.Fatalf("record %d: length %d, want %d", i, l, len(frames)+overhead)
				}
				if !encrypted && !bytes.Equal(stream[off+2:off+2+l], frames) {
					t.Fatalf("plain record %d is not its frames", i)
				}
				off += 2 + l
			}
			if off != len(stream) {
				t.Fatalf("stream has %d bytes after the last record", len(stream)-off)
			}
			o.r = bytes.NewReader(stream)
			for i, frames := range recs {
				got, n, err := o.next()
				if err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
				if !bytes.Equal(got, frames) || n != 2+len(frames)+overhead {
					t.Fatalf("record %d: %d bytes (n=%d), want %d", i, len(got), n, len(frames))
				}
			}
			if _, _, err := o.next(); err != io.EOF {
				t.Fatalf("after the last record: %v, want io.EOF", err)
			}
		})
	}
}

func TestRecordRoom(t *testing.T) {
	r := NewRecord()
	defer r.Release()
	if r.Room() != wire.MaxPlaintext || len(r.Frames()) != 0 {
		t.Fatalf("a new record has room %d and %d frame bytes", r.Room(), len(r.Frames()))
	}
	r.B = append(r.B, make([]byte, wire.MaxPlaintext)...)
	if r.Room() != 0 {
		t.Fatalf("room %d after MaxPlaintext bytes", r.Room())
	}
	var s sealer
	s.cs, _ = recordCipherPair()
	if err := s.seal(r); err != nil {
		t.Fatal(err)
	}
	if len(r.B) != 2+wire.MaxRecord || binary.BigEndian.Uint16(r.B) != wire.MaxRecord {
		t.Fatalf("a full record seals to %d bytes, header %d", len(r.B), binary.BigEndian.Uint16(r.B))
	}
}

// gcmNonce is the Noise AESGCM nonce: 4 zero bytes and the 64-bit big-endian counter.
func gcmNonce(n uint64) []byte {
	var b [12]byte
	binary.BigEndian.PutUint64(b[4:], n)
	return b[:]
}

func newGCM(t *testing.T, key []byte) cipher.AEAD {
	t.Helper()
	blk, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestRecordEncryptionLayout pins the record AEAD of docs/wire.md with the standard library:
// AES-256-GCM, nonce = counter, empty associated data.
func TestRecordEncryptionLayout(t *testing.T) {
	var s sealer
	s.cs, _ = recordCipherPair()
	recs := [][]byte{wire.AppendPing(nil, 7), wire.AppendMaxData(nil, 1<<20), []byte{byte(wire.TypeClose), 0}}
	stream := sealRecords(t, &s, recs...)
	g := newGCM(t, recordKey[:])
	off := 0
	for i, frames := range recs {
		l := int(binary.BigEndian.Uint16(stream[off:]))
		want := g.Seal(nil, gcmNonce(uint64(i)), frames, nil)
		if !bytes.Equal(stream[off+2:off+2+l], want) {
			t.Fatalf("record %d: body %x, want %x", i, stream[off+2:off+2+l], want)
		}
		off += 2 + l
	}
}

// TestRecordRekey crosses the rekey boundary: after record 2^30-1 both sides move to
// REKEY(k) (the first 32 bytes of encrypting 32 zero bytes at nonce 2^64-1) and the nonce
// counter goes on from 2^30.
func TestRecordRekey(t *testing.T) {
	const start = rekeyEvery - 2
	var s sealer
	var o opener
	s.cs, o.cs = recordCipherPair()
	s.cs.setNonce(start)
	o.cs.setNonce(start)
	s.n, o.n = start, start
	recs := [][]byte{wire.AppendPing(nil, 1), wire.AppendPing(nil, 2), wire.AppendPing(nil, 3), wire.AppendPing(nil, 4)}
	stream := sealRecords(t, &s, recs...)
	o.r = bytes.NewReader(stream)
	for i, frames := range recs {
		got, _, err := o.next()
		if err != nil || !bytes.Equal(got, frames) {
			t.Fatalf("record %d across the rekey: %x, %v", i, got, err)
		}
	}
	g := newGCM(t, recordKey[:])
	rekeyed := g.Seal(nil, gcmNonce(1<<64-1), make([]byte, 32), nil)[:32]
	g2 := newGCM(t, rekeyed)
	off := 0
	for i, frames := range recs {
		l := int(binary.BigEndian.Uint16(stream[off:]))
		body := stream[off+2 : off+2+l]
		nonce := uint64(start + i)
		aead := g
		if nonce >= rekeyEvery {
			aead = g2
		}
		if pt, err := aead.Open(nil, gcmNonce(nonce), body, nil); err != nil || !bytes.Equal(pt, frames) {
			t.Fatalf("record %d (nonce %d) does not open with the documented key: %v", i, nonce, err)
		}
		off += 2 + l
	}
	// A receiver that does not rekey fails right after the boundary.
	var stale opener
	_, stale.cs = recordCipherPair()
	stale.cs.setNonce(start)
	stale.r = bytes.NewReader(stream)
	for i := range 2 {
		if _, _, err := stale.next(); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	stale.n = 0 // forgets to count, so it never rekeys
	stale.cs.setNonce(rekeyEvery)
	if _, _, err := stale.next(); !errors.Is(err, ErrRecord) {
		t.Fatalf("the first record after the boundary opened with the old key: %v", err)
	}
}

func TestRecordRejects(t *testing.T) {
	send, _ := recordCipherPair()
	s := sealer{cs: send}
	stream := sealRecords(t, &s, wire.AppendPing(nil, 1), wire.AppendPing(nil, 2))
	first := int(2 + binary.BigEndian.Uint16(stream))
	tampered := bytes.Clone(stream)
	tampered[5] ^= 0x01
	tag := bytes.Clone(stream)
	tag[first-1] ^= 0x80
	swapped := append(bytes.Clone(stream[first:]), stream[:first]...)
	replayed := append(bytes.Clone(stream[:first]), stream[:first]...)
	cases := []struct {
		name      string
		encrypted bool
		in        []byte
		good      int // records that open before the failure
		want      error
	}{
		{"plain empty record", false, []byte{0, 0}, 0, ErrRecord},
		{"encrypted empty record (a split record's header, cut)", true, []byte{0, 0}, 0, io.ErrUnexpectedEOF},
		{"encrypted 1 byte", true, []byte{0, 1, 0}, 0, ErrRecord},
		{"encrypted tag only", true, append([]byte{0, wire.TagSize}, make([]byte, wire.TagSize)...), 0, ErrRecord},
		{"tampered body", true, tampered, 0, ErrRecord},
		{"tampered tag", true, tag, 0, ErrRecord},
		{"reordered", true, swapped, 0, ErrRecord},
		{"replayed record", true, replayed, 1, ErrRecord},
		{"plain header cut", false, []byte{0}, 0, io.ErrUnexpectedEOF},
		{"plain body cut", false, []byte{0, 3, 1, 0}, 0, io.ErrUnexpectedEOF},
		{"encrypted body cut", true, stream[:first+5], 1, io.ErrUnexpectedEOF},
		{"encrypted header cut", true, stream[:first+1], 1, io.ErrUnexpectedEOF},
		{"clean end", true, stream, 2, io.EOF},
		{"nothing", false, nil, 0, io.EOF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := opener{r: bytes.NewReader(c.in)}
			if c.encrypted {
				_, o.cs = recordCipherPair()
			}
			for i := range c.good {
				if _, _, err := o.next(); err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
			}
			p, n, err := o.next()
			if !errors.Is(err, c.want) || p != nil || n != 0 {
				t.Fatalf("next = %x, %d, %v; want %v", p, n, err, c.want)
			}
		})
	}
}

// TestRecordReaderShapes feeds the same records through readers that return one byte at a
// time, half of what is asked, or data with the final EOF: framing must not depend on how
// the carrier splits its reads, and records that straddle the read buffer's end must open.
func TestRecordReaderShapes(t *testing.T) {
	var recs [][]byte
	for i := range 9 { // more than the read buffer holds, so it compacts
		recs = append(recs, sampleRecords()[2])
		recs = append(recs, wire.AppendPing(nil, uint64(i)))
	}
	for name, wrap := range map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data+EOF": iotest.DataErrReader,
	} {
		t.Run(name, func(t *testing.T) {
			var s sealer
			var o opener
			s.cs, o.cs = recordCipherPair()
			o.r = wrap(bytes.NewReader(sealRecords(t, &s, recs...)))
			for i, frames := range recs {
				got, _, err := o.next()
				if err != nil || !bytes.Equal(got, frames) {
					t.Fatalf("record %d: %d bytes, %v", i, len(got), err)
				}
			}
			if _, _, err := o.next(); err != io.EOF {
				t.Fatalf("after the last record: %v", err)
			}
		})
	}
}
