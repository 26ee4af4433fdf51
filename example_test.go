// The documented use of the public API, run as examples.

package rendr_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/tcp"
)

// Two TCP paths between a dialer and a listener; one flow over them.
func Example() {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()

	// Listening side: any net.Listener is a source of carriers.
	l1, _ := tcp.Listen("127.0.0.1:0")
	l2, _ := tcp.Listen("127.0.0.1:0")
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, l1, l2)
	if err != nil {
		panic(err)
	}
	defer ln.Close()

	// Dialing side: any func(ctx) (net.Conn, error) is a path.
	d, err := rendr.NewDialer(rendr.DialerConfig{
		Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Selector("uplinks",
			rendr.Path("primary", tcp.Dialer(l1.Addr().String())),
			rendr.Path("backup", tcp.Dialer(l2.Addr().String()), rendr.Backup()),
		),
	})
	if err != nil {
		panic(err)
	}
	defer d.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		c, err := ln.AcceptContext(ctx)
		if err != nil {
			return
		}
		io.Copy(c, c) // echo until the dialer half-closes
		c.Close()
	}()

	c, err := d.DialContext(ctx)
	if err != nil {
		panic(err)
	}
	c.Write([]byte("hello over two paths"))
	c.CloseWrite()
	reply, _ := io.ReadAll(c)
	c.Close()
	fmt.Println(string(reply))
	// Output: hello over two paths
}

// Any dialer an embedder already has becomes a path: here a net.Dialer bound to a local
// address; a SOCKS dialer from golang.org/x/net/proxy or a tls.Dialer work the same way.
func ExamplePath_embedderDialer() {
	bound := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
	p := rendr.Path("bound", transport.FromDialer(bound, "tcp", "127.0.0.1:7001"))

	// Or any function at all.
	custom := rendr.Path("custom", func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", "127.0.0.1:7002")
	})
	fmt.Println(p.Name(), custom.Name())
	// Output: bound custom
}
