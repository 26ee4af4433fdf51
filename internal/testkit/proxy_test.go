package testkit

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
)

// The proxy forwards both ways, numbers its connections and shows hooks each direction's
// offsets; a hook's change reaches the far end.
func TestProxyHooks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c) // echo
	}()
	var mu sync.Mutex
	var upSeen int64
	conns := map[int]bool{}
	p := NewProxy(t, ln.Addr().String(), func(conn int, off int64, b []byte) {
		mu.Lock()
		defer mu.Unlock()
		conns[conn] = true
		for i := range b {
			if off+int64(i) == 3 {
				b[i] = 'X'
			}
		}
		upSeen = off + int64(len(b))
	}, nil)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("abcdefgh")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	c.Close()
	p.Close()
	wg.Wait()
	if !bytes.Equal(got, []byte("abcXefgh")) {
		t.Fatalf("echoed %q, want the hook's change at offset 3", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if upSeen != 8 || len(conns) != 1 || !conns[0] {
		t.Fatalf("hook saw %d bytes on conns %v; want 8 on conn 0", upSeen, conns)
	}
}
