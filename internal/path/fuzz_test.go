package path

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/rendr-go/rendr/internal/wire"
)

// FuzzRecord feeds arbitrary carrier bytes to the record opener, with and without a cipher.
// It must return errors, never panic, and hand out only what the carrier framed: with a
// cipher, exactly the records the matching sealer produces, split records included (so at
// most MaxPlaintext bytes of frames and payload each); without one, the record bodies as they
// are.
func FuzzRecord(f *testing.F) {
	for _, encrypted := range []bool{true, false} {
		var s sealer
		if encrypted {
			s.cs, _ = recordCipherPair()
		}
		recs := sampleRecords()
		f.Add(sealRecords(f, &s, recs[0]), encrypted)
		stream := sealRecords(f, &s, recs[1], recs[3], wire.AppendPong(nil, 9))
		f.Add(stream, encrypted)
		f.Add(stream[:len(stream)-3], encrypted)
	}
	var s sealer
	s.cs, _ = recordCipherPair()
	r := splitRecord(wire.AppendPing(nil, 3), 1, 0, true, payloadParts(40, 50), &countPin{})
	if err := s.seal(r); err != nil {
		f.Fatal(err)
	}
	split := append(bytes.Clone(r.B), sealRecords(f, &s, wire.AppendPing(nil, 4))...)
	r.Release()
	f.Add(split, true)
	f.Add(split[:20], true)
	f.Add([]byte{0, 0}, false)
	f.Add([]byte{0, wire.TagSize + 1, 1}, true)
	f.Add([]byte{0xff, 0xff, 1, 2, 3}, false)
	f.Fuzz(func(t *testing.T, b []byte, encrypted bool) {
		o := opener{r: bytes.NewReader(b)}
		var check sealer // follows the opener: what opened must be what it seals
		if encrypted {
			check.cs, o.cs = recordCipherPair()
		}
		consumed := 0
		for range len(b) + 1 { // every record consumes at least 2 bytes
			frames, n, err := o.next()
			if err != nil {
				switch {
				case err == io.EOF:
					if consumed != len(b) {
						t.Fatalf("io.EOF with %d of %d bytes consumed", consumed, len(b))
					}
				case err == io.ErrUnexpectedEOF:
					if consumed == len(b) {
						t.Fatal("io.ErrUnexpectedEOF at a record boundary")
					}
				case !errors.Is(err, ErrRecord):
					t.Fatalf("unexpected error %v", err)
				}
				if frames != nil || n != 0 {
					t.Fatalf("error %v with %d bytes, n=%d", err, len(frames), n)
				}
				return
			}
			if len(frames) == 0 {
				t.Fatal("an empty record opened")
			}
			in := b[consumed : consumed+n]
			consumed += n
			if !encrypted {
				if n != len(frames)+2 || len(frames) > wire.MaxRecord || !bytes.Equal(frames, in[2:]) {
					t.Fatalf("plain record of %d bytes returned %d bytes", n, len(frames))
				}
				continue
			}
			plain := len(frames)
			for _, p := range o.parts {
				plain += len(p)
			}
			if plain > wire.MaxPlaintext || len(o.parts) > wire.MaxParts-1 {
				t.Fatalf("encrypted record of %d bytes returned %d bytes in %d parts", n, plain, 1+len(o.parts))
			}
			if len(o.parts) == 0 && n != len(frames)+2+wire.TagSize {
				t.Fatalf("encrypted record of %d bytes returned %d bytes", n, len(frames))
			}
			r := NewRecord()
			r.B = append(r.B, frames...)
			for _, p := range o.parts {
				r.AppendExt(bytes.Clone(p), &countPin{})
			}
			if err := check.seal(r); err != nil {
				t.Fatal(err)
			}
			resealed := bytes.Clone(r.B)
			r.Release()
			if !bytes.Equal(resealed, in) {
				t.Fatalf("opened a record the sealer would not produce:\n in  %x\n out %x", in, resealed)
			}
		}
		t.Fatalf("no error after %d records from %d bytes", len(b)+1, len(b))
	})
}

// FuzzDatagramRecord feeds arbitrary carrier datagrams to a path's datagram reader side, with
// and without a cipher: each must be opened, dropped by the replay window or refused with
// ErrRecord, never panic; what opens on an encrypted path is exactly what the matching sender
// sealed, and a copy of an accepted datagram is always dropped.
func FuzzDatagramRecord(f *testing.F) {
	snd, _, car := dgPair(true, 1200)
	r := NewRecord()
	r.B = wire.AppendDatagram(r.B, 2, 1, []byte("seed datagram"))
	if _, _, _, err := offload(snd, r); err != nil {
		f.Fatal(err)
	}
	r.Release()
	f.Add(car.sent[0], true)
	f.Add(car.sent[0][:10], true)
	f.Add(wire.AppendDatagram(nil, 2, 1, []byte("plain")), false)
	f.Add([]byte{0xff}, false)
	f.Fuzz(func(t *testing.T, b []byte, encrypted bool) {
		_, rcv, _ := dgPair(encrypted, 1200)
		in := bytes.Clone(b)
		frames, err := rcv.openRecord(in)
		if err != nil {
			if !errors.Is(err, ErrRecord) && !errors.Is(err, errReplay) && !errors.Is(err, errOld) && !errors.Is(err, errEpoch) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if encrypted {
			if len(frames) != len(b)-dgCounterSize-wire.TagSize {
				t.Fatalf("opened %d bytes of frames from a %d-byte datagram", len(frames), len(b))
			}
			if _, err := rcv.openRecord(bytes.Clone(b)); !errors.Is(err, errReplay) {
				t.Fatalf("a copy of an accepted datagram: %v", err)
			}
		}
		for len(frames) > 0 { // what the reader goroutine does next
			_, n, err := wire.Parse(frames)
			if err != nil {
				return
			}
			frames = frames[n:]
		}
	})
}
