package tcp_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport/tcp"
)

// rendr over kernel TCP. LocalAddr binds a path's sockets to one local address: on a host
// with several uplinks, a path per uplink, each bound to that uplink's address, keeps each
// path on its own link.
func Example() {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()

	// Listening side: tcp.Listen is a source of carriers.
	src, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, src)
	if err != nil {
		panic(err)
	}
	defer ln.Close()

	// Dialing side: tcp.Dialer is a path's dial function.
	d, err := rendr.NewDialer(rendr.DialerConfig{
		Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Path("wired", tcp.Dialer(src.Addr().String(), tcp.LocalAddr("127.0.0.1"))),
	})
	if err != nil {
		panic(err)
	}
	defer d.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	lc, err := ln.AcceptContext(ctx)
	if err != nil {
		panic(err)
	}
	defer lc.Close()

	c.Write([]byte("hello over TCP"))
	c.CloseWrite()
	got, _ := io.ReadAll(lc)
	fmt.Println(string(got))
	p := c.Paths()[0]
	fmt.Println(p.Name, "leaves from", p.Local.(*net.TCPAddr).IP)
	// Output:
	// hello over TCP
	// wired leaves from 127.0.0.1
}
