// Command dgcarrier runs rendr over a datagram carrier of the embedder's own: UDP sockets the
// program opens itself (carrier.go is the whole carrier), on which rendr numbers,
// acknowledges, paces and resends as it does on transport/udpflow. Both ends run in this
// process on loopback: one flow streams data over a Bond of the UDP path and a backup TCP
// path, the UDP path's carriers are cut (closed at the dialing side) three times in the middle
// of the transfer, and the program ends with the SHA-256 digests of what was sent and
// received and each path's status, the UDP path's packet counters included. It needs no root.
//
//	go run ./examples/dgcarrier
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
	"os"
	"sync"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport/tcp"
)

func main() {
	if err := run(context.Background(), 64<<20, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// run moves size bytes over one flow while UDP carriers are cut, and reports.
func run(ctx context.Context, size int64, out io.Writer) error {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()

	// Listening side: the UDP listener of carrier.go beside a TCP source.
	ul, err := dgListen("127.0.0.1:0")
	if err != nil {
		return err
	}
	tl, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		ul.Close()
		return err
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, ul, tl)
	if err != nil {
		ul.Close()
		tl.Close()
		return err
	}
	defer ln.Close() // closes its sources too

	// Dialing side: the UDP path, and a TCP path in the backup tier of the same Bond, as a
	// program with its own NAT traversal would prefer its direct UDP path to a relay. The
	// flow runs over UDP while a UDP carrier is up and over TCP while it is cut. rendr goes
	// back to a preferred tier once it has stayed usable for RecoverDwell (500ms by default,
	// against flapping): this short run lowers it. (Without tiers, a Bond on loopback often
	// judges TCP the quicker path for every record, and the UDP path carries nothing.)
	//
	// A wrapper keeps the UDP carriers so that the schedule below can cut them; it returns
	// them unwrapped, since rendr tells a datagram carrier by its methods.
	var cut carriers
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Bond("uplinks",
			rendr.Path("udp", cut.wrap(dgDialer(ul.Addr().String()))),
			rendr.Path("tcp", tcp.Dialer(tl.Addr().String()), rendr.Backup())),
		Options: rendr.Options{RecoverDwell: 50 * time.Millisecond}})
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
	// Whichever path's handshake finishes first founds the session, often the TCP one; start
	// once traffic has moved to the UDP path, so that the run is about it from the first byte.
	if err := waitActive(ctx, d, "udp"); err != nil {
		return err
	}

	// Cut the UDP carrier, up to three times, each time it has carried another sixteenth of
	// the bytes: in the middle of the transfer, with its congestion window open and packets in
	// flight. Meanwhile the TCP path carries the flow, while rendr redials (with a backoff that
	// doubles while paths die young). Each cut ends a path, and the redialed one counts from
	// zero under a new ID: the tally keeps the last snapshot of each.
	tally := udpTally{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for cut.count() < 3 {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if p, live := tally.note(d.Status()); live && p.BytesSent >= size/16 {
				cut.closeAll()
			}
		}
	})
	start := time.Now()
	sent, got, err := transfer(c, s, size)
	close(stop)
	wg.Wait()
	if err != nil {
		return err
	}
	el := time.Since(start)
	tally.note(d.Status())
	fmt.Fprintf(out, "%d MiB over a Bond of a UDP path and a backup TCP path in %v (%.0f MiB/s); %d UDP carriers cut; %d migrations\n",
		size>>20, el.Round(time.Millisecond), float64(size)/(1<<20)/el.Seconds(), cut.count(), c.Migrations())
	fmt.Fprintf(out, "udp path carried %d bytes in %d packets (%d lost) over %d carriers\n",
		tally.bytes, tally.packets, tally.lost, len(tally.seen))
	printStatus(out, "dialing side", d.Status())
	printStatus(out, "listening side", s.Status())
	if cut.count() == 0 {
		return errors.New("no UDP carrier was cut: the run proves nothing")
	}
	if tally.packets == 0 {
		return errors.New("the UDP path carried nothing: the run proves nothing")
	}
	if !bytes.Equal(sent, got) {
		return fmt.Errorf("digests differ: sent %x, received %x", sent[:8], got[:8])
	}
	fmt.Fprintf(out, "digests equal: %x\n", got[:8])
	return nil
}

// waitActive waits until the dialer's policy sends on the path called name.
func waitActive(ctx context.Context, d *rendr.Dialer, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		for _, p := range d.Status().Paths {
			if p.Name == name && p.Active {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the %s path never carried the flow: %w", name, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// printStatus lists one side's paths. The listening side may still show a UDP path whose
// carrier was cut at the dialing side: nothing tells it, so it goes down once probes go
// unanswered.
func printStatus(out io.Writer, side string, st status.Session) {
	fmt.Fprintf(out, "%s:\n", side)
	for _, p := range st.Paths {
		fmt.Fprintf(out, "  %-4s #%-2d %-10s sent %6.1f MiB  received %6.1f MiB  srtt %v",
			p.Name, p.ID, p.State, float64(p.BytesSent)/(1<<20), float64(p.BytesRecv)/(1<<20), p.SRTT.Round(time.Microsecond))
		if k := p.Packets; k != nil {
			fmt.Fprintf(out, "  packets: %d sent, %d lost, %d forged; MTU %d, window %d KiB",
				k.Sent, k.Lost, k.Forged, k.MTU, k.Window>>10)
		}
		fmt.Fprintln(out)
	}
}

// udpTally adds up the UDP path's counters over its carriers, by path ID.
type udpTally struct {
	seen          map[uint32]status.Path
	bytes         int64
	packets, lost uint64
}

// note takes a snapshot of the dialing side, and returns the UDP path if it has a carrier
// (up, or suspect: routed around while its acknowledgements are late).
func (t *udpTally) note(st status.Session) (cur status.Path, live bool) {
	if t.seen == nil {
		t.seen = map[uint32]status.Path{}
	}
	for _, p := range st.Paths {
		if p.Name == "udp" && p.Packets != nil {
			t.seen[p.ID] = p
			cur, live = p, p.State == status.Up || p.State == status.Suspect
		}
	}
	t.bytes, t.packets, t.lost = 0, 0, 0
	for _, p := range t.seen {
		t.bytes += p.BytesSent
		t.packets += p.Packets.Sent
		t.lost += p.Packets.Lost
	}
	return cur, live
}

// transfer writes size random bytes on w and reads them on r, returning both SHA-256 digests.
func transfer(w, r net.Conn, size int64) (sent, got []byte, err error) {
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
	_, rerr := io.CopyN(hr, r, size)
	if werr := <-errc; werr != nil || rerr != nil {
		return nil, nil, errors.Join(werr, rerr)
	}
	return hs.Sum(nil), hr.Sum(nil), nil
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
