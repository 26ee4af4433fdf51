package excli

// The flags both kinds of program side take: the dialing side's (-key, -peer, -path, -policy,
// -v) and the serving side's (-key, -peer and -listen repeated, -v), read into rendr's
// configurations.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/rendr-go/rendr"
)

// DialSide is the flags of the side that reaches the other over its paths.
type DialSide struct {
	prog, far         string
	key, peer, policy *string
	verbose           *bool
	paths             ListFlag
}

// DialFlags adds the dialing side's flags to fs: -key, -peer, -path (repeated), -policy and
// -v. prog is the program's name and far names the other side ("server"), for the help and
// the errors.
func DialFlags(fs *flag.FlagSet, prog, far string) *DialSide {
	s := &DialSide{prog: prog, far: far}
	s.key = fs.String("key", "", "file holding this side's private key")
	s.peer = fs.String("peer", "", "the "+far+"'s public key")
	s.policy = fs.String("policy", "selector", "how the paths are used: selector, race or bond")
	s.verbose = fs.Bool("v", false, "log every connection and rendr's debug events")
	fs.Var(&s.paths, "path", "a path to the "+far+": ADDR[,from=IP][,backup|,tier=N][,name=NAME] (repeat for more)")
	return s
}

// Dialer makes the rendr.Dialer the parsed flags describe, its paths dialed with dial, and
// returns it with the program's logger (debug events only with -v, rendr's among them).
func (s *DialSide) Dialer(stderr io.Writer, dial DialCarrier) (*rendr.Dialer, *slog.Logger, error) {
	key, err := loadKey(*s.key, s.prog)
	if err != nil {
		return nil, nil, err
	}
	if *s.peer == "" {
		return nil, nil, fmt.Errorf("-peer is required: the %s's public key (%s pubkey < its key file)", s.far, s.prog)
	}
	peerKey, err := rendr.ParsePublicKey(*s.peer)
	if err != nil {
		return nil, nil, fmt.Errorf("-peer: %w", err)
	}
	root, err := PathGraph(*s.policy, s.paths, s.far, dial)
	if err != nil {
		return nil, nil, err
	}
	log, rlog := logger(stderr, *s.verbose)
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: key, PeerKey: peerKey, Root: root,
		Options: rendr.Options{Logger: rlog}})
	if err != nil {
		return nil, nil, err
	}
	return d, log, nil
}

// ServeSide is the flags of the side the other's paths reach.
type ServeSide struct {
	prog, peer, paths string
	key               *string
	verbose           *bool
	peers, listen     ListFlag
}

// ServeFlags adds the serving side's flags to fs: -key, -peer and -listen (both repeated) and
// -v. prog is the program's name, peer names one of the sides that dial it ("a client") and
// paths their paths ("the clients' paths"), for the help and the errors.
func ServeFlags(fs *flag.FlagSet, prog, peer, paths string) *ServeSide {
	s := &ServeSide{prog: prog, peer: peer, paths: paths}
	s.key = fs.String("key", "", "file holding this side's private key")
	s.verbose = fs.Bool("v", false, "log rendr's debug events, each connection's among them")
	fs.Var(&s.peers, "peer", peer+"'s public key (repeat for more)")
	fs.Var(&s.listen, "listen", "an address "+paths+" dial (repeat for more)")
	return s
}

// Config reads the parsed flags into a listener's configuration, its Key, Peers and Logger,
// and returns it with the program's logger (debug events only with -v, rendr's among them).
// The program adds its Egress, then opens the listener with Listen.
func (s *ServeSide) Config(stderr io.Writer) (rendr.ListenConfig, *slog.Logger, error) {
	key, err := loadKey(*s.key, s.prog)
	if err != nil {
		return rendr.ListenConfig{}, nil, err
	}
	peers, err := parsePeers(s.peers, fmt.Sprintf("%s's public key (%s pubkey < its key file)", s.peer, s.prog))
	if err != nil {
		return rendr.ListenConfig{}, nil, err
	}
	if len(s.listen) == 0 {
		return rendr.ListenConfig{}, nil, errors.New("-listen is required: an address for " + s.paths + " (give it once per path)")
	}
	log, rlog := logger(stderr, *s.verbose)
	return rendr.ListenConfig{Key: key, Peers: peers, Options: rendr.Options{Logger: rlog}}, log, nil
}

// Listen opens a carrier listener with listen on each -listen address, and the rendr
// listener of cfg over them.
func (s *ServeSide) Listen(cfg rendr.ListenConfig, listen func(address string) (net.Listener, error)) (*rendr.Listener, error) {
	srcs, err := listenAll(s.listen, listen)
	if err != nil {
		return nil, err
	}
	ln, err := rendr.Listen(cfg, srcs...)
	if err != nil {
		closeAll(srcs)
		return nil, err
	}
	return ln, nil
}
