package gvisor

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The address check. Before a listener starts a stack for a UDP source it makes the source
// prove it receives at that address, the way QUIC's Retry does: the dialer sends a padded
// hello, the listener answers with a token that is a MAC over the source address and the
// time, keeping nothing, and only a SYN that carries a valid token for its own source starts
// a stack. A spoofed source never sees its token, so it gets at most one reply no larger than
// what it sent (the padding sees to that) and leaves no state behind.
//
// The check is carried in control datagrams beside the IP packets. An IPv4 packet's first
// byte is 0x4_, so a first byte with another high nibble cannot be mistaken for one.
//
// Why not TCP SYN cookies inside the stack: gVisor's listener sends them only when told to
// always (or when its backlog is full), a SYN-ACK is itself larger than a bare SYN, and its
// cookie SYN-ACK drops window scaling, which would cap every connection at a 64 KiB window.
// Above all, the stack is per source here: a cookie would still need a whole stack (and its
// goroutines) to compute, which is the state to avoid. The check before any stack needs none.
const (
	kindHello  = 0xf1 // dialer: nonce, then zero padding up to helloSize
	kindCookie = 0xf2 // listener: the hello's nonce, then a token
	kindSYN    = 0xf3 // dialer: a token, then its IPv4 SYN

	nonceSize = 8
	macSize   = 16
	// tokenSize: the issue time (seconds since the listener started, big-endian) and a MAC
	// over it and the source address.
	tokenSize = 4 + macSize
	// cookieSize is the listener's answer to a hello.
	cookieSize = 1 + nonceSize + tokenSize
	// helloSize is the least a hello must be: padded to at least the answer it gets, the
	// answer never makes more bytes than the question (no amplification); a shorter hello gets
	// nothing. It stays well under any MTU, so no path that carries the stack's packets loses
	// it.
	helloSize = 64
	// tokenLife is how long a token starts a stack: long enough for a dialer's SYN and its
	// retransmissions, short enough that a token seen on the path is soon worthless.
	tokenLife = 60 * time.Second
	// helloTries bounds the hellos a dialer sends, the first wait being helloWait and each
	// wait doubling to at most helloMaxWait (about 16 s in all), so a dial with no deadline
	// towards a silent address ends.
	helloTries   = 10
	helloWait    = 250 * time.Millisecond
	helloMaxWait = 2 * time.Second
)

// errNoCookie: the listener never answered the dialer's hellos.
var errNoCookie = errors.New("rendr/gvisor: no answer to the address check")

// gate issues and checks a listener's tokens. It keeps nothing per source: its fields are set
// once, when the listener starts.
type gate struct {
	secret [32]byte  // the MAC key, random per listener: tokens of another listener fail
	epoch  time.Time // issue times count seconds from here, on the monotonic clock
}

func newGate() *gate {
	g := &gate{epoch: time.Now()}
	rand.Read(g.secret[:]) // never fails (crypto/rand panics rather than return an error)
	return g
}

// now is the current issue time.
func (g *gate) now() uint32 { return uint32(time.Since(g.epoch) / time.Second) }

// token appends to dst a token for source key issued at second t.
func (g *gate) token(dst []byte, key string, t uint32) []byte {
	dst = binary.BigEndian.AppendUint32(dst, t)
	return append(dst, g.mac(key, t)...)
}

func (g *gate) mac(key string, t uint32) []byte {
	m := hmac.New(sha256.New, g.secret[:])
	var tb [4]byte
	binary.BigEndian.PutUint32(tb[:], t)
	m.Write(tb[:])
	m.Write([]byte(key))
	return m.Sum(nil)[:macSize]
}

// verdict is what a listener does with a datagram from a source that has no stack.
type verdict int

const (
	dropStray   verdict = iota // no control message (a bare SYN among them): nothing happens
	dropShort                  // a hello shorter than helloSize
	dropExpired                // a SYN whose token is too old (or from the future)
	dropBadMAC                 // a SYN whose token was not made for this source by this listener
	dropBadSYN                 // a valid token, but no valid SYN after it
	answer                     // a hello: send the reply, keep nothing
	admit                      // a proven SYN: start a stack and give it the packet
)

// check decides what to do with datagram b from source key (no stack yet) at issue time now.
// For answer, it appends the reply to out and returns it: never longer than b. For admit, it
// returns the IP packet to give the new stack, a part of b. It reads only b and the gate, and
// keeps nothing: an unproven source costs no state whatever it sends.
func (g *gate) check(b []byte, key string, now uint32, out []byte) (verdict, []byte) {
	if len(b) == 0 {
		return dropStray, nil
	}
	switch b[0] {
	case kindHello:
		if len(b) < helloSize {
			return dropShort, nil
		}
		out = append(out, kindCookie)
		out = append(out, b[1:1+nonceSize]...)
		return answer, g.token(out, key, now)
	case kindSYN:
		if len(b) < 1+tokenSize {
			return dropStray, nil
		}
		tok := b[1 : 1+tokenSize]
		t := binary.BigEndian.Uint32(tok)
		if t > now || time.Duration(now-t)*time.Second > tokenLife {
			return dropExpired, nil
		}
		if !hmac.Equal(tok[4:], g.mac(key, t)) {
			return dropBadMAC, nil
		}
		pkt := b[1+tokenSize:]
		if !isSYN(pkt) {
			return dropBadSYN, nil
		}
		return admit, pkt
	}
	return dropStray, nil
}

// hello builds a dialer's hello with the given nonce.
func hello(nonce [nonceSize]byte) []byte {
	b := make([]byte, helloSize)
	b[0] = kindHello
	copy(b[1:], nonce[:])
	return b
}

// prove runs the dialer's side of the address check on pc towards raddr: it sends hellos
// until the listener's cookie for this hello's nonce comes back, and returns its token. Other
// datagrams are ignored: the listener sends nothing else before the SYN.
func prove(ctx context.Context, pc net.PacketConn, raddr net.Addr) ([]byte, error) {
	var nonce [nonceSize]byte
	rand.Read(nonce[:])
	msg := hello(nonce)
	// A cancelled dial must not wait out the read deadline. The deadline is cleared only once
	// the cancel can no longer set it: the receive routine reads pc after this without one.
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		pc.SetReadDeadline(time.Unix(1, 0))
		close(fired)
	})
	defer func() {
		if !stop() {
			<-fired
		}
		pc.SetReadDeadline(time.Time{})
	}()
	buf := make([]byte, 2*cookieSize) // a longer datagram is no cookie; its tail is cut
	wait := helloWait
	for range helloTries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, err := pc.WriteTo(msg, raddr); err != nil {
			return nil, err
		}
		pc.SetReadDeadline(time.Now().Add(wait))
		if ctx.Err() != nil { // cancelled between the check and the deadline just set
			return nil, ctx.Err()
		}
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break // send the hello again
				}
				if errors.Is(err, net.ErrClosed) {
					return nil, err
				}
				continue // an ICMP error while the listener is not up yet, and the like
			}
			if from.String() != raddr.String() || n != cookieSize || buf[0] != kindCookie ||
				!bytes.Equal(buf[1:1+nonceSize], nonce[:]) {
				continue // not the answer to this dial's hello
			}
			return append([]byte(nil), buf[1+nonceSize:n]...), nil
		}
		wait = min(2*wait, helloMaxWait)
	}
	return nil, errNoCookie
}

// withToken wraps a dialer's packet for the listener: a SYN goes with the token, so that
// every copy the stack sends again can start the listener's stack; everything else goes bare.
func withToken(b, token []byte) []byte {
	if !synOnly(b) {
		return b
	}
	out := make([]byte, 0, 1+len(token)+len(b))
	out = append(out, kindSYN)
	out = append(out, token...)
	return append(out, b...)
}

// synOnly reports whether IP packet b is a TCP segment with SYN alone: the dialer's own
// packets, so a shape check is enough.
func synOnly(b []byte) bool {
	if len(b) < header.IPv4MinimumSize || header.IPVersion(b) != header.IPv4Version {
		return false
	}
	ip := header.IPv4(b)
	hl := int(ip.HeaderLength())
	if hl < header.IPv4MinimumSize || len(b) < hl+header.TCPMinimumSize || ip.Protocol() != uint8(header.TCPProtocolNumber) {
		return false
	}
	return header.TCP(b[hl:]).Flags() == header.TCPFlagSyn
}
