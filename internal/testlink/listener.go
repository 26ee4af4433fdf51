package testlink

import (
	"context"
	"fmt"
	"net"
	"sync"
)

// Listener hands in-memory links made by Dial to Accept. It implements
// net.Listener.
type Listener struct {
	addr    Addr
	accept  chan *Conn    // unbuffered: Dial returns only once Accept has the conn
	done    chan struct{} // closed by Close
	closing sync.Once
}

var _ net.Listener = (*Listener)(nil)

// Listen returns a listener whose address is "testlink:name".
func Listen(name string) *Listener {
	return &Listener{addr: Addr(name), accept: make(chan *Conn), done: make(chan struct{})}
}

func (ln *Listener) closedErr(op string) error {
	return &net.OpError{Op: op, Net: network, Addr: ln.addr, Err: net.ErrClosed}
}

// Accept waits for a Dial and returns the listener's end of the new link, or
// an error wrapping net.ErrClosed once the listener is closed.
func (ln *Listener) Accept() (net.Conn, error) {
	// Check done first so a closed listener never hands out another conn.
	select {
	case <-ln.done:
		return nil, ln.closedErr("accept")
	default:
	}
	select {
	case c := <-ln.accept:
		return c, nil
	case <-ln.done:
		return nil, ln.closedErr("accept")
	}
}

// Close stops the listener: pending and future Accepts and Dials fail with
// an error wrapping net.ErrClosed. Links already made are not affected.
func (ln *Listener) Close() error {
	err := ln.closedErr("close")
	ln.closing.Do(func() {
		close(ln.done)
		err = nil
	})
	return err
}

// Addr returns the listener's address; accepted conns have it as LocalAddr.
func (ln *Listener) Addr() net.Addr { return ln.addr }

// Dial makes a link, hands one end to Accept and returns the other. ab shapes
// the dialer->listener direction and ba the reverse. Dial waits for an Accept;
// it fails if ctx ends first (the error wraps ctx.Err()) or the listener is
// closed (the error wraps net.ErrClosed).
func (ln *Listener) Dial(ctx context.Context, ab, ba Config) (*Conn, *Link, error) {
	dialErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: network, Addr: ln.addr, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, dialErr(err)
	}
	select {
	case <-ln.done:
		return nil, nil, ln.closedErr("dial")
	default:
	}
	local := Addr(fmt.Sprintf("%s-%d", ln.addr, pipeSeq.Add(1)))
	a, b, l := newPipe(ab, ba, local, ln.addr)
	select {
	case ln.accept <- b:
		return a, l, nil
	case <-ln.done:
		return nil, nil, ln.closedErr("dial")
	case <-ctx.Done():
		return nil, nil, dialErr(ctx.Err())
	}
}
