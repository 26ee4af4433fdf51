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
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport"
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
	dialCarrier func(address string, opts ...tcp.Option) transport.DialFunc
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
		k, err := rendr.NewKey()
		if err != nil {
			return err
		}
		b, _ := k.MarshalText()
		fmt.Fprintf(stdout, "%s\n", b)
		return nil
	case "pubkey":
		b, err := io.ReadAll(io.LimitReader(stdin, 1024))
		if err != nil {
			return err
		}
		k, err := rendr.ParsePrivateKey(strings.TrimSpace(string(b)))
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, k.Public())
		return nil
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

// listFlag is a flag given any number of times.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// logger writes to w; debug events (rendr's own included) only when verbose.
func logger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// readKey reads a private key from a file, as genkey writes it.
func readKey(path string) (rendr.PrivateKey, error) {
	if path == "" {
		return rendr.PrivateKey{}, errors.New("-key is required: a file holding this side's private key (portfwd genkey > FILE)")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return rendr.PrivateKey{}, fmt.Errorf("-key: %w", err)
	}
	k, err := rendr.ParsePrivateKey(strings.TrimSpace(string(b)))
	if err != nil {
		return rendr.PrivateKey{}, fmt.Errorf("-key %s: %w", path, err)
	}
	return k, nil
}
