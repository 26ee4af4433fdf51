package handshake

import (
	"sync"
	"time"
)

// Replay rejects replayed first messages. IK's first message can be replayed by anyone who
// recorded it, so each carries a timestamp; a responder accepts a timestamp only once and never
// one older than the newest it has forgotten. Unlike WireGuard's single "greatest timestamp",
// it keeps a small set per key, because paths of one peer handshake concurrently over
// different carriers and their first messages may arrive out of order.
//
// State exists only for keys that authenticated, so input from strangers costs nothing.
type Replay struct {
	// Window is how far behind the newest seen timestamp a handshake may be; zero means 30s.
	Window time.Duration
	// Size is how many timestamps are remembered per key; zero means 64.
	Size int

	mu    sync.Mutex
	peers map[[KeySize]byte]*replayState
}

type replayState struct {
	floor  uint64   // timestamps <= floor are refused
	newest uint64   // greatest accepted
	seen   []uint64 // accepted timestamps > floor, oldest first
}

// Check records t for peer and reports whether it is fresh.
func (r *Replay) Check(peer [KeySize]byte, t uint64) bool {
	window := uint64(r.Window)
	if window == 0 {
		window = uint64(30 * time.Second)
	}
	size := r.Size
	if size == 0 {
		size = 64
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.peers == nil {
		r.peers = make(map[[KeySize]byte]*replayState)
	}
	s := r.peers[peer]
	if s == nil {
		s = &replayState{}
		r.peers[peer] = s
	}
	if t <= s.floor || (s.newest > window && t < s.newest-window) {
		return false
	}
	for _, v := range s.seen {
		if v == t {
			return false
		}
	}
	if t > s.newest {
		s.newest = t
	}
	s.seen = append(s.seen, t)
	if len(s.seen) > size {
		// Forget the smallest and raise the floor to it: anything at or below is refused.
		min := 0
		for i, v := range s.seen {
			if v < s.seen[min] {
				min = i
			}
		}
		s.floor = max(s.floor, s.seen[min])
		s.seen = append(s.seen[:min], s.seen[min+1:]...)
	}
	return true
}

// Clock hands out strictly increasing timestamps for hellos, even when the wall clock stalls or
// steps back, so two handshakes from one runtime never carry the same time.
type Clock struct {
	mu   sync.Mutex
	last uint64
}

// Now returns the next timestamp.
func (c *Clock) Now() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := uint64(time.Now().UnixNano())
	if t <= c.last {
		t = c.last + 1
	}
	c.last = t
	return t
}
