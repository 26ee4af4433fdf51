package extest

import (
	"bytes"
	"context"
	"io"
	"os"
	"runtime"
	"testing"

	"go.uber.org/goleak"

	"github.com/rendr-go/rendr"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestKeyFile: the file holds a key only its owner may read, of the public key returned.
func TestKeyFile(t *testing.T) {
	file, pub := KeyFile(t)
	k, err := rendr.LoadPrivateKey(file)
	if err != nil {
		t.Fatal(err)
	}
	if k.Public().String() != pub {
		t.Fatalf("public key %s, want %s", pub, k.Public())
	}
	info, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %04o, want 0600", info.Mode().Perm())
	}
	if _, pub2 := KeyFile(t); pub2 == pub {
		t.Fatal("the same key twice")
	}
}

func TestPayload(t *testing.T) {
	if !bytes.Equal(Payload(1, 100), Payload(1, 100)) || bytes.Equal(Payload(1, 100), Payload(2, 100)) {
		t.Fatal("a payload is not a function of its seed")
	}
}

// TestCarriers: the carriers' sockets are made by the Opener, and work.
func TestCarriers(t *testing.T) {
	opened := 0
	open := func(mk func() (io.Closer, error)) (io.Closer, error) { opened++; return mk() }
	ln, err := ListenCarrier(open)("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := DialCarrier(open)(ln.Addr().String())(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	if opened != 2 {
		t.Fatalf("%d sockets made through the Opener, want 2", opened)
	}
	if _, err := ListenCarrier(open)("not an address"); err == nil {
		t.Fatal("a listener on no address")
	}
}
