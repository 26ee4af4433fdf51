package path

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr/internal/handshake"
	"github.com/rendr-go/rendr/internal/testlink"
	"github.com/rendr-go/rendr/internal/wire"
)

// Paths run over in-memory links inside synctest bubbles, so round trips and probe deadlines
// are exact in virtual time.

// handler records what a path reports.
type handler struct {
	mu struct {
		sync.Mutex
		frames    []wire.Type
		writable  int
		measured  int
		downs     int
		cause     error
		downAt    time.Time
		alive     int32 // the path's running goroutines when Down came
		lateCalls int   // Frame or Writable after Down
	}
	frameErr error // returned by Frame when set
	down     chan struct{}
}

var _ Handler = (*handler)(nil)

func newHandler() *handler { return &handler{down: make(chan struct{})} }

func (h *handler) Frame(p *Path, f *wire.Frame) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.downs > 0 {
		h.mu.lateCalls++
	}
	h.mu.frames = append(h.mu.frames, f.Type)
	return h.frameErr
}

func (h *handler) Writable(p *Path) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.downs > 0 {
		h.mu.lateCalls++
	}
	h.mu.writable++
}

func (h *handler) Measured(p *Path) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mu.measured++
	if h.mu.downs > 0 {
		h.mu.lateCalls++
	}
}

func (h *handler) Down(p *Path, cause error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mu.downs++
	h.mu.cause = cause
	h.mu.downAt = time.Now()
	h.mu.alive = p.alive.Load()
	if h.mu.downs == 1 {
		close(h.down)
	}
}

func (h *handler) state() (downs int, cause error, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mu.downs, h.mu.cause, h.mu.downAt
}

// pair starts two paths joined by a link with plain records.
func pair(t *testing.T, cfg Config, ab, ba testlink.Config) (a, b *Path, ha, hb *handler, l *testlink.Link) {
	ha, hb = newHandler(), newHandler()
	a, b, l = startPair(t, cfg, cfg, ha, hb, ab, ba)
	return a, b, ha, hb, l
}

// startPair starts two paths, configured and handled as given, joined by a link with plain
// records; Cleanup closes them.
func startPair(t *testing.T, cfgA, cfgB Config, ha, hb Handler, ab, ba testlink.Config) (a, b *Path, l *testlink.Link) {
	ca, cb, l := testlink.Pipe(ab, ba)
	a = New(1, ca, nil, nil, cfgA, ha)
	b = New(1, cb, nil, nil, cfgB, hb)
	a.Start()
	b.Start()
	t.Cleanup(func() {
		a.Close(nil)
		b.Close(nil)
		a.Wait()
		b.Wait()
	})
	return a, b, l
}

func TestProbesMeasureRTT(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := testlink.Config{Delay: 10 * time.Millisecond}
		a, _, ha, _, l := pair(t, Config{}, d, d)
		time.Sleep(3500 * time.Millisecond) // the first probe at once, then one a second
		q := a.Quality()
		if q.Samples != 4 || q.SRTT != 20*time.Millisecond || q.MinRTT != 20*time.Millisecond || q.Loss != 0 {
			t.Fatalf("Quality = %+v, want 4 samples of exactly 20ms and no loss", q)
		}
		if q.RTTVar >= 10*time.Millisecond {
			t.Errorf("RTTVar = %v: constant samples must shrink it from its initial srtt/2", q.RTTVar)
		}
		ha.mu.Lock()
		measured := ha.mu.measured
		ha.mu.Unlock()
		if measured != q.Samples {
			t.Errorf("Measured called %d times for %d probe answers", measured, q.Samples)
		}
		// The link gets slower: the estimate follows.
		slow := testlink.Config{Delay: 40 * time.Millisecond}
		l.Set(slow, slow)
		time.Sleep(20 * time.Second)
		q = a.Quality()
		if q.SRTT < 70*time.Millisecond || q.SRTT > 80*time.Millisecond || q.MinRTT != 20*time.Millisecond {
			t.Errorf("Quality after the delay rose to 80ms = %+v", q)
		}
		if downs, cause, _ := ha.state(); downs != 0 {
			t.Fatalf("path died: %v", cause)
		}
		if sent, recv := a.Bytes(); sent == 0 || recv == 0 {
			t.Errorf("Bytes = %d, %d", sent, recv)
		}
	})
}

// silentPeer drains conn and never answers.
func silentPeer(conn net.Conn) (stop func()) {
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, conn)
		close(done)
	}()
	return func() {
		conn.Close()
		<-done
	}
}

func TestSilentPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca, cb, _ := testlink.Pipe(testlink.Config{Delay: time.Millisecond}, testlink.Config{Delay: time.Millisecond})
		defer silentPeer(cb)()
		h := newHandler()
		cfg := Config{}
		cfg.defaults()
		p := New(1, ca, nil, nil, Config{}, h)
		start := time.Now()
		p.Start()
		<-h.down
		downs, cause, at := h.state()
		if !errors.Is(cause, ErrSilent) {
			t.Fatalf("cause %v, want ErrSilent", cause)
		}
		// Never answered: the deadline is the ceiling.
		if took := at.Sub(start); took <= 0 || took > cfg.DeadCeil {
			t.Errorf("declared dead after %v, want within %v", took, cfg.DeadCeil)
		}
		p.Wait()
		if downs != 1 {
			t.Errorf("Down called %d times", downs)
		}
	})
}

func TestSilentAfterMeasured(t *testing.T) {
	for _, active := range []bool{false, true} {
		name := "idle"
		if active {
			name = "active"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := testlink.Config{Delay: 10 * time.Millisecond}
				a, _, ha, _, l := pair(t, Config{}, d, d)
				time.Sleep(5 * time.Second)
				stop := make(chan struct{})
				var wg sync.WaitGroup
				if active {
					// Data keeps being sent: probes go at the active interval.
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							select {
							case <-stop:
								return
							case <-time.After(10 * time.Millisecond):
							}
							r := NewRecord()
							r.B = wire.AppendMaxData(r.B, 1)
							a.Send(r)
						}
					}()
					time.Sleep(time.Second)
				}
				start := time.Now()
				l.Blackhole(true)
				<-ha.down
				close(stop)
				wg.Wait()
				_, cause, at := ha.state()
				if !errors.Is(cause, ErrSilent) {
					t.Fatalf("cause %v, want ErrSilent", cause)
				}
				var cfg Config
				cfg.defaults()
				// A 20ms path gets the floor as its deadline, after at most one interval.
				limit := cfg.ProbeIdle + cfg.DeadFloor
				if active {
					limit = cfg.ProbeActive + cfg.DeadFloor
				}
				if took := at.Sub(start); took > limit {
					t.Errorf("declared dead %v after the blackhole, want within %v", took, limit)
				}
			})
		})
	}
}

// writeRecord writes one raw record: a length prefix and body.
func writeRecord(t *testing.T, c net.Conn, body []byte) {
	t.Helper()
	b := binary.BigEndian.AppendUint16(nil, uint16(len(body)))
	if _, err := c.Write(append(b, body...)); err != nil {
		t.Fatal(err)
	}
}

func TestBadRecordPlain(t *testing.T) {
	for name, body := range map[string][]byte{
		"empty":        {},
		"unknown type": {0xff},
		"truncated":    wire.AppendAck(nil, 1, 2, 3, 0)[:3],
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ca, cb, _ := testlink.Pipe(testlink.Config{}, testlink.Config{})
				defer silentPeer(cb)()
				h := newHandler()
				p := New(1, ca, nil, nil, Config{}, h)
				p.Start()
				// A good frame first: the path uses it, then dies on the bad record.
				writeRecord(t, cb, wire.AppendMaxData(nil, 5))
				writeRecord(t, cb, body)
				<-h.down
				if _, cause, _ := h.state(); !errors.Is(cause, ErrRecord) {
					t.Fatalf("cause %v, want ErrRecord", cause)
				}
				h.mu.Lock()
				defer h.mu.Unlock()
				if len(h.mu.frames) != 1 || h.mu.frames[0] != wire.TypeMaxData {
					t.Errorf("frames handled: %v, want the one good MAX_DATA", h.mu.frames)
				}
			})
		})
	}
}

// secured runs a real handshake over a link and returns the record ciphers of both ends.
func secured(t *testing.T, ca, cb net.Conn) (ia, ib *handshake.Result) {
	t.Helper()
	ka, _ := handshake.NewKeypair()
	kb, _ := handshake.NewKeypair()
	resp := handshake.Responder{Key: kb, Allow: func([32]byte) bool { return true }}
	done := make(chan error, 1)
	go func() {
		var err error
		ib, err = resp.Respond(context.Background(), cb, func([32]byte, *handshake.Hello) handshake.Reply {
			return handshake.Reply{}
		})
		done <- err
	}()
	ia, err := handshake.Initiate(context.Background(), ca, ka, kb.Public, handshake.Hello{Time: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return ia, ib
}

func TestBadRecordEncrypted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := testlink.Config{Delay: time.Millisecond}
		ca, cb, _ := testlink.Pipe(d, d)
		ia, ib := secured(t, ca, cb)
		ha, hb := newHandler(), newHandler()
		a := New(1, ca, ia.Send, ia.Recv, Config{}, ha)
		b := New(1, cb, ib.Send, ib.Recv, Config{}, hb)
		a.Start()
		b.Start()
		defer func() {
			a.Close(nil)
			b.Close(nil)
			a.Wait()
			b.Wait()
		}()
		// Encrypted records flow both ways: probes are answered.
		time.Sleep(100 * time.Millisecond)
		if q := a.Quality(); q.Samples == 0 || q.SRTT != 2*time.Millisecond {
			t.Fatalf("Quality over an encrypted path = %+v", q)
		}
		r := NewRecord()
		r.B = wire.AppendMaxData(r.B, 7)
		a.Send(r)
		time.Sleep(10 * time.Millisecond)
		hb.mu.Lock()
		got := hb.mu.frames
		hb.mu.Unlock()
		if len(got) != 1 || got[0] != wire.TypeMaxData {
			t.Fatalf("frames received: %v", got)
		}
		// A record that does not authenticate kills the path that reads it. It is written
		// straight to the carrier beside the path's own writer; the link keeps each Write
		// whole, so it lands between two records.
		writeRecord(t, ca, make([]byte, 40))
		<-hb.down
		if _, cause, _ := hb.state(); !errors.Is(cause, ErrRecord) {
			t.Fatalf("cause %v, want ErrRecord", cause)
		}
	})
}

func TestFrameErrorClosesPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, _, hb, _ := pair(t, Config{}, testlink.Config{}, testlink.Config{})
		bad := errors.New("protocol violation")
		hb.frameErr = bad
		_ = b
		r := NewRecord()
		r.B = wire.AppendMaxData(r.B, 1)
		a.Send(r)
		<-hb.down
		if _, cause, _ := hb.state(); !errors.Is(cause, bad) {
			t.Fatalf("cause %v, want the handler's error", cause)
		}
	})
}

func TestDownOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, _, ha, _, l := pair(t, Config{}, testlink.Config{}, testlink.Config{})
		time.Sleep(10 * time.Millisecond)
		// Everything at once: local closes from several goroutines and the carrier dying.
		first := errors.New("first cause")
		var wg sync.WaitGroup
		for i := range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i == 0 {
					a.Close(first)
				} else {
					a.Close(nil)
				}
			}()
		}
		l.Kill(true)
		wg.Wait()
		a.Wait()
		synctest.Wait()
		ha.mu.Lock()
		defer ha.mu.Unlock()
		if ha.mu.downs != 1 {
			t.Fatalf("Down called %d times", ha.mu.downs)
		}
		if ha.mu.alive != 0 {
			t.Errorf("Down came while %d path goroutines still ran", ha.mu.alive)
		}
		if ha.mu.lateCalls != 0 {
			t.Errorf("%d handler calls after Down", ha.mu.lateCalls)
		}
		if ha.mu.cause == nil || ha.mu.cause != a.Cause() {
			t.Errorf("Down cause %v, Cause() %v", ha.mu.cause, a.Cause())
		}
		if r := NewRecord(); a.Send(r) {
			t.Error("Send on a closed path reported true")
		}
		select {
		case <-a.Closed():
		default:
			t.Error("Closed() not closed")
		}
	})
}

// readRecords reads plain records from c and reports their frame types.
func readRecords(c net.Conn, out chan<- []wire.Type) {
	defer close(out)
	var h [2]byte
	for {
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return
		}
		b := make([]byte, binary.BigEndian.Uint16(h[:]))
		if _, err := io.ReadFull(c, b); err != nil {
			return
		}
		var types []wire.Type
		for len(b) > 0 {
			f, n, err := wire.Parse(b)
			if err != nil {
				return
			}
			types = append(types, f.Type)
			b = b[n:]
		}
		out <- types
	}
}

func TestSpaceAndWritable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The carrier takes 1000 bytes in flight; the path queues 4000.
		ca, cb, _ := testlink.Pipe(testlink.Config{Buffer: 1000}, testlink.Config{})
		h := newHandler()
		p := New(1, ca, nil, nil, Config{QueueBytes: 4000, ProbeIdle: time.Hour, DeadCeil: time.Hour}, h)
		p.Start()
		defer func() {
			p.Close(nil)
			cb.Close()
			p.Wait()
		}()
		sent := 0
		for i := 0; p.Space() > 0 && i < 100; i++ {
			r := NewRecord()
			r.B = wire.AppendData(r.B, 1, uint64(sent), false, make([]byte, 490))
			if !p.Send(r) {
				t.Fatal("Send on an open path failed")
			}
			sent += 490
			synctest.Wait()
		}
		if p.Space() > 0 {
			t.Fatalf("Space still %d after %d bytes with nobody reading", p.Space(), sent)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		h.mu.Lock()
		w := h.mu.writable
		h.mu.Unlock()
		if w != 0 {
			t.Fatalf("Writable before the queue drained")
		}
		// The peer reads: the queue drains and the handler hears Writable, once.
		recs := make(chan []wire.Type, 1000)
		go readRecords(cb, recs)
		time.Sleep(time.Second)
		synctest.Wait()
		h.mu.Lock()
		w = h.mu.writable
		h.mu.Unlock()
		if w != 1 {
			t.Fatalf("Writable called %d times after draining, want 1", w)
		}
		if s := p.Space(); s != 4000 {
			t.Errorf("Space = %d after draining, want 4000", s)
		}
		data := 0
		for len(recs) > 0 {
			for _, ty := range <-recs {
				if ty == wire.TypeData {
					data++
				}
			}
		}
		if data != sent/490 {
			t.Errorf("peer read %d DATA frames, want %d", data, sent/490)
		}
	})
}

func TestControlBeforeStartGoesFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ca, cb, _ := testlink.Pipe(testlink.Config{}, testlink.Config{})
		h := newHandler()
		p := New(1, ca, nil, nil, Config{}, h)
		r := NewRecord()
		r.B = wire.AppendMaxData(r.B, 1)
		p.Send(r)
		var mac [wire.MACSize]byte
		c := NewRecord()
		c.B = wire.AppendJoinProof(c.B, &mac)
		p.SendControl(c)
		recs := make(chan []wire.Type, 10)
		go readRecords(cb, recs)
		p.Start()
		synctest.Wait()
		first := <-recs
		if len(first) != 1 || first[0] != wire.TypeJoinProof {
			t.Fatalf("first record %v, want the JOIN_PROOF", first)
		}
		p.Close(nil)
		p.Wait()
		cb.Close()
	})
}
