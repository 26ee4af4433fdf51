package main

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
)

// TestNettestOverDatagrams runs the net.Conn conformance suite on a rendr flow whose one path
// is this datagram carrier: a stream rendr numbers, acknowledges and resends over UDP must
// keep every net.Conn behaviour (deadlines, concurrent use, Close) of a stream carrier.
func TestNettestOverDatagrams(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
		ul, err := dgListen("127.0.0.1:0")
		if err != nil {
			return nil, nil, nil, err
		}
		ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, ul)
		if err != nil {
			ul.Close()
			return nil, nil, nil, err
		}
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: cliKey, PeerKey: srvKey.Public(),
			Root: rendr.Path("udp", dgDialer(ul.Addr().String()))})
		if err != nil {
			ln.Close() // closes its sources too
			return nil, nil, nil, err
		}
		closeAll := func() {
			d.Close()
			ln.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, s, err := testkit.OpenFlow(ctx, d, ln)
		if err != nil {
			closeAll()
			return nil, nil, nil, err
		}
		return c, s, func() {
			c.Close()
			s.Close()
			closeAll()
		}, nil
	})
}
