package udpflow

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor waits, bounded by wait, until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// tokenHello is what a dialer's hello carrying a Retry's token must be: flags 0x11, the id,
// the payload's length and the payload, the token's length and the token, zero padding.
func tokenHello(id [8]byte, payload, token []byte) []byte {
	b := []byte{flagHello | flagToken}
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	b = append(b, payload...)
	b = append(append(b, byte(len(token))), token...)
	if len(b) < helloSize {
		b = append(b, make([]byte, helloSize-len(b))...)
	}
	return b
}

// sourceSocket is a UDP socket on loopback address 127.0.x.y: a source that looks like
// another host's.
func sourceSocket(t *testing.T, x, y byte) *net.UDPConn {
	t.Helper()
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, x, y)})
	must(t, err)
	u.SetWriteBuffer(4 << 20)
	t.Cleanup(func() { u.Close() })
	return u
}

func conns(l *Listener) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// TestPendingHelloMemory: a hello nobody authenticated costs the listener about 1 KiB and no
// goroutine, however many come: 2000 hellos of 2000 ids from 20 addresses, none accepted.
// (Before, each made a connection with a receive queue of 8192 slots: 656 KB.)
func TestPendingHelloMemory(t *testing.T) {
	const n, batch = 2000, 200
	l := listen(t, RetryPending(-1), MaxPending(n))
	var srcs []*net.UDPConn
	for i := range 20 {
		srcs = append(srcs, sourceSocket(t, 7, byte(10+i)))
	}
	payload := randomBytes(214) // rendr's first handshake message with a 64-byte name
	hellos := make([][]byte, n)
	for i := range hellos {
		hellos[i] = helloDatagram(randomID(), payload)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()
	for i := 0; i < n; i += batch {
		for j := i; j < i+batch; j++ {
			send(t, srcs[j%len(srcs)], hellos[j], l.Addr())
		}
		waitFor(t, "the batch's connections", func() bool { return l.Stats().Pending == int64(i+batch) })
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("%d bytes of heap per pending hello", per)
	if per > 1536 {
		t.Fatalf("%d bytes of heap per pending hello, want at most 1536", per)
	}
	if g := runtime.NumGoroutine(); g > goroutines {
		t.Fatalf("%d goroutines after %d hellos, %d before", g, n, goroutines)
	}
	if st := l.Stats(); st.Pending != n || conns(l) != n || st.Retries != 0 || st.Dropped != 0 {
		t.Fatalf("stats %+v, %d connections; want %d pending, no retry, none dropped", st, conns(l), n)
	}
	runtime.KeepAlive(hellos)
}

// TestPendingBounds: before it is promoted a connection queues at most pendingLen datagrams
// beside its hello, and pending connections share pendingBudget; a hello carrying more than
// pendingBytes counts against the budget too. Promotion lifts the first bound.
func TestPendingBounds(t *testing.T) {
	l := listen(t, RetryPending(-1))
	raw := rawSocket(t)
	// A large hello is charged to the budget until it is read.
	send(t, raw, helloDatagram(randomID(), make([]byte, pendingBytes+1)), l.Addr())
	large := accept(t, l)
	if got := l.pendingQueued.Load(); got != pendingBytes+1 {
		t.Fatalf("%d bytes charged for a hello of %d", got, pendingBytes+1)
	}
	expectRead(t, large, make([]byte, pendingBytes+1))
	if got := l.pendingQueued.Load(); got != 0 {
		t.Fatalf("%d bytes charged once the hello was read", got)
	}
	id := randomID()
	send(t, raw, helloDatagram(id, []byte("client hello")), l.Addr())
	c := accept(t, l)
	for i := range pendingLen + 3 {
		send(t, raw, datagram(0, id, []byte{byte(i)}), l.Addr())
	}
	waitFor(t, "the early datagrams", func() bool { return c.Stats().Dropped == 3 })
	if q := c.queueLen(); q != pendingLen {
		t.Fatalf("%d datagrams queued while pending, want %d", q, pendingLen)
	}
	// The budget: two more pending connections' large datagrams fill it, and what does not
	// fit is dropped: 4 one-byte datagrams and 4 of 60000 bytes fit in 256 KiB, 4 more do not.
	var more []*Conn
	big := make([]byte, 60000)
	for range 2 {
		id := randomID()
		send(t, raw, helloDatagram(id, []byte("more")), l.Addr())
		m := accept(t, l)
		for range pendingLen {
			send(t, raw, datagram(0, id, big), l.Addr())
		}
		waitFor(t, "the large datagrams", func() bool { return m.queueLen()+int(m.Stats().Dropped) == pendingLen })
		more = append(more, m)
	}
	if got, dropped := l.pendingQueued.Load(), more[0].Stats().Dropped+more[1].Stats().Dropped; got != pendingLen+4*60000 || dropped != 4 {
		t.Fatalf("%d bytes queued by pending connections, %d large datagrams dropped; want %d, 4",
			got, dropped, pendingLen+4*60000)
	}
	// Promoted by its answer, the first one queues what comes.
	expectRead(t, c, []byte("client hello"))
	write(t, c, []byte("answer"))
	if st := l.Stats(); st.Pending != 3 || st.Promoted != 1 {
		t.Fatalf("stats %+v after one answer", st)
	}
	for i := range pendingLen {
		expectRead(t, c, []byte{byte(i)})
	}
	for i := range 2 * pendingLen {
		send(t, raw, datagram(0, id, []byte{byte(i)}), l.Addr())
	}
	for i := range 2 * pendingLen {
		expectRead(t, c, []byte{byte(i)})
	}
	// A large hello finds the budget full.
	send(t, raw, helloDatagram(randomID(), make([]byte, 30000)), l.Addr())
	waitFor(t, "the large hello", func() bool { return l.Stats().Dropped == 1 })
	more[0].Close()
	more[1].Close()
	large.Close()
	if got := l.pendingQueued.Load(); got != 0 || l.Stats().Pending != 0 {
		t.Fatalf("%d bytes counted against the budget, %d pending, once every pending connection closed",
			got, l.Stats().Pending)
	}
}

// TestRetry: past the threshold a hello gets a Retry (29 bytes for 1200) and no state; the
// hello sent again with the token from the same address gets a connection; a forged token,
// an expired one, one from another address or for another id gets nothing at all.
func TestRetry(t *testing.T) {
	l := listen(t, RetryPending(0))
	raw := rawSocket(t)
	id := randomID()
	p := []byte("client hello")
	h := helloDatagram(id, p)
	send(t, raw, h, l.Addr())
	r, _ := mustReadRaw(t, raw)
	if len(r) != retrySize || r[0] != flagRetry || [8]byte(r[1:headerSize]) != id {
		t.Fatalf("answer % x, want a %d-byte Retry for id %x", r, retrySize, id)
	}
	if 10*len(r) > len(h) {
		t.Fatalf("a %d-byte Retry for a %d-byte hello", len(r), len(h))
	}
	if conns(l) != 0 || l.Stats().Pending != 0 {
		t.Fatal("a hello answered with a Retry left state")
	}
	tok := r[headerSize:]

	other := rawSocket(t)
	forged := bytes.Clone(tok)
	forged[len(forged)-1] ^= 1
	old := retryToken(l.retryKey, addrOf(raw).AddrPort(), id, uint32(time.Now().Add(-retryLife-2*time.Second).Unix()))
	future := retryToken(l.retryKey, addrOf(raw).AddrPort(), id, uint32(time.Now().Add(time.Minute).Unix()))
	otherID := randomID()
	send(t, other, tokenHello(id, p, tok), l.Addr())
	send(t, raw, tokenHello(id, p, forged), l.Addr())
	send(t, raw, tokenHello(id, p, old[:]), l.Addr())
	send(t, raw, tokenHello(id, p, future[:]), l.Addr())
	send(t, raw, tokenHello(otherID, p, tok), l.Addr())
	// Datagrams are handled in order: once the valid one is accepted, the others were handled.
	send(t, raw, tokenHello(id, p, tok), l.Addr())
	c := accept(t, l)
	if c.ID() != id {
		t.Fatalf("accepted id %x, want %x", c.ID(), id)
	}
	expectRead(t, c, p)
	if st := l.Stats(); st.BadTokens != 5 || st.Tokens != 1 || st.Retries != 1 || conns(l) != 1 {
		t.Fatalf("stats %+v, %d connections; want 5 bad tokens, 1 good, 1 Retry, 1 connection", st, conns(l))
	}
	expectNothing(t, other, "a token from another address")
	expectNothing(t, raw, "bad tokens")
	// A copy of the token's hello is a copy of the connection's hello: once answered, it
	// gets the answer again, no Retry.
	write(t, c, []byte("server reply"))
	expectRaw(t, raw, datagram(flagReply, id, []byte("server reply")))
	send(t, raw, tokenHello(id, p, tok), l.Addr())
	expectRaw(t, raw, datagram(flagReply, id, []byte("server reply")))
}

// TestRetryDial: a real dialer goes through a Retry, over IPv4 and IPv6: it sends its hello
// again at once with the token, and the handshake completes.
func TestRetryDial(t *testing.T) {
	for _, ip := range []string{"127.0.0.1", "::1"} {
		t.Run(ip, func(t *testing.T) {
			l, err := Listen(net.JoinHostPort(ip, "0"), RetryPending(0))
			must(t, err)
			defer l.Close()
			d := dialFrom(t, ip, l.Addr())
			write(t, d, []byte("client hello"))
			c := accept(t, l)
			expectRead(t, c, []byte("client hello"))
			write(t, c, []byte("server reply"))
			expectRead(t, d, []byte("server reply"))
			write(t, d, []byte("data"))
			expectRead(t, c, []byte("data"))
			if st, ds := l.Stats(), d.Stats(); st.Retries < 1 || st.Tokens < 1 || ds.Retries != 1 {
				t.Fatalf("listener %+v, dialer %+v; want a Retry taken", st, ds)
			}
		})
	}
}

// TestDialDuringHelloFlood: while hellos from forged-looking sources flood the listener and
// every connection they make is held unanswered (as a handshake that never authenticates is,
// until its timeout), a real dialer still gets through, by Retry, and the flood holds no more
// than RetryPending connections.
func TestDialDuringHelloFlood(t *testing.T) {
	l := listen(t)
	var held sync.WaitGroup
	legit := make(chan *Conn, 1)
	held.Add(1)
	go func() {
		defer held.Done()
		buf := make([]byte, 64)
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			c := nc.(*Conn)
			if n, _ := c.Read(buf); string(buf[:n]) == "legit hello" {
				legit <- c
			} // others stay open and pending until the listener closes them
		}
	}()
	defer held.Wait()
	defer l.Close()

	stop := make(chan struct{})
	var flood sync.WaitGroup
	var sent atomic.Int64
	for i := range 2 {
		u := sourceSocket(t, 8, byte(10+i))
		flood.Add(1)
		go func() {
			defer flood.Done()
			h := helloDatagram(randomID(), []byte("flood hello"))
			for {
				for range 50 {
					binary.BigEndian.PutUint64(h[1:], uint64(i)<<56|uint64(sent.Add(1)))
					u.WriteTo(h, l.Addr())
				}
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond): // a flood the reader can mostly keep up with
				}
			}
		}()
	}
	waitFor(t, "the flood to fill the pending connections", func() bool {
		st := l.Stats()
		return st.Pending >= defaultRetryPending && st.Retries+st.RetriesLimited >= 2000
	})
	d := dial(t, l.Addr())
	write(t, d, []byte("legit hello"))
	var c *Conn
	select {
	case c = <-legit:
	case <-time.After(4 * wait): // the hello and its token may be lost to the flood: resends
		t.Fatal("the legit hello never got a connection")
	}
	write(t, c, []byte("server reply"))
	expectRead(t, d, []byte("server reply"))
	close(stop)
	flood.Wait()
	st := l.Stats()
	t.Logf("flood of %d hellos: %+v", sent.Load(), st)
	if st.Retries == 0 || st.Tokens == 0 || d.Stats().Retries == 0 || st.RetriesLimited == 0 {
		t.Fatalf("no Retry during the flood, or none held back from its two hosts: %+v", st)
	}
	if st.Pending > defaultRetryPending+1 {
		t.Fatalf("%d connections pending, want at most %d", st.Pending, defaultRetryPending+1)
	}
}

// TestRetryResend: a dialer answers a Retry of its id from its peer with its hello carrying
// the token, at once, and keeps resending that one until answered; it ignores a Retry from
// another address and acts on maxRetries at most.
func TestRetryResend(t *testing.T) {
	raw := rawSocket(t)
	d := dial(t, addrOf(raw))
	p := []byte("client hello")
	write(t, d, p)
	_, from := mustReadRaw(t, raw)
	send(t, rawSocket(t), datagram(flagRetry, d.ID(), []byte("from elsewhere")), from)
	var last []byte
	for i := range maxRetries {
		tok := []byte(fmt.Sprintf("token %d", i))
		send(t, raw, datagram(flagRetry, d.ID(), tok), from)
		last = tokenHello(d.ID(), p, tok)
		if b, _ := mustReadRaw(t, raw); !bytes.Equal(b, last) {
			t.Fatalf("after Retry %d: % .24x, want the hello with its token", i, b)
		}
	}
	send(t, raw, datagram(flagRetry, d.ID(), []byte("one too many")), from)
	// The next datagram is the timer's copy, with the last token taken: the Retry from
	// elsewhere and the one past the limit changed nothing.
	if b, _ := mustReadRaw(t, raw); !bytes.Equal(b, last) {
		t.Fatalf("resent % .24x, want the hello with the last token", b)
	}
	if n := d.Stats().Retries; n != maxRetries {
		t.Fatalf("%d Retries taken, want %d", n, maxRetries)
	}
}

// TestRetryPerSource: one host gets retryBurst Retries at once, then silence (no sendto spent
// on a flood); another host still gets its Retry.
func TestRetryPerSource(t *testing.T) {
	l := listen(t, RetryPending(0))
	flood, other := sourceSocket(t, 9, 1), sourceSocket(t, 9, 2)
	p := []byte("client hello")
	for range retryBurst + 8 {
		send(t, flood, helloDatagram(randomID(), p), l.Addr())
	}
	// Datagrams are handled in order: once the other host's Retry comes, the flood's were.
	id := randomID()
	send(t, other, helloDatagram(id, p), l.Addr())
	r, _ := mustReadRaw(t, other)
	if len(r) != retrySize || r[0] != flagRetry || [8]byte(r[1:headerSize]) != id {
		t.Fatalf("the other host got % x, want its Retry", r)
	}
	// The counters move after the datagram leaves.
	waitFor(t, "every hello counted", func() bool { st := l.Stats(); return st.Retries+st.RetriesLimited == retryBurst+9 })
	st := l.Stats()
	// The token bucket may have refilled by a token or two while the test ran.
	if st.Retries < retryBurst+1 || st.Retries > retryBurst+3 {
		t.Fatalf("stats %+v: want %d Retries to the flood and the rest limited", st, retryBurst)
	}
}
