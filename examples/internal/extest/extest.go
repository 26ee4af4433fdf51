// Package extest is what the example programs' tests share: key files made as a user makes
// them, test data, the tools a test runs, and carriers opened somewhere else than the test's
// own network (in a network namespace).
package extest

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/examples/internal/excli"
	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/tcp"
)

// KeyFile writes a new private key to a file in a temporary directory of t's, as
// "prog genkey > FILE" does (the shell creating the file open to others), and returns the
// file and its public key.
func KeyFile(t testing.TB) (file, pub string) {
	t.Helper()
	file = filepath.Join(t.TempDir(), "private.key")
	f, err := os.OpenFile(file, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	err = excli.GenKey(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	k, err := rendr.LoadPrivateKey(file)
	if err != nil {
		t.Fatal(err)
	}
	return file, k.Public().String()
}

// Payload is n bytes of test data, the same for the same seed.
func Payload(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}

// NeedTool returns the path of a program the test runs. CI installs it (.ci/run), so there
// its absence is a failure, not a reason to skip.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed: .ci/run installs it", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// Opener makes a socket with mk somewhere else than the caller's network: in a network
// namespace, as a test lab's Open does.
type Opener func(mk func() (io.Closer, error)) (io.Closer, error)

// ListenCarrier is a program's carrier listener, opened by open.
func ListenCarrier(open Opener) func(address string) (net.Listener, error) {
	return func(a string) (net.Listener, error) {
		l, err := open(func() (io.Closer, error) { return tcp.Listen(a) })
		if err != nil {
			return nil, err
		}
		return l.(net.Listener), nil
	}
}

// DialCarrier is a program's path dialer, its connections opened by open.
func DialCarrier(open Opener) excli.DialCarrier {
	return func(a string, opts ...tcp.Option) transport.DialFunc {
		d := tcp.Dialer(a, opts...)
		return func(ctx context.Context) (net.Conn, error) {
			c, err := open(func() (io.Closer, error) { return d(ctx) })
			if err != nil {
				return nil, err
			}
			return c.(net.Conn), nil
		}
	}
}
