package path

// Split packets (docs/wire.md section 5, "Packet paths"). A packet whose record ends in
// payload kept aside (Record.Ext: bytes still in a flow's send buffer) is sealed in parts, as a
// split stream record is: the frames, then each payload piece as an AEAD message of its own,
// sealed straight from the send buffer into the packet. One AEAD message would need the frames
// and the payload side by side first, which is a copy of every payload byte.
//
//	counter | splitBit (8) | k (1) | len_0 .. len_k-1 (2 each) | part_0 | ... | part_k-1
//
// Part i is sealed under the packet's key with nonce i (4 bytes, big-endian) || counter, and
// the header before the parts as associated data, so no part can be moved, cut or reordered.
// Part 0 has the nonce an unsplit packet of that number would: a number is used by one packet
// only, split or not.

import (
	"encoding/binary"
	"fmt"

	"github.com/rendr-go/rendr/internal/wire"
)

const splitBit = 1 << 63

// splitHeader is the size of a split packet's header, its counter included.
func splitHeader(k int) int { return dgCounterSize + 1 + 2*k }

// sealSplit takes the next packet number and seals a split packet in b: b[:hdr] is room for
// the header, b[hdr:hdr+frames] the frames, and b's capacity holds everything. It returns
// the packet.
func (s *dgSeal) sealSplit(b []byte, frames int, ext [][]byte) ([]byte, uint64, error) {
	n := s.sent
	if n == 1<<62 {
		return nil, 0, errNonce
	}
	s.sent++
	if n > 0 && n%dgEpoch == 0 {
		s.seal.rekey()
	}
	k := 1 + len(ext)
	hdr := splitHeader(k)
	need := hdr + frames + wire.TagSize
	for _, p := range ext {
		need += len(p) + wire.TagSize
	}
	if cap(b) < need {
		return nil, 0, fmt.Errorf("path: %d bytes of room for a %d-byte split packet", cap(b), need)
	}
	binary.BigEndian.PutUint64(b, n|splitBit)
	b[dgCounterSize] = byte(k)
	binary.BigEndian.PutUint16(b[dgCounterSize+1:], uint16(frames+wire.TagSize))
	for i, p := range ext {
		binary.BigEndian.PutUint16(b[dgCounterSize+3+2*i:], uint16(len(p)+wire.TagSize))
	}
	ad := b[:hdr]
	c := s.seal
	out := c.aead.Seal(b[hdr:hdr], c.nonceOfPart(0, n), b[hdr:hdr+frames], ad)
	end := hdr + len(out)
	for i, p := range ext {
		out = c.aead.Seal(b[end:end], c.nonceOfPart(uint32(i+1), n), p, ad)
		end += len(out)
	}
	c.nonceOfPart(0, 0) // leave the nonce's part index at zero for unsplit packets
	return b[:end], n, nil
}

// openSplit opens a split packet in place: every part must authenticate before any is used.
// It returns the frames (part 0); the payload parts go to d.parts.
func (d *dgOpen) openSplit(b []byte, n uint64) ([]byte, error) {
	if d.open == nil || len(b) < dgCounterSize+1 {
		return nil, errForged // a plain path never splits
	}
	k := int(b[dgCounterSize])
	if k < 2 || k > wire.MaxParts || len(b) < splitHeader(k) {
		return nil, errForged
	}
	hdr := splitHeader(k)
	var lens [wire.MaxParts]int
	total := hdr
	for i := range k {
		lens[i] = int(binary.BigEndian.Uint16(b[dgCounterSize+1+2*i:]))
		if lens[i] <= wire.TagSize {
			return nil, errForged
		}
		total += lens[i]
	}
	if total != len(b) {
		return nil, errForged
	}
	c, err := d.cipherFor(n / dgEpoch)
	if err != nil {
		return nil, err
	}
	ad := b[:hdr]
	d.parts = d.parts[:0]
	var frames []byte
	off := hdr
	for i := range k {
		part := b[off : off+lens[i] : off+lens[i]]
		p, err := c.aead.Open(part[:0], c.nonceOfPart(uint32(i), n), part, ad)
		if err != nil {
			c.nonceOfPart(0, 0)
			d.parts = d.parts[:0]
			return nil, errForged
		}
		if i == 0 {
			frames = p
		} else {
			d.parts = append(d.parts, p)
		}
		off += lens[i]
	}
	c.nonceOfPart(0, 0)
	d.advance(n/dgEpoch, c)
	return frames, nil
}

// nonceOfPart is the nonce of part i of record n.
func (c *recordCipher) nonceOfPart(i uint32, n uint64) []byte {
	binary.BigEndian.PutUint32(c.nonce[:4], i)
	binary.BigEndian.PutUint64(c.nonce[4:], n)
	return c.nonce[:]
}
