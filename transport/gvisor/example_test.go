package gvisor_test

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport/gvisor"
)

// rendr over a user-space TCP path: gVisor's TCP runs in this process at each end, its IP
// packets in UDP datagrams, so the path needs no kernel TCP socket at all.
func Example() {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()

	// Listening side: a gvisor listener is one UDP socket, a source like any net.Listener.
	src, err := gvisor.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, src)
	if err != nil {
		panic(err)
	}
	defer ln.Close()

	// Dialing side: gvisor.Dialer is a path's dial function.
	d, err := rendr.NewDialer(rendr.DialerConfig{
		Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Path("user-tcp", gvisor.Dialer(src.Addr().String())),
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

	c.Write([]byte("hello over gVisor's TCP"))
	c.CloseWrite()
	got, _ := io.ReadAll(lc)
	fmt.Println(string(got))
	// Output: hello over gVisor's TCP
}
