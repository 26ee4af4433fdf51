// Package budget counts memory against bounds shared by many owners: a listener's budget for
// all its sessions, and each peer's share of it. A reservation is taken from every level at
// once or from none, so one peer running out never takes what another holds.
package budget

import (
	"sync"
	"sync/atomic"
)

// Pool is a bound on bytes reserved. A nil *Pool has no bound and counts nothing, so code
// that reserves need not care whether a budget was configured.
type Pool struct {
	limit  int64
	parent *Pool

	mu      sync.Mutex
	used    int64
	refused atomic.Uint64
}

// New returns a pool of limit bytes inside parent (nil for none): a reservation must fit both.
func New(limit int64, parent *Pool) *Pool {
	return &Pool{limit: limit, parent: parent}
}

// Reserve takes n bytes if they fit in p and every pool above it, and reports whether it did.
// Nothing is taken when any level refuses.
func (p *Pool) Reserve(n int64) bool {
	if p == nil || n <= 0 {
		return true
	}
	p.mu.Lock()
	if p.used+n > p.limit {
		p.mu.Unlock()
		p.refused.Add(1)
		return false
	}
	p.used += n
	p.mu.Unlock()
	if !p.parent.Reserve(n) {
		p.mu.Lock()
		p.used -= n
		p.mu.Unlock()
		p.refused.Add(1)
		return false
	}
	return true
}

// Release gives back n bytes Reserve took.
func (p *Pool) Release(n int64) {
	if p == nil || n <= 0 {
		return
	}
	p.mu.Lock()
	// Never below zero: a release without its reservation would be a bug of the caller's,
	// which the tests catch by finding Used non-zero when all is closed; in production it
	// must not turn into a bound that refuses nothing.
	p.used = max(p.used-n, 0)
	p.mu.Unlock()
	p.parent.Release(n)
}

// Used is what is reserved now.
func (p *Pool) Used() int64 {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used
}

// Limit is the pool's bound.
func (p *Pool) Limit() int64 {
	if p == nil {
		return 0
	}
	return p.limit
}

// Refused counts the reservations this pool turned away, its own or because a pool above it
// was full.
func (p *Pool) Refused() uint64 {
	if p == nil {
		return 0
	}
	return p.refused.Load()
}
