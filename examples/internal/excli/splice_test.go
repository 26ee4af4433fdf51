package excli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/examples/internal/excli"
	"github.com/rendr-go/rendr/examples/internal/extest"
	"github.com/rendr-go/rendr/transport/tcp"
)

// TestSplice carries a connection over a flow both ways, each direction ended by a
// half-close, through a rendr session over loopback; the bytes are checked by SHA-256.
func TestSplice(t *testing.T) {
	cliKey, err := rendr.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := rendr.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	carrier, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, carrier)
	if err != nil {
		carrier.Close()
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Path("p", tcp.Dialer(carrier.Addr().String()))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	// The far side echoes the SHA-256 of what it read, then a reply, then its end of stream.
	reply := bytes.Repeat([]byte("reply "), 100_000)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		f, err := ln.Accept()
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			t.Error(err)
			return
		}
		f.Write(h.Sum(nil))
		f.Write(reply)
	})

	// The application's TCP connection: app is the program's end, user the application's.
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer appLn.Close()
	user, err := net.Dial("tcp", appLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer user.Close()
	app, err := appLn.Accept()
	if err != nil {
		t.Fatal(err)
	}
	fl, err := d.DialContext(context.Background())
	if err != nil {
		app.Close()
		t.Fatal(err)
	}
	spliced := make(chan error, 1)
	go func() { spliced <- excli.Splice(app, fl) }()

	up := bytes.Repeat([]byte("up "), 200_000)
	got, err := extest.Exchange(user, up)
	if err != nil {
		t.Fatal(err)
	}
	extest.CheckDigestReply(t, got, up, reply)
	if err := <-spliced; err != nil {
		t.Fatalf("Splice: %v", err)
	}
}
