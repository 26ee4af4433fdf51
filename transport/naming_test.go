package transport_test

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/gvisor"
	"github.com/rendr-go/rendr/transport/quic"
	"github.com/rendr-go/rendr/transport/tcp"
	"github.com/rendr-go/rendr/transport/udpflow"
)

// TestOneNamingScheme holds every carrier package to the same constructors: Dialer(address,
// opts...) is a path's DialFunc and Listen(address, opts...) a source. A package that drifts
// from it stops compiling here.
func TestOneNamingScheme(t *testing.T) {
	dialers := map[string]transport.DialFunc{
		"tcp":     tcp.Dialer("127.0.0.1:1"),
		"quic":    quic.Dialer("127.0.0.1:1", &tls.Config{}),
		"udpflow": udpflow.Dialer("127.0.0.1:1"),
		"gvisor":  gvisor.Dialer("127.0.0.1:1"),
	}
	for name, d := range dialers {
		if d == nil {
			t.Errorf("%s.Dialer returned nil", name)
		}
	}
	listens := map[string]func(string) (net.Listener, error){
		"tcp":     func(a string) (net.Listener, error) { return tcp.Listen(a) },
		"quic":    func(a string) (net.Listener, error) { return quic.Listen(a, nil) },
		"udpflow": func(a string) (net.Listener, error) { return udpflow.Listen(a) },
		"gvisor":  func(a string) (net.Listener, error) { return gvisor.Listen(a) },
	}
	for name, listen := range listens {
		ln, err := listen("127.0.0.1:0")
		if name == "quic" {
			// QUIC needs a certificate: without one, Listen must say so, not panic.
			if err == nil {
				ln.Close()
				t.Errorf("quic.Listen without a certificate: no error")
			}
			continue
		}
		if err != nil {
			t.Errorf("%s.Listen: %v", name, err)
			continue
		}
		if ln.Addr() == nil {
			t.Errorf("%s.Listen: no address", name)
		}
		ln.Close()
	}
}
