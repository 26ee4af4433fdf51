package main

// The serving side: a rendr listener whose Egress sends every flow to the one target, whatever
// address its identity names (the forwarding side's port).

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/examples/internal/excli"
	"github.com/rendr-go/rendr/l3"
)

type server struct {
	ln     *rendr.Listener
	target string
	log    *slog.Logger
}

// newServer reads the serving side's flags and opens its listener.
func newServer(args []string, stderr io.Writer, h host) (*server, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	side := excli.ServeFlags(fs, "portfwd", "a forwarding side", "the forwarding side's paths")
	target := fs.String("target", "", "the service every connection goes to, as 127.0.0.1:5432")
	if err := fs.Parse(args); err != nil {
		return nil, excli.ErrUsage
	}
	cfg, log, err := side.Config(stderr)
	if err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(*target); err != nil {
		return nil, fmt.Errorf("-target is required, as host:port: %q: %w", *target, err)
	}
	s := &server{target: *target, log: log}
	// rendr splices each flow to the connection the Egress returns (half-closes and resets
	// carried both ways), and tells the forwarding side when the target refused it.
	cfg.Egress = func(ctx context.Context, _ rendr.PublicKey, id l3.Identity) (net.Conn, error) {
		if id.Proto != l3.TCP {
			return nil, fmt.Errorf("portfwd serve: %v: only TCP is forwarded", id)
		}
		return h.dial(ctx, "tcp", s.target)
	}
	if s.ln, err = side.Listen(cfg, h.listenCarrier); err != nil {
		return nil, err
	}
	return s, nil
}

// serve runs until ctx ends, then closes the listener, which ends every session and every
// forwarded connection. The Egress carries the connections; flows without an identity are
// not this program's and are reset.
func (s *server) serve(ctx context.Context) error {
	s.log.Info("portfwd serve: listening", "addr", s.ln.Addr(), "target", s.target)
	var err error
	for {
		f, aerr := s.ln.AcceptContext(ctx)
		if aerr != nil {
			if ctx.Err() == nil {
				err = aerr
			}
			break
		}
		f.Reset()
	}
	s.ln.Close()
	return err
}
