package handshake

// The responder's defences before any Diffie-Hellman, after WireGuard's (docs/wire.md 3.5
// and 3.9):
//
//  1. mac1: every first message ends with a MAC keyed by a hash of the responder's public
//     key. Whoever does not know that key gets silence for the price of one HMAC: no DH, no
//     state, no reply.
//  2. Under load, a cookie: a first message must also carry mac2, a MAC keyed by a cookie
//     the responder derives from a rotating secret and the initiator's address. One without
//     a valid mac2 gets a cookie reply (smaller than the message it answers) instead of a
//     handshake; the initiator sends its message again with mac2. Only an initiator that
//     can receive at its address can do that, so a spoofed flood stops at the cookie.
//  3. Under load, a rate per source address: messages with a valid mac2 from one address
//     (a /64 for IPv6) beyond a small rate are dropped, so one host cannot spend the
//     responder's CPU on DH at the expense of everyone else.
//
// None of it keeps state per source beyond rate buckets for a bounded number of sources.

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/rendr-go/rendr/internal/rate"
)

// MACSize is the size of mac1 and mac2 at the end of a first message, and of a cookie.
const MACSize = 16

const (
	// cookieLife is how long a cookie secret is used before a new one replaces it; a cookie
	// made under the previous secret is still accepted, so a cookie is good for one to two
	// lives. An initiator uses a cookie it received for cookieLife less a margin.
	cookieLife = 2 * time.Minute
	// cookieReplySize is a cookie reply's body: a 24-byte nonce and the sealed cookie.
	cookieReplySize = chacha20poly1305.NonceSizeX + MACSize + chacha20poly1305.Overhead
)

// Errors of the defences. None of them is ever told to the initiator.
var (
	ErrMAC1        = errors.New("handshake: first message does not carry the responder's mac1")
	ErrCookie      = errors.New("handshake: under load, and the first message has no valid cookie")
	ErrRateLimited = errors.New("handshake: under load, and the source is over its rate")
	// ErrUnderLoad is the initiator's: the responder asked for a cookie twice on one carrier.
	ErrUnderLoad = errors.New("handshake: the listener is under load and refused the cookie it gave (or its address changed)")
)

func labelKey(label string, pub [KeySize]byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write(pub[:])
	return [32]byte(h.Sum(nil))
}

// mac1Key and cookieKey are public to anyone who has the responder's public key, which is
// the point: mac1 proves the initiator has it.
func mac1Key(pub [KeySize]byte) [32]byte   { return labelKey("rendr mac1 v1", pub) }
func cookieKey(pub [KeySize]byte) [32]byte { return labelKey("rendr cookie v1", pub) }

func mac(key []byte, parts ...[]byte) [MACSize]byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	var out [MACSize]byte
	copy(out[:], m.Sum(nil))
	return out
}

// sourceOf is the part of a carrier's remote address a cookie binds: the IP for TCP and UDP
// (a new carrier from the same host comes from a new port), the whole address otherwise.
// An embedder's carrier may have an address whose methods panic (golang.org/x/net/websocket's
// server side does, for a client that sent no Origin): such carriers all share one source.
func sourceOf(a net.Addr) (b []byte) {
	if ap, ok := addrPortOf(a); ok {
		b := ap.Addr().Unmap().As16()
		return b[:]
	}
	if a == nil {
		return nil
	}
	defer func() {
		if recover() != nil {
			b = []byte("unknown address")
		}
	}()
	return []byte(a.Network() + " " + a.String())
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		if a != nil {
			return a.AddrPort(), true
		}
	case *net.UDPAddr:
		if a != nil {
			return a.AddrPort(), true
		}
	}
	return netip.AddrPort{}, false
}

// Guard holds a responder's defences: the cookie secret, its load estimate and the rate
// buckets. The zero value is ready; it is safe for concurrent use.
type Guard struct {
	// LoadRate is how many handshakes a second (DH operations) the responder does before it
	// counts as under load; LoadBurst how many it may do at once. Zero means 128 and 256.
	LoadRate, LoadBurst int
	// SourceRate and SourceBurst bound handshakes per source address while under load. Zero
	// means 16 a second and a burst of 16 (a dialer with many paths handshakes them at once).
	SourceRate, SourceBurst int
	// now is the clock, for tests; nil means time.Now.
	now func() time.Time

	mu struct {
		sync.Mutex
		secret, prev [32]byte
		rotated      time.Time
		load         rate.Bucket
		loadedUntil  time.Time // under load until then, whatever the budget
		forced       bool
	}
	sources  rate.Table // handshakes per source host, under load
	carriers rate.Table // new carriers per source host, under load (AdmitCarrier)
	stats    GuardStats
}

// GuardStats counts what the defences did.
type GuardStats struct {
	BadMAC1, CookiesSent, BadCookie, RateLimited, Handshakes uint64
	// CarriersLimited counts carriers closed at once, before any read, because their source
	// opened more than its rate while under load (AdmitCarrier).
	CarriersLimited uint64
}

// loadLinger is how long the responder stays under load after its budget ran out.
const loadLinger = time.Second

func (g *Guard) clock() time.Time {
	if g.now != nil {
		return g.now()
	}
	return time.Now()
}

// loadRate and sourceRate are the configured rates and bursts, defaults applied.
func (g *Guard) loadRate() (perSec, burst float64) {
	return float64(orDefault(g.LoadRate, 128)), float64(orDefault(g.LoadBurst, 256))
}

func (g *Guard) sourceRate() (perSec, burst float64) {
	return float64(orDefault(g.SourceRate, 16)), float64(orDefault(g.SourceBurst, 16))
}

func orDefault(v, d int) int {
	if v <= 0 {
		return d
	}
	return v
}

// SetLoaded forces the under-load mode on or off (on: a caller that knows better, such as a
// listener whose handshakes in progress pile up). Off returns to the rate estimate.
func (g *Guard) SetLoaded(on bool) {
	g.mu.Lock()
	g.mu.forced = on
	g.mu.Unlock()
}

// underLoadLocked reports whether recent handshakes used up the load budget.
func (g *Guard) underLoadLocked(now time.Time) bool {
	if g.mu.forced {
		return true
	}
	perSec, burst := g.loadRate()
	g.mu.load.Refill(now, perSec, burst)
	if g.mu.load.Empty() {
		// Once loaded, stay so for a while (as WireGuard does): a flood that spent the
		// budget must not get the next token's worth of carriers in as it refills.
		g.mu.loadedUntil = now.Add(loadLinger)
	}
	return now.Before(g.mu.loadedUntil)
}

// spendLocked counts one handshake against the load budget.
func (g *Guard) spendLocked(now time.Time) {
	perSec, burst := g.loadRate()
	g.mu.load.Take(now, perSec, burst)
	g.stats.Handshakes++
}

// cookieLocked is the cookie for src under the current secret, rotating it when due.
func (g *Guard) secretsLocked(now time.Time) (cur, prev [32]byte) {
	if g.mu.rotated.IsZero() || now.Sub(g.mu.rotated) >= cookieLife {
		g.mu.prev = g.mu.secret
		if g.mu.rotated.IsZero() || now.Sub(g.mu.rotated) >= 2*cookieLife {
			g.mu.prev = [32]byte{} // too old to honour: a zero secret matches nothing we made
		}
		rand.Read(g.mu.secret[:])
		g.mu.rotated = now
	}
	return g.mu.secret, g.mu.prev
}

// admit runs the defences on a first message whose mac1 was already checked: it returns nil
// when the responder may do the handshake's DH, a cookie when it must answer with a cookie
// reply instead, or an error when it must stay silent. src is the carrier's remote address;
// askedBefore says this carrier already got a cookie reply (a second one is never sent).
func (g *Guard) admit(src net.Addr, m *initMsg, askedBefore bool) (*[MACSize]byte, error) {
	now := g.clock()
	g.mu.Lock()
	if !g.underLoadLocked(now) {
		g.spendLocked(now)
		g.mu.Unlock()
		return nil, nil
	}
	cur, prev := g.secretsLocked(now)
	g.mu.Unlock()
	source := sourceOf(src) // outside the lock: an embedder's address may be slow
	want := mac(cur[:], source)
	ok := hmac.Equal(macOf(&want, m.withMAC1), m.mac2[:])
	if !ok && prev != ([32]byte{}) {
		old := mac(prev[:], source)
		ok = hmac.Equal(macOf(&old, m.withMAC1), m.mac2[:])
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !ok {
		g.stats.BadCookie++
		if askedBefore {
			return nil, ErrCookie
		}
		g.stats.CookiesSent++
		return &want, nil
	}
	perSec, burst := g.sourceRate()
	if !g.sources.Take(rateKey(src), now, perSec, burst) {
		g.stats.RateLimited++
		return nil, ErrRateLimited
	}
	g.spendLocked(now)
	return nil, nil
}

// AdmitCarrier decides, before anything is read from a new carrier, whether the responder
// takes it: always when not under load; under load, at the rate per source that Respond
// allows handshakes (twice its burst, so a dialer with many paths gets them all). A carrier
// refused here costs an accept and a close: no goroutine, no read, no MAC, no reply. The
// address of a stream carrier (TCP) is proven by its own handshake; a datagram carrier's is
// not, and a spoofed source can only fill its own bucket.
func (g *Guard) AdmitCarrier(src net.Addr) bool {
	now := g.clock()
	g.mu.Lock()
	loaded := g.underLoadLocked(now)
	g.mu.Unlock()
	if !loaded {
		return true
	}
	perSec, burst := g.sourceRate()
	if !g.carriers.Take(rateKey(src), now, perSec, 2*burst) {
		g.mu.Lock()
		g.stats.CarriersLimited++
		g.mu.Unlock()
		return false
	}
	return true
}

// rateKey is what a source is rate-limited by: its host (rate.HostKey) when it has an IP
// address, the whole address otherwise.
func rateKey(src net.Addr) []byte {
	if ap, ok := addrPortOf(src); ok {
		return rate.HostKey(ap.Addr())
	}
	return sourceOf(src)
}

func macOf(key *[MACSize]byte, msg []byte) []byte {
	m := mac(key[:], msg)
	return m[:]
}

// Stats returns the counters.
func (g *Guard) Stats() GuardStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stats
}

func (g *Guard) countBadMAC1() {
	g.mu.Lock()
	g.stats.BadMAC1++
	g.mu.Unlock()
}

// sealCookie makes a cookie reply's body: the cookie encrypted to the initiator under a key
// from the responder's public key, with the message's mac1 as associated data, so it answers
// that message only and an observer without the public key cannot read it.
func sealCookie(pub [KeySize]byte, cookie *[MACSize]byte, mac1 []byte) []byte {
	k := cookieKey(pub)
	aead, err := chacha20poly1305.NewX(k[:])
	if err != nil {
		panic(err) // the key size is right by construction
	}
	out := make([]byte, chacha20poly1305.NonceSizeX, cookieReplySize)
	rand.Read(out)
	return aead.Seal(out, out, cookie[:], mac1)
}

func openCookie(pub [KeySize]byte, body, mac1 []byte) ([MACSize]byte, error) {
	var c [MACSize]byte
	if len(body) != cookieReplySize {
		return c, ErrMalformed
	}
	k := cookieKey(pub)
	aead, err := chacha20poly1305.NewX(k[:])
	if err != nil {
		return c, err
	}
	n := chacha20poly1305.NonceSizeX
	p, err := aead.Open(nil, body[:n], body[n:], mac1)
	if err != nil {
		return c, errors.New("handshake: cookie reply does not authenticate")
	}
	copy(c[:], p)
	return c, nil
}

// CookieJar keeps the cookie an initiator last received from a responder, for mac2. One jar
// serves one path (the cookie is bound to the address the responder sees). The zero value is
// ready; it is safe for concurrent use.
type CookieJar struct {
	mu     sync.Mutex
	cookie [MACSize]byte
	at     time.Time
}

func (j *CookieJar) get(now time.Time) (c [MACSize]byte, ok bool) {
	if j == nil {
		return c, false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	// A margin under the responder's life, so a cookie is not used as it expires.
	if j.at.IsZero() || now.Sub(j.at) > cookieLife-10*time.Second {
		return c, false
	}
	return j.cookie, true
}

func (j *CookieJar) put(c [MACSize]byte, now time.Time) {
	if j == nil {
		return
	}
	j.mu.Lock()
	j.cookie, j.at = c, now
	j.mu.Unlock()
}
