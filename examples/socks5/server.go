package main

// The server half: a rendr listener whose Egress makes each flow's connection (within the
// allow-list), and which answers the clients' name lookups.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/examples/internal/excli"
	"github.com/rendr-go/rendr/l3"
)

// maxLookups bounds the lookups in progress for all clients; past it a lookup's flow is reset.
const maxLookups = 64

type server struct {
	ln     *rendr.Listener
	lookup lookupFunc
	log    *slog.Logger
}

// newServer reads the server's flags and opens its listener.
func newServer(args []string, stderr io.Writer, h host) (*server, error) {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	side := excli.ServeFlags(fs, "socks5", "a client", "the clients' paths")
	var allow excli.ListFlag
	fs.Var(&allow, "allow", "a prefix clients may connect to; 0.0.0.0/0 and ::/0 for all (repeat for more)")
	if err := fs.Parse(args); err != nil {
		return nil, excli.ErrUsage
	}
	cfg, log, err := side.Config(stderr)
	if err != nil {
		return nil, err
	}
	// No default: an open proxy into the server's networks, its own loopback included, is
	// something to ask for.
	if len(allow) == 0 {
		return nil, errors.New("-allow is required: where clients may connect (0.0.0.0/0 and ::/0 say everywhere)")
	}
	var prefixes []netip.Prefix
	for _, a := range allow {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return nil, fmt.Errorf("-allow: %w", err)
		}
		prefixes = append(prefixes, p.Masked())
	}
	s := &server{lookup: h.lookup, log: log}
	cfg.Egress = rendr.AllowEgress(prefixes, tcpOnly(h.egress))
	if s.ln, err = side.Listen(cfg, h.listenCarrier); err != nil {
		return nil, err
	}
	return s, nil
}

// tcpOnly passes TCP connections to next: the client opens nothing else (it serves CONNECT
// only), and a UDP relay is not what this server offers.
func tcpOnly(next rendr.Egress) rendr.Egress {
	return func(ctx context.Context, peer rendr.PublicKey, id l3.Identity) (net.Conn, error) {
		if id.Proto != l3.TCP {
			return nil, fmt.Errorf("socks5 server: %v: only TCP is carried", id)
		}
		return next(ctx, peer, id)
	}
}

// serve answers lookups until ctx ends (the Egress carries the connections by itself), then
// closes the listener, which ends every session.
func (s *server) serve(ctx context.Context) error {
	s.log.Info("socks5 server: listening", "addr", s.ln.Addr())
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxLookups)
	var err error
	for {
		f, aerr := s.ln.AcceptContext(ctx)
		if aerr != nil {
			if ctx.Err() == nil {
				err = aerr
			}
			break
		}
		select {
		case sem <- struct{}{}:
		default:
			f.Reset()
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			s.answer(ctx, f)
		})
	}
	s.ln.Close()
	wg.Wait()
	return err
}

// answer serves one lookup flow.
func (s *server) answer(ctx context.Context, f *rendr.Conn) {
	defer f.Close()
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	f.SetReadDeadline(time.Now().Add(resolveTimeout))
	name, err := readResolveRequest(f)
	if err != nil {
		s.log.Debug("socks5 server: a malformed lookup", "err", err)
		f.Reset()
		return
	}
	addrs, err := s.lookup(ctx, name)
	s.log.Debug("socks5 server: lookup", "name", name, "addrs", addrs, "err", err)
	f.SetWriteDeadline(time.Now().Add(resolveTimeout))
	f.Write(appendAnswer(nil, lookupStatus(err), addrs))
}
