package udpflow

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"
)

// extHandshake completes the handshake between a dialer d and listener l as rendr does with
// a HandshakeExtender: HelloExtra in the hello, AnswerExtra once it authenticated,
// ReplyExtra with the answer. A relay, when not nil, carries the hello and the answer. It
// returns the accepted connection and the ids d offered.
func extHandshake(t *testing.T, d *Conn, l *Listener, r *relay) (*Conn, [][8]byte) {
	t.Helper()
	blob := d.HelloExtra()
	if len(blob) != 1+8*futureIDs || blob[0] != extVersion {
		t.Fatalf("HelloExtra % x", blob)
	}
	var ids [][8]byte
	for i := 1; i < len(blob); i += 8 {
		ids = append(ids, [8]byte(blob[i:]))
	}
	write(t, d, []byte("client hello"))
	if r != nil {
		r.up(t)
	}
	c := accept(t, l)
	expectRead(t, c, []byte("client hello"))
	ans, err := c.AnswerExtra(blob)
	must(t, err)
	if len(ans) != 1+resetTokenSize*(1+futureIDs) {
		t.Fatalf("AnswerExtra gave %d bytes", len(ans))
	}
	write(t, c, []byte("server reply"))
	if r != nil {
		r.down(t)
	}
	expectRead(t, d, []byte("server reply"))
	must(t, d.ReplyExtra(ans))
	return c, ids
}

// TestStatelessReset: a listener that restarted with the same reset key on the same port
// answers the dialer's next datagram with a reset, and the dialer's connection closes with
// ErrStatelessReset, a blocked Read included. A restarted listener with another key sends a
// reset the dialer ignores, as it ignores a reset from anyone without the token.
func TestStatelessReset(t *testing.T) {
	for _, sameKey := range []bool{true, false} {
		t.Run(map[bool]string{true: "same key", false: "other key"}[sameKey], func(t *testing.T) {
			key := [32]byte(randomBytes(32))
			l := listen(t, StatelessResetKey(key))
			d := dial(t, l.Addr())
			c, _ := extHandshake(t, d, l, nil)
			write(t, d, []byte("before"))
			expectRead(t, c, []byte("before"))

			// Anyone may send a reset of d's id: without the token it changes nothing.
			raw := rawSocket(t)
			send(t, raw, datagram(flagReset, d.ID(), randomBytes(resetTokenSize)), d.LocalAddr())
			waitFor(t, "the forged reset", func() bool { return d.Stats().ResetsIgnored == 1 })

			addr := l.Addr().String()
			l.Close()
			key2 := key
			if !sameKey {
				key2 = [32]byte(randomBytes(32))
			}
			l2, err := Listen(addr, StatelessResetKey(key2))
			must(t, err)
			defer l2.Close()
			read := async(func() error { _, err := d.Read(make([]byte, 100)); return err })
			write(t, d, randomBytes(minResetTrigger)) // the smallest datagram that gets a reset
			waitFor(t, "the restarted listener's reset", func() bool { return l2.Stats().Resets == 1 })
			if !sameKey {
				waitFor(t, "the wrong reset to be ignored", func() bool { return d.Stats().ResetsIgnored == 2 })
				write(t, d, []byte("still open"))
				send(t, raw, datagram(0, d.ID(), []byte("to the dialer")), d.LocalAddr())
				expectErr(t, read, nil, "Read after a wrong reset")
				return
			}
			expectErr(t, read, ErrStatelessReset, "Read blocked when the reset came")
			if !errors.Is(ErrStatelessReset, net.ErrClosed) {
				t.Fatal("ErrStatelessReset does not wrap net.ErrClosed")
			}
			_, err = d.Write([]byte("after"))
			isErr(t, err, ErrStatelessReset, "Write after the reset")
			if l2.Stats().Pending != 0 || conns(l2) != 0 {
				t.Fatal("the reset left state in the restarted listener")
			}
		})
	}
}

// TestResetBounds: the listener answers only a data datagram of an unknown id of at least
// minResetTrigger bytes, with exactly resetSize bytes (smaller), and at most resetBurst in a
// burst; nothing else of an unknown id gets an answer.
func TestResetBounds(t *testing.T) {
	l := listen(t)
	raw := rawSocket(t)
	id := randomID()
	for _, b := range [][]byte{
		datagram(0, id, make([]byte, minResetTrigger-headerSize-1)),
		datagram(flagReply, id, make([]byte, 100)),
		datagram(flagReset, id, make([]byte, 100)),
		datagram(flagRetry, id, make([]byte, 100)),
	} {
		send(t, raw, b, l.Addr())
	}
	expectNothing(t, raw, "short or non-data datagrams of an unknown id")
	send(t, raw, datagram(0, id, make([]byte, minResetTrigger-headerSize)), l.Addr())
	want := datagram(flagReset, id, nil)
	tok := resetToken(l.resetKey, id)
	want = append(want, tok[:]...)
	expectRaw(t, raw, want)
	if len(want) >= minResetTrigger {
		t.Fatalf("a %d-byte reset for a %d-byte datagram", len(want), minResetTrigger)
	}
	// The rate limit. The bucket refills at resetRate a second while these go, so the
	// bound is counted from the time they took.
	start := time.Now()
	const n = 4 * resetBurst
	for range n {
		send(t, raw, datagram(0, randomID(), make([]byte, 100)), l.Addr())
	}
	waitFor(t, "every datagram handled", func() bool {
		st := l.Stats()
		return st.Resets+st.ResetsLimited == n+1
	})
	limit := int64(resetBurst + resetRate*time.Since(start).Seconds() + 1)
	if st := l.Stats(); st.Resets > limit || st.ResetsLimited == 0 {
		t.Fatalf("stats %+v: more than %d resets, or none limited", st, limit)
	}
}

// relay stands between a dialer and a listener, as a NAT does, and shows the test each
// datagram: the dialer dials toD; out is the mapping toward the listener, which rebind
// replaces (the NAT gives the flow a new port).
type relay struct {
	toD, out *net.UDPConn
	d        *net.UDPAddr // the dialer, from its first datagram
	l        net.Addr
}

func newRelay(t *testing.T, l net.Addr) *relay {
	return &relay{toD: rawSocket(t), out: rawSocket(t), l: l}
}

func (r *relay) rebind(t *testing.T) { r.out = rawSocket(t) }

// up forwards the dialer's next datagram and returns it; down the listener's.
func (r *relay) up(t *testing.T) []byte {
	t.Helper()
	b, from := mustReadRaw(t, r.toD)
	r.d = from
	send(t, r.out, b, r.l)
	return b
}

func (r *relay) down(t *testing.T) []byte {
	t.Helper()
	b, _ := mustReadRaw(t, r.out)
	send(t, r.toD, b, r.d)
	return b
}

func idOf(b []byte) [8]byte { return [8]byte(b[1:headerSize]) }

// exchange sends one datagram each way through r and returns the ids they carried.
func exchange(t *testing.T, d, c *Conn, r *relay, what string) (up, down [8]byte) {
	t.Helper()
	write(t, d, []byte("up "+what))
	b := r.up(t)
	expectRead(t, c, []byte("up "+what))
	write(t, c, []byte("down "+what))
	b2 := r.down(t)
	expectRead(t, d, []byte("down "+what))
	return idOf(b), idOf(b2)
}

// TestIDsOnRebinding: when the dialer's address changes and the listener's side moves to it
// (SetPeer, once rendr validated it), the listener sends with the first id the dialer
// offered, the dialer follows at the first datagram with it, and neither sends the old id
// again: the old and the new address share no id on the wire past the move.
func TestIDsOnRebinding(t *testing.T) {
	l := listen(t)
	r := newRelay(t, l.Addr())
	d := dial(t, addrOf(r.toD))
	id0 := d.ID()
	c, ids := extHandshake(t, d, l, r)
	if up, down := exchange(t, d, c, r, "1"); up != id0 || down != id0 {
		t.Fatalf("ids %x, %x before any move, want %x", up, down, id0)
	}

	r.rebind(t)
	write(t, d, []byte("from the new address"))
	if b := r.up(t); idOf(b) != id0 {
		t.Fatalf("id %x from the new address, want still %x (no idle period)", idOf(b), id0)
	}
	expectFrom(t, c, []byte("from the new address"), addrOf(r.out))
	c.SetPeer(addrOf(r.out)) // rendr validated the new address
	c.retireOld()            // even if the timer fired now: the dialer still sends with id0
	if conns(l) != 1+futureIDs {
		t.Fatalf("%d ids in the listener's table: it retired the id the dialer sends with", conns(l))
	}
	if c.ID() != ids[0] {
		t.Fatalf("listener's id %x after SetPeer, want the first offered, %x", c.ID(), ids[0])
	}
	write(t, c, []byte("moved"))
	if b := r.down(t); idOf(b) != ids[0] {
		t.Fatalf("listener sent id %x at the new address, want %x", idOf(b), ids[0])
	}
	expectRead(t, d, []byte("moved"))
	if d.ID() != ids[0] {
		t.Fatalf("dialer's id %x after the listener's first datagram with %x", d.ID(), ids[0])
	}
	for _, what := range []string{"2", "3", "4"} {
		if up, down := exchange(t, d, c, r, what); up != ids[0] || down != ids[0] {
			t.Fatalf("exchange %s: ids %x, %x; want %x both ways", what, up, down, ids[0])
		}
	}
	// A batch too carries the new id.
	must(t, d.WriteBatch([][]byte{[]byte("b1"), []byte("b2")}))
	must(t, c.WriteBatch([][]byte{[]byte("b3")}))
	for range 2 {
		if b := r.up(t); idOf(b) != ids[0] {
			t.Fatalf("dialer's batch carried %x", idOf(b))
		}
	}
	if b := r.down(t); idOf(b) != ids[0] {
		t.Fatalf("listener's batch carried %x", idOf(b))
	}
	expectRead(t, c, []byte("b1"))
	expectRead(t, c, []byte("b2"))
	expectRead(t, d, []byte("b3"))
	if d.Stats().IDSwitches != 1 || c.Stats().IDSwitches != 1 {
		t.Fatalf("switches: dialer %d, listener %d; want 1, 1", d.Stats().IDSwitches, c.Stats().IDSwitches)
	}

	// The old id still reaches the connection until it is retired; then it is unknown, and
	// its datagrams get a reset the dialer ignores (it is not the id it sends with).
	raw := rawSocket(t)
	send(t, raw, datagram(0, id0, []byte("late")), l.Addr())
	expectFrom(t, c, []byte("late"), addrOf(raw))
	c.retireOld() // what the retire timer does retireGrace after the move
	if conns(l) != futureIDs {
		t.Fatalf("%d ids in the listener's table after retiring one of %d", conns(l), 1+futureIDs)
	}
	send(t, raw, datagram(0, id0, make([]byte, 64)), l.Addr())
	rb, _ := mustReadRaw(t, raw)
	if rb[0] != flagReset || idOf(rb) != id0 {
		t.Fatalf("got % x, want a reset for the retired id", rb)
	}
	send(t, raw, rb, d.LocalAddr())
	waitFor(t, "the reset for a retired id", func() bool { return d.Stats().ResetsIgnored == 1 })
	exchange(t, d, c, r, "after the reset")
}

// TestIDsAfterIdle: a dialer that has not sent for idleSwitch moves to its next id before it
// sends, and the listener follows; the ids run out at the last one offered, which stays.
func TestIDsAfterIdle(t *testing.T) {
	l := listen(t)
	r := newRelay(t, l.Addr())
	d := dial(t, addrOf(r.toD))
	c, ids := extHandshake(t, d, l, r)
	idle := func() { d.d.lastSend.Store(int64(time.Since(d.d.base) - idleSwitch)) }
	for i, want := range append(ids, ids[len(ids)-1]) {
		idle()
		write(t, d, []byte("after idle"))
		if b := r.up(t); idOf(b) != want {
			t.Fatalf("idle period %d: dialer sent id %x, want %x", i, idOf(b), want)
		}
		expectRead(t, c, []byte("after idle"))
		if up, down := exchange(t, d, c, r, "busy"); up != want || down != want {
			t.Fatalf("idle period %d: ids %x, %x; want %x both ways", i, up, down, want)
		}
	}
	// With no id left, an idle dialer stays on the last.
	idle()
	must(t, d.WriteBatch([][]byte{[]byte("batch after idle")}))
	if b := r.up(t); idOf(b) != ids[len(ids)-1] || !bytes.Equal(b[headerSize:], []byte("batch after idle")) {
		t.Fatalf("batch after idle: % x", b)
	}
	if n := d.Stats().IDSwitches; n != futureIDs {
		t.Fatalf("%d switches, want %d", n, futureIDs)
	}
	// Moving the listener's peer with no id left keeps the last.
	c.SetPeer(addrOf(rawSocket(t)))
	if c.ID() != ids[len(ids)-1] {
		t.Fatalf("listener's id %x with none left, want %x", c.ID(), ids[len(ids)-1])
	}
}

// TestHandshakeExtenderRefusals: AnswerExtra refuses a malformed blob or an offered id that
// is taken; a listener's empty answer leaves the dialer on its one id, with no reset.
func TestHandshakeExtenderRefusals(t *testing.T) {
	l := listen(t)
	taken, _ := acceptRaw(t, l)
	raw := rawSocket(t)
	id := randomID()
	send(t, raw, helloDatagram(id, []byte("client hello")), l.Addr())
	c := accept(t, l)
	ok := append([]byte{extVersion}, randomBytes(8*futureIDs)...)
	for name, blob := range map[string][]byte{
		"version":  append([]byte{2}, ok[1:]...),
		"ragged":   ok[:len(ok)-1],
		"too many": append(bytes.Clone(ok), randomBytes(8)...),
		"no ids":   {extVersion},
		"repeated": append(append([]byte{extVersion}, ok[1:9]...), ok[1:9]...),
		"own id":   append([]byte{extVersion}, id[:]...),
		"taken":    append(append([]byte{extVersion}, ok[1:9]...), taken.hdrs[0][1:headerSize]...),
	} {
		if _, err := c.AnswerExtra(blob); err == nil {
			t.Fatalf("AnswerExtra took a blob with %s", name)
		}
	}
	if conns(l) != 2 || l.Stats().Pending != 1 {
		t.Fatalf("%d ids, %d pending after refusals; want 2, 1", conns(l), l.Stats().Pending)
	}
	ans, err := c.AnswerExtra(ok)
	must(t, err)
	if conns(l) != 2+futureIDs || l.Stats().Pending != 0 || len(ans) != 1+resetTokenSize*(1+futureIDs) {
		t.Fatalf("%d ids, %d pending, %d-byte answer", conns(l), l.Stats().Pending, len(ans))
	}
	if _, err := c.AnswerExtra(ok); err == nil {
		t.Fatal("a second AnswerExtra was taken")
	}

	d, _ := dialRaw(t)
	d.HelloExtra()
	must(t, d.ReplyExtra(nil))
	d.d.lastSend.Store(int64(time.Since(d.d.base) - idleSwitch))
	if d.ID() != d.id(0) || d.nids.Load() != 1 {
		t.Fatal("a dialer moved to ids the listener never took")
	}
	if d.ReplyExtra([]byte{extVersion, 1, 2}) == nil {
		t.Fatal("ReplyExtra took a short blob")
	}
}
