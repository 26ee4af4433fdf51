// Command portfwd exposes a TCP service at a remote site over rendr, as ssh -L does over one
// connection: the side near the service runs "portfwd serve", which forwards every flow to a
// fixed target address; the other side runs "portfwd forward", which takes local TCP
// connections and carries each over rendr, across every path it has to the serving side. A
// connection survives the loss of the path it was using.
//
//	portfwd genkey > fwd.key              a private key
//	portfwd pubkey < fwd.key              its public key, for the other side's flags
//	portfwd serve -key srv.key -peer FWDPUB -listen :7001 -listen :7002 -target 127.0.0.1:5432
//	portfwd forward -key fwd.key -peer SRVPUB -listen 127.0.0.1:5432 \
//	    -path 203.0.113.7:7001 -path 203.0.113.7:7002,from=10.20.0.5,backup
//
// README.md beside this file says more.
package main

import (
	"context"
	"io"
	"net"
	"os"

	"github.com/rendr-go/rendr/examples/internal/excli"
	"github.com/rendr-go/rendr/transport/tcp"
)

func main() {
	excli.Main("portfwd", usage, func(ctx context.Context, args []string) error {
		return run(ctx, args, os.Stdin, os.Stdout, os.Stderr, osHost())
	})
}

const usage = `usage:
  portfwd genkey
  portfwd pubkey < private-key
  portfwd serve -key FILE -peer KEY ... -listen ADDR ... -target HOST:PORT [-v]
  portfwd forward -key FILE -peer KEY -listen ADDR -path ADDR[,from=IP][,backup|,tier=N] ...
                  [-policy selector|race|bond] [-v]`

// host is how the program reaches the network: the operating system's sockets in main, a
// test's network namespaces in the tests.
type host struct {
	// listen opens the forwarded port's listener.
	listen func(address string) (net.Listener, error)
	// listenCarrier opens a listener for rendr's carriers.
	listenCarrier func(address string) (net.Listener, error)
	// dialCarrier is a path's dial function.
	dialCarrier excli.DialCarrier
	// dial connects the serving side to its target.
	dial func(ctx context.Context, network, address string) (net.Conn, error)
}

func osHost() host {
	var d net.Dialer
	return host{
		listen:        func(a string) (net.Listener, error) { return net.Listen("tcp", a) },
		listenCarrier: func(a string) (net.Listener, error) { return tcp.Listen(a) },
		dialCarrier:   tcp.Dialer,
		dial:          d.DialContext,
	}
}

// run is the program: args without the program's name. It returns when ctx ends (nil) or the
// program fails.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, h host) error {
	return excli.Dispatch(args, stdin, stdout, map[string]func([]string) error{
		"serve": func(args []string) error {
			s, err := newServer(args, stderr, h)
			if err != nil {
				return err
			}
			return s.serve(ctx)
		},
		"forward": func(args []string) error {
			f, err := newForwarder(args, stderr, h)
			if err != nil {
				return err
			}
			return f.serve(ctx)
		},
	})
}
