// Package handshake runs rendr's path handshake: a preface naming the wire version, then
// Noise_IK_25519_AESGCM_SHA256 between two static X25519 keys, carrying the session hello.
//
// Why IK and not XX: the dialing side is always configured with the listener's public key, so
// IK authenticates both ends in one round trip instead of XX's one and a half. Paths are
// re-dialed on every failure, so that round trip is paid often, exactly when the user is
// waiting. IK's first message is replayable and weak against key compromise impersonation on
// its own; like WireGuard, we pair it with a strictly fresh timestamp the responder checks
// (see Replay), and a replayed first message gets no reply. The initiator's identity is still
// encrypted (to the responder's static key), so a passive observer does not learn it.
package handshake

import (
	"context"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/flynn/noise"

	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/transport"
)

// KeySize is the size of X25519 keys.
const KeySize = 32

// Preface is what an initiator writes before its first handshake message. It names the wire
// version and is mixed into the Noise prologue, so a changed preface fails the handshake.
var Preface = [8]byte{'R', 'N', 'D', 'R', wire.Version, 0, 0, 0}

// Suite is the Noise cipher suite: AES-GCM because every CPU rendr targets accelerates it, and
// SHA-256 for the same reason.
var suite = noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashSHA256)

// Modes of a hello.
const (
	ModeNew  = 0 // start a new session with the given id
	ModeJoin = 1 // attach this path to an existing session
)

// Hello and Reply flags.
const (
	FlagPlain = 0x01 // the carrier is already secure: records after the handshake are not encrypted
	// FlagDatagrams: this end reads datagram records from the carrier's datagrams (docs/wire.md
	// section 5). Both ends must set it before either sends any.
	FlagDatagrams = 0x02
	// FlagPackets: the sender's carrier moves datagrams only (a transport.PacketCarrier), so
	// every record is a packet (docs/wire.md section 5, "Packet paths"). Both ends must have one.
	FlagPackets = 0x04

	knownFlags = FlagPlain | FlagDatagrams | FlagPackets
)

// Status of a reply.
const (
	StatusOK             = 0
	StatusUnknownSession = 1 // the responder has no such session (it restarted, or the session ended)
	StatusRefused        = 2 // the responder will not take this path (closing, or plain records refused)
	// StatusLimit: taking the path would pass one of the responder's bounds (sessions per
	// peer or per listener, paths per session, its memory budget).
	StatusLimit = 3
)

// UnknownKeyError is ErrUnknownKey with the key the initiator proved it holds (its first
// message authenticates under it), for the responder's log.
type UnknownKeyError struct{ Key [KeySize]byte }

func (e *UnknownKeyError) Error() string        { return ErrUnknownKey.Error() }
func (e *UnknownKeyError) Is(target error) bool { return target == ErrUnknownKey }

// Errors.
var (
	ErrBadPreface = errors.New("handshake: bad preface or unsupported version")
	ErrUnknownKey = errors.New("handshake: peer key is not allowed")
	ErrReplay     = errors.New("handshake: replayed or stale handshake")
	ErrMalformed  = errors.New("handshake: malformed message")
)

// Hello is the initiator's payload, encrypted inside the first Noise message.
type Hello struct {
	Time     uint64   // unix nanoseconds, strictly increasing per initiator key (Clock)
	Instance [16]byte // the initiator's runtime
	Session  [16]byte
	Mode     uint8
	Flags    uint8
	Tier     uint8  // the path's priority tier at the initiator, for the responder's policy
	Name     string // the path's name at the initiator, for status; at most 64 bytes
	// Extra is the carrier's own data (transport.HandshakeExtender), at most MaxExtra bytes.
	Extra []byte
}

// MaxExtra bounds the carrier data of a hello or a reply.
const MaxExtra = 128

// Reply is the responder's payload in the second Noise message.
type Reply struct {
	Status   uint8
	Instance [16]byte
	Flags    uint8
	Extra    []byte // the carrier's own data, at most MaxExtra bytes
}

// Result is what a completed handshake yields.
type Result struct {
	Send, Recv *noise.CipherState
	Hash       []byte // handshake hash: binds everything to this path's handshake (public)
	// Secret is known only to the two ends: derived from the transport keys, which come from
	// the DH results. The hash alone would not do: it is computed from public bytes.
	Secret [32]byte
	Peer   [KeySize]byte
	Hello  Hello
	Reply  Reply
}

// Keypair holds a static key.
type Keypair struct {
	Private, Public [KeySize]byte
}

// NewKeypair generates a static key pair.
func NewKeypair() (Keypair, error) {
	var k Keypair
	if _, err := rand.Read(k.Private[:]); err != nil {
		return k, err
	}
	return KeypairFrom(k.Private)
}

// KeypairFrom derives the public half of priv.
func KeypairFrom(priv [KeySize]byte) (Keypair, error) {
	p, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return Keypair{}, err
	}
	k := Keypair{Private: priv}
	copy(k.Public[:], p.PublicKey().Bytes())
	return k, nil
}

func (k Keypair) noise() noise.DHKey {
	return noise.DHKey{Private: k.Private[:], Public: k.Public[:]}
}

const maxMsg = 512 // handshake messages are small; anything larger is not ours

// Initiate runs the initiator side over c. It writes the preface and the first message, then
// reads the answer: the second message, or a cookie reply when the responder is under load,
// after which it sends the first message once more with the cookie's mac2 (docs/wire.md 3.9).
// jar keeps the cookie for the path's next handshakes; nil keeps none. ctx bounds the whole
// exchange.
func Initiate(ctx context.Context, c net.Conn, key Keypair, peer [KeySize]byte, h Hello, jar *CookieJar) (*Result, error) {
	stop := deadlineFromContext(ctx, c)
	defer stop()
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: suite, Pattern: noise.HandshakeIK, Initiator: true,
		Prologue: Preface[:], StaticKeypair: key.noise(), PeerStatic: peer[:],
	})
	if err != nil {
		return nil, err
	}
	msg := make([]byte, 0, maxMsg+len(Preface)+2)
	msg = append(msg, Preface[:]...)
	msg = append(msg, 0, 0)
	msg, _, _, err = hs.WriteMessage(msg, encodeHello(h))
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint16(msg[len(Preface):], uint16(len(msg)-len(Preface)-2+2*MACSize))
	k1 := mac1Key(peer)
	mac1 := mac(k1[:], msg)
	msg = append(msg, mac1[:]...)
	withMAC1 := len(msg)
	msg = append(msg, make([]byte, MACSize)...)
	if cookie, ok := jar.get(time.Now()); ok {
		copy(msg[withMAC1:], macOf(&cookie, msg[:withMAC1]))
	}
	var in []byte
	for try := 0; ; try++ {
		if _, err := c.Write(msg); err != nil {
			return nil, ctxErr(ctx, err)
		}
		typ, body, err := readAnswer(c)
		if err != nil {
			return nil, ctxErr(ctx, err)
		}
		if typ == answerHandshake {
			in = body
			break
		}
		if try > 0 {
			return nil, ErrUnderLoad
		}
		cookie, err := openCookie(peer, body, mac1[:])
		if err != nil {
			return nil, err
		}
		jar.put(cookie, time.Now())
		copy(msg[withMAC1:], macOf(&cookie, msg[:withMAC1]))
		if _, ok := c.(transport.PacketCarrier); ok {
			// A datagram carrier resends its first datagram until answered, but this one
			// goes after the answer (the cookie): resend it here until the next answer
			// comes, or a lost one would cost the whole handshake timeout.
			defer resendUntilDone(c, msg)()
		}
	}
	payload, cs1, cs2, err := hs.ReadMessage(nil, in)
	if err != nil {
		return nil, fmt.Errorf("handshake: reply does not authenticate: %w", err)
	}
	r, err := decodeReply(payload)
	if err != nil {
		return nil, err
	}
	hash := hs.ChannelBinding()
	res := &Result{Send: cs1, Recv: cs2, Hash: hash, Peer: peer, Hello: h, Reply: r,
		Secret: SessionSecret(cs1.UnsafeKey(), cs2.UnsafeKey(), hash)}
	return res, nil
}

// Responder answers handshakes. Accept decides, from the authenticated hello, what to reply.
type Responder struct {
	Key    Keypair
	Allow  func(peer [KeySize]byte) bool // reports whether a static key may connect
	Replay *Replay
	// Guard applies the cookie and the rate per source under load; nil applies neither
	// (mac1 is always checked).
	Guard *Guard
}

// Respond runs the responder side over c. It returns (nil, err) without writing anything when
// the input does not authenticate, is replayed, or comes from a key Allow refuses: the
// unauthenticated get silence. Under load, a first message without a valid cookie gets a
// cookie reply (once per carrier) and Respond reads the next one. decide sees the
// authenticated hello and returns the reply.
func (r *Responder) Respond(ctx context.Context, c net.Conn, decide func(peer [KeySize]byte, h *Hello) Reply) (*Result, error) {
	stop := deadlineFromContext(ctx, c)
	defer stop()
	k1 := mac1Key(r.Key.Public)
	var m initMsg
	for asked := false; ; asked = true {
		in, err := readMsg(c)
		if err != nil {
			return nil, ctxErr(ctx, err)
		}
		if err := m.parse(in, &k1); err != nil {
			if r.Guard != nil && err == ErrMAC1 {
				r.Guard.countBadMAC1()
			}
			return nil, err
		}
		if r.Guard == nil {
			break
		}
		cookie, err := r.Guard.admit(c.RemoteAddr(), &m, asked)
		if err != nil {
			return nil, err
		}
		if cookie == nil {
			break
		}
		body := sealCookie(r.Key.Public, cookie, m.mac1)
		if _, err := c.Write(appendAnswer(nil, answerCookie, body)); err != nil {
			return nil, ctxErr(ctx, err)
		}
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: suite, Pattern: noise.HandshakeIK, Initiator: false,
		Prologue: Preface[:], StaticKeypair: r.Key.noise(),
	})
	if err != nil {
		return nil, err
	}
	payload, _, _, err := hs.ReadMessage(nil, m.noise)
	if err != nil {
		return nil, fmt.Errorf("handshake: first message does not authenticate: %w", err)
	}
	var peer [KeySize]byte
	copy(peer[:], hs.PeerStatic())
	if r.Allow == nil || !r.Allow(peer) {
		return nil, &UnknownKeyError{Key: peer}
	}
	h, err := decodeHello(payload)
	if err != nil {
		return nil, err
	}
	if r.Replay != nil && !r.Replay.Check(peer, h.Time) {
		return nil, ErrReplay
	}
	reply := decide(peer, &h)
	out := make([]byte, 3, maxMsg)
	out, cs1, cs2, err := hs.WriteMessage(out, encodeReply(reply))
	if err != nil {
		return nil, err
	}
	out[0] = answerHandshake
	binary.BigEndian.PutUint16(out[1:], uint16(len(out)-3))
	if _, err := c.Write(out); err != nil {
		return nil, ctxErr(ctx, err)
	}
	hash := hs.ChannelBinding()
	return &Result{Send: cs2, Recv: cs1, Hash: hash, Peer: peer, Hello: h, Reply: reply,
		Secret: SessionSecret(cs1.UnsafeKey(), cs2.UnsafeKey(), hash)}, nil
}

// resendUntilDone writes msg again after 250 ms, doubling, five times at most, until the
// returned func is called. The responder takes the first copy that arrives; later copies
// reach the path as datagrams that do not authenticate, and are dropped.
func resendUntilDone(c net.Conn, msg []byte) (done func()) {
	var mu sync.Mutex
	stopped := false
	wait := 250 * time.Millisecond
	var t *time.Timer
	tries := 0
	mu.Lock() // the callback waits for t
	defer mu.Unlock()
	t = time.AfterFunc(wait, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		c.Write(msg)
		if tries++; tries < 5 {
			wait *= 2
			t.Reset(wait)
		}
	})
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

// Answer types: what the responder's message is (docs/wire.md 3.2).
const (
	answerHandshake = 1 // Noise message 2
	answerCookie    = 2 // a cookie reply (3.9)
)

func appendAnswer(b []byte, typ byte, body []byte) []byte {
	b = append(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

// initMsg is an initiator's first message split into its parts; the slices point into
// what readMsg returned.
type initMsg struct {
	head     [len(Preface) + 2]byte // the preface and the length, as mac1 covers them
	noise    []byte                 // Noise message 1
	mac1     []byte
	mac2     []byte
	withMAC1 []byte // what mac2 covers: head, noise and mac1 (a copy)
}

// parse splits in (the message after the preface and its length) and checks mac1 in
// constant time: the one check anyone without the responder's public key fails.
func (m *initMsg) parse(in []byte, k1 *[32]byte) error {
	if len(in) < 2*MACSize+1 {
		return ErrMalformed
	}
	copy(m.head[:], Preface[:])
	binary.BigEndian.PutUint16(m.head[len(Preface):], uint16(len(in)))
	n := len(in) - 2*MACSize
	m.noise, m.mac1, m.mac2 = in[:n], in[n:n+MACSize], in[n+MACSize:]
	want := mac(k1[:], m.head[:], m.noise)
	if !hmac.Equal(want[:], m.mac1) {
		return ErrMAC1
	}
	m.withMAC1 = append(append(append(m.withMAC1[:0], m.head[:]...), m.noise...), m.mac1...)
	return nil
}

// readAnswer reads the responder's message: its type, then a length and that many bytes.
func readAnswer(c net.Conn) (byte, []byte, error) {
	typ, b, err := readFramed(c, 1, nil, func(typ []byte, l int) bool { return validAnswer(typ[0], l) })
	if err != nil {
		return 0, nil, err
	}
	return typ[0], b, nil
}

func validAnswer(typ byte, l int) bool {
	switch typ {
	case answerHandshake:
		return l > 0 && l <= maxMsg
	case answerCookie:
		return l == cookieReplySize
	}
	return false
}

// FirstHead is how many bytes of an initiator's first message FirstNeed looks at: the
// preface and the length.
const FirstHead = len(Preface) + 2

// FirstNeed tells, from the first FirstHead bytes of a carrier, how many bytes the
// initiator's whole first message takes; 0 when those bytes already show it is not one
// Respond takes (another preface or version, a length out of bounds), so the carrier may as
// well be handed to Respond to fail at once. A listener uses it to wait for the whole message
// before it gives the carrier a goroutine (internal/pending).
func FirstNeed(head []byte) int {
	if len(head) < FirstHead || [len(Preface)]byte(head) != Preface {
		return 0
	}
	l := int(binary.BigEndian.Uint16(head[len(Preface):]))
	if l == 0 || l > maxMsg {
		return 0
	}
	return FirstHead + l
}

// readMsg reads an initiator's first message and returns what follows its preface and length.
func readMsg(c net.Conn) ([]byte, error) {
	_, b, err := readFramed(c, len(Preface),
		func(pre []byte) error {
			if [len(Preface)]byte(pre) != Preface {
				return ErrBadPreface
			}
			return nil
		},
		func(_ []byte, l int) bool { return l > 0 && l <= maxMsg })
	return b, err
}

// readFramed reads a handshake message framed as a prefix of n bytes, a 2-byte length and
// that many bytes. checkPrefix (if set) judges the prefix before anything more is read;
// okLen judges the length, with the prefix, before the body is read. On a carrier of
// datagrams (transport.PacketCarrier) the whole message is one datagram, as the writer sent
// it in one Write, and must be exactly that long.
func readFramed(c net.Conn, n int, checkPrefix func(prefix []byte) error, okLen func(prefix []byte, l int) bool) (prefix, body []byte, err error) {
	head := n + 2
	if _, ok := c.(transport.PacketCarrier); ok {
		b := make([]byte, head+maxMsg+1)
		m, err := c.Read(b)
		if err != nil {
			return nil, nil, err
		}
		if m < head {
			return nil, nil, ErrMalformed
		}
		if checkPrefix != nil {
			if err := checkPrefix(b[:n]); err != nil {
				return nil, nil, err
			}
		}
		l := int(binary.BigEndian.Uint16(b[n:]))
		if !okLen(b[:n], l) || head+l != m {
			return nil, nil, ErrMalformed
		}
		return b[:n], b[head:m], nil
	}
	b := make([]byte, head)
	if _, err := io.ReadFull(c, b[:n]); err != nil {
		return nil, nil, err
	}
	if checkPrefix != nil {
		if err := checkPrefix(b[:n]); err != nil {
			return nil, nil, err
		}
	}
	if _, err := io.ReadFull(c, b[n:]); err != nil {
		return nil, nil, err
	}
	l := int(binary.BigEndian.Uint16(b[n:]))
	if !okLen(b[:n], l) {
		return nil, nil, ErrMalformed
	}
	body = make([]byte, l)
	if _, err := io.ReadFull(c, body); err != nil {
		return nil, nil, err
	}
	return b[:n], body, nil
}

// deadlineFromContext makes ctx's deadline and cancellation interrupt blocking I/O on c.
func deadlineFromContext(ctx context.Context, c net.Conn) (stop func()) {
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	unhook := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	return func() {
		unhook()
		c.SetDeadline(time.Time{})
	}
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

const helloFixed = 8 + 16 + 16 + 1 + 1 + 1 + 1 + 1

func encodeHello(h Hello) []byte {
	name := h.Name
	if len(name) > 64 {
		name = name[:64]
	}
	b := make([]byte, 0, helloFixed+len(name)+len(h.Extra))
	b = binary.BigEndian.AppendUint64(b, h.Time)
	b = append(b, h.Instance[:]...)
	b = append(b, h.Session[:]...)
	b = append(b, h.Mode, h.Flags, h.Tier, byte(len(name)))
	b = append(b, name...)
	return appendExtra(b, h.Extra)
}

// appendExtra appends a length byte and the carrier's data; the encoders' callers keep it
// within MaxExtra (a longer one is cut, and the peer's carrier finds it malformed).
func appendExtra(b, extra []byte) []byte {
	if len(extra) > MaxExtra {
		extra = extra[:MaxExtra]
	}
	b = append(b, byte(len(extra)))
	return append(b, extra...)
}

// takeExtra decodes what appendExtra wrote, which must end b exactly.
func takeExtra(b []byte) ([]byte, bool) {
	if len(b) < 1 || int(b[0]) > MaxExtra || len(b) != 1+int(b[0]) {
		return nil, false
	}
	if b[0] == 0 {
		return nil, true
	}
	return b[1:], true
}

func decodeHello(b []byte) (Hello, error) {
	var h Hello
	if len(b) < helloFixed {
		return h, ErrMalformed
	}
	h.Time = binary.BigEndian.Uint64(b)
	copy(h.Instance[:], b[8:24])
	copy(h.Session[:], b[24:40])
	h.Mode, h.Flags, h.Tier = b[40], b[41], b[42]
	n := int(b[43])
	if h.Mode > ModeJoin || h.Flags&^knownFlags != 0 || n > 64 || len(b) < helloFixed+n {
		return h, ErrMalformed
	}
	h.Name = string(b[helloFixed-1 : helloFixed-1+n])
	extra, ok := takeExtra(b[helloFixed-1+n:])
	if !ok {
		return h, ErrMalformed
	}
	h.Extra = extra
	return h, nil
}

const replySize = 1 + 16 + 1 + 1

func encodeReply(r Reply) []byte {
	b := make([]byte, 0, replySize+len(r.Extra))
	b = append(b, r.Status)
	b = append(b, r.Instance[:]...)
	b = append(b, r.Flags)
	return appendExtra(b, r.Extra)
}

func decodeReply(b []byte) (Reply, error) {
	var r Reply
	if len(b) < replySize {
		return r, ErrMalformed
	}
	r.Status = b[0]
	copy(r.Instance[:], b[1:17])
	r.Flags = b[17]
	if r.Status > StatusLimit || r.Flags&^knownFlags != 0 {
		return r, ErrMalformed
	}
	extra, ok := takeExtra(b[18:])
	if !ok {
		return r, ErrMalformed
	}
	r.Extra = extra
	return r, nil
}

// SessionSecret derives a path handshake's secret from its two transport keys (initiator to
// responder, then responder to initiator) with the handshake hash as salt. The secret of the
// path that founded a session is the session's secret.
func SessionSecret(i2r, r2i [32]byte, hash []byte) [32]byte {
	ikm := append(i2r[:], r2i[:]...)
	k, err := hkdf.Key(sha256.New, ikm, hash, "rendr session secret v1", 32)
	if err != nil {
		panic(err) // only fails for lengths we do not ask for
	}
	return [32]byte(k)
}

// JoinProof is the MAC a joining path sends as its first frame: keyed by the session secret,
// over the joining path's own handshake hash, which includes the responder's fresh ephemeral
// key, so the proof is bound to a nonce the verifier chose and cannot be replayed elsewhere.
func JoinProof(secret [32]byte, pathHash []byte) [wire.MACSize]byte {
	jk, err := hkdf.Key(sha256.New, secret[:], nil, "rendr join key v1", 32)
	if err != nil {
		panic(err)
	}
	m := hmac.New(sha256.New, jk)
	m.Write([]byte("rendr join proof v1"))
	m.Write(pathHash)
	return [wire.MACSize]byte(m.Sum(nil))
}

// VerifyJoin checks a JOIN_PROOF in constant time.
func VerifyJoin(secret [32]byte, pathHash []byte, mac [wire.MACSize]byte) bool {
	want := JoinProof(secret, pathHash)
	return hmac.Equal(want[:], mac[:])
}

// Key checks. A zero private key's public half is well known (anyone could be that side), and
// a public key of small order (the zero key among them) makes every Diffie-Hellman with it
// give the same output whoever the other side is: neither may be configured.
var (
	ErrZeroPrivate = errors.New("handshake: private key is zero")
	ErrWeakPublic  = errors.New("handshake: public key is zero or of small order")
)

// CheckPrivate refuses a zero private key.
func CheckPrivate(priv [KeySize]byte) error {
	if priv == ([KeySize]byte{}) {
		return ErrZeroPrivate
	}
	return nil
}

// checkScalar is any valid scalar: X25519 with it fails exactly for small-order points,
// whose shared secret is zero for every scalar.
var checkScalar = [KeySize]byte{1: 9, 31: 0x40}

// CheckPublic refuses a zero public key and one of small order.
func CheckPublic(pub [KeySize]byte) error {
	if pub == ([KeySize]byte{}) {
		return ErrWeakPublic
	}
	p, err := ecdh.X25519().NewPrivateKey(checkScalar[:])
	if err != nil {
		return err
	}
	q, err := ecdh.X25519().NewPublicKey(pub[:])
	if err != nil {
		return ErrWeakPublic
	}
	if _, err := p.ECDH(q); err != nil {
		return ErrWeakPublic // crypto/ecdh refuses an all-zero shared secret
	}
	return nil
}
