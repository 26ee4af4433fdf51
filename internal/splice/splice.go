// Package splice joins two connections: a stream with its ends of stream passed on as
// half-closes, or datagrams both ways with an idle timeout. The listener's Egress and the TUN
// ingress both splice a flow to a connection of the host's.
package splice

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ErrIdle is why Datagrams ended when nothing passed either way for its idle time.
var ErrIdle = errors.New("splice: idle")

// DatagramConn is one side of a datagram splice: each Read and Write is one datagram.
type DatagramConn interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	SetReadDeadline(t time.Time) error
	Close() error
}

// Datagrams copies datagrams both ways between a and b, with a buffer of size bytes each
// way, until a Read of either fails or no datagram has passed either way for idle. Then it
// calls end, when not nil, with why: the error of a's Read or of b's (the other nil), or
// ErrIdle as bErr; and closes both. A datagram a Write does not take is lost, as UDP loses it,
// and so is one longer than size (never cut short: a read of size+1 bytes tells them apart).
func Datagrams(a, b DatagramConn, idle time.Duration, size int, end func(aErr, bErr error)) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var once sync.Once // the first side to end says why; the other's Read fails as they close
	stop := func(aErr, bErr error) {
		once.Do(func() {
			if end != nil {
				end(aErr, bErr)
			}
			a.Close()
			b.Close()
		})
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, size+1)
		for {
			n, err := a.Read(buf)
			if err != nil {
				stop(err, nil)
				return
			}
			last.Store(time.Now().UnixNano())
			if n <= size {
				b.Write(buf[:n])
			}
		}
	})
	buf := make([]byte, size+1)
	for {
		b.SetReadDeadline(time.Unix(0, last.Load()).Add(idle))
		n, err := b.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if time.Since(time.Unix(0, last.Load())) < idle {
					continue // the other way was busy: not idle yet
				}
				err = ErrIdle
			}
			stop(nil, err)
			break
		}
		last.Store(time.Now().UnixNano())
		if n <= size {
			a.Write(buf[:n])
		}
	}
	wg.Wait()
}

// Streams copies both ways between a and b until both directions end. Each end of stream is
// passed on as a half-close (CloseWrite where the side has one, else Close), so a side that
// shuts its sending side still reads the whole reply. When a side fails (a read from it or a
// write to it), the other is told with its abort (abortB when a failed, abortA when b did),
// once, and both are closed: a reset crosses the splice. Both are closed when it returns.
func Streams(a, b io.ReadWriteCloser, abortA, abortB func()) {
	var once sync.Once
	failed := func(abortOther func()) {
		once.Do(func() {
			abortOther()
			a.Close()
			b.Close()
		})
	}
	half := func(dst, src io.ReadWriteCloser, abortSrcPeer, abortDstPeer func()) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					failed(abortDstPeer)
					return
				}
			}
			if err == io.EOF {
				closeWrite(dst)
				return
			}
			if err != nil {
				failed(abortSrcPeer)
				return
			}
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { half(b, a, abortB, abortA) })
	half(a, b, abortA, abortB)
	wg.Wait()
	a.Close()
	b.Close()
}

// closeWrite half-closes c, or closes it when it cannot half-close.
func closeWrite(c io.Closer) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}
