package policy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/rendr-go/rendr/policy"
	"github.com/rendr-go/rendr/status"
)

func group(kind policy.Kind, name string, tuning policy.Tuning, children ...*policy.Node) *policy.Node {
	n := &policy.Node{Kind: kind, Name: name, Children: children, Tuning: tuning}
	n.Init()
	return n
}

// shape renders a choice: a leaf's name, or race(...) / bond(...) of its kids.
func shape(c *policy.Choice) string {
	if c == nil {
		return "-"
	}
	switch c.Kind {
	case policy.KindPath:
		return c.Leaf.Name
	case policy.KindRace, policy.KindBond:
		var kids []string
		for _, k := range c.Kids {
			kids = append(kids, shape(k))
		}
		name := "race"
		if c.Kind == policy.KindBond {
			name = "bond"
		}
		return name + "(" + strings.Join(kids, ",") + ")"
	}
	return "?"
}

type chosen struct {
	shape   string
	cause   status.Cause
	changed bool
}

func choose(n *policy.Node, at time.Time, w world) chosen {
	c, cause, changed := n.Choose(at, w.look)
	return chosen{shape(c), cause, changed}
}

func suspect(rtt time.Duration) policy.Candidate {
	return policy.Candidate{State: status.Suspect, RTT: rtt, Samples: 5}
}

func TestGroupMembers(t *testing.T) {
	for _, kind := range []policy.Kind{policy.KindRace, policy.KindBond} {
		name := map[policy.Kind]string{policy.KindRace: "race", policy.KindBond: "bond"}[kind]
		t.Run(name, func(t *testing.T) {
			g := group(kind, "g", policy.Tuning{}, leaf("a", 0), leaf("b", 0), leaf("c", 0))
			t0 := time.Unix(1000, 0)
			all := world{"a": up(10 * time.Millisecond), "b": up(50 * time.Millisecond), "c": up(time.Millisecond)}
			steps := []struct {
				w    world
				want chosen
			}{
				{all, chosen{name + "(a,b,c)", status.CauseFirst, true}},
				{all, chosen{name + "(a,b,c)", 0, false}},
				// b dies: the others go on; the change says why.
				{world{"a": all["a"], "c": all["c"]}, chosen{name + "(a,c)", status.CauseDeath, true}},
				// b is back: it joins.
				{all, chosen{name + "(a,b,c)", status.CauseJoin, true}},
				// c stalls while others are Up: it is left out.
				{world{"a": all["a"], "b": all["b"], "c": suspect(time.Millisecond)}, chosen{name + "(a,b)", status.CauseStall, true}},
				// Only c is left, and Suspect: better than nothing, and a group of one is its child.
				{world{"c": suspect(time.Millisecond)}, chosen{"c", status.CauseDeath, true}},
				{world{}, chosen{"-", status.CauseDeath, true}},
				{world{"a": all["a"]}, chosen{"a", status.CauseFirst, true}},
			}
			for i, st := range steps {
				if got := choose(g, t0.Add(time.Duration(i)*time.Millisecond), st.w); got != st.want {
					t.Fatalf("step %d: %+v, want %+v", i, got, st.want)
				}
			}
		})
	}
}

// TestGroupTiers: a backup child joins a Bond only while no primary is usable, and the primary
// takes over again once it has been usable for RecoverDwell.
func TestGroupTiers(t *testing.T) {
	g := group(policy.KindBond, "g", policy.Tuning{RecoverDwell: 500 * time.Millisecond},
		leaf("wifi", 0), leaf("eth", 0), leaf("lte", 1), leaf("sat", 1))
	t0 := time.Unix(1000, 0)
	all := world{"wifi": up(time.Millisecond), "eth": up(time.Millisecond), "lte": up(time.Millisecond), "sat": up(time.Millisecond)}
	backups := world{"lte": up(time.Millisecond), "sat": up(time.Millisecond)}
	wifiBack := world{"wifi": up(time.Millisecond), "lte": up(time.Millisecond), "sat": up(time.Millisecond)}
	steps := []struct {
		at   time.Duration
		w    world
		want chosen
	}{
		{0, all, chosen{"bond(wifi,eth)", status.CauseFirst, true}},
		{time.Millisecond, backups, chosen{"bond(lte,sat)", status.CauseDeath, true}},
		{2 * time.Millisecond, wifiBack, chosen{"bond(lte,sat)", 0, false}},
		{400 * time.Millisecond, wifiBack, chosen{"bond(lte,sat)", 0, false}},
		{502 * time.Millisecond, wifiBack, chosen{"wifi", status.CauseRecovery, true}},
		// The backups do not come back while a primary is usable.
		{503 * time.Millisecond, wifiBack, chosen{"wifi", 0, false}},
	}
	for i, st := range steps {
		if got := choose(g, t0.Add(st.at), st.w); got != st.want {
			t.Fatalf("step %d: %+v, want %+v", i, got, st.want)
		}
	}
}

// TestGroupNested: Race(Selector(a, b), Bond(c, d)) with kills in every branch.
func TestGroupNested(t *testing.T) {
	tun := policy.Tuning{Dwell: time.Second}
	root := group(policy.KindRace, "root", tun,
		selector("sel", tun, leaf("a", 0), leaf("b", 0)),
		group(policy.KindBond, "bond", tun, leaf("c", 0), leaf("d", 0)))
	t0 := time.Unix(1000, 0)
	all := world{"a": up(10 * time.Millisecond), "b": up(20 * time.Millisecond), "c": up(5 * time.Millisecond), "d": up(7 * time.Millisecond)}
	without := func(names ...string) world {
		w := world{}
		for k, v := range all {
			w[k] = v
		}
		for _, n := range names {
			delete(w, n)
		}
		return w
	}
	steps := []struct {
		w    world
		want chosen
	}{
		{all, chosen{"race(a,bond(c,d))", status.CauseFirst, true}},
		{without("a"), chosen{"race(b,bond(c,d))", status.CauseDeath, true}},
		{without("a", "c"), chosen{"race(b,d)", status.CauseDeath, true}},
		{without("a", "c", "d"), chosen{"b", status.CauseDeath, true}},
		{without("a", "b", "c", "d"), chosen{"-", status.CauseDeath, true}},
		{without("b", "d"), chosen{"race(a,c)", status.CauseFirst, true}},
		{all, chosen{"race(a,bond(c,d))", status.CauseJoin, true}},
	}
	for i, st := range steps {
		got := choose(root, t0.Add(time.Duration(i)*time.Millisecond), st.w)
		if got.shape != st.want.shape || got.changed != st.want.changed {
			t.Fatalf("step %d: %+v, want %+v", i, got, st.want)
		}
		if i < 4 && got.cause != st.want.cause {
			t.Fatalf("step %d: cause %v, want %v", i, got.cause, st.want.cause)
		}
	}
	// The candidate of a group is its best child's, so a Selector over groups can score them.
	c, _, _ := root.Choose(t0.Add(time.Second), all.look)
	if c.C.RTT != 5*time.Millisecond || c.C.State != status.Up {
		t.Fatalf("group candidate %+v, want the best child's (5ms, Up)", c.C)
	}
	if got := len(c.Leaves(nil)); got != 3 {
		t.Fatalf("Leaves of race(a,bond(c,d)) = %d, want 3", got)
	}
}
