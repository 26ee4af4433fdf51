// Package relay is a loopback TCP relay that can kill the connections through it in the ways
// real paths die: closed (FIN), reset (RST), or silently stalled (a blackhole: nothing moves,
// nothing errors). rendr's own tests put one in front of each path. Programs, and the demo,
// use the public package rendrtest instead; this one stays for what rendrtest leaves out:
// stalling the open connections alone, mangling datagrams, and sockets placed in network
// namespaces.
package relay

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Mode is how Kill ends connections.
type Mode int

const (
	// Close ends each connection with a FIN to both sides.
	Close Mode = iota
	// Reset ends each connection with an RST to both sides.
	Reset
	// Stall stops forwarding in both directions without closing anything, like a blackhole.
	// The connections stay stalled until the relay closes them (Close) or they are killed.
	Stall
)

func (m Mode) String() string {
	switch m {
	case Close:
		return "close"
	case Reset:
		return "reset"
	case Stall:
		return "stall"
	}
	return "mode?"
}

// Relay forwards connections accepted on a loopback port to a target address.
type Relay struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		pairs   map[*pair]struct{}
		blocked bool
		closed  bool
	}
}

type pair struct {
	a, b    *net.TCPConn
	stalled chan struct{} // closed to stall this pair
	once    sync.Once
}

func (p *pair) stall() { p.once.Do(func() { close(p.stalled) }) }

// New starts a relay to target on a free loopback port.
func New(target string) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Relay{ln: ln, target: target}
	r.mu.pairs = map[*pair]struct{}{}
	r.wg.Add(1)
	go r.routineAccept()
	return r, nil
}

// Addr is the address to dial.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Block makes the relay a blackhole for new connections too: while on, connections are
// accepted and stalled at once (the dialer sees its handshake time out), and Kill(Stall) is
// applied to the live ones.
func (r *Relay) Block(on bool) {
	r.mu.Lock()
	r.mu.blocked = on
	r.mu.Unlock()
	if on {
		r.Kill(Stall)
	}
}

// Kill ends every connection through the relay now in the given way. New connections are
// still accepted afterwards (unless blocked): the path can come back.
func (r *Relay) Kill(m Mode) int {
	r.mu.Lock()
	ps := make([]*pair, 0, len(r.mu.pairs))
	for p := range r.mu.pairs {
		ps = append(ps, p)
	}
	r.mu.Unlock()
	for _, p := range ps {
		switch m {
		case Close:
			p.a.Close()
			p.b.Close()
		case Reset:
			p.a.SetLinger(0)
			p.b.SetLinger(0)
			p.a.Close()
			p.b.Close()
		case Stall:
			p.stall()
		}
	}
	return len(ps)
}

// Conns is the number of live connections.
func (r *Relay) Conns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.mu.pairs)
}

// Close stops the relay and closes every connection through it.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.mu.closed = true
	r.mu.Unlock()
	err := r.ln.Close()
	r.Kill(Close)
	r.wg.Wait()
	return err
}

func (r *Relay) routineAccept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		t, err := net.DialTimeout("tcp", r.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p := &pair{a: c.(*net.TCPConn), b: t.(*net.TCPConn), stalled: make(chan struct{})}
		r.mu.Lock()
		if r.mu.closed {
			r.mu.Unlock()
			c.Close()
			t.Close()
			return
		}
		r.mu.pairs[p] = struct{}{}
		if r.mu.blocked {
			p.stall()
		}
		r.mu.Unlock()
		r.wg.Add(2)
		go r.routineCopy(p, p.a, p.b)
		go r.routineCopy(p, p.b, p.a)
	}
}

// routineCopy forwards src to dst until either ends; on a stall it stops reading and waits,
// holding the connections open and silent.
func (r *Relay) routineCopy(p *pair, src, dst *net.TCPConn) {
	defer r.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		select {
		case <-p.stalled:
			// Swallow whatever arrives (so the sender's kernel does not push back) without
			// forwarding it, until the connection is closed.
			src.SetReadDeadline(time.Time{})
			io.Copy(io.Discard, src)
			// One end left: the pair is over. Both sockets close here, or they would stay
			// open (in CLOSE_WAIT) once dropped, out of Close's reach.
			src.Close()
			dst.Close()
			r.drop(p)
			return
		default:
		}
		src.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := src.Read(buf)
		if n > 0 {
			select {
			case <-p.stalled:
				continue // the bytes read when the stall began are lost, as in a blackhole
			default:
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Pass a FIN on as a FIN, anything else as a close.
			if err == io.EOF {
				dst.CloseWrite()
			} else {
				dst.Close()
				src.Close()
			}
			r.drop(p)
			return
		}
	}
}

func (r *Relay) drop(p *pair) {
	r.mu.Lock()
	delete(r.mu.pairs, p)
	r.mu.Unlock()
}
