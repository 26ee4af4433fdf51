package path

// Records: the outgoing Record a path queues, the AEAD that seals every record and datagram,
// and the sealing and reading of records on a byte stream, split or whole (docs/wire.md
// section 5).

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/flynn/noise"

	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
)

// Record is the engine's outgoing record (internal/record): a path seals and writes it.
type Record = record.Record

// Carried is one thing a record carries that must not be lost with it.
type Carried = record.Carried

// Pin holds memory a Record (or a held payload) refers to; Unpin lets it go once the record is
// written or dropped (or the payload read). transport.Pin is the same interface, so a
// carrier's lent datagram is held as it is.
type Pin = record.Pin

// NewRecord returns an empty record from the pool.
func NewRecord() *Record { return record.New() }

// rekeyEvery is how many AEAD messages a key protects before both sides move to the next one,
// far below AES-GCM's limits (2^32 messages of 64 KiB is 2^48 bytes; we stop at 2^30).
const rekeyEvery = 1 << 30

// ErrRecord is the cause of a path closed by bad input: a record that does not authenticate or
// frames that do not parse. It never reaches a flow; only the path dies.
var ErrRecord = errors.New("rendr: bad record")

// recordCipher is one direction's record AEAD, exactly Noise's CipherState for
// AESGCM: AES-256-GCM under the key the handshake derived, the nonce 4 zero bytes and a
// 64-bit big-endian counter, REKEY as in the Noise specification. The record layer keeps its
// own because flynn/noise's Encrypt and Decrypt allocate a nonce on every call, which a
// packet flow would pay for every few datagrams.
type recordCipher struct {
	aead  cipher.AEAD
	n     uint64 // the next nonce
	nonce [12]byte
}

// newRecordCipher takes over a CipherState from the handshake (nil stays nil: plain records).
func newRecordCipher(cs *noise.CipherState) *recordCipher {
	if cs == nil {
		return nil
	}
	c := &recordCipher{n: cs.Nonce()}
	c.setKey(cs.UnsafeKey())
	return c
}

func (c *recordCipher) setKey(k [32]byte) {
	blk, err := aes.NewCipher(k[:])
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	if c.aead, err = cipher.NewGCM(blk); err != nil {
		panic(err)
	}
}

func (c *recordCipher) nonceOf(n uint64) []byte {
	binary.BigEndian.PutUint64(c.nonce[4:], n)
	return c.nonce[:]
}

// errNonce: the counter would reach the value REKEY reserves. Rekeying every 2^30 messages
// keeps it unreachable; the check keeps it impossible.
var errNonce = errors.New("rendr: record nonces exhausted")

func (c *recordCipher) seal(dst, ad, plaintext []byte) ([]byte, error) {
	if c.n == math.MaxUint64 {
		return nil, errNonce
	}
	out := c.aead.Seal(dst, c.nonceOf(c.n), plaintext, ad)
	c.n++
	return out, nil
}

func (c *recordCipher) open(dst, ad, ciphertext []byte) ([]byte, error) {
	if c.n == math.MaxUint64 {
		return nil, errNonce
	}
	out, err := c.aead.Open(dst, c.nonceOf(c.n), ciphertext, ad)
	if err != nil {
		return nil, err
	}
	c.n++
	return out, nil
}

// rekey is Noise's REKEY: the new key is the first 32 bytes of sealing 32 zero bytes at nonce
// 2^64-1 with empty associated data. The counter goes on.
func (c *recordCipher) rekey() {
	var zeros [32]byte
	out := c.aead.Seal(nil, c.nonceOf(math.MaxUint64), zeros[:], nil)
	var k [32]byte
	copy(k[:], out)
	c.setKey(k)
}

// setNonce moves the counter (tests only start near the rekey boundary with it).
func (c *recordCipher) setNonce(n uint64) { c.n = n }

// sealer encrypts records in place; nil cipher means a secure carrier and plain records.
type sealer struct {
	cs *recordCipher
	n  uint64
}

// encrypt appends the AEAD message of plaintext to dst's tail (dst may start where plaintext
// does, to seal in place) and counts it toward the next rekey.
func (s *sealer) encrypt(dst, ad, plaintext []byte) ([]byte, error) {
	out, err := s.cs.seal(dst, ad, plaintext)
	if err != nil {
		return nil, err
	}
	if s.n++; s.n%rekeyEvery == 0 {
		s.cs.rekey()
	}
	return out, nil
}

func (s *sealer) seal(r *Record) error {
	if s.cs == nil {
		binary.BigEndian.PutUint16(r.B, uint16(r.Len()-2))
		return nil
	}
	if r.ExtLen() > 0 {
		if 1+len(r.Ext) <= wire.MaxParts {
			return s.sealSplit(r)
		}
		// More pieces than a split record takes (engines do not produce this): bring Ext
		// into B, which keeps any record correct on any path.
		for _, p := range r.Ext {
			r.B = append(r.B, p...)
		}
		r.Unpin()
	}
	out, err := s.encrypt(r.B[2:2], nil, r.B[2:])
	if err != nil {
		return err
	}
	r.B = r.B[:2+len(out)]
	binary.BigEndian.PutUint16(r.B, uint16(len(out)))
	return nil
}

// sealSplit seals r as a split record: a zero length, the part count k, k part lengths, then
// B's frames and each Ext slice as AEAD messages of their own. Every message takes the header
// as associated data, so the parts cannot be moved between records or regrouped.
func (s *sealer) sealSplit(r *Record) error {
	k := 1 + len(r.Ext)
	frames := len(r.B) - 2
	hdr := 3 + 2*k
	total := hdr + frames + r.ExtLen() + k*wire.TagSize
	if cap(r.B) < total {
		r.B = append(make([]byte, 0, total), r.B...)
	}
	r.B = r.B[:hdr+frames]
	copy(r.B[hdr:], r.B[2:2+frames]) // a few dozen bytes: the frames make room for the header
	var ad [3 + 2*wire.MaxParts]byte
	ad[2] = byte(k)
	binary.BigEndian.PutUint16(ad[3:], uint16(frames+wire.TagSize))
	for i, p := range r.Ext {
		binary.BigEndian.PutUint16(ad[5+2*i:], uint16(len(p)+wire.TagSize))
	}
	copy(r.B, ad[:hdr])
	out, err := s.encrypt(r.B[hdr:hdr], ad[:hdr], r.B[hdr:])
	if err != nil {
		return err
	}
	r.B = r.B[:hdr+len(out)]
	for _, p := range r.Ext {
		end := len(r.B)
		out, err := s.encrypt(r.B[end:end], ad[:hdr], p)
		if err != nil {
			return err
		}
		r.B = r.B[:end+len(out)]
	}
	r.Unpin() // the payload now lives, sealed, in B
	return nil
}

// opener reads and decrypts records from a byte stream. It reads in large chunks and opens
// records in place, so a carrier read brings in several records with one system call.
type opener struct {
	r     io.Reader
	cs    *recordCipher
	n     uint64
	hold  *HoldBudget // charged for blocks left behind while payloads in them are held
	blk   *block      // the block being read into; nil before the first read
	buf   []byte      // blk.b
	head  int         // start of unread bytes in buf
	tail  int         // end of unread bytes in buf
	parts [][]byte    // the payload parts of the last split record opened
}

// readBuffer holds several maximum-size records.
const readBuffer = 4 * (2 + wire.MaxSplitBody)

// fill makes at least need bytes available from head, reading as much as the carrier has.
func (o *opener) fill(need int) error {
	if o.blk == nil {
		o.blk = newBlock(o.hold)
		o.buf = o.blk.b
	}
	if o.head == o.tail && !o.blk.held() {
		// Everything read was used, and the last record's handlers let go of it (they
		// have run by now: fill is only called for the next record): start over at the
		// front.
		o.head, o.tail = 0, 0
	}
	if o.head+need > len(o.buf) {
		// Move the unread bytes to the front; if a handler still holds payloads before
		// them, into a new block, and leave the old one to its holders.
		dst := o.blk
		if dst.held() {
			dst = newBlock(o.hold)
		}
		o.tail = copy(dst.b, o.buf[o.head:o.tail])
		o.head = 0
		if dst != o.blk {
			o.blk.retire()
			o.blk, o.buf = dst, dst.b
		}
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

// decrypt opens one AEAD message in place and counts it toward the next rekey.
func (o *opener) decrypt(ad, body []byte) ([]byte, error) {
	p, err := o.cs.open(body[:0], ad, body)
	if err != nil {
		return nil, fmt.Errorf("%w: does not authenticate", ErrRecord)
	}
	if o.n++; o.n%rekeyEvery == 0 {
		o.cs.rekey()
	}
	return p, nil
}

// next returns the next record's frames and how many carrier bytes it took. After a split
// record, Parts returns its payload parts. Both are valid until the next call.
func (o *opener) next() ([]byte, int, error) {
	o.parts = o.parts[:0]
	if err := o.fill(2); err != nil {
		return nil, 0, err
	}
	n := int(binary.BigEndian.Uint16(o.buf[o.head:]))
	if n == 0 && o.cs != nil {
		return o.nextSplit()
	}
	if err := o.fill(2 + n); err != nil {
		return nil, 0, err
	}
	body := o.buf[o.head+2 : o.head+2+n]
	o.consume(2 + n)
	if o.cs == nil {
		if n == 0 {
			return nil, 0, fmt.Errorf("%w: empty record", ErrRecord)
		}
		return body, n + 2, nil
	}
	if n <= wire.TagSize {
		return nil, 0, fmt.Errorf("%w: record of %d bytes", ErrRecord, n)
	}
	p, err := o.decrypt(nil, body)
	if err != nil {
		return nil, 0, err
	}
	return p, n + 2, nil
}

// nextSplit opens a split record: every part is checked before any is used, so a record
// hands out all of its frames or none.
func (o *opener) nextSplit() ([]byte, int, error) {
	if err := o.fill(3); err != nil {
		return nil, 0, err
	}
	k := int(o.buf[o.head+2])
	if k < 2 || k > wire.MaxParts {
		return nil, 0, fmt.Errorf("%w: split record of %d parts", ErrRecord, k)
	}
	hdr := 3 + 2*k
	if err := o.fill(hdr); err != nil {
		return nil, 0, err
	}
	var lens [wire.MaxParts]int
	plain := 0
	for i := range k {
		lens[i] = int(binary.BigEndian.Uint16(o.buf[o.head+3+2*i:]))
		if lens[i] <= wire.TagSize {
			return nil, 0, fmt.Errorf("%w: split record part of %d bytes", ErrRecord, lens[i])
		}
		plain += lens[i] - wire.TagSize
	}
	if plain > wire.MaxPlaintext {
		return nil, 0, fmt.Errorf("%w: split record of %d bytes of frames", ErrRecord, plain)
	}
	size := hdr + plain + k*wire.TagSize
	if err := o.fill(size); err != nil {
		return nil, 0, err
	}
	rec := o.buf[o.head : o.head+size]
	o.consume(size)
	ad, off := rec[:hdr], hdr
	var frames []byte
	for i := range k {
		p, err := o.decrypt(ad, rec[off:off+lens[i]])
		if err != nil {
			o.parts = o.parts[:0]
			return nil, 0, err
		}
		if i == 0 {
			frames = p
		} else {
			o.parts = append(o.parts, p)
		}
		off += lens[i]
	}
	return frames, size, nil
}

// consume moves past n bytes of buf. They stay as they are until the next fill: the record
// just opened is handled (and its payloads perhaps held) in between.
func (o *opener) consume(n int) { o.head += n }

// release lets go of the read block; payloads held in it stay valid until their holders let go.
func (o *opener) release() {
	if o.blk != nil {
		o.blk.retire()
		o.blk, o.buf = nil, nil
	}
}
