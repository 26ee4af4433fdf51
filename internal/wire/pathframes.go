package wire

import (
	"encoding/binary"
	"iter"
)

// MaxAckRanges bounds the ranges of one PATH_ACK: a receiver reports the newest gaps, which
// are the ones a sender still waits on.
const MaxAckRanges = 64

// AckRange is packets Lo through Hi, inclusive.
type AckRange struct{ Lo, Hi uint64 }

// AppendPathAck appends a PATH_ACK for ranges, which must be sorted from the highest down,
// not touching each other, and number 1 to MaxAckRanges. delay is how long, in microseconds,
// the receiver held the acknowledgement of the highest packet before sending it. ce, when not
// 0, makes it a PATH_ACK_CE: ce packets of the path so far arrived marked as having met
// congestion on the way (the count never falls, so a lost acknowledgement loses nothing).
func AppendPathAck(b []byte, delay uint64, ranges []AckRange, ce uint64) []byte {
	t := TypePathAck
	if ce > 0 {
		t = TypePathAckCE
	}
	b = append(b, byte(t))
	b = AppendVarint(b, ranges[0].Hi)
	b = AppendVarint(b, delay)
	b = AppendVarint(b, uint64(len(ranges)-1))
	b = AppendVarint(b, ranges[0].Hi-ranges[0].Lo)
	for i := 1; i < len(ranges); i++ {
		b = AppendVarint(b, ranges[i-1].Lo-ranges[i].Hi-2) // the gap: packets missing, less one
		b = AppendVarint(b, ranges[i].Hi-ranges[i].Lo)
	}
	if ce > 0 {
		b = AppendVarint(b, ce)
	}
	return b
}

// PathAckLen is the encoded size of AppendPathAck's frame.
func PathAckLen(delay uint64, ranges []AckRange, ce uint64) int {
	n := 1 + VarintLen(ranges[0].Hi) + VarintLen(delay) + VarintLen(uint64(len(ranges)-1)) + VarintLen(ranges[0].Hi-ranges[0].Lo)
	for i := 1; i < len(ranges); i++ {
		n += VarintLen(ranges[i-1].Lo-ranges[i].Hi-2) + VarintLen(ranges[i].Hi-ranges[i].Lo)
	}
	if ce > 0 {
		n += VarintLen(ce)
	}
	return n
}

// parsePathAck reads a PATH_ACK's or PATH_ACK_CE's fields after its type: Seq is the largest
// packet, Offset the delay, Payload the ranges as sent (from the range count on), checked to
// stay above 0, and Limit a PATH_ACK_CE's count of marked packets, which cannot be more than
// the packets numbered up to the largest, nor 0 (that is a PATH_ACK).
func parsePathAck(f *Frame, r *reader) {
	f.Seq = r.varint()
	f.Offset = r.varint()
	start := r.off
	count := r.varint()
	first := r.varint()
	if r.err != nil {
		return
	}
	if count >= MaxAckRanges || first > f.Seq {
		r.err = ErrMalformed
		return
	}
	lo := f.Seq - first
	for range count {
		gap, n := r.varint(), r.varint()
		if r.err != nil {
			return
		}
		if lo < gap+2 || lo-gap-2 < n {
			r.err = ErrMalformed // a range below packet 0
			return
		}
		lo = lo - gap - 2 - n
	}
	f.Payload = r.b[start:r.off:r.off]
	if f.Type == TypePathAckCE {
		f.Limit = r.varint()
		if r.err == nil && (f.Limit == 0 || f.Limit-1 > f.Seq) {
			r.err = ErrMalformed
		}
	}
}

// AckRanges yields the ranges of a parsed PATH_ACK, from the highest down.
func AckRanges(f *Frame) iter.Seq[AckRange] {
	return func(yield func(AckRange) bool) {
		b := f.Payload
		count, n := ReadVarint(b)
		b = b[n:]
		first, n := ReadVarint(b)
		b = b[n:]
		rg := AckRange{Lo: f.Seq - first, Hi: f.Seq}
		if !yield(rg) {
			return
		}
		for range count {
			gap, n := ReadVarint(b)
			b = b[n:]
			l, n := ReadVarint(b)
			b = b[n:]
			hi := rg.Lo - gap - 2
			rg = AckRange{Lo: hi - l, Hi: hi}
			if !yield(rg) {
				return
			}
		}
	}
}

// AppendPathChallenge appends a PATH_CHALLENGE carrying data.
func AppendPathChallenge(b []byte, data uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, byte(TypePathChallenge)), data)
}

// AppendPathResponse appends the PATH_RESPONSE to a PATH_CHALLENGE that carried data.
func AppendPathResponse(b []byte, data uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, byte(TypePathResponse)), data)
}

// AppendPadding appends a PADDING frame that takes exactly n bytes in all (n at least 2). Its
// length is written in as few bytes as allow that, even where that takes a longer encoding
// than the length needs (for n = 66 no minimal one adds up).
func AppendPadding(b []byte, n int) []byte {
	b = append(b, byte(TypePadding))
	var body int
	switch {
	case n-2 < 1<<6:
		body = n - 2
		b = append(b, byte(body))
	case n-3 < 1<<14:
		body = n - 3
		b = append(b, byte(body>>8)|0x40, byte(body))
	default:
		body = n - 5
		b = binary.BigEndian.AppendUint32(b, uint32(body)|0x80<<24)
	}
	return append(b, make([]byte, body)...) // the compiler zeroes in place: no allocation
}
