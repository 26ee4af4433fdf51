package udpflow

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"net/netip"
	"time"
)

// Retry tokens. Past a number of connections not yet authenticated (RetryPending), a
// listener answers a hello with a Retry instead of creating a connection, and creates one only
// for a hello that carries the token back, from the address the Retry went to.
//
// This is QUIC's Retry (RFC 9000, 8.1.2) rather than WireGuard's cookie reply, on purpose. A
// WireGuard cookie rate-limits handshakes that cost a Diffie-Hellman to check, and rendr's
// handshake, above this carrier, already answers load that way. What this layer needs is
// different: to keep no state at all for a source address until that address showed it can
// receive, so a flood of hellos from forged addresses costs a hash and a 29-byte answer each,
// never a connection. A Retry does exactly that, and its token needs no state to check: the
// listener's secret, the address, the id and the time are all it takes.
//
// A token is 20 bytes:
//
//	issued  4  the listener's clock in whole seconds (Unix time, modulo 2^32)
//	mac     16 HMAC-SHA256(retry key, "udpflow retry" | ip (16, IPv4 mapped) | port (2) |
//	           id (8) | issued (4)), first 16 bytes
//
// The retry key is random per Listener: a token outlives neither the listener nor
// retryLife.
const (
	tokenSize = 4 + 16
	retryLife = 10 * time.Second // as long as a dialer keeps resending (rendr's handshake timeout)
	retrySize = headerSize + tokenSize
	// maxToken bounds the token a dialer carries back: longer ones are not a Retry's.
	maxToken = 64
	// maxRetries is how many Retry datagrams a dialer acts on: a listener sends one per hello
	// without a token, and an answered one needs no second.
	maxRetries = 4
)

var (
	retryLabel = []byte("udpflow retry")
	resetLabel = []byte("udpflow reset")
)

// retryToken is the token for a hello of id from addr, issued at the given second.
func retryToken(key *[32]byte, addr netip.AddrPort, id [8]byte, issued uint32) [tokenSize]byte {
	var msg [16 + 2 + 8 + 4]byte
	ip := addr.Addr().Unmap().As16()
	copy(msg[:16], ip[:])
	binary.BigEndian.PutUint16(msg[16:], addr.Port())
	copy(msg[18:], id[:])
	binary.BigEndian.PutUint32(msg[26:], issued)
	m := hmac.New(sha256.New, key[:])
	m.Write(retryLabel)
	m.Write(msg[:])
	var t [tokenSize]byte
	binary.BigEndian.PutUint32(t[:], issued)
	copy(t[4:], m.Sum(nil))
	return t
}

// checkRetryToken reports whether tok is a token this key issued for addr and id within
// retryLife before now.
func checkRetryToken(key *[32]byte, tok []byte, addr netip.AddrPort, id [8]byte, now time.Time) bool {
	if len(tok) != tokenSize {
		return false
	}
	issued := binary.BigEndian.Uint32(tok)
	age := time.Duration(uint32(now.Unix())-issued) * time.Second // modulo 2^32 seconds
	if age > retryLife {
		return false // expired, or issued in the future (a huge age modulo 2^32)
	}
	want := retryToken(key, addr, id, issued)
	return subtle.ConstantTimeCompare(tok, want[:]) == 1
}

// Stateless reset tokens. A listener that gets a data datagram for an id it does not know (it
// restarted and lost its connections, or forgot this one) answers with a reset carrying
// resetToken(key, id). The dialer learned the tokens of its ids under the handshake's
// encryption (extend.go), so nobody else can make one, and a dialer that gets a valid one for
// the id it sends with knows at once that its listener has no state for it.
//
//	token = HMAC-SHA256(reset key, "udpflow reset" | id)[:16]
const (
	resetTokenSize = 16
	resetSize      = headerSize + resetTokenSize
	// minResetTrigger is the smallest data datagram answered with a reset: a header and the
	// smallest encrypted rendr datagram record (25 bytes: counter, tag, a frame; docs/wire.md
	// section 10). The reset (25 bytes) is always smaller than what triggered it, and a probe
	// shorter than any real datagram gets nothing.
	minResetTrigger = headerSize + 25
	// resetRate and resetBurst bound the resets a listener sends: a token bucket.
	resetRate  = 64 // per second
	resetBurst = 64
)

func resetToken(key *[32]byte, id [8]byte) (t [resetTokenSize]byte) {
	m := hmac.New(sha256.New, key[:])
	m.Write(resetLabel)
	m.Write(id[:])
	copy(t[:], m.Sum(nil))
	return t
}

// Retries one source (an IPv4 address, an IPv6 /64) gets: a dialer needs one per dial, a
// flood from one host gets no more than this for the listener's sendto calls.
const (
	retryRate  = 16
	retryBurst = 32
)
