package main

// Following the host's network. The client listens to rtnetlink for changes to links,
// addresses, rules and routes, and after each burst of them looks again at what matters to it:
//
//   - An uplink whose interface is gone (deleted, renamed away) or down, or whose source
//     address is gone, cannot carry anything: its path is removed from the Dialer's graph
//     (Dialer.Remove), so its flows move to the other uplinks at once rather than when the
//     engine finds the path silent. When it is usable again its path is added back
//     (Dialer.Add), with the same dial function and tier, and dials at once.
//   - An uplink whose carrier lost its local address (a DHCP renewal that gave another, an
//     address removed and put back, an interface re-created under the same name) has a
//     carrier that cannot work, or may not: that carrier is closed, and the engine re-dials
//     the path, as after any carrier's death, with whatever address the interface has now.
//   - The client's own rules, and its routes while the TUN is up, are put back if someone
//     else deletes them.
//
// Notifications only say that something changed: each look lists the state afresh (level,
// not edge, triggered), so notifications lost to an overflowing socket cost nothing but a
// full look. Only deleted addresses are taken from the notifications themselves: an address
// removed and put back between two looks leaves no other trace.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/status"
)

// uplinksGroup is the name of the graph's root, the group of every uplink's path.
const uplinksGroup = "uplinks"

const (
	// settleTime is how long the watcher lets a burst of notifications gather before it looks:
	// a link going down and up, or an address replaced, is several messages.
	settleTime = 200 * time.Millisecond
	// retryTime is when it looks again after a look that could not finish (a dump interrupted
	// by a concurrent change, a rule the kernel refused), or resubscribes after the socket
	// failed.
	retryTime = time.Second
)

// watchBuffer is the notification socket's receive buffer: large enough that only a storm (a
// thousand routes replaced at once) overflows it, and then a full look follows. A variable
// only so that a test can make overflows certain.
var watchBuffer = 1 << 20

// carrierSlot holds an uplink's most recent carrier, so the watcher can close it: a path has
// one carrier at a time, and the most recent dial is the one in use (or dead already, when
// closing it again does nothing). It holds the carrier itself, unwrapped, so rendr still sees a
// *net.TCPConn and writes its batches with one writev.
type carrierSlot struct {
	mu     sync.Mutex
	conn   net.Conn
	local  netip.Addr // its own address
	dialed time.Time
}

func (s *carrierSlot) set(c net.Conn) {
	// A UDP carrier's socket may have no address of its own (bound to a device only): the
	// kernel then picks the source of each datagram, and there is nothing to go stale.
	var local netip.Addr
	if a, err := netip.ParseAddrPort(c.LocalAddr().String()); err == nil && !a.Addr().IsUnspecified() {
		local = a.Addr().Unmap()
	}
	s.mu.Lock()
	s.conn, s.local, s.dialed = c, local, time.Now()
	s.mu.Unlock()
}

// get returns the most recent carrier, its address and when it was dialed.
func (s *carrierSlot) get() (c net.Conn, local netip.Addr, dialed time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn, s.local, s.dialed
}

// watchedUplink is an uplink and what the watcher last saw of it.
type watchedUplink struct {
	u       uplink
	path    *rendr.Target // what Add puts back: the same dial function and tier
	carrier *carrierSlot
	family  int // the server's address family: only addresses of it matter

	inGraph bool     // its path is in the Dialer's graph
	why     string   // why it cannot work, "" while it can
	stuck   bool     // it cannot work, but it is the last uplink in the graph, so its path stays
	seen    bool     // ifindex is from a look
	ifindex int      // its interface's index, 0 without one (or while it is gone)
	closed  net.Conn // the carrier last closed (by the watcher, or by Remove): left alone
	addrs   string   // its usable addresses at the last look, listed
	// gone are the deletions of its carrier's address, and deleted the last of its interface
	// (by ifindex), since its last look that finished: a look that fails must not make the
	// next one forget them.
	gone    []addrGone
	deleted time.Time
}

// news is what a batch of notifications said. The uplinks are looked at after any.
type news struct {
	rules, routes bool
	all           bool       // look at everything
	lost          bool       // notifications were lost (the socket overflowed)
	failed        bool       // the socket failed: subscribe again
	gone          []addrGone // addresses deleted
	deleted       []linkGone // interfaces deleted
}

type addrGone struct {
	ifindex int
	addr    netip.Addr
	at      time.Time // when the watcher heard of it: a carrier dialed later is not touched
}

type linkGone struct {
	ifindex int
	at      time.Time
}

func (n *news) merge(o news) {
	n.rules = n.rules || o.rules
	n.routes = n.routes || o.routes
	n.all = n.all || o.all
	n.lost = n.lost || o.lost
	n.gone = append(n.gone, o.gone...)
	n.deleted = append(n.deleted, o.deleted...)
}

// watcher follows the uplinks, rules and routes of a running client.
type watcher struct {
	c     *clientConfig
	d     *rendr.Dialer
	setup *netSetup
	log   *slog.Logger
	ups   []*watchedUplink

	mu   sync.Mutex // guards outs, which the status reads
	outs []uplinkOut

	failing map[string]bool // restores that failed, warned of once until they succeed
	cancel  context.CancelFunc
	done    chan struct{}
}

// groups are the rtnetlink multicast groups the watcher listens to.
var groups = []uint{unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR,
	unix.RTNLGRP_IPV4_RULE, unix.RTNLGRP_IPV6_RULE, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE}

func subscribe() (*nl.NetlinkSocket, error) {
	s, err := nl.Subscribe(unix.NETLINK_ROUTE, groups...)
	if err != nil {
		return nil, fmt.Errorf("netlink notifications: %w", err)
	}
	// Best effort: a smaller buffer only makes a full look after an overflow likelier. The
	// client is root (CAP_NET_ADMIN), which may go beyond net.core.rmem_max.
	if s.SetReceiveBufferSize(watchBuffer, true) != nil {
		s.SetReceiveBufferSize(watchBuffer, false)
	}
	return s, nil
}

// startWatch subscribes, takes a first look (so an uplink whose interface is missing at start
// is out before the Dialer dials it), and follows changes until stop. paths and carriers are
// the uplinks' paths as in the Dialer's graph, and their carriers, in c.Uplinks' order.
func startWatch(c *clientConfig, d *rendr.Dialer, setup *netSetup, paths []*rendr.Target, carriers []*carrierSlot, log *slog.Logger) (*watcher, error) {
	w := &watcher{c: c, d: d, setup: setup, log: log, failing: map[string]bool{}, done: make(chan struct{})}
	for i, u := range c.Uplinks {
		fam := unix.AF_INET
		if !u.addr.Addr().Unmap().Is4() {
			fam = unix.AF_INET6
		}
		w.ups = append(w.ups, &watchedUplink{u: u, path: paths[i], carrier: carriers[i], family: fam, inGraph: true})
	}
	// Subscribed before the first look, so nothing that changes after it goes unnoticed.
	s, err := subscribe()
	if err != nil {
		return nil, err
	}
	w.syncUplinks(nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go w.run(ctx, s)
	return w, nil
}

// stop ends the watcher and waits for it: once stop returns, it changes nothing more, so the
// rules teardown deletes stay deleted.
func (w *watcher) stop() {
	w.cancel()
	<-w.done
}

// out lists the uplinks out of use.
func (w *watcher) out() []uplinkOut {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.outs)
}

// run gathers notifications into bursts and looks after each, until ctx ends.
func (w *watcher) run(ctx context.Context, s *nl.NetlinkSocket) {
	defer close(w.done)
	evs := make(chan news, 16)
	var reader sync.WaitGroup
	listen := func(s *nl.NetlinkSocket) {
		reader.Add(1)
		go func() {
			defer reader.Done()
			w.read(ctx, s, evs)
		}()
	}
	listen(s)
	var pending news
	look := time.NewTimer(time.Hour)
	look.Stop()
	armed := false
	arm := func(d time.Duration) {
		if !armed {
			look.Reset(d)
			armed = true
		}
	}
	var resub <-chan time.Time // set while the socket is to be made again
	defer func() {
		look.Stop()
		if s != nil {
			s.Close() // ends the reader's Receive
		}
		reader.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-evs:
			if n.failed {
				// The reader has returned: make a new socket, and look at everything, since
				// what changed meanwhile went unheard.
				s.Close()
				s = nil
				reader.Wait()
				resub = time.After(0)
			}
			pending.merge(n)
			arm(settleTime)
		case <-resub:
			resub = nil
			ns, err := subscribe()
			if err != nil {
				w.log.Warn("tunvpn: following the uplinks: subscribing again", "err", err)
				resub = time.After(retryTime)
				continue
			}
			s = ns
			listen(s)
			pending.all = true
			arm(settleTime)
		case <-look.C:
			armed = false
			n := pending
			pending = news{}
			if n.lost {
				// Once per look, however many overflows a storm made.
				w.log.Info("tunvpn: netlink notifications were lost (the socket overflowed); looking at everything again")
			}
			if !w.sync(n) {
				pending.all = true
				arm(retryTime)
			}
		}
	}
}

// read turns the socket's messages into news until the socket fails or ctx ends. An overflow
// (ENOBUFS: the kernel dropped notifications) asks for a full look; the socket stays usable.
func (w *watcher) read(ctx context.Context, s *nl.NetlinkSocket, evs chan<- news) {
	send := func(n news) bool {
		select {
		case evs <- n:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		msgs, from, err := s.Receive()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, unix.ENOBUFS) {
			if !send(news{all: true, lost: true}) {
				return
			}
			continue
		}
		if err != nil {
			w.log.Warn("tunvpn: following the uplinks: netlink notifications failed; subscribing again", "err", err)
			send(news{failed: true})
			return
		}
		if from.Pid != nl.PidKernel {
			continue // only the kernel's word counts
		}
		if n, some := w.parse(msgs); some && !send(n) {
			return
		}
	}
}

// parse says what msgs change for the watcher, and whether anything.
func (w *watcher) parse(msgs []syscall.NetlinkMessage) (n news, some bool) {
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.RTM_NEWLINK, unix.RTM_DELLINK:
			if len(m.Data) < unix.SizeofIfInfomsg {
				continue
			}
			index := int(nl.DeserializeIfInfomsg(m.Data).Index)
			if m.Header.Type == unix.RTM_DELLINK {
				n.deleted = append(n.deleted, linkGone{ifindex: index, at: time.Now()})
			}
			// The TUN going down drops its IPv4 routes without a word: look at them when it
			// comes back up.
			if index == w.setup.tun {
				n.routes = true
			}
		case unix.RTM_NEWADDR:
		case unix.RTM_DELADDR:
			if g, ok := parseAddrGone(m.Data); ok {
				n.gone = append(n.gone, g)
			}
		case unix.RTM_DELRULE:
			n.rules = true
		case unix.RTM_DELROUTE:
			// Only the tunnel's table: other routes come and go all the time on a busy host,
			// and listing the routes is a dump of every table.
			if routeTable(m.Data) == w.c.Table {
				n.routes = true
			}
		default:
			continue
		}
		some = true
	}
	return n, some
}

// parseAddrGone reads an RTM_DELADDR's interface and address.
func parseAddrGone(b []byte) (addrGone, bool) {
	if len(b) < unix.SizeofIfAddrmsg {
		return addrGone{}, false
	}
	msg := nl.DeserializeIfAddrmsg(b)
	attrs, err := nl.ParseRouteAttr(b[unix.SizeofIfAddrmsg:])
	if err != nil {
		return addrGone{}, false
	}
	var local, address netip.Addr
	for _, a := range attrs {
		ip, ok := netip.AddrFromSlice(a.Value)
		if !ok {
			continue
		}
		switch a.Attr.Type {
		case unix.IFA_LOCAL:
			local = ip.Unmap()
		case unix.IFA_ADDRESS:
			address = ip.Unmap()
		}
	}
	// IFA_LOCAL is the host's own address; on a point-to-point link IFA_ADDRESS is the
	// peer's. IPv6 sends IFA_ADDRESS alone.
	if !local.IsValid() {
		local = address
	}
	return addrGone{ifindex: int(msg.Index), addr: local, at: time.Now()}, local.IsValid()
}

// routeTable is the table of an RTM_*ROUTE message: above 255 it is only in RTA_TABLE.
func routeTable(b []byte) int {
	if len(b) < unix.SizeofRtMsg {
		return -1
	}
	msg := nl.DeserializeRtMsg(b)
	table := int(msg.Table)
	if attrs, err := nl.ParseRouteAttr(b[msg.Len():]); err == nil {
		for _, a := range attrs {
			if a.Attr.Type == unix.RTA_TABLE && len(a.Value) >= 4 {
				table = int(nl.NativeEndian().Uint32(a.Value))
			}
		}
	}
	return table
}

// sync looks at what n says changed, and reports whether every look finished.
func (w *watcher) sync(n news) bool {
	ok := w.syncUplinks(n.gone, n.deleted)
	if n.all || n.rules {
		ok = w.restoreRules() && ok
	}
	if n.all || n.routes {
		ok = w.restoreRoutes() && ok
	}
	return ok
}

// look is what the host shows of one uplink now.
type look struct {
	why     string // why it cannot work, "" if it can
	ifindex int
	addrs   map[netip.Addr]bool // usable addresses of the server's family on its interface (the host's, without one)
}

func (w *watcher) look(u *watchedUplink) (look, error) {
	l := look{addrs: map[netip.Addr]bool{}}
	var link netlink.Link
	if u.u.Interface != "" {
		var err error
		link, err = netlink.LinkByName(u.u.Interface)
		if err != nil {
			if _, gone := err.(netlink.LinkNotFoundError); gone {
				l.why = fmt.Sprintf("interface %s is gone", u.u.Interface)
				return l, nil
			}
			return l, err
		}
		a := link.Attrs()
		l.ifindex = a.Index
		// IFF_RUNNING is the kernel's word that the link can carry (its operational state is up,
		// or unknown for devices that do not say): a Wi-Fi that lost its network, a cable
		// pulled.
		if a.Flags&net.FlagUp == 0 || a.RawFlags&unix.IFF_RUNNING == 0 {
			l.why = fmt.Sprintf("interface %s is down", u.u.Interface)
		}
	}
	addrs, err := netlink.AddrList(link, u.family)
	if err != nil {
		return l, err // ErrDumpInterrupted too: an incomplete list would misjudge
	}
	for _, a := range addrs {
		// A tentative IPv6 address (duplicate address detection still running) cannot be bound
		// yet; link-local ones do not reach a server.
		if a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 || a.Scope >= unix.RT_SCOPE_LINK {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			l.addrs[ip.Unmap()] = true
		}
	}
	if src := u.u.Source.Unmap(); l.why == "" && src.IsValid() && !l.addrs[src] {
		if u.u.Interface != "" {
			l.why = fmt.Sprintf("address %v is not on %s", src, u.u.Interface)
		} else {
			l.why = fmt.Sprintf("address %v is gone", src)
		}
	}
	return l, nil
}

// syncUplinks looks at every uplink and brings the Dialer's graph in line: paths of uplinks
// that work are in it, the others out (but for the last one, which a group cannot lose), and
// a carrier whose address went is closed. gone are the addresses deleted since the last look.
// It reports whether every look finished.
func (w *watcher) syncUplinks(gone []addrGone, deleted []linkGone) bool {
	finished := true
	looks := make([]look, len(w.ups))
	valid := make([]bool, len(w.ups))
	for i, u := range w.ups {
		// Only the carrier's own address matters (redialIfStale), so only it is kept.
		_, local, _ := u.carrier.get()
		for _, g := range gone {
			if g.addr == local {
				u.gone = append(u.gone, g)
			}
		}
		for _, g := range deleted {
			if g.ifindex == u.ifindex && g.at.After(u.deleted) {
				u.deleted = g.at
			}
		}
		l, err := w.look(u)
		if err != nil {
			w.log.Debug("tunvpn: looking at an uplink", "uplink", u.u.Name, "err", err)
			finished = false
			continue
		}
		looks[i], valid[i] = l, true
	}
	// Paths come back first, so that an uplink that must go is never kept as the last only
	// because another has not been added back yet.
	added := make([]bool, len(w.ups))
	for i, u := range w.ups {
		if !valid[i] || looks[i].why != "" || u.inGraph {
			continue
		}
		if err := w.d.Add(uplinksGroup, u.path); err != nil {
			w.log.Warn("tunvpn: uplink "+u.u.Name+": adding its path back", "err", err)
			finished = false
			continue
		}
		w.log.Info(fmt.Sprintf("tunvpn: uplink %s: usable again (it was out: %s); path added", u.u.Name, u.why))
		u.inGraph, u.why, added[i] = true, "", true
	}
	inGraph := 0
	for _, u := range w.ups {
		if u.inGraph {
			inGraph++
		}
	}
	for i, u := range w.ups {
		if !valid[i] {
			continue
		}
		l := looks[i]
		switch {
		case l.why == "" && added[i]:
			// A new path: it dials afresh.
		case l.why == "":
			if u.stuck {
				w.log.Info(fmt.Sprintf("tunvpn: uplink %s: usable again (it was: %s)", u.u.Name, u.why))
			}
			u.why, u.stuck = "", false
			if u.seen && u.ifindex != 0 && l.ifindex != u.ifindex {
				// Deleted and made again under the same name within one burst: a carrier dialed
				// before is bound to the interface that went (SO_BINDTODEVICE holds its index).
				// One dialed after is bound to the new one, and kept; without word of the
				// deletion (notifications lost), the carrier is taken for stale.
				if c, _, dialed := u.carrier.get(); c != nil && c != u.closed && (u.deleted.IsZero() || u.deleted.After(dialed)) {
					w.log.Info(fmt.Sprintf("tunvpn: uplink %s: interface %s was made again; re-dialing", u.u.Name, u.u.Interface))
					w.closeCarrier(u)
				}
			} else {
				w.redialIfStale(u, l)
			}
			if u.seen && addrList(l.addrs) != u.addrs && !w.pathUp(u) {
				// An address came (back) to an uplink whose path is down: it dials now,
				// not when its wait between failed dials ends (up to 2 s).
				w.log.Info(fmt.Sprintf("tunvpn: uplink %s: addresses now %s; dialing", u.u.Name, addrList(l.addrs)))
				w.d.Redial(u.u.Name)
			}
		case u.inGraph && inGraph > 1:
			if err := w.d.Remove(u.u.Name); err != nil {
				w.log.Warn("tunvpn: uplink "+u.u.Name+": removing its path", "err", err)
				finished = false
				break
			}
			w.log.Info(fmt.Sprintf("tunvpn: uplink %s: %s; path removed", u.u.Name, l.why))
			u.inGraph, u.why, u.stuck = false, l.why, false
			u.closed, _, _ = u.carrier.get() // Remove closed it
			inGraph--
		case u.inGraph:
			// A group keeps at least one child: the path stays, and its dials fail until the
			// uplink is back (or another is, and this one can go). Its carrier cannot carry
			// anything now; closing it tells the engine so at once.
			if !u.stuck || u.why != l.why {
				w.log.Info(fmt.Sprintf("tunvpn: uplink %s: %s; it is the last uplink, so its path stays", u.u.Name, l.why))
				w.closeCarrier(u)
			}
			u.why, u.stuck = l.why, true
		default:
			if u.why != l.why {
				w.log.Info(fmt.Sprintf("tunvpn: uplink %s: %s; path still out", u.u.Name, l.why))
			}
			u.why = l.why
		}
		u.seen, u.ifindex, u.gone, u.deleted, u.addrs = true, l.ifindex, nil, time.Time{}, addrList(l.addrs)
	}
	var outs []uplinkOut
	for _, u := range w.ups {
		if u.why != "" {
			outs = append(outs, uplinkOut{Name: u.u.Name, Why: u.why, Stuck: u.stuck})
		}
	}
	w.mu.Lock()
	w.outs = outs
	w.mu.Unlock()
	return finished
}

// redialIfStale closes u's carrier if its local address went: it is gone now (the carrier's
// packets have no source), or it was deleted after the carrier was dialed and is back
// (whatever the carrier sent meanwhile was lost, and a NAT or the peer may have dropped it).
// The engine re-dials the path as after any carrier's death: at once if the carrier had lived
// a while, from whatever address the interface has now. A carrier whose address stayed is
// kept, even when the interface gains another address (an IPv6 temporary address, say).
func (w *watcher) redialIfStale(u *watchedUplink, l look) {
	c, local, dialed := u.carrier.get()
	if c == nil || c == u.closed || !local.IsValid() {
		return
	}
	why := ""
	if !l.addrs[local] {
		why = fmt.Sprintf("its carrier's address %v is gone", local)
	} else {
		for _, g := range u.gone {
			// Without an interface the address alone says it: it is the host's.
			if g.addr == local && g.at.After(dialed) && (u.u.Interface == "" || g.ifindex == l.ifindex) {
				why = fmt.Sprintf("its carrier's address %v was removed and is back", local)
				break
			}
		}
	}
	if why == "" {
		return
	}
	if len(l.addrs) > 0 {
		w.log.Info(fmt.Sprintf("tunvpn: uplink %s: %s; re-dialing (addresses now: %s)", u.u.Name, why, addrList(l.addrs)))
	} else {
		w.log.Info(fmt.Sprintf("tunvpn: uplink %s: %s; carrier closed, the path re-dials when an address comes", u.u.Name, why))
	}
	w.closeCarrier(u)
}

// closeCarrier closes u's most recent carrier, once: the engine sees the carrier die, moves
// its flows' unacknowledged bytes to the other paths and re-dials at once (Dialer.Redial).
func (w *watcher) closeCarrier(u *watchedUplink) {
	if c, _, _ := u.carrier.get(); c != nil && c != u.closed {
		c.Close()
		u.closed = c
		w.d.Redial(u.u.Name)
	}
}

// pathUp reports whether u's path is up, by the Dialer's status.
func (w *watcher) pathUp(u *watchedUplink) bool {
	for _, p := range w.d.Status().Paths {
		if p.Name == u.u.Name {
			return p.State == status.Up
		}
	}
	return false
}

func addrList(addrs map[netip.Addr]bool) string {
	var s []string
	for a := range addrs {
		s = append(s, a.String())
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}
