package wire_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/rendr-go/rendr/internal/wire"
)

func TestPathAckRoundTrip(t *testing.T) {
	cases := [][]wire.AckRange{
		{{Lo: 0, Hi: 0}},
		{{Lo: 7, Hi: 1 << 40}},
		{{Lo: 100, Hi: 100}, {Lo: 98, Hi: 98}, {Lo: 0, Hi: 96}},
	}
	var many []wire.AckRange
	for i := range wire.MaxAckRanges {
		hi := uint64(1000 - 10*i)
		many = append(many, wire.AckRange{Lo: hi - 3, Hi: hi})
	}
	cases = append(cases, many)
	for _, rs := range cases {
		// 0: a PATH_ACK; otherwise a PATH_ACK_CE, up to every packet up to the largest.
		for _, ce := range []uint64{0, 1, 1 << 20, rs[0].Hi + 1} {
			b := wire.AppendPathAck(nil, 1234, rs, ce)
			if len(b) != wire.PathAckLen(1234, rs, ce) {
				t.Errorf("PathAckLen %d, encoded %d", wire.PathAckLen(1234, rs, ce), len(b))
			}
			f, n, err := wire.Parse(b)
			if ce > rs[0].Hi+1 {
				if !errors.Is(err, wire.ErrMalformed) {
					t.Errorf("%d marked of %d packets: %v, want ErrMalformed", ce, rs[0].Hi+1, err)
				}
				continue
			}
			if err != nil || n != len(b) {
				t.Fatalf("Parse(%v, ce %d) = %v, %d of %d", rs, ce, err, n, len(b))
			}
			want := wire.TypePathAck
			if ce > 0 {
				want = wire.TypePathAckCE
			}
			if f.Type != want || f.Seq != rs[0].Hi || f.Offset != 1234 || f.Limit != ce {
				t.Errorf("%v largest %d delay %d ce %d, want %v ce %d", f.Type, f.Seq, f.Offset, f.Limit, want, ce)
			}
			if got := slices.Collect(wire.AckRanges(&f)); !slices.Equal(got, rs) {
				t.Errorf("ranges %v, want %v", got, rs)
			}
		}
	}
}

func TestPathAckMalformed(t *testing.T) {
	var tooMany []wire.AckRange
	for i := range wire.MaxAckRanges + 1 {
		hi := uint64(2000 - 10*i)
		tooMany = append(tooMany, wire.AckRange{Lo: hi, Hi: hi})
	}
	bad := map[string][]byte{
		"first range below 0":  {byte(wire.TypePathAck), 5, 0, 0, 6},
		"second range below 0": {byte(wire.TypePathAck), 5, 0, 1, 2, 0, 2},
		"padding not zero":     {byte(wire.TypePadding), 2, 0, 1},
		"gap below 0":          {byte(wire.TypePathAck), 5, 0, 1, 2, 3, 0},
		"too many ranges":      wire.AppendPathAck(nil, 0, tooMany, 0),
		// Six packets (0 to 5) cannot have seven marked; a count of 0 is a PATH_ACK's.
		"more marked than sent": {byte(wire.TypePathAckCE), 5, 0, 0, 0, 7},
		"none marked":           {byte(wire.TypePathAckCE), 5, 0, 0, 0, 0},
	}
	for name, b := range bad {
		if _, _, err := wire.Parse(b); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if _, _, err := wire.Parse([]byte{byte(wire.TypePathAckCE), 5, 0, 0, 0, 6}); err != nil {
		t.Errorf("six packets, six marked: %v", err)
	}
	// Exactly down to packet 0 is fine.
	if _, _, err := wire.Parse([]byte{byte(wire.TypePathAck), 5, 0, 1, 2, 0, 0}); err != nil {
		t.Errorf("ranges 3-5 and 0-1: %v", err)
	}
}

// TestPaddingTakesExactlyN: AppendPadding(n) writes exactly n bytes for every n a record can
// hold, and what it wrote parses back as one PADDING frame of n bytes: for every n within 16
// of a change in the length field's size, and every 61st n between (the parse reads the
// padding the same way whatever its length; checking every n took most of the package's
// time under the race detector).
func TestPaddingTakesExactlyN(t *testing.T) {
	near := func(n int) bool {
		for _, edge := range []int{2, 1 + 1 + 63, 1 + 2 + 16383, wire.MaxRecord} {
			if n >= edge-16 && n <= edge+16 {
				return true
			}
		}
		return false
	}
	buf := make([]byte, 0, wire.MaxRecord)
	for n := 2; n <= wire.MaxRecord; n++ {
		b := wire.AppendPadding(buf[:0], n)
		if len(b) != n {
			t.Fatalf("AppendPadding(%d) took %d bytes", n, len(b))
		}
		if !near(n) && n%61 != 0 {
			continue
		}
		f, k, err := wire.Parse(b)
		if err != nil || k != n || f.Type != wire.TypePadding {
			t.Fatalf("Parse of padding %d: %v, %d bytes, %v", n, err, k, f.Type)
		}
	}
}

func TestChallengeRoundTrip(t *testing.T) {
	for _, typ := range []wire.Type{wire.TypePathChallenge, wire.TypePathResponse} {
		var b []byte
		if typ == wire.TypePathChallenge {
			b = wire.AppendPathChallenge(nil, 0xfedcba9876543210)
		} else {
			b = wire.AppendPathResponse(nil, 0xfedcba9876543210)
		}
		f, n, err := wire.Parse(b)
		if err != nil || n != 9 || f.Type != typ || f.Seq != 0xfedcba9876543210 {
			t.Errorf("%v: %+v %d %v", typ, f, n, err)
		}
		if _, _, err := wire.Parse(b[:8]); !errors.Is(err, wire.ErrTruncated) {
			t.Errorf("%v truncated: %v", typ, err)
		}
	}
}
