//go:build linux

package pending

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Set watches connections until each holds its whole first message. Its methods are safe
// for concurrent use. It holds a goroutine, and two descriptors, only while it watches
// something: an idle listener has no thread blocked in epoll_wait.
type Set struct {
	cfg Config
	wg  sync.WaitGroup // the poller goroutines (one at a time, but one may still be ending)

	mu struct {
		sync.Mutex
		byID       map[int32]*entry
		byConn     map[net.Conn]*entry
		head, tail *entry // by deadline: every entry gets the same Timeout, so in Add order
		lastID     int32
		p          *poller // nil while nothing is watched
		closed     bool
		timedOut   uint64
	}
}

// poller is one run of the Set's goroutine: an epoll set and an eventfd that wakes it.
type poller struct{ epfd, wake int }

// entry is what the Set holds for one connection: about 120 bytes and two map slots.
type entry struct {
	c          net.Conn
	raw        syscall.RawConn
	id         int32 // the epoll event's data; 0 is the poller's eventfd
	deadline   time.Time
	done       Done
	prev, next *entry
}

// New makes a Set.
func New(cfg Config) (*Set, error) {
	if cfg.Head <= 0 || cfg.Head > maxHead || cfg.Need == nil || cfg.Timeout <= 0 {
		return nil, fmt.Errorf("pending: Config needs 0 < Head <= %d, a Need and a Timeout", maxHead)
	}
	s := &Set{cfg: cfg}
	s.mu.byID = map[int32]*entry{}
	s.mu.byConn = map[net.Conn]*entry{}
	return s, nil
}

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("pending: epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("pending: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: 0}); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, fmt.Errorf("pending: epoll: %w", err)
	}
	return &poller{epfd: epfd, wake: wake}, nil
}

func (p *poller) kick() {
	one := [8]byte{1}
	unix.Write(p.wake, one[:]) // EAGAIN means a kick is already pending: as good
}

func (p *poller) close() {
	unix.Close(p.wake)
	unix.Close(p.epfd)
}

// Add starts watching c, and reports whether it did: false means c is not a connection a Set
// can watch (Watchable), the Set is closed, or the system refused a descriptor, and the
// caller waits on c itself. When true, done is called once, from the Set's goroutine, unless
// Remove takes c back first. c may hold its whole message already; done then comes at once.
func (s *Set) Add(c net.Conn, done Done) bool {
	if !Watchable(c) {
		return false
	}
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return false
	}
	if _, ok := s.mu.byConn[c]; ok {
		return false
	}
	p := s.mu.p
	if p == nil {
		if p, err = newPoller(); err != nil {
			return false
		}
	}
	e := &entry{c: c, raw: raw, id: s.newIDLocked(), deadline: time.Now().Add(s.cfg.Timeout), done: done}
	// Edge-triggered: one event per arrival, so a message in many pieces is looked at once
	// per piece and a socket whose head is short of a whole message is not reported again
	// and again. The kernel reports data already queued when the socket is added.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: e.id}
	var cerr error
	if err := raw.Control(func(fd uintptr) { cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev) }); err != nil || cerr != nil {
		if s.mu.p == nil {
			p.close()
		}
		return false
	}
	s.linkLocked(e)
	if s.mu.p == nil {
		s.mu.p = p
		s.wg.Add(1)
		go s.loop(p)
	}
	return true
}

// Remove stops watching c without calling its Done, and reports whether c was watched: true
// means the caller now owns c again (to close it, say), false that c was never added or its
// Done has been or is being called.
func (s *Set) Remove(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.mu.byConn[c]
	if !ok {
		return false
	}
	s.dropLocked(e)
	if s.mu.head == nil && s.mu.p != nil {
		s.mu.p.kick() // let the poller see it has nothing left, and end
	}
	return true
}

// Len is how many connections are watched now.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mu.byConn)
}

// TimedOut counts connections whose Done got false because they ran out of time.
func (s *Set) TimedOut() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.timedOut
}

// Close stops the poller and calls Done(false) for every connection still watched, then
// returns. Add returns false from then on.
func (s *Set) Close() {
	s.mu.Lock()
	s.mu.closed = true
	if s.mu.p != nil {
		s.mu.p.kick()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	var left []Done
	for s.mu.head != nil {
		left = append(left, s.mu.head.done)
		s.dropLocked(s.mu.head)
	}
	s.mu.Unlock()
	for _, d := range left {
		d(false)
	}
}

// loop waits for arrivals and deadlines until the Set is empty or closed, then closes its
// descriptors. It never blocks holding the lock, and calls Done only without it, so a Done
// may call back into the Set.
func (s *Set) loop(p *poller) {
	defer s.wg.Done()
	defer p.close()
	events := make([]unix.EpollEvent, 128)
	type call struct {
		done  Done
		ready bool
	}
	var calls []call
	for {
		n, err := unix.EpollWait(p.epfd, events, s.waitMsec())
		calls = calls[:0]
		s.mu.Lock()
		if s.mu.closed || (err != nil && !errors.Is(err, unix.EINTR)) {
			// Closed; or, what only a broken epoll descriptor gives, an error: the
			// watched are let go at Close.
			s.mu.p = nil
			s.mu.Unlock()
			return
		}
		if err != nil {
			n = 0
		}
		for _, ev := range events[:n] {
			if ev.Fd == 0 {
				var b [8]byte
				unix.Read(p.wake, b[:])
				continue
			}
			e, ok := s.mu.byID[ev.Fd]
			if !ok {
				continue // taken by Remove, or by an earlier event of this batch
			}
			if ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 || s.ready(e) {
				s.dropLocked(e)
				calls = append(calls, call{e.done, true})
			}
		}
		now := time.Now()
		for e := s.mu.head; e != nil && !e.deadline.After(now); e = s.mu.head {
			s.dropLocked(e)
			s.mu.timedOut++
			calls = append(calls, call{e.done, false})
		}
		idle := s.mu.head == nil
		if idle {
			s.mu.p = nil // an Add from now on starts another poller
		}
		s.mu.Unlock()
		for _, c := range calls {
			c.done(c.ready)
		}
		if idle {
			return
		}
	}
}

// waitMsec is how long the poller may sleep: until the oldest entry's deadline. With none it
// only looks, and ends.
func (s *Set) waitMsec() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.head == nil {
		return 0
	}
	d := time.Until(s.mu.head.deadline)
	if d <= 0 {
		return 0
	}
	return int((d + time.Millisecond - 1) / time.Millisecond) // round up: never wake early
}

// ready reports whether e's socket holds its whole first message, or something the reader
// will fail on at once: an error, the end of the stream, a head Need refuses. It only peeks.
func (s *Set) ready(e *entry) bool {
	ready := false
	err := e.raw.Control(func(fd uintptr) {
		var head [maxHead]byte
		n, _, err := unix.Recvfrom(int(fd), head[:s.cfg.Head], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN):
		case err != nil, n == 0:
			ready = true // an error or the end of the stream: the reader sees it
		case n < s.cfg.Head:
		default:
			need := s.cfg.Need(head[:n])
			if need <= 0 {
				ready = true
				return
			}
			queued, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
			ready = err != nil || queued >= need
		}
	})
	// A connection closed under the Set (its owner gave up on it) is handed on: the
	// reader's error ends it.
	return ready || err != nil
}

func (s *Set) newIDLocked() int32 {
	for {
		s.mu.lastID++
		if s.mu.lastID <= 0 {
			s.mu.lastID = 1
		}
		if _, used := s.mu.byID[s.mu.lastID]; !used {
			return s.mu.lastID
		}
	}
}

func (s *Set) linkLocked(e *entry) {
	s.mu.byID[e.id] = e
	s.mu.byConn[e.c] = e
	e.prev = s.mu.tail
	if s.mu.tail != nil {
		s.mu.tail.next = e
	} else {
		s.mu.head = e
	}
	s.mu.tail = e
}

// dropLocked forgets e and takes its socket out of the epoll set, so that events for the
// connection stop once it is handed on (its reader then waits in Go's own poller).
func (s *Set) dropLocked(e *entry) {
	if p := s.mu.p; p != nil {
		e.raw.Control(func(fd uintptr) { unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	}
	delete(s.mu.byID, e.id)
	delete(s.mu.byConn, e.c)
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		s.mu.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.mu.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

// Watchable reports whether c is a connection a Set can watch: a TCP socket of Go's own,
// whose descriptor it can reach. Anything wrapped is the caller's to wait on.
func Watchable(c net.Conn) bool {
	_, ok := c.(*net.TCPConn)
	return ok
}
