package handshake

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"
)

// FuzzHello decodes arbitrary payloads; whatever decodes must re-encode to the same bytes,
// so no two encodings mean the same hello.
func FuzzHello(f *testing.F) {
	for _, g := range goldenHellos() {
		f.Add(encodeHello(g.h))
	}
	f.Add(make([]byte, helloFixed))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHello(b)
		if err != nil {
			return
		}
		if h.Mode > ModeJoin || h.Flags&^(FlagPlain|FlagDatagrams|FlagPackets) != 0 || len(h.Name) > 64 {
			t.Fatalf("decoded an invalid hello %+v", h)
		}
		if out := encodeHello(h); !bytes.Equal(out, b) {
			t.Fatalf("%x decodes to %+v, which encodes to %x", b, h, out)
		}
	})
}

// FuzzReply does the same for the reply.
func FuzzReply(f *testing.F) {
	for _, g := range goldenReplies() {
		f.Add(encodeReply(g.r))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeReply(b)
		if err != nil {
			return
		}
		if r.Status > StatusLimit || len(r.Extra) > MaxExtra || r.Flags&^(FlagPlain|FlagDatagrams|FlagPackets) != 0 {
			t.Fatalf("decoded an invalid reply %+v", r)
		}
		if out := encodeReply(r); !bytes.Equal(out, b) {
			t.Fatalf("%x decodes to %+v, which encodes to %x", b, r, out)
		}
	})
}

// FuzzRespond feeds arbitrary bytes as a carrier to a responder. Nothing the fuzzer can make
// authenticates as a fresh handshake from an allowed key (the seeds that do authenticate are
// replays or come from a refused key), so every input must be refused with an error and
// without a single byte written back.
func FuzzRespond(f *testing.F) {
	ik, rk, stranger := keypair(f, 1), keypair(f, 100), keypair(f, 200)
	h := testHello(ModeNew)
	valid := firstMessage(f, ik, rk.Public, h)
	f.Add(valid)                                         // authenticates; its timestamp is replayed
	f.Add(append(bytes.Clone(valid), valid...))          // twice in a row
	f.Add(firstMessage(f, stranger, rk.Public, h))       // a key Allow refuses
	f.Add(firstMessage(f, ik, stranger.Public, h))       // for another responder
	f.Add(craftFirst(f, ik, rk.Public, []byte("hello"))) // authenticates, malformed hello
	f.Add(craftFirst(f, ik, rk.Public, encodeHello(h)[:helloFixed-1]))
	f.Add(Preface[:])
	f.Add(append(bytes.Clone(Preface[:]), 0, 0))
	f.Add(append(bytes.Clone(Preface[:]), 0x02, 0x01))
	f.Add(append(bytes.Clone(Preface[:]), 0x00, 0x60))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		replay := &Replay{}
		replay.Check(ik.Public, h.Time) // the seeds' handshake was already seen
		r := Responder{Key: rk, Allow: allow(ik.Public), Replay: replay}
		c := newMemConn(b)
		res, err := r.Respond(context.Background(), c, func([KeySize]byte, *Hello) Reply {
			t.Fatalf("decide called for %x", b)
			return Reply{}
		})
		if err == nil || res != nil {
			t.Fatalf("Respond(%x) = %+v, %v; want an error", b, res, err)
		}
		if w := c.written(); len(w) != 0 {
			t.Fatalf("Respond(%x) wrote %x", b, w)
		}
		// It reads no further than the first message: the rest of the carrier is records.
		if len(b) >= len(Preface)+2 {
			n := int(binary.BigEndian.Uint16(b[len(Preface):]))
			if used := len(b) - c.r.Len(); used > len(Preface)+2+n {
				t.Fatalf("Respond read %d bytes, the first message has %d", used, len(Preface)+2+n)
			}
		}
	})
}

// FuzzRespondUnderLoad feeds arbitrary bytes to a responder that is under load. Without the
// cookie secret nothing the fuzzer makes carries a valid mac2, so no input may reach the
// Diffie-Hellman: the responder writes at most one cookie reply (only to a message whose
// mac1 is valid), never more bytes than it read, and then falls silent.
func FuzzRespondUnderLoad(f *testing.F) {
	ik, rk, stranger := keypair(f, 1), keypair(f, 100), keypair(f, 200)
	h := testHello(ModeNew)
	valid := firstMessage(f, ik, rk.Public, h)
	f.Add(valid)
	f.Add(append(bytes.Clone(valid), valid...))
	f.Add(firstMessage(f, stranger, rk.Public, h))
	f.Add(firstMessage(f, ik, stranger.Public, h))
	f.Add(craftFirst(f, ik, rk.Public, []byte("hello")))
	f.Add(Preface[:])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		g := &Guard{}
		g.SetLoaded(true)
		r := Responder{Key: rk, Allow: allow(ik.Public), Replay: &Replay{}, Guard: g}
		c := newMemConn(b)
		res, err := r.Respond(context.Background(), addrConn{Conn: c, remote: tcpAddr("192.0.2.1:9")}, func([KeySize]byte, *Hello) Reply {
			t.Fatalf("decide called for %x", b)
			return Reply{}
		})
		if err == nil || res != nil {
			t.Fatalf("Respond(%x) = %+v, %v; want an error", b, res, err)
		}
		w := c.written()
		if len(w) != 0 && (len(w) != 3+cookieReplySize || w[0] != answerCookie) {
			t.Fatalf("Respond(%x) wrote %x: only one cookie reply is allowed", b, w)
		}
		if read := len(b) - c.r.Len(); len(w) > read {
			t.Fatalf("wrote %d bytes for %d read", len(w), read)
		}
		if st := g.Stats(); st.Handshakes != 0 {
			t.Fatalf("Respond(%x) did a handshake's DH without a cookie", b)
		}
	})
}
