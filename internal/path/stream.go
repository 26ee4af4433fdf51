package path

// Stream paths: a carrier that moves a byte stream (TCP, a QUIC stream, TLS). Its writer seals
// queued records in place and writes a batch with one vectored or gathered write; its reader
// opens records in place from large reads. DATAGRAM frames may leave the stream as carrier
// datagrams (dgram.go).

import (
	"fmt"
	"math"
	"net"
	"time"

	"github.com/flynn/noise"

	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/transport"
)

// streamState is a stream path's carrierMode: its record ciphers and reader, and its datagram
// side when the carrier has one.
type streamState struct {
	sealer sealer     // writer goroutine only
	opener opener     // reader goroutine only
	dg     *dgChannel // nil unless the carrier carries datagrams too
	gather bool       // the carrier has no vectored write: gather each batch (writeGathered)
	kq     *kernelQueue
	// bound rechecks a carrier over its kernel bound (kernelQueue.over) until it is under
	// it again, and wakes the engine then; armed says it is pending. Guarded by p.mu.
	bound *time.Timer
	armed bool
}

// init sets the stream path up over conn.
func (s *streamState) init(conn net.Conn, send, recv *noise.CipherState, cfg *Config) {
	s.sealer = sealer{cs: newRecordCipher(send)}
	s.opener = opener{r: conn, cs: newRecordCipher(recv), hold: cfg.Hold}
	s.kq = newKernelQueue(conn)
	if dc, ok := conn.(transport.Datagrammer); ok && cfg.Datagrams {
		s.dg = newDgChannel(dc, send, recv)
	}
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		// net.Buffers makes one writev of a batch on these.
	default:
		// On any other carrier net.Buffers costs one Write per piece, and a record is
		// several pieces (its frames, then payload slices): gathering them first costs a
		// copy but saves dozens of calls into the carrier per batch (QUIC streams, TLS).
		s.gather = true
	}
}

// run starts the writer, the reader and the datagram reader if there is one, then the probes.
func (s *streamState) run(p *Path) {
	if s.dg != nil {
		p.launch(p.routineWrite, p.routineRead, p.routineDatagrams)
	} else {
		p.launch(p.routineWrite, p.routineRead)
	}
	p.mu.Lock()
	p.startProbesLocked()
	p.mu.Unlock()
}

// spaceLocked is the queue's room: the carrier takes what it can and blocks the writer. A TCP
// carrier with more in flight than its path delivers in two round trips has none
// (kernelQueue.over), until a recheck finds it under that bound again.
func (s *streamState) spaceLocked(p *Path) int {
	if over, again := s.kq.over(time.Now()); over && !p.mu.closed {
		if !s.armed {
			s.armed = true
			if s.bound == nil {
				s.bound = time.AfterFunc(again, func() { s.recheck(p) })
			} else {
				s.bound.Reset(again)
			}
		}
		return 0
	}
	return p.queueSpaceLocked()
}

// recheck runs when a carrier over its bound may be under it again: it wakes the engine if it
// is and waits for it (Space said no), or looks again later.
func (s *streamState) recheck(p *Path) {
	p.mu.Lock()
	s.armed = false
	if p.mu.closed {
		p.mu.Unlock()
		return
	}
	if over, again := s.kq.over(time.Now()); over {
		s.armed = true
		s.bound.Reset(again)
		p.mu.Unlock()
		return
	}
	notify := p.mu.wantWritable && p.queueSpaceLocked() > 0
	if notify {
		p.mu.wantWritable = false
	}
	p.mu.Unlock()
	if notify {
		p.h.Writable(p)
	}
}

// stopLocked ends the datagram reader's wait for the carrier and the bound's rechecks.
func (s *streamState) stopLocked(*Path) {
	if s.dg != nil {
		s.dg.cancel()
	}
	if s.bound != nil {
		s.bound.Stop()
	}
}

// probeAnsweredLocked feeds the estimator: probes are the only round trips a stream path
// times, and one answered later than the estimate allows counts toward loss, unless it
// waited out a pause of the peer, which says nothing of the path.
func (s *streamState) probeAnsweredLocked(p *Path, now time.Time, rtt time.Duration) {
	if p.spansPauseLocked(now.Add(-rtt), now, rtt) {
		return
	}
	late := p.mu.est.samples > 0 && rtt > 2*p.mu.est.srtt+4*p.mu.est.rttvar
	p.mu.est.sample(now, rtt, late)
}

// maxRecord is 0: any record the engine builds fits the stream.
func (s *streamState) maxRecord(*Path) int { return 0 }

// confirmation is closed from the start: the carrier delivers in order or dies.
func (s *streamState) confirmation() <-chan struct{} { return closedChan }

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// packetStats: a stream path has no packet counters.
func (s *streamState) packetStats(*Path) (PacketStats, bool) { return PacketStats{}, false }

// routineWrite is a stream path's writer: it takes the queued records in batches, control
// records first, seals each in place and writes a batch with one vectored or gathered write.
func (p *Path) routineWrite() {
	defer p.exit()
	s := &p.stream
	var batch []*Record
	const maxBatch = 64 // records per vectored write
	var iov [][]byte    // B and Ext slices of a batch, reused
	// The vectored write's slice header, on the heap once: WriteTo takes its address, which
	// would move a fresh one there on every write.
	bufs := new(net.Buffers)
	for {
		select {
		case <-p.kick:
		case <-p.done:
			return
		}
		for {
			p.mu.Lock()
			batch = batch[:0]
			if p.mu.pongPending {
				// One PONG answers the latest PING: older ones are moot for the peer, and a
				// flood of PINGs costs us one pending number, not a record each.
				r := NewRecord()
				r.B = wire.AppendPong(r.B, p.mu.pongSeq)
				batch = append(batch, r)
				p.mu.pongPending = false
			}
			k := min(len(p.mu.pq), maxBatch/2-len(batch))
			batch = append(batch, p.mu.pq[:k]...)
			rest := copy(p.mu.pq, p.mu.pq[k:])
			clear(p.mu.pq[rest:])
			p.mu.pq = p.mu.pq[:rest]
			n := min(len(p.mu.q), maxBatch-len(batch))
			batch = append(batch, p.mu.q[:n]...)
			rest = copy(p.mu.q, p.mu.q[n:])
			clear(p.mu.q[rest:])
			p.mu.q = p.mu.q[:rest]
			p.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			var total, dataBytes int
			var serr error
			v := iov[:0]
			for i, r := range batch {
				if i >= len(batch)-n {
					dataBytes += r.Len()
				}
				if s.dg != nil && r.ExtLen() == 0 {
					empty, err := s.dg.take(r)
					if serr = err; serr != nil {
						break
					}
					if empty {
						continue // datagrams only: they go as carrier datagrams, below
					}
				}
				if serr = s.sealer.seal(r); serr != nil {
					break // only when a key is exhausted; nothing more may be written
				}
				total += r.Len()
				v = append(v, r.B)
				v = append(v, r.Ext...)
			}
			if serr != nil {
				for _, r := range batch {
					r.Release()
				}
				p.Close(serr)
				return
			}
			iov = v
			var err error
			if len(v) > 0 {
				t0 := time.Now()
				if s.gather {
					err = p.writeGathered(v)
				} else {
					*bufs = v
					_, err = bufs.WriteTo(p.conn)
					*bufs = nil
				}
				now := time.Now()
				p.sampleRate(total, now.Sub(t0))
				s.kq.refresh(now) // the rate is sampled while the carrier is busy
			}
			clear(iov)
			for _, r := range batch {
				r.Release()
			}
			clear(batch)
			if err == nil && s.dg != nil {
				err = p.sendDatagrams()
			}
			if err != nil {
				p.Close(err)
				return
			}
			p.bytesSent.Add(int64(total))
			p.mu.Lock()
			p.mu.qBytes -= dataBytes
			notify := p.mu.wantWritable && p.mu.qBytes < p.cfg.QueueBytes && !p.mu.closed
			if notify {
				p.mu.wantWritable = false
			}
			p.mu.Unlock()
			if notify {
				p.h.Writable(p)
			}
		}
	}
}

// sendDatagrams sends the DATAGRAM frames the batch's records gave up, as carrier datagrams,
// and queues in the stream those the carrier refused as too large.
func (p *Path) sendDatagrams() error {
	k, spill, err := p.stream.dg.send()
	p.bytesSent.Add(int64(k))
	if err != nil {
		return err
	}
	for len(spill) > 0 {
		r := NewRecord()
		for len(spill) > 0 {
			_, n, err := wire.Parse(spill)
			if err != nil {
				r.Release()
				return fmt.Errorf("%w: %w", ErrRecord, err)
			}
			if n > r.Room() {
				if len(r.Frames()) == 0 {
					r.Release()
					return fmt.Errorf("%w: a %d-byte DATAGRAM frame fits no record", ErrRecord, n)
				}
				break
			}
			r.B = append(r.B, spill[:n]...)
			spill = spill[n:]
		}
		p.enqueue(r, false)
	}
	return nil
}

// writeGathered writes the pieces of a batch with as few carrier writes as fit gatherSize.
func (p *Path) writeGathered(v [][]byte) error {
	bp := gatherPool.Get().(*[]byte)
	defer gatherPool.Put(bp)
	b := (*bp)[:0]
	for _, piece := range v {
		if len(b)+len(piece) > cap(b) && len(b) > 0 {
			if _, err := p.conn.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
		if len(piece) > cap(b) {
			if _, err := p.conn.Write(piece); err != nil {
				return err
			}
			continue
		}
		b = append(b, piece...)
	}
	if len(b) > 0 {
		if _, err := p.conn.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// rateMinWrite is the shortest write that says something about the carrier's rate: a write
// that returns sooner went into free buffer space, at memory speed.
const rateMinWrite = 200 * time.Microsecond

// sampleRate folds one write into the rate estimate (an average weighted 1/8 to the newest).
// Only writes that waited for the carrier count, so the estimate is how fast the carrier
// takes bytes when it is the bottleneck; while it never is, the rate stays unknown (0).
func (p *Path) sampleRate(n int, d time.Duration) {
	if d < rateMinWrite || n == 0 {
		return
	}
	sample := float64(n) / d.Seconds()
	old := math.Float64frombits(p.rate.Load())
	if old > 0 {
		sample = old + (sample-old)/8
	}
	p.rate.Store(math.Float64bits(sample))
}

// routineRead is a stream path's reader: it opens each record in place and dispatches its
// frames, answering PING and timing PONG itself.
func (p *Path) routineRead() {
	defer p.exit()
	o := &p.stream.opener
	var cause error
	// One Frame for the life of the reader: the Handler gets a pointer to it, which would
	// otherwise escape and cost an allocation per frame (per datagram, on a packet flow).
	f := new(wire.Frame)
	for cause == nil {
		frames, n, err := o.next()
		if err != nil {
			cause = err
			break
		}
		p.bytesRecv.Add(int64(n))
		p.lastRecv.Store(time.Now().UnixNano())
		parts := o.parts
		for (len(frames) > 0 || len(parts) > 0) && cause == nil {
			var split bool
			if split, cause = p.nextFrame(&frames, &parts, f); split || cause != nil {
				break
			}
			switch f.Type {
			case wire.TypePing:
				p.mu.Lock()
				p.mu.pongSeq, p.mu.pongPending = f.Seq, true
				p.mu.Unlock()
				p.kickWriter()
			case wire.TypePong:
				p.pong(f.Seq)
			default:
				cause = p.h.Frame(p, f)
			}
		}
	}
	o.release()
	p.Close(cause)
}
