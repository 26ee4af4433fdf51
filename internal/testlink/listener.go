package testlink

import (
	"context"
	"fmt"
	"net"
	"sync"
)

// acceptor is what Listener and PacketListener share: a queue from Dial to Accept and a
// close. Dial's end is handed over unbuffered, so Dial returns only once Accept has it.
type acceptor[C net.Conn] struct {
	addr    Addr
	accept  chan C
	done    chan struct{} // closed by Close
	closing sync.Once
}

func newAcceptor[C net.Conn](name string) acceptor[C] {
	return acceptor[C]{addr: Addr(name), accept: make(chan C), done: make(chan struct{})}
}

func (ln *acceptor[C]) closedErr(op string) error {
	return &net.OpError{Op: op, Net: network, Addr: ln.addr, Err: net.ErrClosed}
}

// Accept waits for a Dial and returns the listener's end of the new link, or
// an error wrapping net.ErrClosed once the listener is closed.
func (ln *acceptor[C]) Accept() (net.Conn, error) {
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
func (ln *acceptor[C]) Close() error {
	err := ln.closedErr("close")
	ln.closing.Do(func() {
		close(ln.done)
		err = nil
	})
	return err
}

// Addr returns the listener's address; accepted conns have it as LocalAddr.
func (ln *acceptor[C]) Addr() net.Addr { return ln.addr }

// dial makes the two ends with pipe (given a fresh local address), hands the second to
// Accept and returns the first. It fails if ctx ends first (the error wraps ctx.Err()) or
// the listener is closed (the error wraps net.ErrClosed).
func (ln *acceptor[C]) dial(ctx context.Context, pipe func(local Addr) (a, b C)) (C, error) {
	var zero C
	dialErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: network, Addr: ln.addr, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return zero, dialErr(err)
	}
	select {
	case <-ln.done:
		return zero, ln.closedErr("dial")
	default:
	}
	a, b := pipe(Addr(fmt.Sprintf("%s-%d", ln.addr, pipeSeq.Add(1))))
	select {
	case ln.accept <- b:
		return a, nil
	case <-ln.done:
		return zero, ln.closedErr("dial")
	case <-ctx.Done():
		return zero, dialErr(ctx.Err())
	}
}

// Listener hands in-memory links made by Dial to Accept. It implements
// net.Listener.
type Listener struct{ acceptor[*Conn] }

var _ net.Listener = (*Listener)(nil)

// Listen returns a listener whose address is "testlink:name".
func Listen(name string) *Listener { return &Listener{newAcceptor[*Conn](name)} }

// Dial makes a link, hands one end to Accept and returns the other. ab shapes
// the dialer->listener direction and ba the reverse. Dial waits for an Accept;
// it fails if ctx ends first (the error wraps ctx.Err()) or the listener is
// closed (the error wraps net.ErrClosed).
func (ln *Listener) Dial(ctx context.Context, ab, ba Config) (*Conn, *Link, error) {
	var l *Link
	a, err := ln.dial(ctx, func(local Addr) (*Conn, *Conn) {
		var a, b *Conn
		a, b, l = newPipe(ab, ba, local, ln.addr)
		return a, b
	})
	if err != nil {
		return nil, nil, err
	}
	return a, l, nil
}
