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
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/rendr-go/rendr/examples/internal/excli"
	"github.com/rendr-go/rendr/transport/tcp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, osHost())
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "portfwd:", err)
		if errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, usage)
		}
		os.Exit(1)
	}
}

const usage = `usage:
  portfwd genkey
  portfwd pubkey < private-key
  portfwd serve -key FILE -peer KEY ... -listen ADDR ... -target HOST:PORT [-v]
  portfwd forward -key FILE -peer KEY -listen ADDR -path ADDR[,from=IP][,backup|,tier=N] ...
                  [-policy selector|race|bond] [-v]`

var errUsage = errors.New("usage")

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
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "genkey":
		return excli.GenKey(stdout)
	case "pubkey":
		return excli.PubKey(stdin, stdout)
	case "serve":
		s, err := newServer(args[1:], stderr, h)
		if err != nil {
			return err
		}
		return s.serve(ctx)
	case "forward":
		f, err := newForwarder(args[1:], stderr, h)
		if err != nil {
			return err
		}
		return f.serve(ctx)
	}
	return errUsage
}
