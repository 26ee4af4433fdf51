package path

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/record"
	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/transport"
)

// sinkCarrier is a datagram carrier that takes every write and delivers nothing: the far end
// of a path whose reader a test drives by hand (handlePacket). It keeps the datagrams written
// when keep is set.
type sinkCarrier struct {
	mu      sync.Mutex
	keep    bool
	written [][]byte
	writes  int
	peer    net.Addr
}

var _ transport.Rebinder = (*sinkCarrier)(nil)

func (c *sinkCarrier) note(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	if c.keep {
		c.written = append(c.written, append([]byte(nil), b...))
	}
}

func (c *sinkCarrier) last() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.written) == 0 {
		return nil
	}
	return c.written[len(c.written)-1]
}

func (c *sinkCarrier) Read([]byte) (int, error)                  { return 0, net.ErrClosed }
func (c *sinkCarrier) ReadFrom([]byte) (int, net.Addr, error)    { return 0, nil, net.ErrClosed }
func (c *sinkCarrier) Write(b []byte) (int, error)               { c.note(b); return len(b), nil }
func (c *sinkCarrier) WriteTo(b []byte, _ net.Addr) (int, error) { c.note(b); return len(b), nil }
func (c *sinkCarrier) SetPeer(a net.Addr) {
	c.mu.Lock()
	c.peer = a
	c.mu.Unlock()
}
func (c *sinkCarrier) Close() error                     { return nil }
func (c *sinkCarrier) MaxDatagramSize() int             { return 1400 }
func (c *sinkCarrier) BaseDatagramSize() int            { return 1200 }
func (c *sinkCarrier) LocalAddr() net.Addr              { return pktAddr("here") }
func (c *sinkCarrier) RemoteAddr() net.Addr             { return pktAddr("there") }
func (c *sinkCarrier) SetDeadline(time.Time) error      { return nil }
func (c *sinkCarrier) SetReadDeadline(time.Time) error  { return nil }
func (c *sinkCarrier) SetWriteDeadline(time.Time) error { return os.ErrNoDeadline }

// idlePath is a plain packet path over a sinkCarrier with no goroutines of its own: a test
// sends with send and hands it received packets with receive, so every step is synchronous
// and deterministic. Its timers run nothing (the test does what they would).
type idlePath struct {
	p *Path
	c *sinkCarrier
	w *pkWriter
	f *wire.Frame
	// The next packet number receive uses.
	rpn uint64
}

func newIdlePath(h Handler) *idlePath {
	c := &sinkCarrier{}
	p := New(1, c, nil, nil, Config{}, h)
	k := p.pk
	k.timer = time.AfterFunc(time.Hour, func() {})
	k.timer.Stop()
	k.ackTimer = time.AfterFunc(time.Hour, func() {})
	k.ackTimer.Stop()
	return &idlePath{p: p, c: c, w: &pkWriter{}, f: new(wire.Frame)}
}

// close stops the path's timers; it has no goroutines to wait for.
func (ip *idlePath) close() { ip.p.Close(nil) }

// queueData queues n records of one DATA frame each, as the engine would, listing what each
// carries, without regard for Space.
func (ip *idlePath) queueData(from, n int) {
	payload := make([]byte, pktPayload)
	for i := from; i < from+n; i++ {
		r := NewRecord()
		r.SetLimit(ip.p.MaxRecord())
		off := uint64(i * pktPayload)
		r.B = wire.AppendData(r.B, 1, off, false, payload)
		r.Carried = append(r.Carried, Carried{Kind: record.CarriedData, Flow: 1, Off: off, Len: pktPayload})
		ip.p.Send(r)
	}
}

// send runs the writer until it has nothing more it may send now.
func (ip *idlePath) send(t testing.TB) {
	t.Helper()
	for range 1000 {
		_, more, err := ip.p.writePackets(ip.w)
		if err != nil {
			t.Fatalf("writePackets: %v", err)
		}
		if !more {
			return
		}
	}
	t.Fatal("the writer never ran out of packets to send")
}

// receive hands the path one authenticated packet's frames, numbered next, as its reader
// would.
func (ip *idlePath) receive(frames []byte, parts [][]byte, from net.Addr, marked bool) error {
	pn := ip.rpn
	ip.rpn++
	if from != nil {
		ip.p.fromElsewhere(from, pn, dgCounterSize+len(frames))
	}
	return ip.p.handlePacket(frames, parts, pn, from, marked, time.Now(), ip.f)
}

// inFlight is how many ack-eliciting packets the path still tracks as neither acknowledged
// nor lost.
func (k *pkState) inFlightPackets() int {
	n := 0
	for i := k.start; i < len(k.sent); i++ {
		if !k.sent[i].done {
			n++
		}
	}
	return n
}

// TestPacketNumberPastVarint: a packet numbered past 2^62-1, which no sender uses and no
// PATH_ACK can name, is dropped and counted as a forgery. Before, the receiver took it: the
// replay window jumped there, so every real packet after it was dropped as too old, and the
// PATH_ACK for it panicked in the writer.
func TestPacketNumberPastVarint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := pktConfig{Delay: 5 * time.Millisecond}
		_, a, b := newPktLink(11, cfg, cfg, 1400, 1200)
		ha, hb := newPktHandler(), newPktHandler()
		pa := New(1, a, nil, nil, Config{}, ha) // plain: the test writes packets itself
		pb := New(1, b, nil, nil, Config{}, hb)
		pa.Start()
		pb.Start()
		defer func() {
			pa.Close(nil)
			pb.Close(nil)
			pa.Wait()
			pb.Wait()
		}()
		for _, pn := range []uint64{wire.MaxVarint + 1, splitBit - 1} {
			d := binary.BigEndian.AppendUint64(nil, pn)
			b.inject(pktIn{b: wire.AppendPing(d, 7), from: a.LocalAddr()})
		}
		sendData(t, pa, ha, 0, 200)
		if arrived, _ := settled(t, ha, hb, 0, 200); arrived != 200 {
			t.Fatalf("%d of 200 records arrived over a link that loses none", arrived)
		}
		if st := pb.PacketStats(); st.Forged != 2 {
			t.Fatalf("%d datagrams counted as forged, want 2", st.Forged)
		}
		if pa.Cause() != nil || pb.Cause() != nil {
			t.Fatalf("a path closed: %v / %v", pa.Cause(), pb.Cause())
		}
	})
}

// TestDgCounterLimit: the replay window takes counters up to 2^62-1 and refuses, without
// moving, any above.
func TestDgCounterLimit(t *testing.T) {
	var d dgOpen
	rec := func(n uint64) []byte { return wire.AppendPing(binary.BigEndian.AppendUint64(nil, n), 1) }
	if _, _, err := d.openCounted(rec(wire.MaxVarint + 1)); !errors.Is(err, errForged) {
		t.Fatalf("counter 2^62: %v, want errForged", err)
	}
	if d.high != 0 {
		t.Fatalf("a refused counter moved the window to %d", d.high)
	}
	if _, n, err := d.openCounted(rec(wire.MaxVarint)); err != nil || n != wire.MaxVarint {
		t.Fatalf("counter 2^62-1: %d, %v", n, err)
	}
}

// framesOf parses a plain packet's frames.
func framesOf(t *testing.T, d []byte) []wire.Frame {
	t.Helper()
	var out []wire.Frame
	for b := d[dgCounterSize:]; len(b) > 0; {
		f, n, err := wire.Parse(b)
		if err != nil {
			t.Fatalf("a packet the path wrote: %v", err)
		}
		out = append(out, f)
		b = b[n:]
	}
	return out
}

// ackAll is a PATH_ACK of every packet p numbered so far.
func ackAll(p *Path) []byte {
	p.mu.Lock()
	next := p.pk.next
	p.mu.Unlock()
	return wire.AppendPathAck(nil, 0, []wire.AckRange{{Lo: 0, Hi: next - 1}}, 0)
}

// TestPongsOutBounded: a peer that sends PING after PING and acknowledges nothing gets at most
// maxPongsOut packets carrying a PONG; the path tracks no more than those, where it used to
// track one more for every PING. Once they are acknowledged, the latest PING is answered.
func TestPongsOutBounded(t *testing.T) {
	ip := newIdlePath(newPktHandler())
	defer ip.close()
	ip.c.keep = true
	const pings = 200
	for seq := uint64(1); seq <= pings; seq++ {
		if err := ip.receive(wire.AppendPing(nil, seq), nil, nil, false); err != nil {
			t.Fatal(err)
		}
		ip.send(t)
	}
	k := ip.p.pk
	if n := k.inFlightPackets(); n != maxPongsOut || k.pongsOut != maxPongsOut {
		t.Fatalf("%d packets tracked, %d carrying a PONG, after %d PINGs; want %d", n, k.pongsOut, pings, maxPongsOut)
	}
	if st := ip.p.PacketStats(); st.PongsHeld != pings-maxPongsOut {
		t.Fatalf("%d PONGs counted as held, want %d", st.PongsHeld, pings-maxPongsOut)
	}
	if err := ip.receive(ackAll(ip.p), nil, nil, false); err != nil {
		t.Fatal(err)
	}
	ip.send(t)
	var pong uint64
	for _, f := range framesOf(t, ip.c.last()) {
		if f.Type == wire.TypePong {
			pong = f.Seq
		}
	}
	if pong != pings || k.pongsOut != 1 {
		t.Fatalf("after the acknowledgement: PONG %d sent, %d out; want %d, 1", pong, k.pongsOut, pings)
	}
}

// TestForgedNextEpochDerivesOnce: a datagram numbered in the key epoch after the receiver's
// must be opened under a key derived for it. Anyone can send one, so the derivation (a REKEY
// and a new AES-GCM) happens once and is kept for the next forgery, not paid again for each:
// after the first, a forgery in that epoch costs one failed open and no allocation. A real
// datagram of the epoch still opens with the kept key, and moves the receiver there.
func TestForgedNextEpochDerivesOnce(t *testing.T) {
	snd, rcv, car := dgPair(true, 1200)
	snd.sent = dgEpoch // the sender is in epoch 1 already
	forged := make([]byte, dgCounterSize+wire.TagSize+40)
	binary.BigEndian.PutUint64(forged, dgEpoch+5)
	b := make([]byte, len(forged))
	allocs := testing.AllocsPerRun(100, func() {
		copy(b, forged)
		if _, _, err := rcv.openCounted(b); !errors.Is(err, errForged) {
			t.Fatalf("a forgery in the next epoch: %v", err)
		}
	})
	if allocs != 0 {
		t.Fatalf("each forgery in the next epoch allocated %v times: a key derived for each", allocs)
	}
	r := NewRecord()
	r.B = wire.AppendDatagram(r.B, 2, 1, []byte("real"))
	if _, _, _, err := offload(snd, r); err != nil {
		t.Fatal(err)
	}
	r.Release()
	if _, err := rcv.openRecord(car.sent[0]); err != nil || rcv.openEpoch != 1 {
		t.Fatalf("a real datagram of epoch 1: %v, receiver at epoch %d", err, rcv.openEpoch)
	}
	// The next epoch is epoch 2 now: a forgery there derives its key anew, once.
	binary.BigEndian.PutUint64(forged, 2*dgEpoch)
	copy(b, forged)
	if _, _, err := rcv.openCounted(b); !errors.Is(err, errForged) {
		t.Fatalf("a forgery in epoch 2: %v", err)
	}
}

// TestPathAckNeverSent: an acknowledgement naming a packet never sent closes the path
// (ErrRecord) and changes nothing, even one whose range claims 2^62 packets.
func TestPathAckNeverSent(t *testing.T) {
	ip, _ := fuzzInFlight(t, 20) // packets 0 to 20
	defer ip.close()
	k := ip.p.pk
	inflight := k.inflight
	for _, hi := range []uint64{21, wire.MaxVarint} {
		ack := wire.AppendPathAck(nil, 0, []wire.AckRange{{Lo: 0, Hi: hi}}, hi)
		if err := ip.receive(ack, nil, nil, false); !errors.Is(err, ErrRecord) {
			t.Fatalf("PATH_ACK of packets 0 to %d: %v, want ErrRecord", hi, err)
		}
	}
	if k.acked != 0 || k.inflight != inflight || k.marked != 0 {
		t.Fatalf("after refused acknowledgements: %d acknowledged, %d marked, %d bytes in flight (was %d)",
			k.acked, k.marked, k.inflight, inflight)
	}
}

// TestPathAckDelayClamped: the peer's ACK delay is taken off an RTT sample only up to
// maxAckDelay. A delay of 2^62-1 microseconds, or one that as nanoseconds wraps to about
// -1 s, leaves the estimate what the samples measured: at most the time the path has run.
func TestPathAckDelayClamped(t *testing.T) {
	for _, d := range []uint64{wire.MaxVarint, 18446744072709551} {
		t0 := time.Now()
		ip, _ := fuzzInFlight(t, 20)
		for i, ack := range [][]byte{
			wire.AppendPathAck(nil, 0, []wire.AckRange{{Lo: 0, Hi: 10}}, 0),
			wire.AppendPathAck(nil, d, []wire.AckRange{{Lo: 0, Hi: 20}}, 0),
		} {
			if err := ip.receive(ack, nil, nil, false); err != nil {
				t.Fatal(err)
			}
			q := ip.p.Quality()
			if lim := time.Since(t0); q.Samples != i+1 || q.SRTT > lim || q.MinRTT > lim || q.RTTVar > lim {
				t.Fatalf("delay %d: %+v after %v", d, q, lim)
			}
		}
		ip.close()
	}
}
