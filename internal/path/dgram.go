package path

// Datagram records (docs/wire.md, section 5, "Datagram records"): a stream path's datagram
// side. On a carrier that also carries datagrams (transport.Datagrammer: QUIC), the writer
// takes packet flows' DATAGRAM frames out of the records it is about to write and sends them
// as carrier datagrams, several to one when they fit, so a lost one is simply gone instead of
// holding back the stream behind it. Only DATAGRAM frames travel this way; everything else,
// and any DATAGRAM frame too large for the carrier at that moment, stays in the stream.
//
// Encrypted, a datagram record is an 8-byte big-endian counter, then the frames sealed under a
// key of their own with that counter as nonce and associated data. The counter is explicit
// because datagrams are lost and reordered; the receiver keeps a sliding replay window and
// drops what it has seen or what fell behind it. Plain (a secure carrier), it is the frames
// alone.

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/flynn/noise"

	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/transport"
)

const (
	dgCounterSize = 8
	// dgWindow is the replay window in datagrams: how far behind the newest one a datagram may
	// arrive and still count (WireGuard keeps 8128 of its 8192 bits).
	dgWindow = 8192
	// dgEpoch is how many datagrams one key seals: counter n uses the key REKEY'd n/dgEpoch
	// times from the first, so both ends find each datagram's key from its counter alone.
	dgEpoch = rekeyEvery
)

// dgKey derives a direction's datagram key from that direction's stream key, as the handshake
// left it (docs/wire.md, section 5): both ends hold the same stream key for a direction, so they
// derive the same one, and it differs from every stream key.
func dgKey(cs *noise.CipherState) [32]byte {
	k := cs.UnsafeKey()
	out, err := hkdf.Key(sha256.New, k[:], nil, "rendr datagram key v1", 32)
	if err != nil {
		panic(err) // 32 bytes of SHA-256 HKDF output cannot fail
	}
	return [32]byte(out)
}

// dgChannel is a path's datagram side: the carrier's datagram methods and both directions'
// datagram ciphers (nil on a secure carrier).
type dgChannel struct {
	c transport.Datagrammer

	// Writer goroutine only.
	dgSeal
	pend  []byte // DATAGRAM frames taken from records, to send
	buf   []byte // the datagram record being packed
	spill []byte // DATAGRAM frames that go back in the stream
	nfr   int    // frames in buf

	// Datagram reader goroutine only.
	dgOpen
	ctx    context.Context // ends when the path closes
	cancel context.CancelFunc
}

// dgSeal seals records that carry their own counter: datagram records, and every record of a
// packet path, whose counter is its packet number.
type dgSeal struct {
	seal *recordCipher // nil: plain records, the counter alone in front
	sent uint64        // records sealed: the next counter
}

// sealCounted writes the next counter into b[:8] and seals b[8:] in place after it. It
// returns the record, which needs wire.TagSize bytes of b's capacity beyond len(b).
func (s *dgSeal) sealCounted(b []byte) ([]byte, uint64, error) {
	n := s.sent
	if n == 1<<62 {
		return nil, 0, errNonce // out of counters, far beyond any path's life
	}
	binary.BigEndian.PutUint64(b, n)
	s.sent++
	if s.seal == nil {
		return b, n, nil
	}
	if n > 0 && n%dgEpoch == 0 {
		s.seal.rekey()
	}
	s.seal.n = n
	out, err := s.seal.seal(b[dgCounterSize:dgCounterSize], b[:dgCounterSize], b[dgCounterSize:])
	if err != nil {
		return nil, 0, err
	}
	return b[:dgCounterSize+len(out)], n, nil
}

// dgOpen opens records that carry their own counter, keeping the replay window.
type dgOpen struct {
	open      *recordCipher // the key of epoch openEpoch; nil: plain records
	openEpoch uint64
	prev      *recordCipher // the epoch before, for stragglers across a rekey
	next      *recordCipher // the epoch after, once derived: kept, so forgeries naming it derive it once
	high      uint64        // the highest counter accepted, plus one (0: none yet)
	seen      [dgWindow / 64]uint64
	replays   uint64   // copies dropped
	tooOld    uint64   // dropped as behind the window
	splits    bool     // split packets may come (a packet path)
	parts     [][]byte // a split packet's payload parts, after openCounted
}

// openCounted authenticates one record in place and returns its frames and counter. errReplay
// and errOld mean drop it (a copy, or too old); errEpoch and errForged that it does not authenticate.
func (d *dgOpen) openCounted(b []byte) ([]byte, uint64, error) {
	tag := wire.TagSize
	if d.open == nil {
		tag = 0
	}
	if len(b) <= dgCounterSize+tag {
		return nil, 0, fmt.Errorf("%w: a record of %d bytes", errForged, len(b))
	}
	n := binary.BigEndian.Uint64(b)
	split := n&splitBit != 0
	n &^= splitBit
	if n > wire.MaxVarint {
		// No sender numbers a record past 2^62-1 (sealCounted stops there), and a packet
		// path's PATH_ACK could not name it: a peer's forgery or bug, dropped before it can
		// move the replay window.
		return nil, n, errForged
	}
	if err := d.check(n); err != nil {
		return nil, n, err
	}
	if split {
		if !d.splits {
			return nil, n, errForged // datagram records of a stream path are never split
		}
		out, err := d.openSplit(b, n)
		if err != nil {
			return nil, n, err
		}
		d.mark(n)
		return out, n, nil
	}
	d.parts = d.parts[:0]
	out := b[dgCounterSize:]
	if d.open != nil {
		c, err := d.cipherFor(n / dgEpoch)
		if err != nil {
			return nil, n, err
		}
		out, err = c.aead.Open(b[dgCounterSize:dgCounterSize], c.nonceOf(n), b[dgCounterSize:], b[:dgCounterSize])
		if err != nil {
			return nil, n, errForged
		}
		d.advance(n/dgEpoch, c)
	}
	d.mark(n)
	return out, n, nil
}

func newDgChannel(c transport.Datagrammer, send, recv *noise.CipherState) *dgChannel {
	d := &dgChannel{c: c}
	if send != nil && recv != nil {
		d.dgSeal.seal, d.dgOpen.open = &recordCipher{}, &recordCipher{}
		d.buf = make([]byte, dgCounterSize, 2048)
		d.seal.setKey(dgKey(send))
		d.open.setKey(dgKey(recv))
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d
}

// overhead is what a datagram record adds to its frames.
func (d *dgChannel) overhead() int {
	if d.seal == nil {
		return 0
	}
	return dgCounterSize + wire.TagSize
}

// take moves r's DATAGRAM frames that fit the carrier's datagrams out of r, to be sent by
// send once the stream's records are written: a carrier may block while its datagram queue
// is full, and probes and control records must not wait behind datagrams. It reports
// whether r has nothing left for the stream.
func (d *dgChannel) take(r *Record) (empty bool, err error) {
	max := d.c.MaxDatagramSize() - d.overhead()
	if max <= 0 {
		return false, nil
	}
	frames := r.Frames()
	keep := -1 // once a DATAGRAM is taken: frames kept for the stream move down to frames[:keep]
	for off := 0; off < len(frames); {
		f, n, perr := wire.Parse(frames[off:])
		if perr != nil {
			return false, fmt.Errorf("%w: outgoing record: %w", ErrRecord, perr)
		}
		fr := frames[off : off+n]
		if f.Type == wire.TypeDatagram && n <= max {
			if keep < 0 {
				keep = off // everything before stays where it is
			}
			d.pend = append(d.pend, fr...)
		} else if keep >= 0 {
			keep += copy(frames[keep:], fr)
		}
		off += n
	}
	if keep < 0 {
		return false, nil // no datagram: the record goes as it is
	}
	r.B = r.B[:2+keep]
	return keep == 0, nil
}

// send packs the frames take collected into datagram records and sends them. It returns the
// bytes sent and the frames the carrier refused as too large (its MTU shrank), which the
// caller sends in the stream instead; they stay valid until the next take.
func (d *dgChannel) send() (sent int, spill []byte, err error) {
	max := d.c.MaxDatagramSize() - d.overhead()
	d.spill = d.spill[:0]
	frames := d.pend
	for off := 0; off < len(frames); {
		_, n, perr := wire.Parse(frames[off:])
		if perr != nil {
			return sent, nil, fmt.Errorf("%w: outgoing datagram: %w", ErrRecord, perr)
		}
		fr := frames[off : off+n]
		off += n
		if n > max {
			d.spill = append(d.spill, fr...) // the limit fell since take
			continue
		}
		if len(d.buf)-d.head()+n > max {
			k, err := d.flush()
			sent += k
			if err != nil {
				return sent, nil, err
			}
		}
		d.buf = append(d.buf, fr...)
		d.nfr++
	}
	k, err := d.flush()
	sent += k
	d.pend = d.pend[:0]
	return sent, d.spill, err
}

// head is where frames start in a datagram record.
func (d *dgChannel) head() int {
	if d.seal == nil {
		return 0
	}
	return dgCounterSize
}

// flush seals and sends the datagram record being packed. A record the carrier finds too
// large (its MTU shrank) is not lost: its frames go to spill, for the stream. Any other send
// error is the carrier's death, which the stream side reports too; the record is dropped, as
// a datagram may be.
func (d *dgChannel) flush() (int, error) {
	if d.nfr == 0 {
		return 0, nil
	}
	d.nfr = 0
	h := d.head()
	defer func() { d.buf = d.buf[:h] }()
	if d.seal != nil {
		out, _, err := d.sealCounted(d.buf)
		if err != nil {
			return 0, err
		}
		d.buf = out
	}
	err := d.c.SendDatagram(d.buf)
	var tl *transport.DatagramTooLargeError
	if errors.As(err, &tl) {
		frames := d.buf[h:]
		if d.seal != nil {
			// Open what was just sealed: cheaper than keeping a copy of every record.
			frames, err = d.seal.aead.Open(frames[:0], d.seal.nonceOf(d.sent-1), frames, d.buf[:h])
			if err != nil {
				return 0, err
			}
		}
		d.spill = append(d.spill, frames...)
		return 0, nil
	}
	if err != nil {
		return 0, nil
	}
	return len(d.buf), nil
}

// errReplay and errOld are datagrams dropped by the replay window; neither closes the path.
var (
	errReplay = errors.New("replayed datagram")
	errOld    = errors.New("datagram behind the replay window")
	errForged = errors.New("record does not authenticate")
	// errEpoch is a counter of a key epoch neither current nor next to it: from a forger, or
	// from far behind the window; dropped unopened.
	errEpoch = errors.New("record of an unknown key epoch")
)

// openRecord authenticates one received datagram record in place and returns its frames.
// errReplay, errOld and errEpoch mean drop it; any other error is bad input.
func (d *dgChannel) openRecord(b []byte) ([]byte, error) {
	if d.open == nil {
		if len(b) == 0 {
			return nil, fmt.Errorf("%w: empty datagram record", ErrRecord)
		}
		return b, nil
	}
	out, _, err := d.openCounted(b)
	if errors.Is(err, errForged) {
		return nil, fmt.Errorf("%w: datagram record does not authenticate", ErrRecord)
	}
	return out, err
}

// cipherFor finds epoch e's key: the current one, the one before, or the next (derived, and
// kept only once a datagram authenticates under it). Any other epoch is dropped unopened: a
// sender moves one epoch per 2^30 datagrams, so only a very old straggler, or a forgery,
// names one.
func (d *dgOpen) cipherFor(e uint64) (*recordCipher, error) {
	switch {
	case e == d.openEpoch:
		return d.open, nil
	case e+1 == d.openEpoch && d.prev != nil:
		return d.prev, nil
	case e == d.openEpoch+1:
		// Derived on the first datagram that names the epoch, authentic or not, and kept:
		// anyone can send such a datagram, and each would otherwise cost a REKEY and a new
		// AES-GCM before its tag failed.
		if d.next == nil {
			d.next = &recordCipher{aead: d.open.aead}
			d.next.rekey()
		}
		return d.next, nil
	}
	return nil, errEpoch
}

// advance moves the receiver to epoch e, whose key c just opened a datagram, if e is the
// next one.
func (d *dgOpen) advance(e uint64, c *recordCipher) {
	if e > d.openEpoch {
		d.prev, d.open, d.openEpoch, d.next = d.open, c, e, nil
	}
}

// check rejects a counter seen before or too far behind the newest.
func (d *dgOpen) check(n uint64) error {
	if n >= d.high {
		return nil
	}
	if d.high-n > dgWindow {
		return errOld
	}
	if d.seen[(n/64)%uint64(len(d.seen))]&(1<<(n%64)) != 0 {
		return errReplay
	}
	return nil
}

// mark records n as seen, sliding the window forward when n is the newest: the counters it
// skips over are unseen so far.
func (d *dgOpen) mark(n uint64) {
	if n >= d.high {
		if n-d.high >= dgWindow {
			clear(d.seen[:])
		} else {
			for c := d.high; c < n; c++ {
				d.seen[(c/64)%uint64(len(d.seen))] &^= 1 << (c % 64)
			}
		}
		d.high = n + 1
	}
	d.seen[(n/64)%uint64(len(d.seen))] |= 1 << (n % 64)
}

// routineDatagrams reads the carrier's datagrams and hands their frames to the Handler.
func (p *Path) routineDatagrams() {
	defer p.exit()
	d := p.stream.dg
	f := new(wire.Frame)
	for {
		b, err := d.c.ReceiveDatagram(d.ctx)
		if err != nil {
			return // the carrier is closed: the stream side reports why
		}
		frames, err := d.openRecord(b)
		if errors.Is(err, errReplay) || errors.Is(err, errOld) || errors.Is(err, errEpoch) {
			continue // a copy, or too old to tell: dropped, as a datagram may be
		}
		if err != nil {
			p.Close(err)
			return
		}
		p.bytesRecv.Add(int64(len(b)))
		p.lastRecv.Store(time.Now().UnixNano())
		for len(frames) > 0 {
			var k int
			*f, k, err = wire.Parse(frames)
			if err == nil && f.Type != wire.TypeDatagram {
				err = fmt.Errorf("%v frame in a datagram record", f.Type)
			}
			if err != nil {
				p.Close(fmt.Errorf("%w: %w", ErrRecord, err))
				return
			}
			frames = frames[k:]
			if err := p.h.Frame(p, f); err != nil {
				p.Close(err)
				return
			}
		}
	}
}
