package rendr_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport/tcp"
)

// TestHandshakeFloodKeepsPeersConnecting fills the listener's handshake slots with carriers
// that send nothing (a slow-loris flood) and checks that a real peer still connects, that the
// flood got no byte back. Without eviction every slot would stay taken for the handshake
// timeout and the peer could not get in.
func TestHandshakeFloodKeepsPeersConnecting(t *testing.T) {
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	src, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const slots = 4
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()},
		MaxHandshakes: slots, Options: rendr.Options{HandshakeTimeout: time.Minute}}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for range 3 * slots {
		c, err := net.Dial("tcp", src.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, c)
	}

	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root: rendr.Path("p", tcp.Dialer(src.Addr().String()))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		t.Fatalf("a real peer could not connect during the flood: %v", err)
	}
	go func() {
		if s, err := ln.AcceptContext(ctx); err == nil {
			io.Copy(s, s)
			s.Close()
		}
	}()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	c.Close()

	// The flood got nothing: each carrier reads EOF or a reset (evicted), or is still open
	// and silent; never a byte.
	for _, f := range flood {
		f.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, _ := f.Read(make([]byte, 64))
		if n != 0 {
			t.Fatalf("an unauthenticated carrier got %d bytes back", n)
		}
	}
}
