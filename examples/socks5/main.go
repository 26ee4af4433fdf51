// Command socks5 is a SOCKS5 proxy in two halves joined by rendr: the client half is a SOCKS5
// server on the user's machine, the server half the egress at a remote site. Each CONNECT
// becomes a rendr flow carrying its destination, over every path the client has to the
// server, and a connection survives the loss of the path it was using.
//
//	socks5 genkey > client.key            a private key
//	socks5 pubkey < client.key            its public key, for the other side's flags
//	socks5 server -key server.key -peer CLIENTPUB -listen :7001 -listen :7002 -allow 0.0.0.0/0
//	socks5 client -key client.key -peer SERVERPUB -listen 127.0.0.1:1080 \
//	    -path 203.0.113.7:7001 -path 203.0.113.7:7002,from=10.20.0.5,backup
//
// README.md beside this file says more.
package main

import (
	"context"
	"io"
	"net"
	"os"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/examples/internal/excli"
	"github.com/rendr-go/rendr/transport/tcp"
)

func main() {
	excli.Main("socks5", usage, func(ctx context.Context, args []string) error {
		return run(ctx, args, os.Stdin, os.Stdout, os.Stderr, osHost())
	})
}

const usage = `usage:
  socks5 genkey
  socks5 pubkey < private-key
  socks5 client -key FILE -peer KEY -path ADDR[,from=IP][,backup|,tier=N] ... [-listen ADDR]
                [-policy selector|race|bond] [-auth FILE] [-v]
  socks5 server -key FILE -peer KEY ... -listen ADDR ... -allow PREFIX ... [-v]`

// host is how the program reaches the network: the operating system's sockets in main, a
// test's network namespaces in the tests.
type host struct {
	// listen opens the SOCKS5 listener.
	listen func(address string) (net.Listener, error)
	// listenCarrier opens a listener for rendr's carriers.
	listenCarrier func(address string) (net.Listener, error)
	// dialCarrier is a path's dial function.
	dialCarrier excli.DialCarrier
	// egress connects the server to a destination.
	egress rendr.Egress
	// lookup is the server's resolver.
	lookup lookupFunc
}

func osHost() host {
	return host{
		listen:        func(a string) (net.Listener, error) { return net.Listen("tcp", a) },
		listenCarrier: func(a string) (net.Listener, error) { return tcp.Listen(a) },
		dialCarrier:   tcp.Dialer,
		egress:        rendr.DirectEgress,
		lookup:        systemLookup,
	}
}

// run is the program: args without the program's name. It returns when ctx ends (nil) or the
// proxy fails.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, h host) error {
	return excli.Dispatch(args, stdin, stdout, map[string]func([]string) error{
		"client": func(args []string) error {
			c, err := newClient(args, stderr, h)
			if err != nil {
				return err
			}
			return c.serve(ctx)
		},
		"server": func(args []string) error {
			s, err := newServer(args, stderr, h)
			if err != nil {
				return err
			}
			return s.serve(ctx)
		},
	})
}
