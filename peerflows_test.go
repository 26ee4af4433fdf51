package rendr_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/internal/testlink"
)

// TestSynctestPeerOpenedFlows: the listening side opens flows towards the dialer
// (Listener.DialPeer, DialPacketPeer), which takes them with Accept and AcceptPacket, while the
// dialer opens its own at the same time: the two id spaces never meet. A listener-opened flow
// moves every byte exactly, both ways, across the death of the path carrying it; datagrams
// cross in both directions.
func TestSynctestPeerOpenedFlows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := &hsLink{src: testlink.Listen("a")}, &hsLink{src: testlink.Listen("b")}
		srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
		ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}}, a.src, b.src)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		var mig testkit.Migrations
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(), AcceptFlows: true,
			Root:    rendr.Selector("uplinks", rendr.Path("a", a.dial), rendr.Path("b", b.dial)),
			Options: rendr.Options{OnMigrate: mig.Record}})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// DialPeer before the session exists waits for it.
		early := make(chan error, 1)
		go func() {
			c, err := ln.DialPeer(ctx, cli.Public())
			if err == nil {
				_, err = c.Write([]byte("early"))
				c.Close()
			}
			early <- err
		}()
		synctest.Wait()
		if err := d.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-early; err != nil {
			t.Fatalf("DialPeer waiting for the session: %v", err)
		}
		ec, err := d.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := io.ReadAll(ec); err != nil || string(b) != "early" {
			t.Fatalf("the early flow: %q, %v", b, err)
		}

		// Flows both ways at once: the listener's and the dialer's own.
		var pushed, pulled [3]*rendr.Conn
		for i := range pushed {
			if pushed[i], err = ln.DialPeer(ctx, cli.Public()); err != nil {
				t.Fatal(err)
			}
			if pulled[i], err = d.DialContext(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for i := range pushed {
			dc, err := d.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			lc, err := ln.AcceptContext(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if pushed[i].FlowID() != dc.FlowID() || pulled[i].FlowID() != lc.FlowID() || dc.FlowID() == lc.FlowID() {
				t.Fatalf("flow ids: pushed %d accepted as %d; pulled %d accepted as %d", pushed[i].FlowID(), dc.FlowID(), pulled[i].FlowID(), lc.FlowID())
			}
			if i == 0 {
				// The first listener-opened flow streams both ways while the active path dies.
				up, down := stDuplex(pushed[0], dc, 8<<20, 11)
				time.Sleep(100 * time.Millisecond)
				evs := mig.All()
				l := map[string]*hsLink{"a": a, "b": b}[evs[len(evs)-1].To]
				l.mu.Lock()
				l.links[len(l.links)-1].Kill(true) // the active path's carrier resets
				l.mu.Unlock()
				up.check(t, "listener to dialer", time.Minute)
				down.check(t, "dialer to listener", time.Minute)
			} else {
				pulled[i].Write([]byte("pull"))
				pushed[i].Write([]byte("push"))
				for _, c := range []*rendr.Conn{dc, lc} {
					buf := make([]byte, 4)
					if _, err := io.ReadFull(c, buf); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		if len(mig.All()) < 2 {
			t.Fatalf("no move off the killed path: %v", mig.All())
		}

		// Packet flows the listener opens.
		lp, err := ln.DialPacketPeer(ctx, cli.Public())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lp.Write([]byte("datagram down")); err != nil {
			t.Fatal(err)
		}
		dp, err := d.AcceptPacket(ctx)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if n, err := dp.Read(buf); err != nil || string(buf[:n]) != "datagram down" {
			t.Fatalf("dialer read %q, %v", buf[:n], err)
		}
		if _, err := dp.Write([]byte("datagram up")); err != nil {
			t.Fatal(err)
		}
		if n, err := lp.Read(buf); err != nil || string(buf[:n]) != "datagram up" {
			t.Fatalf("listener read %q, %v", buf[:n], err)
		}

		short, stop := context.WithTimeout(ctx, time.Second)
		_, err = ln.DialPeer(short, rendr.MustNewKey().Public())
		stop()
		if !errors.Is(err, rendr.ErrNoSession) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("DialPeer to a peer with no session: %v", err)
		}
		d.Close()
		if _, err := d.Accept(ctx); !errors.Is(err, rendr.ErrClosed) {
			t.Fatalf("Accept on a closed Dialer: %v", err)
		}
	})
}

// TestSynctestPeerFlowsRefused: a Dialer without AcceptFlows refuses the flows the listener
// opens (the listener's flow fails with ErrReset) and its Accept says what to set; the session
// and the dialer's own flows carry on.
func TestSynctestPeerFlowsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := &hsLink{src: testlink.Listen("a")}
		srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
		ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}}, a.src)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(), Root: rendr.Path("a", a.dial)})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		dc, lc, err := testkit.OpenFlow(ctx, d, ln)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Accept(ctx); err == nil || !strings.Contains(err.Error(), "AcceptFlows") {
			t.Fatalf("Accept without AcceptFlows: %v", err)
		}
		for range 3 {
			pushed, err := ln.DialPeer(ctx, cli.Public())
			if err != nil {
				t.Fatal(err)
			}
			pushed.Write([]byte("refused"))
			if _, err := pushed.Read(make([]byte, 8)); !errors.Is(err, rendr.ErrReset) {
				t.Fatalf("read of a refused listener-opened flow: %v, want ErrReset", err)
			}
			pushed.Close()
		}
		up, down := stDuplex(dc, lc, 1<<20, 3)
		up.check(t, "up", time.Minute)
		down.check(t, "down", time.Minute)
		if st := dc.Status(); st.Violations != 0 {
			t.Fatalf("%d protocol violations", st.Violations)
		}
	})
}
