// Control: changing a running Dialer's graph (Add, Remove, SetTier, Select) and rebuilding its
// session's policy from it.

package rendr

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rendr-go/rendr/policy"
	"github.com/rendr-go/rendr/status"
)

// Runtime control of a Dialer's target graph. Each change applies to the running session at
// once and to every later one: the session's policy graph is rebuilt from the new targets and
// evaluated afresh (Selectors pick their best child again, dwell times restart), paths that
// were added start dialing, and paths that were removed are closed once traffic has moved
// off them. Flows carry on throughout: a change is a migration like any other, with every
// unacknowledged byte resent on the paths that remain.

// errRemoved is the cause of a path closed because its target left the graph.
var errRemoved = errors.New("rendr: path removed from the target graph")

// Add adds t (a Path or a group) as the last child of the group named parent. Names must stay
// unique across the graph.
func (d *Dialer) Add(parent string, t *Target) error {
	if t == nil {
		return errors.New("rendr: Add: nil target")
	}
	return d.change(func(root *Target) error {
		p := root.find(parent)
		if p == nil {
			return fmt.Errorf("rendr: Add: no target named %q", parent)
		}
		if p.kind == kindPath {
			return fmt.Errorf("rendr: Add: %q is a path, not a group", parent)
		}
		p.children = append(p.children, t.clone())
		return nil
	})
}

// Remove removes the target with that name (a path, or a group and everything under it). The
// root cannot be removed, nor the last child of a group.
func (d *Dialer) Remove(name string) error {
	return d.change(func(root *Target) error {
		if root.name == name {
			return fmt.Errorf("rendr: Remove: %q is the root", name)
		}
		_, p := root.locate(name)
		if p == nil {
			return fmt.Errorf("rendr: Remove: no target named %q", name)
		}
		if len(p.children) == 1 {
			return fmt.Errorf("rendr: Remove: %q is the last child of %q", name, p.name)
		}
		p.children = slices.DeleteFunc(p.children, func(c *Target) bool { return c.name == name })
		return nil
	})
}

// SetTier sets the priority tier of the target with that name within its group: 0 is primary,
// 1 is Backup; a higher tier carries traffic only while no lower one is usable.
func (d *Dialer) SetTier(name string, tier int) error {
	return d.change(func(root *Target) error {
		t := root.find(name)
		if t == nil {
			return fmt.Errorf("rendr: SetTier: no target named %q", name)
		}
		t.tier = tier // checked with the graph
		return nil
	})
}

// Select makes the target with that name, and only it, carry traffic: a path, or a group with
// its own policy. The other paths stay connected and probed, ready for the next Select. An
// empty name returns traffic to the whole graph.
func (d *Dialer) Select(name string) error {
	d.ctl.Lock() // one change at a time, applied to the session in the order made
	defer d.ctl.Unlock()
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return errDialerClosed
	}
	if name != "" && d.mu.root.find(name) == nil {
		d.mu.Unlock()
		return fmt.Errorf("rendr: Select: no target named %q", name)
	}
	d.applyLocked(d.mu.root, name)
	return nil
}

// change applies edit to a copy of the graph, checks the result and, if it is valid, makes it
// the Dialer's graph and the running session's.
func (d *Dialer) change(edit func(root *Target) error) error {
	d.ctl.Lock() // one change at a time, applied to the session in the order made
	defer d.ctl.Unlock()
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return errDialerClosed
	}
	next := d.mu.root.clone()
	if err := edit(next); err != nil {
		d.mu.Unlock()
		return err
	}
	if err := checkGraph(next); err != nil {
		d.mu.Unlock()
		return err
	}
	sel := d.mu.selected
	if sel != "" && next.find(sel) == nil {
		sel = "" // the selected target was removed: back to the whole graph
	}
	d.applyLocked(next, sel)
	return nil
}

// applyLocked makes root and selected the Dialer's, lets d.mu go, and rebuilds the running
// session's graph from them. The caller holds d.ctl, so changes reach the session in order.
func (d *Dialer) applyLocked(root *Target, selected string) {
	d.mu.root, d.mu.selected = root, selected
	s := d.mu.s
	d.mu.Unlock()
	if s != nil {
		s.reconfigure(d, root, selected)
	}
}

// reconfigure rebuilds the session's policy graph from root. Paths are matched to the new
// graph by name (unique in a graph), so one that stays keeps its carrier, state and counters.
func (s *session) reconfigure(d *Dialer, root *Target, selected string) {
	targets := map[*policy.Node]*Target{}
	full := root.node(d.c.tuning, targets)
	full.Init()
	eff := full
	if selected != "" {
		if n := full.Find(selected); n != nil {
			eff = n
		}
	}
	s.mu.Lock()
	if s.mu.err != nil {
		s.mu.Unlock()
		return
	}
	leaves := make(map[*policy.Node]*leafState, len(targets))
	keep := make(map[string]bool, len(targets))
	var start, gone []*leafState
	for n, t := range targets {
		ls := s.mu.targets[t.name]
		if ls == nil {
			ls = &leafState{state: status.Connecting, since: time.Now(), stop: make(chan struct{}), kick: make(chan struct{}, 1)}
			s.mu.targets[t.name] = ls
			start = append(start, ls)
		}
		ls.target, ls.node = t, n
		leaves[n] = ls
		keep[t.name] = true
	}
	for name, ls := range s.mu.targets {
		if !keep[name] {
			delete(s.mu.targets, name)
			ls.removed = true
			gone = append(gone, ls)
		}
	}
	s.mu.leaves, s.mu.full = leaves, full
	s.router.SetGraphLocked(eff, true) // the next route change is the user's doing
	for _, ls := range leaves {
		if ls.link != nil {
			ls.link.tier = ls.target.tier // SetTier shows in the status at once
		}
	}
	// Counted before the lock is let go: a Close from now on waits for these goroutines.
	s.wg.Add(len(start))
	s.mu.Unlock()
	s.engine.Kick()
	// The route no longer holds removed paths once the engine asks again: let it, then close
	// them (anything they still carried is resent from the acknowledged offset).
	for _, ls := range gone {
		close(ls.stop)
		s.mu.Lock()
		l := ls.link
		s.mu.Unlock()
		if l != nil {
			l.p.Close(errRemoved)
		}
	}
	for _, ls := range start {
		go d.routineLeaf(s, ls)
	}
}

// errRedial is the cause of a carrier closed by Dialer.Redial.
var errRedial = errors.New("rendr: path redialed")

// Redial closes the carrier of the path with that name, if it has one, and has the path dial
// again at once, without the wait between attempts that follows a failure: for an embedder
// who knows the network under a path changed (its interface got a new address, or its link
// came back) before the path's silence would show it. Flows carry on: the carrier's
// unacknowledged bytes are resent, as after any carrier's death.
func (d *Dialer) Redial(name string) error {
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return errDialerClosed
	}
	t, s := d.mu.root.find(name), d.mu.s
	d.mu.Unlock()
	switch {
	case t == nil:
		return fmt.Errorf("rendr: Redial: no target named %q", name)
	case t.kind != kindPath:
		return fmt.Errorf("rendr: Redial: %q is a group, not a path", name)
	case s == nil:
		return nil // no session yet: the first one dials every path at once
	}
	s.mu.Lock()
	ls := s.mu.targets[name]
	var l *link
	if ls != nil {
		l = ls.link
		select {
		case ls.kick <- struct{}{}:
		default: // a kick is pending already
		}
	}
	s.mu.Unlock()
	if l != nil {
		l.p.Close(errRedial)
	}
	return nil
}

// find returns the target named name in t's graph, or nil.
func (t *Target) find(name string) *Target {
	f, _ := t.locate(name)
	return f
}

// locate returns the target named name in t's graph and the group whose child it is (nil
// when it is t itself), or two nils: one walk for find and for Remove, which needs both.
func (t *Target) locate(name string) (found, parent *Target) {
	if t.name == name {
		return t, nil
	}
	for _, c := range t.children {
		if f, p := c.locate(name); f != nil {
			if p == nil {
				p = t
			}
			return f, p
		}
	}
	return nil, nil
}

// clone copies t's whole graph: every node is new.
func (t *Target) clone() *Target {
	c := *t
	c.children = nil
	for _, k := range t.children {
		c.children = append(c.children, k.clone())
	}
	return &c
}
