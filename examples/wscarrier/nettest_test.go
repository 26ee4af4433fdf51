package main

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
)

// TestNettestOverWebSocket runs the net.Conn conformance suite on a rendr flow whose one path
// is this WebSocket carrier: deadlines, concurrent use and Close must behave as on any other
// carrier rendr ships.
func TestNettestOverWebSocket(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
		hl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, nil, err
		}
		ws := newWSListener(hl.Addr())
		mux := http.NewServeMux()
		mux.Handle("/rendr", ws.Handler())
		hs := &http.Server{Handler: mux}
		served := make(chan struct{})
		go func() {
			defer close(served)
			hs.Serve(hl)
		}()
		ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, ws)
		if err != nil {
			hs.Close()
			<-served
			return nil, nil, nil, err
		}
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: cliKey, PeerKey: srvKey.Public(),
			Root: rendr.Path("websocket", wsDialer("ws://"+hl.Addr().String()+"/rendr", "http://localhost/"))})
		closeAll := func() {
			if d != nil {
				d.Close()
			}
			ln.Close()
			ws.Close()
			hs.Close()
			<-served
		}
		if err != nil {
			closeAll()
			return nil, nil, nil, err
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
