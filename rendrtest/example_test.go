package rendrtest_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/rendrtest"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport/tcp"
)

// A relay between a client and a server: the client dials the relay, and the test resets
// the connection under it.
func ExampleNewRelay() {
	srv, _ := net.Listen("tcp", "127.0.0.1:0")
	defer srv.Close()
	go func() { // greets each connection, then reads it to its end
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello\n"))
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()

	r, err := rendrtest.NewRelay(srv.Addr().String())
	if err != nil {
		panic(err)
	}
	defer r.Close()
	c, _ := net.Dial("tcp", r.Addr())
	defer c.Close()
	line, _ := bufio.NewReader(c).ReadString('\n')
	fmt.Print(line)

	r.ResetConns()
	_, err = c.Read(make([]byte, 1))
	fmt.Println(errors.Is(err, syscall.ECONNRESET))
	// Output:
	// hello
	// true
}

// A failover test in one page: an echo flow over a primary and a backup path, each through a
// relay; the primary goes dark, and the flow carries on over the backup.
func Example_failover() {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
	l1, _ := tcp.Listen("127.0.0.1:0")
	l2, _ := tcp.Listen("127.0.0.1:0")
	ln, _ := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, l1, l2)
	defer ln.Close()
	primary, _ := rendrtest.NewRelay(l1.Addr().String())
	defer primary.Close()
	backup, _ := rendrtest.NewRelay(l2.Addr().String())
	defer backup.Close()

	moved := make(chan status.Migration, 10)
	d, _ := rendr.NewDialer(rendr.DialerConfig{
		Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Selector("uplinks",
			rendr.Path("primary", tcp.Dialer(primary.Addr())),
			rendr.Path("backup", tcp.Dialer(backup.Addr()), rendr.Backup()),
		),
		Options: rendr.Options{OnMigrate: func(m status.Migration) {
			select {
			case moved <- m:
			default:
			}
		}},
	})
	defer d.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() { // the echo server
		c, err := ln.AcceptContext(ctx)
		if err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	c, err := d.DialContext(ctx)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	echo := func(msg string) {
		c.Write([]byte(msg))
		buf := make([]byte, len(msg))
		io.ReadFull(c, buf)
		fmt.Println(string(buf))
	}

	waitMove := func(to string) {
		for m := range moved {
			if m.To == to {
				return
			}
		}
	}

	waitMove("primary") // the session may start on the backup, and then return
	echo("before")
	primary.Blackhole(rendrtest.Both) // nothing errors, nothing moves on the primary
	echo("during")                    // and yet this comes back, over the backup
	waitMove("backup")
	fmt.Println("moved to the backup")
	// Output:
	// before
	// during
	// moved to the backup
}
