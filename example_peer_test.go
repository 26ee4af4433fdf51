package rendr_test

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport/tcp"
)

// A server pushes to a client it could never dial (behind a NAT, say): the client keeps a
// session up with Connect and takes the server's flows with Accept.
func ExampleListener_DialPeer() {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
	src, _ := tcp.Listen("127.0.0.1:0")
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, src)
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cliKey, PeerKey: srvKey.Public(), AcceptFlows: true,
		Root: rendr.Path("uplink", tcp.Dialer(src.Addr().String()))})
	if err != nil {
		panic(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Connect(ctx); err != nil { // the client's session, with no flow yet
		panic(err)
	}

	go func() {
		// The server side: DialPeer waits for the client's session if it is not up yet.
		push, err := ln.DialPeer(ctx, cliKey.Public())
		if err != nil {
			panic(err)
		}
		push.Write([]byte("news from the server"))
		push.Close()
	}()

	c, err := d.Accept(ctx)
	if err != nil {
		panic(err)
	}
	msg, _ := io.ReadAll(c)
	c.Close()
	fmt.Println(string(msg))
	// Output: news from the server
}
