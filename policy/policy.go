// Package policy decides which paths carry a session's traffic. A target graph of Path leaves
// under Selector, Race and Bond groups, nested to any depth, is evaluated against the live
// paths' quality each time the engine asks where to send. The result is a Choice: the leaves
// that carry traffic now, grouped as Race and Bond say the engine should use them.
//
// Race and Bond use every usable child of the lowest usable tier: a backup child joins only
// while no primary child is usable, and a primary that comes back replaces the backups once
// it has stayed usable for RecoverDwell. While any child is Up, Suspect children are left
// out. A group with one such child is that child.
//
// Selector picks one child:
//  1. Only usable children count: a leaf is usable when its path is Up; a group when one of
//     its children is. If nothing is Up, Suspect paths are used rather than none.
//  2. Priority tiers: only children of the lowest usable tier are candidates, so a backup
//     (tier 1) carries traffic only while no primary (tier 0) is usable. While a child of a
//     lower tier still waits for its first carrier (the Lookup says so), the children of
//     higher tiers are not candidates either: a fresh session's primaries get a head start.
//  3. When the current child stops being a candidate (died, stalled, or a lower tier became
//     usable and stayed usable for RecoverDwell), the best candidate takes over at once.
//  4. A child the last move for a stall left, whose stall proved spurious (Candidate.Undo),
//     takes traffic back at once if it is of a preferred tier, or better by the Hysteresis
//     margin: the move bought nothing, and is undone.
//  5. Otherwise a candidate replaces the current child only when its score has been better by
//     the Hysteresis margin for Dwell without interruption (no flapping on noisy estimates).
//
// Score (lower is better): rtt * (1 + 4*loss), where rtt is the least round trip of the last
// second or two (Candidate.RTT), with paths not yet measured
// scored as if their round trip were 1 second, so a measured path wins.
package policy

import (
	"slices"
	"time"

	"github.com/rendr-go/rendr/status"
)

// Candidate is a live path as the policy sees it.
type Candidate struct {
	ID    uint32
	State status.PathState // Up or Suspect
	// RTT is the least round trip of the last second or two, not the smoothed one: the queue
	// of a path's own traffic and a pause of either host raise the smoothed round trip of
	// the busy path for seconds, and a policy that read it would leave the path for
	// carrying the traffic.
	RTT     time.Duration
	Loss    float64
	Samples int
	// Undo: the path was routed around for a stall that proved spurious. A Selector that
	// left it for that stall goes back to it at once if it is of a preferred tier, or better
	// by the Hysteresis margin.
	Undo bool
	// Waiting, on a leaf whose Lookup is false: its path still waits for its first carrier
	// and has a head start over higher tiers (package doc, rule 2).
	Waiting bool
}

// Score is the candidate's score; lower is better.
func (c Candidate) Score() time.Duration {
	rtt := c.RTT
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
	KindRace
	KindBond
)

// Choice is what a node carries traffic on now: a leaf, or a Race or Bond of two or more
// choices. C is the leaf's candidate; for a group, its best child's, and Up if any child is.
type Choice struct {
	Kind Kind // KindPath, KindRace or KindBond
	Leaf *Node
	Kids []*Choice
	C    Candidate
}

// Leaves appends the choice's leaves to dst.
func (c *Choice) Leaves(dst []*Node) []*Node {
	if c == nil {
		return dst
	}
	if c.Kind == KindPath {
		return append(dst, c.Leaf)
	}
	for _, k := range c.Kids {
		dst = k.Leaves(dst)
	}
	return dst
}

// Node is one node of the target graph with its selection state. Build the graph once; Choose
// is not safe for concurrent use (the session calls it under its lock).
type Node struct {
	Kind     Kind
	Name     string
	Tier     int
	Children []*Node
	Tuning   Tuning

	cur         int // Selector: index of the current child, -1 for none
	left        int // Selector: 1 + the child the last move for a stall left, 0 for none
	better      int // Selector: child that has looked better since betterSince
	betterSince time.Time
	usableSince map[int]time.Time // children of a lower tier than in use: when they became usable
	members     []int             // Race, Bond: children carrying traffic, in order
	tier        int               // Race, Bond: the tier in use, -1 for none
}

// Lookup returns the live candidate for a leaf, if its path is attached. A leaf that is not
// attached but still has its head start (a fresh session's path waiting for its first
// carrier, which a backup must not overtake) returns false with a Candidate whose Waiting is
// set.
type Lookup func(leaf *Node) (Candidate, bool)

// Choose returns what should carry traffic now (nil: nothing is usable) and, when the choice
// of some group on the way changed, why.
func (n *Node) Choose(now time.Time, look Lookup) (ch *Choice, cause status.Cause, changed bool) {
	switch n.Kind {
	case KindPath:
		c, ok := look(n)
		if !ok {
			return nil, 0, false
		}
		return &Choice{Kind: KindPath, Leaf: n, C: c}, 0, false
	case KindRace, KindBond:
		return n.chooseGroup(now, look)
	}
	return n.chooseSelector(now, look)
}

// child is one child's choice as its parent weighs it.
type child struct {
	ch   *Choice
	tier int
	sub  status.Cause
	chg  bool
}

// children evaluates every child and returns them with the lowest tier among usable ones
// (-1: none) and whether any is Up. While a child that is not usable yet waits for its first
// carrier (Waiting), children of a higher tier count as not usable: a backup gets no traffic
// while a primary still has its head start.
func (n *Node) children(now time.Time, look Lookup) (opts []child, bestTier int, anyUp bool) {
	opts = make([]child, len(n.Children))
	bestTier = -1
	hold := -1 // the lowest tier with a child still waiting, -1 for none
	for i, c := range n.Children {
		ch, sub, chg := c.Choose(now, look)
		opts[i] = child{ch, c.Tier, sub, chg}
		if ch == nil && c.waiting(look) && (hold < 0 || c.Tier < hold) {
			hold = c.Tier
		}
	}
	for i := range opts {
		if hold >= 0 && opts[i].tier > hold {
			opts[i].ch = nil
		}
		if opts[i].ch != nil && opts[i].ch.C.State == status.Up {
			anyUp = true
		}
	}
	for _, o := range opts {
		if o.ch != nil && (!anyUp || o.ch.C.State == status.Up) && (bestTier < 0 || o.tier < bestTier) {
			bestTier = o.tier
		}
	}
	return opts, bestTier, anyUp
}

func (n *Node) chooseSelector(now time.Time, look Lookup) (*Choice, status.Cause, bool) {
	n.Tuning.defaults()
	opts, bestTier, anyUp := n.children(now, look)
	usable := func(i int) bool { return i >= 0 && i < len(opts) && opts[i].ch != nil }
	cand := func(i int) bool {
		return usable(i) && (!anyUp || opts[i].ch.C.State == status.Up) && opts[i].tier == bestTier
	}
	best := -1
	for i := range opts {
		if cand(i) && (best < 0 || opts[i].ch.C.Score() < opts[best].ch.C.Score()) {
			best = i
		}
	}
	if best < 0 {
		n.cur = -1
		return nil, 0, false
	}
	if n.usableSince == nil {
		n.usableSince = make(map[int]time.Time)
	}
	next, why := n.cur, status.Cause(0)
	switch {
	case !usable(n.cur):
		next, why = best, status.CauseDeath
		if n.cur < 0 {
			why = status.CauseFirst
		}
	case anyUp && opts[n.cur].ch.C.State != status.Up:
		next, why = best, status.CauseStall
	case n.left > 0 && n.undoes(opts, n.left-1):
		next, why = n.left-1, status.CauseUndo
	case opts[n.cur].tier > bestTier:
		// A preferred tier is usable again: move once it has stayed usable for RecoverDwell.
		if n.recovered(best, now) {
			next, why = best, status.CauseRecovery
		}
	case best != n.cur:
		cs, bs := opts[n.cur].ch.C.Score(), opts[best].ch.C.Score()
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
	n.forgetUsable(opts, opts[next].tier)
	if next != n.cur {
		n.left = 0
		if why == status.CauseStall && n.cur >= 0 {
			n.left = n.cur + 1
		}
		n.cur = next
		n.betterSince = time.Time{}
		return opts[next].ch, why, true
	}
	o := opts[n.cur]
	return o.ch, o.sub, o.chg
}

// undoes reports whether traffic goes back to child i, which a move for a stall left: the
// stall proved spurious, and i is Up and of a preferred tier, or of the same tier and better
// than the current child by the Hysteresis margin.
func (n *Node) undoes(opts []child, i int) bool {
	if i == n.cur || i >= len(opts) || opts[i].ch == nil || !opts[i].ch.C.Undo || opts[i].ch.C.State != status.Up {
		return false
	}
	o, c := opts[i], opts[n.cur]
	if o.tier != c.tier {
		return o.tier < c.tier
	}
	cs := c.ch.C.Score()
	return o.ch.C.Score() < cs-max(time.Duration(float64(cs)*n.Tuning.Hysteresis), time.Millisecond)
}

// recovered notes that child i of a preferred tier is usable and reports whether it has been
// for RecoverDwell.
func (n *Node) recovered(i int, now time.Time) bool {
	since, seen := n.usableSince[i]
	if !seen {
		n.usableSince[i] = now
		since = now
	}
	return now.Sub(since) >= n.Tuning.RecoverDwell
}

// forgetUsable drops the recovery clocks of children that are not usable or not of a tier
// preferred to the one in use.
func (n *Node) forgetUsable(opts []child, inUse int) {
	for i := range opts {
		if opts[i].ch == nil || opts[i].tier >= inUse {
			delete(n.usableSince, i)
		}
	}
}

func (n *Node) chooseGroup(now time.Time, look Lookup) (*Choice, status.Cause, bool) {
	n.Tuning.defaults()
	opts, bestTier, anyUp := n.children(now, look)
	if n.usableSince == nil {
		n.usableSince = make(map[int]time.Time)
	}
	in := func(i, tier int) bool {
		return opts[i].ch != nil && (!anyUp || opts[i].ch.C.State == status.Up) && opts[i].tier == tier
	}
	// Stay on the tier in use while it has a usable child and a preferred tier has not been
	// usable for RecoverDwell yet; otherwise take the best usable tier.
	tier := bestTier
	why := status.CauseDeath
	if n.tier >= 0 && bestTier >= 0 && bestTier < n.tier {
		still := false
		for i := range opts {
			still = still || in(i, n.tier)
		}
		recovered := false
		for i := range opts {
			if in(i, bestTier) && n.recovered(i, now) {
				recovered = true
			}
		}
		if still && !recovered {
			tier = n.tier
		} else if still {
			why = status.CauseRecovery
		}
	}
	var members []int
	if tier >= 0 {
		for i := range opts {
			if in(i, tier) {
				members = append(members, i)
			}
		}
	}
	n.forgetUsable(opts, max(tier, 0))
	if tier < 0 {
		n.forgetUsable(opts, -1)
	}
	// Why the set changed: a member lost (death, or stall while others are Up), a preferred
	// tier back, or a child joining.
	changed := len(members) != len(n.members)
	for k := 0; !changed && k < len(members); k++ {
		changed = members[k] != n.members[k]
	}
	cause, chg := status.Cause(0), false
	if changed {
		chg = true
		cause = status.CauseJoin
		if n.tier < 0 || len(n.members) == 0 {
			cause = status.CauseFirst
		}
		for _, old := range n.members {
			if old < len(opts) && !slices.Contains(members, old) {
				cause = why
				if opts[old].ch != nil && opts[old].ch.C.State != status.Up {
					cause = status.CauseStall
				}
				break
			}
		}
	}
	n.members = members
	n.tier = tier
	if len(members) == 0 {
		n.tier = -1
		return nil, cause, chg
	}
	for _, i := range members {
		if !chg && opts[i].chg {
			cause, chg = opts[i].sub, true
		}
	}
	if len(members) == 1 {
		return opts[members[0]].ch, cause, chg
	}
	g := &Choice{Kind: n.Kind}
	for _, i := range members {
		c := opts[i].ch
		g.Kids = append(g.Kids, c)
		if len(g.Kids) == 1 || c.C.Score() < g.C.Score() {
			g.C = c.C
		}
		if c.C.State == status.Up {
			g.C.State = status.Up
		}
	}
	return g, cause, chg
}

// waiting reports whether a leaf under n still waits for its first carrier (the lookup says so
// with false and a Candidate whose Waiting is set).
func (n *Node) waiting(look Lookup) bool {
	if n.Kind == KindPath {
		c, ok := look(n)
		return !ok && c.Waiting
	}
	for _, c := range n.Children {
		if c.waiting(look) {
			return true
		}
	}
	return false
}

// Find returns the node of the graph with that name, or nil.
func (n *Node) Find(name string) *Node {
	if n.Name == name {
		return n
	}
	for _, c := range n.Children {
		if f := c.Find(name); f != nil {
			return f
		}
	}
	return nil
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
	n.cur, n.tier, n.members = -1, -1, nil
	for _, c := range n.Children {
		c.Init()
	}
}
