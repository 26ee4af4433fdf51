package excli

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rendr-go/rendr"
)

func TestDispatch(t *testing.T) {
	var got []string
	cmds := map[string]func([]string) error{
		"serve": func(args []string) error { got = args; return nil },
	}
	for _, args := range [][]string{nil, {}, {"frobnicate"}, {"-v"}} {
		if err := Dispatch(args, nil, nil, cmds); !errors.Is(err, ErrUsage) {
			t.Errorf("%q: %v, want ErrUsage", args, err)
		}
	}
	if err := Dispatch([]string{"serve", "-v", "x"}, nil, nil, cmds); err != nil || strings.Join(got, " ") != "-v x" {
		t.Errorf("serve: %v, given %q, want -v x", err, got)
	}
	var priv, pub bytes.Buffer
	if err := Dispatch([]string{"genkey"}, nil, &priv, cmds); err != nil {
		t.Fatal(err)
	}
	if err := Dispatch([]string{"pubkey"}, bytes.NewReader(priv.Bytes()), &pub, cmds); err != nil {
		t.Fatal(err)
	}
	k, err := rendr.ParsePrivateKey(strings.TrimSpace(priv.String()))
	if err != nil {
		t.Fatalf("genkey wrote %q: %v", priv.String(), err)
	}
	if strings.TrimSpace(pub.String()) != k.Public().String() {
		t.Errorf("pubkey %q, want %q", pub.String(), k.Public())
	}
}

// TestServe: every connection is handled, and when ctx ends Serve stops accepting, calls
// stop, and returns nil once the handlers (which stop ends) have returned.
func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	var handled, returned atomic.Int32
	handling := make(chan struct{}, 3)
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, ln, func(c net.Conn) {
			defer c.Close()
			handled.Add(1)
			handling <- struct{}{}
			<-stopped // a handler runs until stop ends it, as a splice does
			returned.Add(1)
		}, func() { close(stopped) })
	}()
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	for range 3 {
		<-handling
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v, want nil when ctx ends", err)
	}
	if handled.Load() != 3 || returned.Load() != 3 {
		t.Fatalf("Serve returned with %d of %d handlers returned", returned.Load(), handled.Load())
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the listener is still open: %v", err)
	}
}

// failingListener fails its first Accept, as a listener whose socket broke does.
type failingListener struct{ net.Listener }

var errBroken = errors.New("broken")

func (failingListener) Accept() (net.Conn, error) { return nil, errBroken }

// TestServeClosesConns: a handler blocked reading its connection returns once ctx ends,
// Serve having closed the connection, though stop does nothing.
func TestServeClosesConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reading := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, ln, func(c net.Conn) {
			close(reading)
			c.Read(make([]byte, 1))
		}, func() {})
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-reading
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestServeFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	err = Serve(context.Background(), failingListener{ln}, func(net.Conn) {}, func() { stopped = true })
	if !errors.Is(err, errBroken) || !stopped {
		t.Fatalf("Serve: %v (stop called: %v), want the accept error after stop", err, stopped)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the listener is still open: %v", err)
	}
}
