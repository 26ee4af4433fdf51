package testkit

// Proxy: a loopback TCP proxy whose hooks see, and may change, every byte in each direction,
// so a test can corrupt, replay or hold back what one carrier carries.

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Hook sees a chunk of one proxied direction: conn numbers the proxied connections from 0
// and off is the chunk's offset in that direction. It may change b in place.
type Hook func(conn int, off int64, b []byte)

// Proxy is a loopback TCP proxy in front of one target. Bytes going up (dialer to target)
// pass through one hook, bytes coming down through the other.
type Proxy struct {
	ln       net.Listener
	target   string
	up, down Hook
	wg       sync.WaitGroup
	mu       struct {
		sync.Mutex
		conns  []net.Conn
		n      int
		closed bool
	}
}

// NewProxy starts a proxy to target on a loopback port; either hook may be nil. The test's
// cleanup closes it and waits for its goroutines.
func NewProxy(t testing.TB, target string, up, down Hook) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, up: up, down: down}
	p.wg.Add(1)
	go p.routineAccept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the address to dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) routineAccept() {
	defer p.wg.Done()
	for {
		a, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			a.Close()
			continue
		}
		p.mu.Lock()
		if p.mu.closed {
			p.mu.Unlock()
			a.Close()
			b.Close()
			return
		}
		id := p.mu.n
		p.mu.n++
		p.mu.conns = append(p.mu.conns, a, b)
		p.mu.Unlock()
		var once sync.Once
		end := func() {
			once.Do(func() {
				a.Close()
				b.Close()
			})
		}
		p.wg.Add(2)
		go p.routineCopy(b, a, id, p.up, end)
		go p.routineCopy(a, b, id, p.down, end)
	}
}

// routineCopy forwards src to dst through hook; any end or error ends both directions, as a
// carrier dies whole.
func (p *Proxy) routineCopy(dst, src net.Conn, id int, hook Hook, end func()) {
	defer p.wg.Done()
	defer end()
	buf := make([]byte, 32<<10)
	var off int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if hook != nil {
				hook(id, off, buf[:n])
			}
			off += int64(n)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Close stops accepting, ends every proxied connection and waits for the proxy's goroutines.
// It may be called more than once.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.mu.closed = true
	conns := p.mu.conns
	p.mu.Unlock()
	p.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	p.wg.Wait()
}
