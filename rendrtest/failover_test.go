package rendrtest_test

// The newcomer's echo program, as a test of its own failover: a listener with two TCP
// sources, a dialer with a path to each through a relay, and an echo flow that must carry
// every byte intact while the path under it goes dark and then is reset.

import (
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/rendrtest"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport/tcp"
)

func TestFailoverEcho(t *testing.T) {
	const total = 16 << 20 // bytes sent, and echoed back
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()

	// The listening side, and a relay in front of each of its two sources.
	l1, err1 := tcp.Listen("127.0.0.1:0")
	l2, err2 := tcp.Listen("127.0.0.1:0")
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, l1, l2)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	relays := map[string]*rendrtest.Relay{}
	for name, l := range map[string]string{"a": l1.Addr().String(), "b": l2.Addr().String()} {
		r, err := rendrtest.NewRelay(l)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		relays[name] = r
	}

	// The dialing side: two paths, each through its relay; every migration is reported.
	moves := make(chan status.Migration, 100)
	d, err := rendr.NewDialer(rendr.DialerConfig{
		Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Selector("uplinks",
			rendr.Path("a", tcp.Dialer(relays["a"].Addr())),
			rendr.Path("b", tcp.Dialer(relays["b"].Addr())),
		),
		Options: rendr.Options{OnMigrate: func(m status.Migration) {
			select {
			case moves <- m:
			default: // a test that stops reading must not block rendr
			}
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	// The echo server hashes what it echoes.
	echoed := make(chan [32]byte, 1)
	go func() {
		c, err := ln.AcceptContext(ctx)
		if err != nil {
			echoed <- [32]byte{}
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(c, io.TeeReader(c, h))
		c.CloseWrite()
		echoed <- [32]byte(h.Sum(nil))
	}()

	c, err := d.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute)) // a stuck flow fails the test, not the suite
	received := make(chan [32]byte, 1)
	go func() {
		h := sha256.New()
		io.Copy(h, c)
		received <- [32]byte(h.Sum(nil))
	}()

	// The faults, while the flow streams: at a quarter, the path carrying it goes dark both
	// ways; once traffic has moved off it, it heals. At two thirds, the path then carrying it
	// is reset.
	quarter, twoThirds := make(chan struct{}), make(chan struct{})
	healed := make(chan struct{})
	var seen []status.Migration // the moves the faults caused; read once faults has sent
	faults := make(chan error, 1)
	reached := func(at <-chan struct{}) error {
		select {
		case <-at:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	go func() {
		faults <- func() error {
			if err := reached(quarter); err != nil {
				return err
			}
			dark, err := active(ctx, c)
			if err != nil {
				return err
			}
			darkID := pathID(c.Status(), dark)
			relays[dark].Blackhole(rendrtest.Both)
			if err := movedOff(ctx, moves, dark, &seen); err != nil {
				return err
			}
			// The carrier that lost bytes in the dark is reset; the path dials a new one.
			relays[dark].Heal()
			for id := darkID; id == darkID || !up(c.Status(), dark); id = pathID(c.Status(), dark) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				time.Sleep(time.Millisecond)
			}
			close(healed)
			if err := reached(twoThirds); err != nil {
				return err
			}
			reset, err := active(ctx, c)
			if err != nil {
				return err
			}
			relays[reset].ResetConns()
			return movedOff(ctx, moves, reset, &seen)
		}()
	}()

	// The sender: pseudo-random bytes, hashed as they go.
	sent := sha256.New()
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 32<<10)
	for n := 0; n < total; n += len(buf) {
		switch n {
		case total / 4:
			close(quarter)
		case total * 2 / 3 / len(buf) * len(buf):
			select { // both paths up again before the second fault
			case <-healed:
			case err := <-faults:
				t.Fatalf("the first fault: %v", err)
			}
			close(twoThirds)
		}
		rng.Read(buf)
		sent.Write(buf)
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("write at %d: %v", n, err)
		}
	}
	c.CloseWrite()

	if err := <-faults; err != nil {
		t.Fatal(err)
	}
	for _, m := range seen {
		t.Logf("moved from %s to %s (%v)", m.From, m.To, m.Cause)
	}
	want := [32]byte(sent.Sum(nil))
	if got := <-echoed; got != want {
		t.Error("the echo server got other bytes than the client sent")
	}
	if got := <-received; got != want {
		t.Error("the client got other bytes back than it sent")
	}
}

// active waits for a path to carry c's traffic and returns its name.
func active(ctx context.Context, c *rendr.Conn) (string, error) {
	for ctx.Err() == nil {
		for _, p := range c.Status().Paths {
			if p.Active {
				return p.Name, nil
			}
		}
		time.Sleep(time.Millisecond)
	}
	return "", ctx.Err()
}

// pathID is the id of the path called name: a new one for each carrier.
func pathID(s status.Session, name string) uint32 {
	for _, p := range s.Paths {
		if p.Name == name {
			return p.ID
		}
	}
	return 0
}

// up reports whether the path called name is up.
func up(s status.Session, name string) bool {
	for _, p := range s.Paths {
		if p.Name == name && p.State == status.Up {
			return true
		}
	}
	return false
}

// movedOff waits until traffic has moved off the path called from, and notes the move.
func movedOff(ctx context.Context, moves <-chan status.Migration, from string, seen *[]status.Migration) error {
	for {
		select {
		case m := <-moves:
			if m.From == from && m.To != "" {
				*seen = append(*seen, m)
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
