package main

import (
	"context"
	"net"
	"net/http"
	"sync"

	"golang.org/x/net/websocket"

	"github.com/rendr-go/rendr/transport"
)

// This file is the whole carrier: about what an embedder writes to run rendr over a carrier
// rendr does not ship. rendr needs two things:
//
//   - on the dialing side, a transport.DialFunc: any func(ctx) (net.Conn, error) whose
//     net.Conn delivers bytes in order (it may fail at any time; rendr dials again);
//   - on the listening side, a net.Listener whose Accept returns such net.Conns.
//
// A WebSocket connection from golang.org/x/net/websocket is already a net.Conn (binary
// frames make a byte stream), so the dialing side is three lines and the listening side adapts
// an http.Handler to a net.Listener.
//
// A carrier that can also carry unreliable datagrams beside its stream (QUIC, or a stream
// plus a UDP association through a proxy) implements transport.Datagrammer on the same
// net.Conn: SendDatagram, ReceiveDatagram and MaxDatagramSize. rendr then sends packet flows'
// datagrams that way; without it they ride the stream.

// wsDialer is the dialing side: one WebSocket connection to url per call.
func wsDialer(url, origin string) transport.DialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		cfg, err := websocket.NewConfig(url, origin)
		if err != nil {
			return nil, err
		}
		ws, err := cfg.DialContext(ctx)
		if err != nil {
			return nil, err
		}
		ws.PayloadType = websocket.BinaryFrame
		return ws, nil
	}
}

// wsListener is the listening side: an http.Handler for the WebSocket endpoint and the
// net.Listener rendr takes carriers from. Mount Handler on any HTTP server (behind the same
// TLS, the same reverse proxy, the same port as the rest of the service).
type wsListener struct {
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	addr   net.Addr
	server websocket.Server
}

func newWSListener(addr net.Addr) *wsListener {
	l := &wsListener{conns: make(chan net.Conn), done: make(chan struct{}), addr: addr}
	l.server = websocket.Server{Handler: l.serve}
	return l
}

// Handler serves the WebSocket endpoint.
func (l *wsListener) Handler() http.Handler { return l.server }

// serve hands one connection to Accept and keeps the HTTP handler (which owns the
// connection) running until rendr closes it.
func (l *wsListener) serve(ws *websocket.Conn) {
	ws.PayloadType = websocket.BinaryFrame
	c := &wsConn{Conn: ws, closed: make(chan struct{})}
	select {
	case l.conns <- c:
	case <-l.done:
		return
	}
	select {
	case <-c.closed:
	case <-l.done:
	}
}

// wsConn tells serve when rendr closes the connection.
type wsConn struct {
	*websocket.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *wsConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func (l *wsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *wsListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *wsListener) Addr() net.Addr { return l.addr }
