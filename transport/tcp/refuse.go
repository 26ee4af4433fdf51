package tcp

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/rendr-go/rendr/transport"
)

// maxRefused bounds the hosts a Listener refuses at once (per family): its socket filter
// stays small, and each SYN costs the kernel at most a few dozen instructions. Past it, the
// refusal that ends soonest makes room.
const maxRefused = 32

// listener applies the socket tuning to accepted connections (Linux does not copy
// TCP_NOTSENT_LOWAT from a listening socket to the sockets it accepts), and refuses hosts for
// rendr's listener under load (transport.SourceRefuser).
type listener struct {
	net.Listener
	lowat int
	pace  bool

	mu      sync.Mutex
	refused map[netip.Prefix]time.Time // until when
	timer   *time.Timer                // drops refusals as they end
	filter  bool                       // a filter is on the listening socket
}

var _ transport.SourceRefuser = (*listener)(nil)

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		if rc, err := tc.SyscallConn(); err == nil {
			tune(rc, l.lowat, l.pace)
			l.mu.Lock()
			filtered := l.filter
			l.mu.Unlock()
			if filtered {
				// An accepted socket inherits the listening socket's filter: every one of
				// its packets would run it. It only concerns new connections.
				detachFilter(rc)
			}
		}
	}
	return c, nil
}

// RefuseSource makes the kernel drop SYNs from addr's host (an IPv4 address, an IPv6 /64)
// for d, with a socket filter on the listening socket. Connections already accepted or
// queued are not touched. It does nothing off Linux, nor on an MPTCP listening socket (one
// made by ListenConfig with MPTCP on, Go's default for listeners), which takes no filter;
// rendr's listener then still closes the host's carriers at accept.
func (l *listener) RefuseSource(addr net.Addr, d time.Duration) {
	ta, ok := addr.(*net.TCPAddr)
	if !ok || ta == nil {
		return
	}
	ip := ta.AddrPort().Addr().Unmap()
	bits := 32
	if !ip.Is4() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refused == nil {
		l.refused = map[netip.Prefix]time.Time{}
	}
	if until, ok := l.refused[p]; ok && until.After(now.Add(d/2)) {
		return // refused already: no new filter for so little
	}
	if _, ok := l.refused[p]; !ok && l.countLocked(p.Addr().Is4()) >= maxRefused {
		l.evictLocked(p.Addr().Is4())
	}
	l.refused[p] = now.Add(d)
	l.applyLocked(now)
}

func (l *listener) countLocked(v4 bool) int {
	n := 0
	for p := range l.refused {
		if p.Addr().Is4() == v4 {
			n++
		}
	}
	return n
}

// evictLocked drops the refusal of a family that ends soonest.
func (l *listener) evictLocked(v4 bool) {
	var first netip.Prefix
	var at time.Time
	for p, until := range l.refused {
		if p.Addr().Is4() == v4 && (at.IsZero() || until.Before(at)) {
			first, at = p, until
		}
	}
	delete(l.refused, first)
}

// applyLocked drops the refusals that ended, puts the filter for the others on the
// listening socket, and sets the timer for the next to end.
func (l *listener) applyLocked(now time.Time) {
	var next time.Time
	var v4, v6 []netip.Prefix
	for p, until := range l.refused {
		if !until.After(now) {
			delete(l.refused, p)
			continue
		}
		if next.IsZero() || until.Before(next) {
			next = until
		}
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	l.filter = setRefuseFilter(l.Listener, v4, v6)
	if next.IsZero() {
		return
	}
	if l.timer == nil {
		l.timer = time.AfterFunc(next.Sub(now), l.expire)
	} else {
		l.timer.Reset(next.Sub(now))
	}
}

func (l *listener) expire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.applyLocked(time.Now())
}

// Close stops the listener and its timer.
func (l *listener) Close() error {
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
	return l.Listener.Close()
}
