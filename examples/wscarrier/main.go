// Command wscarrier runs rendr over a carrier of the embedder's own: WebSocket connections
// through an ordinary HTTP server (carrier.go is the whole carrier). Both ends run in this
// process on loopback: one flow streams data over a Bond of a WebSocket path and a TCP path,
// the WebSocket path's connections are cut each time another eighth of the data has arrived,
// and the program ends with the SHA-256 digests of what was sent and received. It needs no
// root.
//
//	go run ./examples/wscarrier
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport/tcp"
)

func main() {
	if err := run(context.Background(), 64<<20, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// run moves size bytes over one flow while WebSocket carriers are cut, and reports.
func run(ctx context.Context, size int64, out io.Writer) error {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()

	// Listening side: an HTTP server with the WebSocket endpoint, plus a TCP source.
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ws := newWSListener(hl.Addr())
	mux := http.NewServeMux()
	mux.Handle("/rendr", ws.Handler())
	hs := &http.Server{Handler: mux}
	go hs.Serve(hl)
	defer hs.Close()
	tl, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		return err
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, ws, tl)
	if err != nil {
		return err
	}
	defer ln.Close()

	// Dialing side: the WebSocket path beside a TCP path, bonded. A wrapper keeps the
	// WebSocket carriers so that the schedule below can cut them.
	var cut carriers
	wsDial := wsDialer("ws://"+hl.Addr().String()+"/rendr", "http://localhost/")
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Bond("uplinks",
			rendr.Path("websocket", cut.wrap(wsDial)),
			rendr.Path("tcp", tcp.Dialer(tl.Addr().String())))})
	if err != nil {
		return err
	}
	defer d.Close()
	c, err := d.DialContext(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := ln.AcceptContext(ctx)
	if err != nil {
		return err
	}
	defer s.Close()

	// Cut every WebSocket carrier each time another eighth of the bytes has arrived.
	var progress atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for next := size / 8; next < size; {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if progress.Load() >= next {
				cut.closeAll()
				next += size / 8
			}
		}
	})
	start := time.Now()
	sent, got, err := transfer(c, s, size, &progress)
	close(stop)
	wg.Wait()
	if err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Fprintf(out, "%d MiB over a Bond of a WebSocket path and a TCP path in %v (%.0f MiB/s); %d WebSocket carriers cut; %d migrations\n",
		size>>20, el.Round(time.Millisecond), float64(size)/(1<<20)/el.Seconds(), cut.count(), c.Migrations())
	if cut.count() == 0 {
		return errors.New("no WebSocket carrier was cut: the run proves nothing")
	}
	if !bytes.Equal(sent, got) {
		return fmt.Errorf("digests differ: sent %x, received %x", sent[:8], got[:8])
	}
	fmt.Fprintf(out, "digests equal: %x\n", got[:8])
	return nil
}

// transfer writes size random bytes on w and reads them on r, returning both SHA-256 digests;
// progress counts the bytes read.
func transfer(w, r net.Conn, size int64, progress *atomic.Int64) (sent, got []byte, err error) {
	errc := make(chan error, 1)
	hs := sha256.New()
	go func() {
		rng := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, 64<<10)
		for left := size; left > 0; {
			k := min(left, int64(len(buf)))
			for i := range buf[:k] {
				buf[i] = byte(rng.Uint32())
			}
			hs.Write(buf[:k])
			if _, err := w.Write(buf[:k]); err != nil {
				errc <- err
				return
			}
			left -= k
		}
		errc <- nil
	}()
	hr := sha256.New()
	r.SetReadDeadline(time.Now().Add(2 * time.Minute))
	_, rerr := io.CopyN(io.MultiWriter(hr, counter{progress}), r, size)
	if werr := <-errc; werr != nil || rerr != nil {
		return nil, nil, errors.Join(werr, rerr)
	}
	return hs.Sum(nil), hr.Sum(nil), nil
}

type counter struct{ n *atomic.Int64 }

func (c counter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}

// carriers keeps the carriers a dial function returned, to cut them.
type carriers struct {
	mu   sync.Mutex
	live []net.Conn
	cuts int
}

func (cs *carriers) wrap(dial func(context.Context) (net.Conn, error)) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		c, err := dial(ctx)
		if err == nil {
			cs.mu.Lock()
			cs.live = append(cs.live, c)
			cs.mu.Unlock()
		}
		return c, err
	}
}

func (cs *carriers) closeAll() {
	cs.mu.Lock()
	live := cs.live
	cs.live = nil
	cs.cuts += len(live)
	cs.mu.Unlock()
	for _, c := range live {
		c.Close()
	}
}

func (cs *carriers) count() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.cuts
}
