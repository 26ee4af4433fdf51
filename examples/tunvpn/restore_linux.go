package main

// Putting back what someone else deleted: the client's rules, and the tunnel's routes while its
// TUN is up (watch_linux.go looks for them after every burst of changes).

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// restoreRules adds back any of the client's rules that is missing, and reports whether it
// could check them all.
func (w *watcher) restoreRules() bool {
	finished := true
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		var ours []*netlink.Rule
		for _, r := range w.setup.rules {
			if r.Family == fam {
				ours = append(ours, r)
			}
		}
		if len(ours) == 0 {
			continue
		}
		have, err := netlink.RuleList(fam)
		if err != nil {
			finished = false // an interrupted dump too: a rule missing from it may be there
			continue
		}
		for _, r := range ours {
			if slices.ContainsFunc(have, func(h netlink.Rule) bool { return sameRule(&h, r) }) {
				continue
			}
			if !w.putBack("rule "+ruleText(r), func() error { return netlink.RuleAdd(r) }) {
				finished = false
			}
		}
	}
	return finished
}

// sameRule reports whether h, as the kernel lists it, is r, as the client adds it.
func sameRule(h, r *netlink.Rule) bool {
	if h.Priority != r.Priority || h.Table != r.Table || h.Invert != r.Invert || h.Mark != r.Mark ||
		h.SuppressPrefixlen != r.SuppressPrefixlen {
		return false
	}
	if r.Mark != 0 {
		// The kernel lists the mask with every mark; none given is all ones.
		mask := func(m *uint32) uint32 {
			if m == nil {
				return 0xffffffff
			}
			return *m
		}
		if mask(h.Mask) != mask(r.Mask) {
			return false
		}
	}
	return h.Src == nil && h.Dst == nil && h.IifName == "" && h.OifName == ""
}

// ruleText says r as ip rule would.
func ruleText(r *netlink.Rule) string {
	var b strings.Builder
	if r.Family == unix.AF_INET6 {
		b.WriteString("-6 ")
	}
	fmt.Fprintf(&b, "%d: ", r.Priority)
	if r.Invert {
		b.WriteString("not ")
	}
	b.WriteString("from all ")
	if r.Mark != 0 {
		fmt.Fprintf(&b, "fwmark %#x ", r.Mark)
	}
	fmt.Fprintf(&b, "lookup %d", r.Table)
	if r.SuppressPrefixlen >= 0 {
		fmt.Fprintf(&b, " suppress_prefixlength %d", r.SuppressPrefixlen)
	}
	return b.String()
}

// restoreRoutes adds back any of the tunnel's routes that is missing while the TUN is up, and
// reports whether it could check them all. A TUN that is down has no routes (the kernel
// removes them, and refuses new ones); they are put back when it comes up.
func (w *watcher) restoreRoutes() bool {
	link, err := netlink.LinkByIndex(w.setup.tun)
	if err != nil {
		if _, gone := err.(netlink.LinkNotFoundError); gone {
			return true // the TUN is gone, and its routes with it: nothing to put them on
		}
		return false
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return true
	}
	finished := true
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		var ours []*netlink.Route
		for _, r := range w.setup.routes {
			if (r.Dst.IP.To4() != nil) == (fam == unix.AF_INET) {
				ours = append(ours, r)
			}
		}
		if len(ours) == 0 {
			continue
		}
		have, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: w.c.Table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			finished = false
			continue
		}
		for _, r := range ours {
			// The blocking route (unreachable) has no device of ours: the kernel shows lo.
			if slices.ContainsFunc(have, func(h netlink.Route) bool {
				unreachable := r.Type == unix.RTN_UNREACHABLE
				return (h.LinkIndex == r.LinkIndex || unreachable) && (h.Type == unix.RTN_UNREACHABLE) == unreachable &&
					h.Dst != nil && h.Dst.String() == r.Dst.String()
			}) {
				continue
			}
			what := fmt.Sprintf("route %v dev %s table %d", r.Dst, w.c.TUN, w.c.Table)
			if r.Type == unix.RTN_UNREACHABLE {
				what = fmt.Sprintf("route unreachable %v table %d", r.Dst, w.c.Table)
			}
			if !w.putBack(what, func() error { return netlink.RouteAdd(r) }) {
				finished = false
			}
		}
	}
	return finished
}

// putBack adds back what someone else deleted, with add, and warns that it did; it reports
// whether it could (what is there again, by this add or another's).
func (w *watcher) putBack(what string, add func() error) bool {
	if err := add(); err != nil && !errors.Is(err, unix.EEXIST) {
		w.failed(what, err)
		return false
	}
	delete(w.failing, what)
	w.log.Warn(fmt.Sprintf("tunvpn: %s deleted by someone else; put back", what))
	return true
}

// failed warns that putting what back failed, once until it succeeds: the watcher retries
// every retryTime, and a kernel that keeps refusing should not fill the log.
func (w *watcher) failed(what string, err error) {
	if !w.failing[what] {
		w.failing[what] = true
		w.log.Warn(fmt.Sprintf("tunvpn: %s was deleted by someone else; putting it back failed", what), "err", err)
	}
}
