package excli

import (
	"flag"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport/tcp"
)

// keyFile writes a new private key to a file only its owner may read.
func keyFile(t *testing.T) (path string, k rendr.PrivateKey) {
	t.Helper()
	k, err := rendr.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "k.key")
	if err := rendr.SavePrivateKey(path, k); err != nil {
		t.Fatal(err)
	}
	return path, k
}

// TestSides: each side's flags make its rendr configuration, and each missing flag is an
// error naming it and the program's own words.
func TestSides(t *testing.T) {
	cliFile, cliKey := keyFile(t)
	srvFile, srvKey := keyFile(t)
	cliPub, srvPub := cliKey.Public().String(), srvKey.Public().String()

	dial := func(args ...string) (*rendr.Dialer, error) {
		fs := flag.NewFlagSet("client", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		s := DialFlags(fs, "prog", "far end")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		d, log, err := s.Dialer(io.Discard, tcp.Dialer)
		if err == nil && log == nil {
			t.Error("no logger")
		}
		return d, err
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-peer", srvPub, "-path", "127.0.0.1:1"}, "-key is required: a file holding this side's private key (prog genkey > FILE)"},
		{[]string{"-key", cliFile, "-path", "127.0.0.1:1"}, "-peer is required: the far end's public key (prog pubkey"},
		{[]string{"-key", cliFile, "-peer", "nonsense", "-path", "127.0.0.1:1"}, "-peer: "},
		{[]string{"-key", cliFile, "-peer", srvPub}, "-path is required: the far end's address"},
		{[]string{"-key", cliFile, "-peer", srvPub, "-path", "127.0.0.1:1", "-policy", "x"}, "-policy"},
	} {
		if _, err := dial(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}

	serveFlags := func(args ...string) *ServeSide {
		fs := flag.NewFlagSet("server", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		s := ServeFlags(fs, "prog", "a near end", "the near ends' paths")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-peer", cliPub, "-listen", "127.0.0.1:0"}, "-key is required"},
		{[]string{"-key", srvFile, "-listen", "127.0.0.1:0"}, "-peer is required: a near end's public key (prog pubkey"},
		{[]string{"-key", srvFile, "-peer", cliPub, "-peer", "nonsense", "-listen", "127.0.0.1:0"}, `-peer "nonsense"`},
		{[]string{"-key", srvFile, "-peer", cliPub}, "-listen is required: an address for the near ends' paths"},
	} {
		if _, _, err := serveFlags(tc.args...).Config(io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}

	// Both sides as the flags say, and a flow between them.
	s := serveFlags("-key", srvFile, "-peer", cliPub, "-listen", "127.0.0.1:0", "-v")
	cfg, _, err := s.Config(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Key != srvKey || len(cfg.Peers) != 1 || cfg.Peers[0] != cliKey.Public() || cfg.Options.Logger == nil {
		t.Fatalf("the listener's configuration: %+v", cfg)
	}
	var addr string
	ln, err := s.Listen(cfg, func(a string) (net.Listener, error) {
		l, err := tcp.Listen(a)
		if err == nil {
			addr = l.Addr().String()
		}
		return l, err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := dial("-key", cliFile, "-peer", srvPub, "-path", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	f, err := d.DialContext(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	g, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	b := make([]byte, 2)
	if _, err := io.ReadFull(g, b); err != nil || string(b) != "hi" {
		t.Fatalf("read %q, %v", b, err)
	}

	// A listener that cannot be opened closes those opened before it.
	bad := serveFlags("-key", srvFile, "-peer", cliPub, "-listen", "127.0.0.1:0", "-listen", "not an address")
	cfg, _, err = bad.Config(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Listen(cfg, func(a string) (net.Listener, error) { return tcp.Listen(a) }); err == nil || !strings.Contains(err.Error(), "-listen not an address") {
		t.Fatalf("Listen: %v", err)
	}
}
