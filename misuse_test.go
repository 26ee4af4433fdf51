// An embedder's mistakes get an error that says what to do, never a panic in a background
// goroutine.

package rendr_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
)

// TestSynctestNilConnection: a dial function that returns neither a connection nor an error
// fails the dial with an error that names the path and the broken contract (it used to crash
// the process from the handshake's goroutine); a source whose Accept does the same is taken
// for a failed accept, and the listener carries on and closes.
func TestSynctestNilConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: rendr.MustNewKey(), PeerKey: rendr.MustNewKey().Public(),
			Root: rendr.Path("broken", func(context.Context) (net.Conn, error) { return nil, nil })})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = d.DialContext(ctx)
		if err == nil || !strings.Contains(err.Error(), `path "broken": its dial function returned neither a connection nor an error`) {
			t.Fatalf("dial over a dial function returning (nil, nil): %v", err)
		}

		src := &nilSource{closed: make(chan struct{})}
		ln, err := rendr.Listen(rendr.ListenConfig{Key: rendr.MustNewKey(), Peers: []rendr.PublicKey{rendr.MustNewKey().Public()}}, src)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second) // the source's nil carriers, backed off
		synctest.Wait()
		if n := src.count(); n < 2 {
			t.Fatalf("the listener stopped accepting after %d nil carriers", n)
		}
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// nilSource is a net.Listener whose Accept returns (nil, nil) until it is closed.
type nilSource struct {
	mu     sync.Mutex
	n      int
	once   sync.Once
	closed chan struct{}
}

func (s *nilSource) Accept() (net.Conn, error) {
	select {
	case <-s.closed:
		return nil, net.ErrClosed
	default:
	}
	s.mu.Lock()
	s.n++
	s.mu.Unlock()
	return nil, nil
}

func (s *nilSource) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *nilSource) Close() error   { s.once.Do(func() { close(s.closed) }); return nil }
func (s *nilSource) Addr() net.Addr { return &net.TCPAddr{} }
