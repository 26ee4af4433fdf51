package path

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/flynn/noise"

	"github.com/rendr-go/rendr/internal/wire"
)

// Record is one outgoing record: a 2-byte length header, then frames, with room for the AEAD
// tag. The engine appends frames to B (which starts with the header's 2 bytes) and hands the
// record to Path.Send; the path owns it from then on.
//
// On a plain path (a secure carrier) the record may end with bytes it does not copy: Ext
// holds slices of the engine's send buffers, written after B with one vectored write, and
// Pins keeps those buffers from being reused until the write is done. Nothing can follow
// Ext, so a record with Ext has no Room.
type Record struct {
	B    []byte
	Ext  [][]byte
	Pins []Pin
	ext  int // bytes in Ext
}

// Pin holds memory a Record refers to; Unpin lets it go once the record is written or dropped.
type Pin interface{ Unpin() }

// Frames returns the frames appended so far (not counting Ext).
func (r *Record) Frames() []byte { return r.B[2:] }

// Room is how many more frame bytes fit.
func (r *Record) Room() int {
	if r.ext > 0 {
		return 0
	}
	return 2 + wire.MaxPlaintext - len(r.B)
}

// Len is the record's size before sealing: B and Ext.
func (r *Record) Len() int { return len(r.B) + r.ext }

// AppendExt ends the record with p, which stays owned by pin's holder until Unpin.
func (r *Record) AppendExt(p []byte, pin Pin) {
	r.Ext = append(r.Ext, p)
	r.Pins = append(r.Pins, pin)
	r.ext += len(p)
}

var recordPool = sync.Pool{New: func() any {
	return &Record{B: make([]byte, 0, 2+wire.MaxRecord)}
}}

// NewRecord returns an empty record from the pool.
func NewRecord() *Record {
	r := recordPool.Get().(*Record)
	r.B = append(r.B[:0], 0, 0)
	return r
}

// Release unpins what r refers to and returns it to the pool. r must not be used afterwards.
func (r *Record) Release() {
	for _, p := range r.Pins {
		p.Unpin()
	}
	clear(r.Ext)
	clear(r.Pins)
	r.B, r.Ext, r.Pins, r.ext = r.B[:0], r.Ext[:0], r.Pins[:0], 0
	recordPool.Put(r)
}

// rekeyEvery is how many records a key protects before both sides move to the next one, far
// below AES-GCM's limits (2^32 records of 64 KiB is 2^48 bytes; we stop at 2^30 records).
const rekeyEvery = 1 << 30

// ErrRecord is the cause of a path closed by bad input: a record that does not authenticate or
// frames that do not parse. It never reaches a flow; only the path dies.
var ErrRecord = errors.New("rendr: bad record")

// sealer encrypts records in place; nil cipher means a secure carrier and plain records.
type sealer struct {
	cs *noise.CipherState
	n  uint64
}

func (s *sealer) seal(r *Record) error {
	if s.cs != nil && r.ext > 0 {
		// Encryption needs the plaintext in one piece: bring Ext into B (engines only use
		// Ext on plain paths; this keeps any record correct on any path).
		for _, p := range r.Ext {
			r.B = append(r.B, p...)
		}
		for _, p := range r.Pins {
			p.Unpin()
		}
		clear(r.Ext)
		clear(r.Pins)
		r.Ext, r.Pins, r.ext = r.Ext[:0], r.Pins[:0], 0
	}
	if s.cs != nil {
		out, err := s.cs.Encrypt(r.B[2:2], nil, r.B[2:])
		if err != nil {
			return err
		}
		r.B = r.B[:2+len(out)]
		if s.n++; s.n%rekeyEvery == 0 {
			s.cs.Rekey()
		}
	}
	binary.BigEndian.PutUint16(r.B, uint16(len(r.B)-2+r.ext))
	return nil
}

// opener reads and decrypts records from a byte stream. It reads in large chunks and opens
// records in place, so a carrier read brings in several records with one system call.
type opener struct {
	r    io.Reader
	cs   *noise.CipherState
	n    uint64
	buf  []byte
	head int // start of unread bytes in buf
	tail int // end of unread bytes in buf
}

// readBuffer holds several maximum-size records.
const readBuffer = 4 * (2 + wire.MaxRecord)

// fill makes at least need bytes available from head, reading as much as the carrier has.
func (o *opener) fill(need int) error {
	if o.buf == nil {
		o.buf = make([]byte, readBuffer)
	}
	if o.head+need > len(o.buf) {
		o.tail = copy(o.buf, o.buf[o.head:o.tail])
		o.head = 0
	}
	for o.tail-o.head < need {
		k, err := o.r.Read(o.buf[o.tail:])
		o.tail += k
		if o.tail-o.head >= need {
			return nil
		}
		if err != nil {
			if err == io.EOF && o.tail > o.head {
				err = io.ErrUnexpectedEOF // the carrier ended mid-record
			}
			return err
		}
	}
	return nil
}

// next returns the next record's frames; the slice is valid until the next call.
func (o *opener) next() ([]byte, int, error) {
	if err := o.fill(2); err != nil {
		return nil, 0, err
	}
	n := int(binary.BigEndian.Uint16(o.buf[o.head:]))
	if err := o.fill(2 + n); err != nil {
		return nil, 0, err
	}
	body := o.buf[o.head+2 : o.head+2+n]
	o.head += 2 + n
	if o.head == o.tail {
		o.head, o.tail = 0, 0
	}
	if o.cs == nil {
		if n == 0 {
			return nil, 0, fmt.Errorf("%w: empty record", ErrRecord)
		}
		return body, n + 2, nil
	}
	if n <= wire.TagSize {
		return nil, 0, fmt.Errorf("%w: record of %d bytes", ErrRecord, n)
	}
	p, err := o.cs.Decrypt(body[:0], nil, body)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: does not authenticate", ErrRecord)
	}
	if o.n++; o.n%rekeyEvery == 0 {
		o.cs.Rekey()
	}
	return p, n + 2, nil
}
