package udpflow

import (
	"net/netip"
	"testing"
	"time"
)

// Fuzz input: a list of steps, each an op byte, a source byte and op-specific bytes:
//
//	op%5 == 0  raw:    n (1 byte), n bytes sent as they are
//	op%5 == 1  hello:  id (1 byte: one of 4 ids), n (1 byte), n bytes of payload, padded
//	op%5 == 2  token:  id (1 byte), a hello carrying a token the listener issued for the source
//	                   and id; op's high bit flips a bit of it
//	op%5 == 3  data:   id (1 byte), n (1 byte), n bytes: a data datagram
//	op%5 == 4  answer: n (1 byte): accept a connection and write an n-byte answer
//
// The source byte picks one of 16 addresses, IPv4 and IPv6. The steps decode from any input.
func fuzzStep(op, src byte) (from netip.AddrPort) {
	if src&1 == 0 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 9, src >> 1 & 7}), 4000+uint16(src&15))
	}
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte{15: 1, 14: src >> 1 & 7}), 4000+uint16(src&15))
}

func fuzzID(b byte) [8]byte { return [8]byte{0xf0, 1, 2, 3, 4, 5, 6, b & 3} }

// fuzzListenerSeeds are inputs made with the encoders: a hello, a token hello, data, an
// answer, junk.
func fuzzListenerSeeds() [][]byte {
	hello := []byte{1, 0, 0, 12}
	hello = append(hello, "client hello"...)
	data := []byte{3, 2, 0, 40}
	data = append(data, make([]byte, 40)...)
	retry := append([]byte{0, 4, retrySize, flagRetry}, make([]byte, retrySize-1)...)
	reset := append([]byte{0, 6, resetSize, flagReset}, make([]byte, resetSize-1)...)
	raw := buildHello(fuzzID(1), []byte("x"), nil)[:200]
	return [][]byte{
		hello,
		append(append(bytes2(hello), 4, 30), data...),
		append(bytes2(hello), 2, 0, 0, 2, 0, 1, 4, 100, 4, 100),
		append([]byte{0, 1, byte(len(raw))}, raw...),
		retry, reset,
		{1, 1, 1, 0, 1, 3, 1, 0, 1, 5, 2, 0, 1, 7, 3, 0, 2, 9, 0, 4, 10},
	}
}

func bytes2(b []byte) []byte { return append([]byte(nil), b...) }

// FuzzListenerDemux sends arbitrary datagrams from arbitrary sources into a live Listener's
// demultiplexer. Nothing panics; the listener sends only Retries and resets, never larger than
// what they answer, and answers (copies included) no larger than three times the hello; the
// state stays within its bounds.
func FuzzListenerDemux(f *testing.F) {
	for _, s := range fuzzListenerSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var cur []byte // the datagram being handled; nil while the harness writes an answer
		var answer int // the size of the answer the harness is writing
		tap := func(b []byte, to netip.AddrPort) bool {
			switch {
			case cur == nil:
				if b[0] != flagReply || len(b) != headerSize+answer {
					t.Fatalf("writing a %d-byte answer sent % .12x", answer, b)
				}
			case b[0] == flagRetry:
				if len(b) != retrySize || cur[0]&^flagToken != flagHello || len(cur) < helloSize {
					t.Fatalf("a Retry (%d bytes) for % .12x (%d bytes)", len(b), cur, len(cur))
				}
			case b[0] == flagReset:
				if len(b) != resetSize || cur[0] != 0 || len(cur) < minResetTrigger {
					t.Fatalf("a reset (%d bytes) for % .12x (%d bytes)", len(b), cur, len(cur))
				}
			case b[0] == flagReply:
				if cur[0]&^flagToken != flagHello || len(b) > 3*len(cur) {
					t.Fatalf("an answer copy (%d bytes) for % .12x (%d bytes)", len(b), cur, len(cur))
				}
			default:
				t.Fatalf("sent % .12x for % .12x", b, cur)
			}
			return true // nothing leaves the machine
		}
		l, err := Listen("127.0.0.1:0", RetryPending(2), MaxPending(4), NoBatching(),
			func(o *options) { o.tap = tap })
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		now := time.Now()
		l.now = func() time.Time { return now }
		var accepted []*Conn
		hellos := 0
		next := func(n int) []byte {
			n = min(n, len(in))
			b := in[:n]
			in = in[n:]
			return b
		}
		num := func() int { // the next byte; 0 past the end
			if len(in) == 0 {
				return 0
			}
			v := in[0]
			in = in[1:]
			return int(v)
		}
		for len(in) >= 2 {
			op, src := in[0], in[1]
			in = in[2:]
			from := fuzzStep(op, src)
			var b []byte
			switch op % 5 {
			case 0:
				b = next(num())
			case 1, 2:
				id := fuzzID(byte(num()))
				if op%5 == 1 {
					b = buildHello(id, next(num()), nil)
				} else {
					tok := retryToken(l.retryKey, from, id, uint32(now.Unix()))
					if op&0x80 != 0 {
						tok[op>>3&15] ^= 1 << (op & 7)
					}
					b = buildHello(id, []byte("token hello"), tok[:])
				}
				hellos++
			case 3:
				id := fuzzID(byte(num()))
				b = append(append([]byte{0}, id[:]...), next(num())...)
			case 4:
				n := num()
				select {
				case c := <-l.accept:
					accepted = append(accepted, c)
					c.mu.Lock()
					fits := headerSize+n <= 3*c.helloLen && !c.wrote
					c.mu.Unlock()
					if fits {
						cur, answer = nil, n
						if _, err := c.Write(make([]byte, n)); err != nil {
							t.Fatalf("answer of %d bytes: %v", n, err)
						}
					}
				default:
				}
				continue
			}
			cur = b
			if len(b) == 0 {
				b = nil
			}
			l.demux(b, from, nil)
		}
		// Bounded state: a connection per hello at most, pending ones within MaxPending and
		// their queues within their bounds.
		if n := conns(l); n > hellos {
			t.Fatalf("%d connections from %d hellos", n, hellos)
		}
		st := l.Stats()
		if st.Pending > 4+int64(len(accepted)) || st.Pending < 0 {
			t.Fatalf("%d pending", st.Pending)
		}
		if q := l.pendingQueued.Load(); q < 0 || q > pendingBudget {
			t.Fatalf("%d bytes queued by pending connections", q)
		}
		l.mu.Lock()
		for _, r := range l.conns {
			r.c.qmu.Lock()
			if r.c.qlen == pendingLen && r.c.q.n > pendingLen {
				t.Errorf("a pending connection queues %d datagrams", r.c.q.n)
			}
			r.c.qmu.Unlock()
		}
		l.mu.Unlock()
	})
}
