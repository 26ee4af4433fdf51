// Package rate holds the token buckets that bound what a listener does for strangers: one
// bucket for a whole listener, and a table of them keyed by source host whose memory is the
// same however many sources there are.
package rate

import (
	"net/netip"
	"sync"
	"time"
)

// Bucket earns rate tokens a second up to burst, and starts full. It has no lock of its own:
// its owner guards it (Limiter is one with a lock).
type Bucket struct {
	tokens float64
	at     time.Time
}

// Refill adds what the time since the last look earned.
func (b *Bucket) Refill(now time.Time, rate, burst float64) {
	if b.at.IsZero() {
		b.tokens = burst
	} else if d := now.Sub(b.at); d > 0 {
		b.tokens = min(burst, b.tokens+d.Seconds()*rate)
	}
	b.at = now
}

// Take refills the bucket, then takes a token if there is one.
func (b *Bucket) Take(now time.Time, rate, burst float64) bool {
	b.Refill(now, rate, burst)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Empty reports whether the bucket has no whole token, after a Refill.
func (b *Bucket) Empty() bool { return b.tokens < 1 }

// Limiter is a Bucket with a lock.
type Limiter struct {
	mu sync.Mutex
	b  Bucket
}

// Take takes a token if there is one.
func (l *Limiter) Take(now time.Time, rate, burst float64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Take(now, rate, burst)
}

// Slots bounds the sources a Table keeps a bucket for: past it, the source seen first gives
// its place (a source forgotten that way starts again with a full bucket).
const Slots = 4096

// Table is a bucket per source key, for at most Slots sources, so its memory is bounded
// whatever the number of sources.
type Table struct {
	mu    sync.Mutex
	m     map[string]Bucket
	order []string // keys in the order they came, a ring once full
	next  int
}

// Take takes a token from key's bucket if there is one.
func (t *Table) Take(key []byte, now time.Time, rate, burst float64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]Bucket)
	}
	b, ok := t.m[string(key)]
	if !ok {
		k := string(key)
		if len(t.order) < Slots {
			t.order = append(t.order, k)
		} else {
			delete(t.m, t.order[t.next])
			t.order[t.next] = k
			t.next = (t.next + 1) % Slots
		}
	}
	took := b.Take(now, rate, burst)
	t.m[string(key)] = b
	return took
}

// HostKey is what a source host is known by: an IPv4 address, or an IPv6 /64 (a host
// commonly has a whole /64 to pick addresses from).
func HostKey(a netip.Addr) []byte {
	a = a.Unmap()
	b := a.As16()
	if a.Is4() {
		return b[12:]
	}
	return b[:8]
}
