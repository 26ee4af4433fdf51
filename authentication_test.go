// Authentication: an unknown key, a foreign join, garbage, a corrupted record or a replay
// moves no byte into a flow and gets nothing back from the listener. Every test runs over
// each carrier kind (testkit.CarrierKinds): the listener's silence, its refusals and the
// records' authentication must not depend on what carries the bytes.

package rendr_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/handshake"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/transport"
)

// rtVictim is a rig with a flow that carries traffic, for attacks to leave unharmed.
type rtVictim struct {
	*testkit.Rig
	c1, c2  *rendr.Conn
	session [16]byte
	paths   int // paths the listener had attached before the attack
	seed    uint64
	up      int64 // bytes the flow carried from dialer to listener so far
}

func rtNewVictim(t *testing.T, carrier string, extraPeers ...rendr.PublicKey) *rtVictim {
	t.Helper()
	r := testkit.NewRig(t, testkit.RigConfig{Paths: 2, ExtraPeers: extraPeers, Carrier: carrier,
		Options: rendr.Options{HandshakeTimeout: testkit.HandshakeTimeout}})
	v := &rtVictim{Rig: r, seed: 100}
	v.c1, v.c2 = r.Open()
	v.exchange()
	testkit.WaitUp(t, "listener", v.c2.Status, 2, 20*time.Second)
	ss := r.LN.Sessions()
	if len(ss) != 1 {
		t.Fatalf("%d sessions before the attack", len(ss))
	}
	v.session, v.paths = ss[0].ID, len(ss[0].Paths)
	return v
}

// exchange checks that the flow still moves exact bytes both ways.
func (v *rtVictim) exchange() {
	v.T.Helper()
	v.seed += 2
	v.c1.SetDeadline(time.Now().Add(30 * time.Second))
	v.c2.SetDeadline(time.Now().Add(30 * time.Second))
	if err := testkit.Both(v.c1, v.c2, 128<<10, v.seed, nil); err != nil {
		v.T.Fatalf("existing flow: %v", err)
	}
	v.up += 128 << 10
}

// intact checks that the attack left the session, its paths and its flow as they were.
func (v *rtVictim) intact() {
	v.T.Helper()
	v.exchange()
	ss := v.LN.Sessions()
	if len(ss) != 1 || ss[0].ID != v.session {
		v.T.Fatalf("listener sessions changed: %d sessions", len(ss))
	}
	for _, p := range ss[0].Paths {
		if p.Name == "intruder" {
			v.T.Fatalf("the intruder's path is attached: %s", testkit.Describe(ss[0]))
		}
	}
	if len(ss[0].Paths) > v.paths {
		v.T.Fatalf("session has %d paths, had %d: %s", len(ss[0].Paths), v.paths, testkit.Describe(ss[0]))
	}
}

// rtSilentCarriers checks that src accepted at least one carrier, that the listener closed
// every one (bounded wait) and wrote not one byte on any.
func rtSilentCarriers(t *testing.T, src *testkit.Source) {
	t.Helper()
	cs := src.Carriers()
	if len(cs) == 0 {
		t.Fatal("the attacker never reached the listener: the test proves nothing")
	}
	if !testkit.Wait(20*time.Second, func() bool {
		for _, c := range cs {
			if !c.Closed.Load() {
				return false
			}
		}
		return true
	}) {
		t.Fatal("the listener kept an unauthenticated carrier open")
	}
	for i, c := range cs {
		if n := c.Written.Load(); n != 0 {
			t.Fatalf("carrier %d of %d: the listener wrote %d bytes to an unauthenticated peer", i, len(cs), n)
		}
	}
}

func rtKeypair(t *testing.T, k rendr.PrivateKey) handshake.Keypair {
	t.Helper()
	kp, err := handshake.KeypairFrom(k)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// TestAdversarialUnknownKey: a Dialer whose key is not among the listener's peers gets no
// byte back, its dial fails only by its own deadline, and the real flow is untouched.
func TestAdversarialUnknownKey(t *testing.T) { testkit.EachCarrier(t, testAdversarialUnknownKey) }

func testAdversarialUnknownKey(t *testing.T, carrier string) {
	v := rtNewVictim(t, carrier)
	src := v.ExtraSource()
	stranger, err := rendr.NewDialer(rendr.DialerConfig{Key: rendr.MustNewKey(), PeerKey: v.Srv.Public(),
		Root:    rendr.Selector("root", rendr.Path("intruder", v.RawDialer(src.Addr().String()))),
		Options: rendr.Options{HandshakeTimeout: testkit.HandshakeTimeout}})
	if err != nil {
		t.Fatal(err)
	}
	// The dialer tries again and again; once the listener has turned it away three times,
	// the dial is given up. It must end by its own context, never with a flow.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	before := v.LN.Stats().UnknownKey
	go func() {
		if !testkit.Wait(20*time.Second, func() bool { return v.LN.Stats().UnknownKey >= before+3 }) {
			t.Errorf("the listener counted %d refusals of an unknown key", v.LN.Stats().UnknownKey-before)
		}
		cancel()
	}()
	c, err := stranger.DialContext(ctx)
	if err == nil {
		c.Close()
		stranger.Close()
		t.Fatal("a dialer with an unknown key opened a flow")
	}
	stranger.Close()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("dial = %v; want the dial's own context", err)
	}
	rtSilentCarriers(t, src)
	v.intact()
}

// TestAdversarialForeignJoin: attempts to attach a path to the live session without the right
// to: an unknown key, another allowed peer, and the session's own key without the session's
// secret. None may attach a path, read or inject a byte.
func TestAdversarialForeignJoin(t *testing.T) {
	testkit.EachCarrierAtOnce(t, testAdversarialForeignJoin)
}

func testAdversarialForeignJoin(t *testing.T, carrier string) {
	other := rendr.MustNewKey()
	v := rtNewVictim(t, carrier, other.Public())
	src := v.ExtraSource()
	var clock handshake.Clock
	join := func(t *testing.T, key rendr.PrivateKey) (net.Conn, *handshake.Result, error) {
		var inst [16]byte
		rand.Read(inst[:])
		c := testkit.RawDial(t, v.Rig, src.Addr().String())
		h := handshake.Hello{Time: clock.Now(), Instance: inst, Session: v.session, Mode: handshake.ModeJoin, Name: "intruder"}
		wait := 10 * time.Second
		if _, ok := c.(transport.PacketCarrier); ok {
			h.Flags |= handshake.FlagPackets
			wait = 4 * testkit.HandshakeTimeout // silence is the only refusal a datagram carrier sees
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		res, err := handshake.Initiate(ctx, c, rtKeypair(t, key), v.Srv.Public(), h, nil)
		return c, res, err
	}

	t.Run("UnknownKey", func(t *testing.T) {
		c, _, err := join(t, rendr.MustNewKey())
		if err == nil {
			t.Fatal("handshake from an unknown key completed")
		}
		testkit.ExpectSilentClose(t, c, 20*time.Second)
		if rc := src.CarrierFrom(c.LocalAddr()); rc == nil || rc.Written.Load() != 0 {
			t.Fatalf("the listener answered an unknown key (carrier %v)", rc != nil)
		}
		v.intact()
	})

	t.Run("SecondDialerUnknownKey", func(t *testing.T) {
		// The same through a whole Dialer, which retries with backoff.
		before := len(src.Carriers())
		d, err := rendr.NewDialer(rendr.DialerConfig{Key: rendr.MustNewKey(), PeerKey: v.Srv.Public(),
			Root:    rendr.Selector("root", rendr.Path("intruder", v.RawDialer(src.Addr().String()))),
			Options: rendr.Options{HandshakeTimeout: testkit.HandshakeTimeout}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if c, err := d.DialContext(ctx); err == nil {
			c.Close()
			d.Close()
			t.Fatal("a dialer with an unknown key opened a flow")
		}
		d.Close()
		if len(src.Carriers()) == before {
			t.Fatal("the second dialer never reached the listener")
		}
		rtSilentCarriers(t, src)
		v.intact()
	})

	t.Run("OtherPeersSession", func(t *testing.T) {
		c, res, err := join(t, other)
		if err != nil {
			t.Fatalf("handshake from an allowed peer failed: %v", err)
		}
		if res.Reply.Status != handshake.StatusUnknownSession {
			t.Fatalf("an allowed peer joining another peer's session got status %d, want %d",
				res.Reply.Status, handshake.StatusUnknownSession)
		}
		c.Close()
		v.intact()
	})

	t.Run("OwnKeyWithoutSecret", func(t *testing.T) {
		// The listener cannot tell before the JOIN_PROOF: the handshake succeeds, then the path
		// must die on a proof made without the session secret.
		c, res, err := join(t, v.Cli)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		if res.Reply.Status != handshake.StatusOK {
			t.Fatalf("status %d; the listener should only learn at the proof", res.Reply.Status)
		}
		var mac [wire.MACSize]byte
		rand.Read(mac[:])
		if err := rtSendRecord(c, res, wire.AppendJoinProof(nil, &mac)); err != nil {
			t.Fatal(err)
		}
		rtDrainUntilClosed(t, c, res, src)
		v.intact()
	})

	t.Run("OwnKeyInjectsData", func(t *testing.T) {
		// No proof at all: a DATA frame at exactly the offset the listener expects next. Had it
		// been delivered, the next exchange's SHA-256 would not match.
		c, res, err := join(t, v.Cli)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		if res.Reply.Status != handshake.StatusOK {
			t.Fatalf("status %d", res.Reply.Status)
		}
		off := uint64(v.up)
		if err := rtSendRecord(c, res, wire.AppendData(nil, v.c1.FlowID(), off, false, []byte("injected"))); err != nil {
			t.Fatal(err)
		}
		rtDrainUntilClosed(t, c, res, src)
		v.intact()
	})
}

// rtSendRecord seals frames into one record with the path's send cipher and writes it.
func rtSendRecord(c net.Conn, res *handshake.Result, frames []byte) error {
	if _, ok := c.(transport.PacketCarrier); ok {
		return rtSendPacket(c, res, frames)
	}
	ct, err := res.Send.Encrypt(nil, nil, frames)
	if err != nil {
		return err
	}
	_, err = c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(ct))), ct...))
	return err
}

// rtPacketNumbers are the next packet numbers of raw datagram carriers a test plays a path on.
var rtPacketNumbers sync.Map // net.Conn -> *atomic.Uint64

// rtDatagramAEAD is a direction's datagram cipher as docs/wire.md gives it: AES-256-GCM under
// HKDF-SHA256 of the direction's stream key, info "rendr datagram key v1".
func rtDatagramAEAD(cs interface{ UnsafeKey() [32]byte }) cipher.AEAD {
	k := cs.UnsafeKey()
	key, err := hkdf.Key(sha256.New, k[:], nil, "rendr datagram key v1", 32)
	if err != nil {
		panic(err)
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	a, err := cipher.NewGCM(blk)
	if err != nil {
		panic(err)
	}
	return a
}

// rtPacketNonce is the AEAD nonce of packet n: 4 zero bytes and n, big-endian.
func rtPacketNonce(n uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 4, 12), n) }

// rtSendPacket sends frames as one packet of a packet path (docs/wire.md section 5, "Packet paths"): its
// number, then the frames sealed under the datagram key with the number as nonce and
// associated data.
func rtSendPacket(c net.Conn, res *handshake.Result, frames []byte) error {
	v, _ := rtPacketNumbers.LoadOrStore(c, new(atomic.Uint64))
	n := v.(*atomic.Uint64).Add(1) - 1
	head := binary.BigEndian.AppendUint64(nil, n)
	_, err := c.Write(rtDatagramAEAD(res.Send).Seal(head, rtPacketNonce(n), frames, head))
	return err
}

// rtDrainUntilClosed plays a live path on c, answering every probe so that only a refusal
// can end it, until the listener closes c; it fails if that does not happen within a
// generous bound. A datagram carrier cannot see its far end close: there the listener's end,
// found at src, must.
func rtDrainUntilClosed(t *testing.T, c net.Conn, res *handshake.Result, src *testkit.Source) {
	t.Helper()
	if _, ok := c.(transport.PacketCarrier); ok {
		rtDrainPacketsUntilClosed(t, c, res, src)
		return
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var head [2]byte
	for range 100000 {
		if _, err := io.ReadFull(c, head[:]); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the listener kept a path that failed its join open")
			}
			return
		}
		body := make([]byte, binary.BigEndian.Uint16(head[:]))
		if _, err := io.ReadFull(c, body); err != nil {
			return
		}
		frames, err := res.Recv.Decrypt(nil, nil, body)
		if err != nil {
			t.Fatalf("record from the listener does not authenticate: %v", err)
		}
		rtAnswerPings(t, c, res, frames)
	}
	t.Fatal("the listener kept a path that failed its join open")
}

// rtAnswerPings answers each PING among frames with a PONG.
func rtAnswerPings(t *testing.T, c net.Conn, res *handshake.Result, frames []byte) {
	t.Helper()
	for len(frames) > 0 {
		f, n, err := wire.Parse(frames)
		if err != nil {
			t.Fatalf("frame from the listener: %v", err)
		}
		frames = frames[n:]
		if f.Type == wire.TypePing {
			rtSendRecord(c, res, wire.AppendPong(nil, f.Seq))
		}
	}
}

func rtDrainPacketsUntilClosed(t *testing.T, c net.Conn, res *handshake.Result, src *testkit.Source) {
	t.Helper()
	open := rtDatagramAEAD(res.Recv)
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if rc := src.CarrierFrom(c.LocalAddr()); rc != nil && rc.Closed.Load() {
			return
		}
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil || n < 8 {
			continue
		}
		frames, err := open.Open(nil, rtPacketNonce(binary.BigEndian.Uint64(buf)), buf[8:n], buf[:8])
		if err != nil {
			t.Fatalf("packet from the listener does not authenticate: %v", err)
		}
		rtAnswerPings(t, c, res, frames)
	}
	t.Fatal("the listener kept a path that failed its join open")
}

// rtFirstMessage is what an initiator with key sends first on a carrier: preface, length,
// Noise message.
func rtFirstMessage(t *testing.T, key rendr.PrivateKey, peer rendr.PublicKey, h handshake.Hello) []byte {
	t.Helper()
	a, b := net.Pipe()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wg.Go(func() { handshake.Initiate(ctx, a, rtKeypair(t, key), peer, h, nil) })
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	head := make([]byte, len(handshake.Preface)+2)
	if _, err := io.ReadFull(b, head); err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, binary.BigEndian.Uint16(head[len(handshake.Preface):]))
	if _, err := io.ReadFull(b, msg); err != nil {
		t.Fatal(err)
	}
	return append(head, msg...)
}

// TestAdversarialGarbage: input that is not a handshake gets no byte back and its carrier is
// closed (at the latest by the handshake timeout); the live flow does not notice.
func TestAdversarialGarbage(t *testing.T) { testkit.EachCarrierAtOnce(t, testAdversarialGarbage) }

func testAdversarialGarbage(t *testing.T, carrier string) {
	v := rtNewVictim(t, carrier)
	src := v.ExtraSource()
	random := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	pre := handshake.Preface[:]
	valid := rtFirstMessage(t, v.Cli, v.Srv.Public(), handshake.Hello{Time: uint64(time.Now().UnixNano()), Name: "x"})
	badVersion := append([]byte(nil), valid...)
	badVersion[4] ^= 0x7f
	cases := []struct {
		name string
		in   []byte
	}{
		{"Nothing", nil},
		{"Garbage", random(4096)},
		{"PrefaceOnly", pre},
		{"PrefaceThenGarbage", append(append(append([]byte(nil), pre...), 1, 44), random(300)...)},
		{"ZeroLength", append(append([]byte(nil), pre...), 0, 0)},
		{"OversizedLength", append(append(append([]byte(nil), pre...), 0xff, 0xff), random(1000)...)},
		{"TruncatedHandshake", valid[:len(valid)/2]},
		{"WrongVersion", badVersion},
		// The first message ends with mac1 and mac2 (16 bytes each, docs/wire.md 3.9); mac2
		// is only read under load, so flips are made in what is always checked.
		{"FlippedBitInHandshake", rtFlipBit(valid, len(valid)-2*16-5)},
		{"FlippedBitInMAC1", rtFlipBit(valid, len(valid)-16-5)},
	}
	// The cases run at once, each on a carrier of its own: most wait for the listener's
	// handshake timeout. The checks after them see every carrier.
	t.Run("cases", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				testAdversarialGarbageCase(t, v, src, carrier, tc.in)
			})
		}
	})
	rtSilentCarriers(t, src)
	v.intact()
}

// testAdversarialGarbageCase writes in on a carrier of its own and expects silence.
func testAdversarialGarbageCase(t *testing.T, v *rtVictim, src *testkit.Source, carrier string, in []byte) {
	c := testkit.RawDial(t, v.Rig, src.Addr().String())
	if len(in) > 0 {
		// The listener may refuse before the write returns (a QUIC stream's Write waits for
		// the data to leave): the carrier is then closed already, which is what the checks
		// below look for.
		if _, err := c.Write(in); err != nil {
			t.Logf("write: %v", err)
		}
	}
	testkit.ExpectSilentClose(t, c, 20*time.Second)
	rc := src.CarrierFrom(c.LocalAddr())
	if rc == nil && len(in) == 0 && (carrier == "quic" || carrier == "udpflow") {
		return // a QUIC stream or a udpflow carrier with nothing on it never reaches the listener
	}
	if rc == nil {
		t.Fatal("the source never saw the carrier")
	}
	if n := rc.Written.Load(); n != 0 {
		t.Fatalf("the listener wrote %d bytes", n)
	}
}

func rtFlipBit(b []byte, i int) []byte {
	out := append([]byte(nil), b...)
	out[i] ^= 0x10
	return out
}

// TestAdversarialCorruption: one bit flipped on an established path, mid-stream, must close
// that path (the record fails authentication), move the traffic, and leave the flow's bytes
// exact. On a datagram carrier, which anyone can send to, the datagram is dropped and counted
// instead, and what it carried goes again. The bit is flipped between rendr and the carrier, as a hostile carrier (a proxy hop,
// a broken middlebox inside a tunnel) would, so the same attack runs over every carrier kind.
func TestAdversarialCorruption(t *testing.T) { testkit.EachCarrier(t, testAdversarialCorruption) }

func testAdversarialCorruption(t *testing.T, carrier string) {
	for _, dir := range []string{"TowardListener", "TowardDialer"} {
		t.Run(dir, func(t *testing.T) {
			seed := testkit.Seed(t)
			rng := mrand.New(mrand.NewPCG(seed, 4))
			// Idle paths carry only probes, so the first carrier to reach this offset is the
			// one carrying the flow.
			at := int64(64<<10 + rng.IntN(448<<10))
			bit := byte(1) << rng.IntN(8)
			var hit atomic.Int64
			hit.Store(-1)
			r := testkit.NewRig(t, testkit.RigConfig{Paths: 2, Carrier: carrier,
				Hooks: func(i int) (up, down testkit.Hook) {
					flip := func(conn int, off int64, b []byte) {
						if off <= at && at < off+int64(len(b)) && hit.CompareAndSwap(-1, int64(i)) {
							b[at-off] ^= bit
						}
					}
					if dir == "TowardListener" {
						return flip, nil
					}
					return nil, flip
				}})
			c1, c2 := r.Open()
			size := int64(8 << 20)
			if testing.Short() {
				size = 2 << 20
			}
			c1.SetDeadline(time.Now().Add(60 * time.Second))
			c2.SetDeadline(time.Now().Add(60 * time.Second))
			if err := testkit.Both(c1, c2, size, seed, nil); err != nil {
				t.Fatalf("flow after a flipped bit at byte %d: %v (migrations %v)", at, err, r.Mig)
			}
			i := int(hit.Load())
			if i < 0 {
				t.Fatalf("byte %d never passed a carrier: the test proves nothing (migrations %v)", at, r.Mig)
			}
			if carrier == "udpflow" {
				// Anyone can send a datagram: one that does not authenticate is dropped and
				// counted, its bytes go again, and the path stays.
				st := c2.Status()
				if dir == "TowardDialer" {
					st = c1.Status()
				}
				forged := uint64(0)
				for _, p := range st.Paths {
					if p.Packets != nil && p.Name == testkit.PathName(i) {
						forged += p.Packets.Forged
					}
				}
				if forged == 0 {
					t.Fatalf("no forged datagram counted on %s: %s", testkit.PathName(i), testkit.Describe(st))
				}
				if r.AnyClosed(i) {
					t.Fatalf("a datagram that did not authenticate closed the carrier of %s", testkit.PathName(i))
				}
				c1.Close()
				c2.Close()
				return
			}
			if !testkit.Wait(20*time.Second, func() bool { return r.AnyClosed(i) }) {
				t.Fatalf("the corrupted carrier of %s is still open", testkit.PathName(i))
			}
			moved := false
			for _, ev := range r.Mig.All() {
				moved = moved || ev.From == testkit.PathName(i)
			}
			if !moved {
				t.Fatalf("traffic never left the corrupted path %s: %v", testkit.PathName(i), r.Mig)
			}
			if n := len(r.LN.Sessions()); n != 1 {
				t.Fatalf("%d sessions", n)
			}
			c1.Close()
			c2.Close()
		})
	}
}

// TestAdversarialReplay: the first handshake message of a real path, recorded as it went into
// the carrier and replayed on a fresh carrier of the same kind, gets no byte back and creates
// nothing.
func TestAdversarialReplay(t *testing.T) { testkit.EachCarrierAtOnce(t, testAdversarialReplay) }

func testAdversarialReplay(t *testing.T, carrier string) {
	type recorder struct {
		mu  sync.Mutex
		buf map[int][]byte
	}
	recs := []*recorder{{buf: map[int][]byte{}}, {buf: map[int][]byte{}}}
	r := testkit.NewRig(t, testkit.RigConfig{Paths: 2, Carrier: carrier, Options: rendr.Options{HandshakeTimeout: testkit.HandshakeTimeout},
		Hooks: func(i int) (up, down testkit.Hook) {
			rec := recs[i]
			return func(conn int, off int64, b []byte) {
				rec.mu.Lock()
				defer rec.mu.Unlock()
				if room := 4096 - len(rec.buf[conn]); room > 0 {
					rec.buf[conn] = append(rec.buf[conn], b[:min(room, len(b))]...)
				}
			}, nil
		}})
	c1, c2 := r.Open()
	testkit.WaitUp(t, "listener", c2.Status, 2, 20*time.Second)
	c1.SetDeadline(time.Now().Add(30 * time.Second))
	c2.SetDeadline(time.Now().Add(30 * time.Second))
	if err := testkit.Both(c1, c2, 128<<10, 9, nil); err != nil {
		t.Fatal(err)
	}
	before := r.LN.Sessions()
	if len(before) != 1 {
		t.Fatalf("%d sessions", len(before))
	}
	// One path founded the session, the other joined it: replay both first messages, alone
	// and followed by everything recorded after them.
	for i, rec := range recs {
		rec.mu.Lock()
		got := append([]byte(nil), rec.buf[0]...)
		rec.mu.Unlock()
		head := len(handshake.Preface) + 2
		if len(got) < head || !bytes.Equal(got[:len(handshake.Preface)], handshake.Preface[:]) {
			t.Fatalf("path %d: recorded %d bytes, not a handshake", i, len(got))
		}
		first := head + int(binary.BigEndian.Uint16(got[len(handshake.Preface):]))
		if len(got) < first {
			t.Fatalf("path %d: recorded only %d of %d handshake bytes", i, len(got), first)
		}
		for _, replay := range [][]byte{got[:first], got} {
			c := testkit.RawDial(t, r, r.Addrs[i])
			if _, err := c.Write(replay); err != nil {
				// Refused before the write returned (a QUIC stream's Write waits for its data
				// to leave): the checks below still hold.
				t.Logf("write: %v", err)
			}
			testkit.ExpectSilentClose(t, c, 20*time.Second)
			rc := r.Srcs[i].CarrierFrom(c.LocalAddr())
			if rc == nil {
				t.Fatalf("path %d: the replay never reached the listener", i)
			}
			if rc.Written.Load() != 0 {
				t.Fatalf("path %d: the listener answered a replayed handshake", i)
			}
		}
	}
	after := r.LN.Sessions()
	if len(after) != 1 || after[0].ID != before[0].ID || len(after[0].Paths) != len(before[0].Paths) {
		t.Fatalf("replays changed the sessions: before %d with %d paths, after %d", len(before),
			len(before[0].Paths), len(after))
	}
	if err := testkit.Both(c1, c2, 128<<10, 11, nil); err != nil {
		t.Fatalf("flow after the replays: %v", err)
	}
	c1.Close()
	c2.Close()
}
