package udpflow_test

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport/udpflow"
)

// rendr over a udpflow path: a stream flow, whose packets rendr numbers, acknowledges and
// resends itself over raw UDP, and a packet flow, whose datagrams wait behind no lost packet.
func Example() {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()

	// Listening side: a udpflow listener is one UDP socket, a source like any net.Listener.
	src, err := udpflow.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, src)
	if err != nil {
		panic(err)
	}
	defer ln.Close()

	// Dialing side: udpflow.Dialer is a path's dial function.
	d, err := rendr.NewDialer(rendr.DialerConfig{
		Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Path("udp", udpflow.Dialer(src.Addr().String())),
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
	c.Write([]byte("a stream over UDP"))
	c.CloseWrite()
	got, _ := io.ReadAll(lc)
	fmt.Println(string(got))

	pc, err := d.DialPacket(ctx)
	if err != nil {
		panic(err)
	}
	defer pc.Close()
	lpc, err := ln.AcceptPacket(ctx)
	if err != nil {
		panic(err)
	}
	defer lpc.Close()
	pc.Write([]byte("a datagram"))
	buf := make([]byte, rendr.MaxDatagram)
	n, _ := lpc.Read(buf)
	fmt.Println(string(buf[:n]))

	// A datagram path has the counters of rendr's own packet layer.
	p := c.Paths()[0]
	fmt.Println(p.Name, "counts packets:", p.Packets != nil)
	// Output:
	// a stream over UDP
	// a datagram
	// udp counts packets: true
}
