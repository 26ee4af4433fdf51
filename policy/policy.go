// Package policy decides which path carries a session's traffic. A target graph of Path
// leaves under Selector groups (Race and Bond join them later) is evaluated against the live
// paths' quality each time the engine asks where to send.
//
// Selector picks one child:
//  1. Only usable children count: a leaf is usable when its path is Up; a group when one of
//     its children is. If nothing is Up, Suspect paths are used rather than none.
//  2. Priority tiers: only children of the lowest usable tier are candidates, so a backup
//     (tier 1) carries traffic only while no primary (tier 0) is usable.
//  3. When the current child stops being a candidate (died, stalled, or a lower tier became
//     usable and stayed usable for RecoverDwell), the best candidate takes over at once.
//  4. Otherwise a candidate replaces the current child only when its score has been better by
//     the Hysteresis margin for Dwell without interruption (no flapping on noisy estimates).
//
// Score (lower is better): (srtt + 2*rttvar) * (1 + 4*loss), with paths not yet measured
// scored as if their round trip were 1 second, so a measured path wins.
package policy

import (
	"time"

	"github.com/rendr-go/rendr/status"
)

// Candidate is a live path as the policy sees it.
type Candidate struct {
	ID           uint32
	State        status.PathState // Up or Suspect
	SRTT, RTTVar time.Duration
	Loss         float64
	Samples      int
}

// Score is the candidate's score; lower is better.
func (c Candidate) Score() time.Duration {
	rtt := c.SRTT + 2*c.RTTVar
	if c.Samples == 0 {
		rtt = time.Second
	}
	return time.Duration(float64(rtt) * (1 + 4*c.Loss))
}

// Tuning of a Selector. The zero value gives the documented defaults.
type Tuning struct {
	// Dwell is how long a better path must stay better before traffic moves; zero means 3s.
	Dwell time.Duration
	// Hysteresis is the fraction by which it must be better; zero means 0.25 (and at least
	// 1ms better, so microsecond noise on a LAN never moves traffic).
	Hysteresis float64
	// RecoverDwell is how long a higher-priority path must be usable before traffic returns
	// to it from a backup; zero means 500ms.
	RecoverDwell time.Duration
}

func (t *Tuning) defaults() {
	if t.Dwell == 0 {
		t.Dwell = 3 * time.Second
	}
	if t.Hysteresis == 0 {
		t.Hysteresis = 0.25
	}
	if t.RecoverDwell == 0 {
		t.RecoverDwell = 500 * time.Millisecond
	}
}

// Kind is the kind of a node.
type Kind int

const (
	KindPath Kind = iota
	KindSelector
)

// Node is one node of the target graph with its selection state. Build the graph once; Pick
// is not safe for concurrent use (the session calls it under its lock).
type Node struct {
	Kind     Kind
	Name     string
	Tier     int
	Children []*Node
	Tuning   Tuning

	cur         int // index of the current child, -1 for none
	better      int // child that has looked better since betterSince
	betterSince time.Time
	usableSince map[int]time.Time // children of a lower tier than cur: when they became usable
}

// Lookup returns the live candidate for a leaf, if its path is attached.
type Lookup func(leaf *Node) (Candidate, bool)

// Pick returns the leaf that should carry traffic and the candidate of its path, and, when the
// choice of some Selector on the way changed, why.
func (n *Node) Pick(now time.Time, look Lookup) (leaf *Node, c Candidate, ok bool, cause status.Cause, changed bool) {
	if n.Kind == KindPath {
		c, ok = look(n)
		return n, c, ok, 0, false
	}
	n.Tuning.defaults()
	type opt struct {
		leaf *Node
		c    Candidate
		tier int
		sub  status.Cause
		chg  bool
	}
	opts := make([]opt, len(n.Children))
	oks := make([]bool, len(n.Children))
	bestTier, anyUp := -1, false
	for i, ch := range n.Children {
		l, c, ok, sub, chg := ch.Pick(now, look)
		opts[i] = opt{l, c, ch.Tier, sub, chg}
		oks[i] = ok
		if ok && c.State == status.Up {
			anyUp = true
		}
	}
	for i := range n.Children {
		if oks[i] && (!anyUp || opts[i].c.State == status.Up) && (bestTier < 0 || opts[i].tier < bestTier) {
			bestTier = opts[i].tier
		}
	}
	cand := func(i int) bool {
		return i >= 0 && oks[i] && (!anyUp || opts[i].c.State == status.Up) && opts[i].tier == bestTier
	}
	best := -1
	for i := range n.Children {
		if cand(i) && (best < 0 || opts[i].c.Score() < opts[best].c.Score()) {
			best = i
		}
	}
	if best < 0 {
		n.cur = -1
		return nil, Candidate{}, false, 0, false
	}
	if n.usableSince == nil {
		n.usableSince = make(map[int]time.Time)
	}
	next, why := n.cur, status.Cause(0)
	switch {
	case n.cur < 0 || n.cur >= len(n.Children) || !oks[n.cur]:
		next, why = best, status.CauseDeath
		if n.cur < 0 {
			why = status.CauseFirst
		}
	case anyUp && opts[n.cur].c.State != status.Up:
		next, why = best, status.CauseStall
	case opts[n.cur].tier > bestTier:
		// A preferred tier is usable again: move once it has stayed usable for RecoverDwell.
		since, seen := n.usableSince[best]
		if !seen {
			n.usableSince[best] = now
			since = now
		}
		if now.Sub(since) >= n.Tuning.RecoverDwell {
			next, why = best, status.CauseRecovery
		}
	case best != n.cur:
		cs, bs := opts[n.cur].c.Score(), opts[best].c.Score()
		margin := max(time.Duration(float64(cs)*n.Tuning.Hysteresis), time.Millisecond)
		if bs < cs-margin {
			if n.better != best || n.betterSince.IsZero() {
				n.better, n.betterSince = best, now
			}
			if now.Sub(n.betterSince) >= n.Tuning.Dwell {
				next, why = best, status.CauseQuality
			}
		} else {
			n.betterSince = time.Time{}
		}
	default:
		n.betterSince = time.Time{}
	}
	for i := range n.Children {
		if !oks[i] || opts[i].tier >= opts[next].tier {
			delete(n.usableSince, i)
		}
	}
	if next != n.cur {
		n.cur = next
		n.betterSince = time.Time{}
		o := opts[next]
		return o.leaf, o.c, true, why, true
	}
	o := opts[n.cur]
	return o.leaf, o.c, true, o.sub, o.chg
}

// Leaves returns the graph's Path leaves in order.
func (n *Node) Leaves() []*Node {
	if n.Kind == KindPath {
		return []*Node{n}
	}
	var out []*Node
	for _, c := range n.Children {
		out = append(out, c.Leaves()...)
	}
	return out
}

// Init prepares the graph for its first Pick.
func (n *Node) Init() {
	n.cur = -1
	for _, c := range n.Children {
		c.Init()
	}
}
