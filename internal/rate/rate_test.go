package rate

import (
	"net/netip"
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	var b Bucket
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		if !b.Take(t0, 2, 3) {
			t.Fatalf("token %d of a full bucket of 3 refused", i)
		}
	}
	if b.Take(t0, 2, 3) {
		t.Fatal("a fourth token at once")
	}
	if !b.Take(t0.Add(500*time.Millisecond), 2, 3) || b.Take(t0.Add(500*time.Millisecond), 2, 3) {
		t.Fatal("half a second at 2 a second: want exactly one")
	}
	b.Refill(t0.Add(time.Hour), 2, 3)
	if b.Empty() || b.tokens != 3 {
		t.Fatalf("after an hour: %v tokens, want the burst", b.tokens)
	}
}

func TestTableAndHostKey(t *testing.T) {
	var tb Table
	now := time.Unix(1000, 0)
	a := HostKey(netip.MustParseAddr("192.0.2.7"))
	mapped := HostKey(netip.MustParseAddr("::ffff:192.0.2.7"))
	if string(a) != string(mapped) {
		t.Fatal("an IPv4-mapped address is another host")
	}
	if string(HostKey(netip.MustParseAddr("2001:db8:1:2::1"))) != string(HostKey(netip.MustParseAddr("2001:db8:1:2::ffff"))) {
		t.Fatal("two addresses of one /64 are two hosts")
	}
	if !tb.Take(a, now, 1, 1) || tb.Take(mapped, now, 1, 1) {
		t.Fatal("one host: want one token, then none")
	}
	if !tb.Take(HostKey(netip.MustParseAddr("198.51.100.1")), now, 1, 1) {
		t.Fatal("another host refused")
	}
}

// A table keeps at most Slots sources; the one seen first makes room, and comes back with a
// full bucket.
func TestTableBounded(t *testing.T) {
	var tb Table
	now := time.Unix(1000, 0)
	key := func(i int) []byte { return []byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)} }
	for i := range Slots + 10 {
		if !tb.Take(key(i), now, 1, 1) {
			t.Fatalf("source %d refused its first token", i)
		}
	}
	if len(tb.m) != Slots || len(tb.order) != Slots {
		t.Fatalf("%d buckets kept, want %d", len(tb.m), Slots)
	}
	if !tb.Take(key(0), now, 1, 1) {
		t.Fatal("the first source, evicted, did not start again full")
	}
	if tb.Take(key(Slots+9), now, 1, 1) {
		t.Fatal("a source still kept got a second token at once")
	}
}
