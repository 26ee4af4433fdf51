package policy_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/rendr-go/rendr/policy"
	"github.com/rendr-go/rendr/status"
)

// world is the live state the policy sees: a candidate per leaf name; absent means no path.
type world map[string]policy.Candidate

func (w world) look(n *policy.Node) (policy.Candidate, bool) {
	c, ok := w[n.Name]
	return c, ok && !c.Waiting
}

// waiting is a leaf with no path yet that still has its head start.
var waiting = policy.Candidate{Waiting: true}

func up(rtt time.Duration) policy.Candidate {
	return policy.Candidate{State: status.Up, RTT: rtt, Samples: 5}
}

func leaf(name string, tier int) *policy.Node {
	return &policy.Node{Kind: policy.KindPath, Name: name, Tier: tier}
}

func selector(name string, tuning policy.Tuning, children ...*policy.Node) *policy.Node {
	n := &policy.Node{Kind: policy.KindSelector, Name: name, Children: children, Tuning: tuning}
	n.Init()
	return n
}

// picker drives Pick through virtual time.
type picker struct {
	t   *testing.T
	n   *policy.Node
	now time.Time
}

type pick struct {
	name    string
	cause   status.Cause
	changed bool
}

func (p *picker) at(d time.Duration, w world) pick {
	p.t.Helper()
	leaf, _, ok, cause, changed := pickOf(p.n, p.now.Add(d), w.look)
	if !ok {
		return pick{}
	}
	return pick{leaf.Name, cause, changed}
}

func newPicker(t *testing.T, n *policy.Node) *picker {
	return &picker{t: t, n: n, now: time.Unix(1000, 0)}
}

func TestScore(t *testing.T) {
	for _, tc := range []struct {
		c    policy.Candidate
		want time.Duration
	}{
		{policy.Candidate{}, time.Second}, // never measured
		{policy.Candidate{RTT: 5 * time.Millisecond}, time.Second},
		{policy.Candidate{RTT: 10 * time.Millisecond, Samples: 1}, 10 * time.Millisecond},
		{policy.Candidate{RTT: 10 * time.Millisecond, Loss: 0.25, Samples: 1}, 20 * time.Millisecond},
	} {
		if got := tc.c.Score(); got != tc.want {
			t.Errorf("Score(%+v) = %v, want %v", tc.c, got, tc.want)
		}
	}
	// A measured path beats an unmeasured one even when it is slow.
	if slow := (policy.Candidate{RTT: 500 * time.Millisecond, Samples: 1}); slow.Score() >= (policy.Candidate{}).Score() {
		t.Error("a measured 500ms path does not beat an unmeasured one")
	}
}

func TestSelectorFirstPickIsBest(t *testing.T) {
	p := newPicker(t, selector("root", policy.Tuning{}, leaf("a", 0), leaf("b", 0), leaf("c", 0)))
	w := world{"a": up(30 * time.Millisecond), "b": up(10 * time.Millisecond), "c": up(20 * time.Millisecond)}
	if got := p.at(0, w); got != (pick{"b", status.CauseFirst, true}) {
		t.Fatalf("first pick %+v, want b (first)", got)
	}
	if got := p.at(time.Millisecond, w); got.name != "b" || got.changed {
		t.Fatalf("second pick %+v, want b unchanged", got)
	}
	if got := p.at(0, world{}); got.name != "" {
		t.Fatalf("pick with no path = %+v, want none", got)
	}
	// After a time with none, the next path is a first pick again.
	if got := p.at(time.Second, world{"c": up(20 * time.Millisecond)}); got != (pick{"c", status.CauseFirst, true}) {
		t.Fatalf("pick after none = %+v, want c (first)", got)
	}
}

func TestSelectorDeathMovesAtOnce(t *testing.T) {
	p := newPicker(t, selector("root", policy.Tuning{}, leaf("a", 0), leaf("b", 0)))
	p.at(0, world{"a": up(10 * time.Millisecond), "b": up(50 * time.Millisecond)})
	if got := p.at(time.Millisecond, world{"b": up(50 * time.Millisecond)}); got != (pick{"b", status.CauseDeath, true}) {
		t.Fatalf("pick after a died = %+v, want b (death)", got)
	}
	// a comes back better, but only as a quality move: it must wait for the dwell.
	w := world{"a": up(10 * time.Millisecond), "b": up(50 * time.Millisecond)}
	if got := p.at(2*time.Millisecond, w); got.name != "b" {
		t.Fatalf("pick when a came back = %+v, want b until the dwell passes", got)
	}
}

func TestSelectorHysteresisAndDwell(t *testing.T) {
	tun := policy.Tuning{Dwell: 3 * time.Second, Hysteresis: 0.25}
	p := newPicker(t, selector("root", tun, leaf("a", 0), leaf("b", 0)))
	p.at(0, world{"a": up(100 * time.Millisecond), "b": up(200 * time.Millisecond)})

	// b is better, but not by the margin (25% of 100ms): no move, however long.
	w := world{"a": up(100 * time.Millisecond), "b": up(80 * time.Millisecond)}
	for d := time.Duration(0); d <= 10*time.Second; d += 500 * time.Millisecond {
		if got := p.at(d, w); got.name != "a" {
			t.Fatalf("at %v: moved to %+v for a gain within the hysteresis", d, got)
		}
	}

	// b is clearly better: no move before Dwell, a move at Dwell.
	p.now = p.now.Add(20 * time.Second)
	w = world{"a": up(100 * time.Millisecond), "b": up(50 * time.Millisecond)}
	for d := time.Duration(0); d < tun.Dwell; d += 250 * time.Millisecond {
		if got := p.at(d, w); got.name != "a" {
			t.Fatalf("at %v: moved before the dwell (%v)", d, tun.Dwell)
		}
	}
	if got := p.at(tun.Dwell, w); got != (pick{"b", status.CauseQuality, true}) {
		t.Fatalf("at the dwell: %+v, want b (quality)", got)
	}
}

func TestSelectorDwellRestartsWhenInterrupted(t *testing.T) {
	tun := policy.Tuning{Dwell: time.Second}
	p := newPicker(t, selector("root", tun, leaf("a", 0), leaf("b", 0)))
	better := world{"a": up(100 * time.Millisecond), "b": up(40 * time.Millisecond)}
	same := world{"a": up(100 * time.Millisecond), "b": up(100 * time.Millisecond)}
	p.at(0, world{"a": up(100 * time.Millisecond)})
	p.at(100*time.Millisecond, better)
	p.at(800*time.Millisecond, same) // one look where b is not better
	if got := p.at(1200*time.Millisecond, better); got.name != "a" {
		t.Fatalf("moved at 1.2s though b stopped being better at 0.8s: %+v", got)
	}
	if got := p.at(2100*time.Millisecond, better); got.name != "a" {
		t.Fatalf("moved before a full dwell since 1.2s: %+v", got)
	}
	if got := p.at(2200*time.Millisecond, better); got != (pick{"b", status.CauseQuality, true}) {
		t.Fatalf("at a full dwell since 1.2s: %+v, want b (quality)", got)
	}
}

func TestSelectorMinimumMargin(t *testing.T) {
	// On a LAN, 25% of 2ms is noise: a move needs at least 1ms.
	p := newPicker(t, selector("root", policy.Tuning{Dwell: time.Millisecond}, leaf("a", 0), leaf("b", 0)))
	w := world{"a": up(2 * time.Millisecond), "b": up(1200 * time.Microsecond)}
	p.at(0, world{"a": up(2 * time.Millisecond)})
	for d := time.Duration(0); d < time.Second; d += 100 * time.Millisecond {
		if got := p.at(d, w); got.name != "a" {
			t.Fatalf("moved for a gain under 1ms: %+v", got)
		}
	}
}

func TestSelectorTiers(t *testing.T) {
	tun := policy.Tuning{RecoverDwell: 500 * time.Millisecond, Dwell: 100 * time.Millisecond}
	p := newPicker(t, selector("root", tun, leaf("primary", 0), leaf("backup", 1)))
	// The backup is much faster, but the primary is usable: it carries traffic, for good.
	both := world{"primary": up(200 * time.Millisecond), "backup": up(5 * time.Millisecond)}
	for d := time.Duration(0); d < 10*time.Second; d += 500 * time.Millisecond {
		if got := p.at(d, both); got.name != "primary" {
			t.Fatalf("at %v: %+v while the primary is usable", d, got)
		}
	}
	p.now = p.now.Add(10 * time.Second)
	if got := p.at(0, world{"backup": up(5 * time.Millisecond)}); got != (pick{"backup", status.CauseDeath, true}) {
		t.Fatalf("primary gone: %+v, want backup (death)", got)
	}
	// The primary is back: traffic returns after RecoverDwell, not before.
	if got := p.at(time.Second, both); got.name != "backup" {
		t.Fatalf("returned to the primary at once: %+v", got)
	}
	if got := p.at(time.Second+499*time.Millisecond, both); got.name != "backup" {
		t.Fatalf("returned before RecoverDwell: %+v", got)
	}
	if got := p.at(time.Second+500*time.Millisecond, both); got != (pick{"primary", status.CauseRecovery, true}) {
		t.Fatalf("after RecoverDwell: %+v, want primary (recovery)", got)
	}
}

func TestSelectorRecoverDwellRestarts(t *testing.T) {
	tun := policy.Tuning{RecoverDwell: 500 * time.Millisecond}
	p := newPicker(t, selector("root", tun, leaf("primary", 0), leaf("backup", 1)))
	both := world{"primary": up(20 * time.Millisecond), "backup": up(20 * time.Millisecond)}
	only := world{"backup": up(20 * time.Millisecond)}
	p.at(0, only)
	p.at(100*time.Millisecond, both)
	p.at(400*time.Millisecond, only) // the primary flaps down
	p.at(500*time.Millisecond, both) // and up again: the dwell starts over
	if got := p.at(700*time.Millisecond, both); got.name != "backup" {
		t.Fatalf("returned to a flapping primary: %+v", got)
	}
	if got := p.at(time.Second, both); got != (pick{"primary", status.CauseRecovery, true}) {
		t.Fatalf("after a full RecoverDwell: %+v, want primary (recovery)", got)
	}
}

func TestSelectorSuspect(t *testing.T) {
	p := newPicker(t, selector("root", policy.Tuning{}, leaf("a", 0), leaf("b", 0), leaf("backup", 1)))
	susp := func(rtt time.Duration) policy.Candidate {
		c := up(rtt)
		c.State = status.Suspect
		return c
	}
	p.at(0, world{"a": up(10 * time.Millisecond), "b": up(90 * time.Millisecond)})
	// a stalls while b is Up: move at once, whatever the scores.
	if got := p.at(time.Millisecond, world{"a": susp(10 * time.Millisecond), "b": up(90 * time.Millisecond)}); got != (pick{"b", status.CauseStall, true}) {
		t.Fatalf("a suspect: %+v, want b (stall)", got)
	}
	// Every primary suspect and the backup Up: the backup is the only usable path.
	if got := p.at(2*time.Millisecond, world{"a": susp(10 * time.Millisecond), "b": susp(90 * time.Millisecond), "backup": up(5 * time.Millisecond)}); got != (pick{"backup", status.CauseStall, true}) {
		t.Fatalf("all primaries suspect: %+v, want backup (stall)", got)
	}
	// Nothing Up at all: a suspect path is better than none.
	got := p.at(3*time.Millisecond, world{"a": susp(10 * time.Millisecond), "b": susp(90 * time.Millisecond)})
	if got.name != "a" {
		t.Fatalf("only suspects: %+v, want the best of them (a)", got)
	}
}

func TestSelectorNested(t *testing.T) {
	tun := policy.Tuning{Dwell: time.Second, RecoverDwell: 200 * time.Millisecond}
	wifi := selector("wifi", tun, leaf("wifi-tcp", 0), leaf("wifi-quic", 0))
	lte := selector("lte", tun, leaf("lte1", 0), leaf("lte2", 0))
	lte.Tier = 1
	root := selector("root", tun, wifi, lte)
	if got := len(root.Leaves()); got != 4 {
		t.Fatalf("Leaves() = %d, want 4", got)
	}
	for i, want := range []string{"wifi-tcp", "wifi-quic", "lte1", "lte2"} {
		if root.Leaves()[i].Name != want {
			t.Fatalf("Leaves()[%d] = %s, want %s", i, root.Leaves()[i].Name, want)
		}
	}
	p := newPicker(t, root)
	all := world{"wifi-tcp": up(30 * time.Millisecond), "wifi-quic": up(20 * time.Millisecond),
		"lte1": up(5 * time.Millisecond), "lte2": up(5 * time.Millisecond)}
	if got := p.at(0, all); got != (pick{"wifi-quic", status.CauseFirst, true}) {
		t.Fatalf("first pick %+v, want wifi-quic (best of the primary group)", got)
	}
	// A death inside the group moves within the group, and the change is reported.
	noQuic := world{"wifi-tcp": up(30 * time.Millisecond), "lte1": up(5 * time.Millisecond), "lte2": up(5 * time.Millisecond)}
	if got := p.at(time.Millisecond, noQuic); got != (pick{"wifi-tcp", status.CauseDeath, true}) {
		t.Fatalf("wifi-quic gone: %+v, want wifi-tcp (death)", got)
	}
	// The whole group is gone: the backup group takes over with its own current choice
	// (lte1, picked on a tie), which keeps its dwell although lte2 now looks better.
	lteOnly := world{"lte1": up(9 * time.Millisecond), "lte2": up(5 * time.Millisecond)}
	if got := p.at(2*time.Millisecond, lteOnly); got != (pick{"lte1", status.CauseDeath, true}) {
		t.Fatalf("wifi gone: %+v, want lte1 (death)", got)
	}
	lte1Only := world{"lte1": up(9 * time.Millisecond)}
	if got := p.at(3*time.Millisecond, lte1Only); got.name != "lte1" || got.changed {
		t.Fatalf("lte2 gone: %+v, want lte1 unchanged", got)
	}
	if got := p.at(4*time.Millisecond, world{"lte2": up(5 * time.Millisecond)}); got != (pick{"lte2", status.CauseDeath, true}) {
		t.Fatalf("lte1 gone: %+v, want lte2 (death, reported from the inner group)", got)
	}
	// Wifi returns: after RecoverDwell the primary group carries traffic again.
	if got := p.at(5*time.Millisecond, all); got.name != "lte2" {
		t.Fatalf("returned at once: %+v", got)
	}
	if got := p.at(205*time.Millisecond, all); got.name != "wifi-quic" || got.cause != status.CauseRecovery || !got.changed {
		t.Fatalf("after RecoverDwell: %+v, want wifi-quic (recovery)", got)
	}
	// Unchanged picks report no change.
	if got := p.at(206*time.Millisecond, all); got.changed {
		t.Fatalf("steady pick reported a change: %+v", got)
	}
}

func TestLeafPick(t *testing.T) {
	l := leaf("solo", 0)
	n, c, ok, _, _ := pickOf(l, time.Now(), world{"solo": up(time.Millisecond)}.look)
	if !ok || n != l || c.RTT != time.Millisecond {
		t.Fatalf("leaf Pick = %v %+v %v", n, c, ok)
	}
	if _, _, ok, _, _ := pickOf(l, time.Now(), world{}.look); ok {
		t.Fatal("leaf without a path is usable")
	}
}

// pickOf returns the first leaf of Choose's choice and its candidate: for a graph of
// Selectors, the one leaf that carries traffic.
func pickOf(n *policy.Node, now time.Time, look policy.Lookup) (leaf *policy.Node, c policy.Candidate, ok bool, cause status.Cause, changed bool) {
	ch, cause, changed := n.Choose(now, look)
	for ch != nil && ch.Kind != policy.KindPath {
		ch = ch.Kids[0]
	}
	if ch == nil {
		return nil, policy.Candidate{}, false, cause, changed
	}
	return ch.Leaf, ch.C, true, cause, changed
}

// TestSelectorUndoesSpuriousStall: traffic left a primary for a stall; when that stall proves
// spurious (Undo), traffic goes back at once, not after RecoverDwell; between paths of one
// tier, only if the one left is better by the margin. Without Undo, the dwells hold.
func TestSelectorUndoesSpuriousStall(t *testing.T) {
	suspect := func(rtt time.Duration) policy.Candidate {
		c := up(rtt)
		c.State = status.Suspect
		return c
	}
	undo := func(c policy.Candidate) policy.Candidate { c.Undo = true; return c }

	p := newPicker(t, selector("sel", policy.Tuning{RecoverDwell: time.Second}, leaf("primary", 0), leaf("backup", 1)))
	p.at(0, world{"primary": up(10 * time.Millisecond), "backup": up(10 * time.Millisecond)})
	if got := p.at(0, world{"primary": suspect(10 * time.Millisecond), "backup": up(10 * time.Millisecond)}); got != (pick{"backup", status.CauseStall, true}) {
		t.Fatalf("stall: %+v", got)
	}
	if got := p.at(0, world{"primary": undo(up(30 * time.Millisecond)), "backup": up(10 * time.Millisecond)}); got != (pick{"primary", status.CauseUndo, true}) {
		t.Fatalf("spurious stall of the primary: %+v, want back on it at once", got)
	}
	p.at(0, world{"primary": suspect(10 * time.Millisecond), "backup": up(10 * time.Millisecond)})
	if got := p.at(0, world{"primary": up(10 * time.Millisecond), "backup": up(10 * time.Millisecond)}); got.name != "backup" {
		t.Fatalf("a real stall's path back Up: %+v, want the backup until RecoverDwell", got)
	}

	q := newPicker(t, selector("sel", policy.Tuning{}, leaf("a", 0), leaf("b", 0)))
	q.at(0, world{"a": up(10 * time.Millisecond), "b": up(10 * time.Millisecond)})
	q.at(0, world{"a": suspect(10 * time.Millisecond), "b": up(10 * time.Millisecond)})
	if got := q.at(0, world{"a": undo(up(9 * time.Millisecond)), "b": up(10 * time.Millisecond)}); got.name != "b" {
		t.Fatalf("same tier, no better: %+v, want b kept", got)
	}
	q.at(0, world{"a": suspect(10 * time.Millisecond), "b": up(10 * time.Millisecond)})
	if got := q.at(0, world{"a": undo(up(2 * time.Millisecond)), "b": up(10 * time.Millisecond)}); got != (pick{"a", status.CauseUndo, true}) {
		t.Fatalf("same tier, clearly better: %+v, want back on a", got)
	}
}

// TestHeadStart: while a primary waits for its first carrier, a backup that is up is no
// candidate, in a Selector and in a Race or Bond, and through a nested group; a primary that
// stopped waiting (failed, or the head start ended) lets the backup in; children of the same
// tier never wait for each other.
func TestHeadStart(t *testing.T) {
	var tn policy.Tuning
	for _, tc := range []struct {
		name  string
		graph func() *policy.Node
		w     world
		want  []string // leaves chosen, nil for none
	}{
		{"selector holds", func() *policy.Node { return selector("s", tn, leaf("p", 0), leaf("b", 1)) },
			world{"p": waiting, "b": up(time.Millisecond)}, nil},
		{"selector after the wait", func() *policy.Node { return selector("s", tn, leaf("p", 0), leaf("b", 1)) },
			world{"b": up(time.Millisecond)}, []string{"b"}},
		{"primary up first", func() *policy.Node { return selector("s", tn, leaf("p", 0), leaf("b", 1)) },
			world{"p": up(50 * time.Millisecond), "b": up(time.Millisecond)}, []string{"p"}},
		{"same tier does not wait", func() *policy.Node { return selector("s", tn, leaf("p", 0), leaf("q", 0)) },
			world{"p": waiting, "q": up(time.Millisecond)}, []string{"q"}},
		{"bond holds its backup", func() *policy.Node {
			return group(policy.KindBond, "g", tn, leaf("p", 0), leaf("q", 0), leaf("b", 1))
		}, world{"p": waiting, "b": up(time.Millisecond)}, nil},
		{"bond starts on the primary up", func() *policy.Node {
			return group(policy.KindBond, "g", tn, leaf("p", 0), leaf("q", 0), leaf("b", 1))
		}, world{"p": waiting, "q": up(time.Millisecond), "b": up(time.Millisecond)}, []string{"q"}},
		{"nested primary group", func() *policy.Node {
			return selector("s", tn, group(policy.KindRace, "wifi", tn, leaf("p", 0), leaf("q", 0)), leaf("b", 1))
		}, world{"p": waiting, "b": up(time.Millisecond)}, nil},
		{"backup tier 2 waits for tier 1", func() *policy.Node {
			return selector("s", tn, leaf("p", 0), leaf("b1", 1), leaf("b2", 2))
		}, world{"b1": waiting, "b2": up(time.Millisecond)}, nil},
	} {
		n := tc.graph()
		n.Init()
		ch, _, _ := n.Choose(time.Unix(1000, 0), tc.w.look)
		var got []string
		for _, l := range ch.Leaves(nil) {
			got = append(got, l.Name)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: chose %v, want %v", tc.name, got, tc.want)
		}
	}
}
