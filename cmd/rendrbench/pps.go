package main

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/quic"
	"github.com/rendr-go/rendr/transport/tcp"
)

const (
	ppsSize    = 1200
	ppsWarm    = 1 * time.Second
	ppsMeasure = 4 * time.Second
	ppsTarget  = 300000
)

// ppsRun is one measured packet-flow transfer.
type ppsRun struct {
	pps       float64 // datagrams delivered to the reader per second
	offered   float64 // datagrams written per second
	allocs    float64 // heap allocations per delivered datagram, both ends, whole process
	drops     uint64  // send- and receive-queue drops in the measured window
	cpuPerPkt float64 // process CPU microseconds per delivered datagram
}

// runPPS measures one packet flow over one loopback path: a writer sends 1200-byte datagrams
// in batches of 64, waiting while more than half the send queue is full, and a reader reads
// them, both in this process.
func runPPS(c *config) []result {
	keys, err := newBenchKeys()
	if err != nil {
		return []result{failure("pps", err)}
	}
	tlsCfg, err := newTLSConfigs()
	if err != nil {
		return []result{failure("pps", err)}
	}
	rows := []ppsRow{
		{"pps_encrypted", "one rendr packet flow, one transport/tcp loopback path, Noise AES-256-GCM records", false, ppsTCP, true, nil},
		{"pps_secure_carrier", "the same, path declared secure: records not encrypted", true, ppsTCP, true, nil},
		{"pps_quic", "one rendr packet flow, one transport/quic loopback path: datagrams as QUIC DATAGRAM frames, rendr's datagram records encrypted inside", false, ppsQUIC(tlsCfg), false, nil},
		{"pps_quic_secure", "the same, path declared secure: QUIC's encryption alone", true, ppsQUIC(tlsCfg), false, nil},
		{"pps_quic_go", "baseline: bare quic-go " + quicVersion() + " datagrams (SendDatagram/ReceiveDatagram) on one transport/quic loopback connection", false, nil, false,
			func() (ppsRun, error) { return ppsBareQUIC(tlsCfg) }},
		{"pps_udpflow", "one rendr packet flow, one transport/udpflow loopback path: several datagrams to a packet, encrypted, paced, batched", false, ppsUDPFlow, false, nil},
	}
	rows = onlyRows(c, rows, func(r ppsRow) string { return r.name })
	var out []result
	c.logf("pps: %d-byte datagrams, %v warm-up + %v measured, %d runs per row", ppsSize, ppsWarm, ppsMeasure, c.runs)
	samples := make([][]ppsRun, len(rows))
	for run := range c.runs {
		for k := range rows {
			i := (k + run) % len(rows)
			var r ppsRun
			var err error
			if rows[i].bare != nil {
				r, err = rows[i].bare()
			} else {
				r, err = ppsOnce(keys, rows[i].secure, rows[i].carrier)
			}
			if err != nil {
				return []result{failure("pps", fmt.Errorf("%s run %d: %w", rows[i].name, run, err))}
			}
			c.logf("pps: run %d %-18s %9.0f pps delivered (%9.0f offered), %.3f allocs, %.2f CPU µs per datagram, %d dropped",
				run, rows[i].name, r.pps, r.offered, r.allocs, r.cpuPerPkt, r.drops)
			samples[i] = append(samples[i], r)
		}
	}
	for i, row := range rows {
		var pps, allocs, cpu []float64
		var drops uint64
		for _, r := range samples[i] {
			pps = append(pps, r.pps)
			allocs = append(allocs, r.allocs)
			cpu = append(cpu, r.cpuPerPkt)
			drops += r.drops
		}
		p := result{Scenario: "pps", Metric: row.name, Unit: "datagrams/s",
			Note: fmt.Sprintf("%s; delivered to the reader; %d dropped by full queues over all runs; %.2f CPU µs per datagram (median)", row.note, drops, median(cpu))}
		measured(&p, pps)
		if row.allocGoal {
			p.Target = ptr(fmt.Sprintf("value >= %d", ppsTarget))
			p.Pass = ptr(p.Value != nil && *p.Value >= ppsTarget)
		}
		a := result{Scenario: "pps", Metric: row.name + "_allocs", Unit: "allocs/datagram",
			Note: "heap allocations (runtime.MemStats.Mallocs) per delivered datagram over the measured window, both ends"}
		measured(&a, allocs)
		if row.allocGoal {
			a.Target = ptr("value < 0.01")
			a.Pass = ptr(a.Value != nil && *a.Value < 0.01)
		} else if strings.HasPrefix(row.name, "pps_quic") {
			a.Note += "; quic-go's own allocations included (it copies each datagram it sends and allocates each it receives), so no target"
		} else {
			a.Note += "; golang.org/x/net's batch reads included (a net.UDPAddr per read message), so no target"
		}
		out = append(out, p, a)
	}
	byName := map[string]*result{}
	for i := range out {
		byName[out[i].Metric] = &out[i]
	}
	against(byName["pps_quic"], byName["pps_quic_go"], 0, true)
	against(byName["pps_quic_secure"], byName["pps_quic_go"], 0, true)
	return out
}

// ppsRow is one row of the pps scenario.
type ppsRow struct {
	name, note string
	secure     bool
	carrier    ppsCarrier
	allocGoal  bool                   // the zero-allocation target applies (rendr's own code only)
	bare       func() (ppsRun, error) // a baseline without rendr, instead of carrier
}

// ppsCarrier opens a loopback source and a dial function reaching it.
type ppsCarrier func() (net.Listener, transport.DialFunc, error)

func ppsTCP() (net.Listener, transport.DialFunc, error) {
	src, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	return src, tcp.Dialer(src.Addr().String()), nil
}

func ppsQUIC(cfg *tlsConfigs) ppsCarrier {
	return func() (net.Listener, transport.DialFunc, error) {
		src, err := quic.Listen("127.0.0.1:0", cfg.server)
		if err != nil {
			return nil, nil, err
		}
		return src, quic.Dialer(src.Addr().String(), cfg.client), nil
	}
}

func ppsOnce(k benchKeys, secure bool, carrier ppsCarrier) (ppsRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, dial, err := carrier()
	if err != nil {
		return ppsRun{}, err
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: k.srv, Peers: []rendr.PublicKey{k.cli.Public()}})
	if err != nil {
		src.Close()
		return ppsRun{}, err
	}
	defer ln.Close()
	var po []rendr.PathOption
	var so []rendr.SourceOption
	if secure {
		po, so = append(po, rendr.SecureCarrier()), append(so, rendr.SecureSource())
	}
	if err := ln.AddSource(src, so...); err != nil {
		src.Close()
		return ppsRun{}, err
	}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: k.cli, PeerKey: k.srv.Public(),
		Root: rendr.Path("lo", dial, po...)})
	if err != nil {
		return ppsRun{}, err
	}
	defer d.Close()
	snd, err := d.DialPacket(ctx)
	if err != nil {
		return ppsRun{}, err
	}
	defer snd.Close()
	if _, err := snd.Write([]byte("open")); err != nil {
		return ppsRun{}, err
	}
	rcv, err := ln.AcceptPacket(ctx)
	if err != nil {
		return ppsRun{}, err
	}
	defer rcv.Close()

	b := make([]byte, ppsSize+100)
	return ppsPump(
		func(p []byte) error { _, err := snd.Write(p); return err },
		// Offer what the flow can take: past half its send queue, wait for the engine to
		// drain it (a writer that never waits only fills the queue and drops).
		func() {
			for snd.Stats().QueuedSend > 128 {
				runtime.Gosched()
			}
		},
		func() error { _, err := rcv.Read(b); return err },
		func() { rcv.Close() },
		func() uint64 { return snd.Stats().SendDrops + rcv.Stats().RecvDrops })
}

// ppsPump runs a writer that sends ppsSize-byte datagrams with send in batches of 64, calling
// pace (if set) after each, and a reader that takes them with recv, and measures both
// (ppsMeasureWindow). closeRecv ends the reader and unblocks a writer blocked in send.
func ppsPump(send func([]byte) error, pace func(), recv func() error, closeRecv func(), drops func() uint64) (ppsRun, error) {
	var written, read atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, ppsSize)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for range 64 {
				if err := send(b); err != nil {
					return
				}
			}
			written.Add(64)
			if pace != nil {
				pace()
			}
		}
	}()
	rdone := make(chan struct{})
	go func() {
		defer close(rdone)
		for recv() == nil {
			read.Add(1)
		}
	}()
	return ppsMeasureWindow(&written, &read, drops, func() {
		close(stop)
		closeRecv()
		<-done
		<-rdone
	})
}

// ppsMeasureWindow waits out the warm-up, then measures written and read over ppsMeasure,
// with drops (optional) counted over the same window; stop ends the transfer.
func ppsMeasureWindow(written, read *atomic.Int64, drops func() uint64, stop func()) (ppsRun, error) {
	time.Sleep(ppsWarm)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	c0, w0, r0 := cpuTime(), written.Load(), read.Load()
	var d0, d1 uint64
	if drops != nil {
		d0 = drops()
	}
	t0 := time.Now()
	time.Sleep(ppsMeasure)
	el := time.Since(t0)
	c1, w1, r1 := cpuTime(), written.Load(), read.Load()
	runtime.ReadMemStats(&m1)
	if drops != nil {
		d1 = drops()
	}
	stop()
	got := float64(r1 - r0)
	if got == 0 {
		return ppsRun{}, fmt.Errorf("no datagram delivered in %v", el)
	}
	return ppsRun{
		pps:       got / el.Seconds(),
		offered:   float64(w1-w0) / el.Seconds(),
		allocs:    float64(m1.Mallocs-m0.Mallocs) / got,
		drops:     d1 - d0,
		cpuPerPkt: float64(c1-c0) / float64(time.Microsecond) / got,
	}, nil
}

// ppsBareQUIC is the QUIC baseline: datagrams straight through one transport/quic connection
// as fast as SendDatagram takes them (quic-go queues 32 and blocks beyond, which paces the
// writer as the rendr rows' wait on their send queue does).
func ppsBareQUIC(cfg *tlsConfigs) (ppsRun, error) {
	st, err := setupQUIC(context.Background(), cfg)
	if err != nil {
		return ppsRun{}, err
	}
	defer st.close()
	snd, rcv := st.snd.(*quic.Carrier), st.rcv.(*quic.Carrier)
	ctx, cancel := context.WithCancel(context.Background())
	return ppsPump(snd.SendDatagram, nil,
		func() error { _, err := rcv.ReceiveDatagram(ctx); return err },
		func() { cancel(); st.close() }, nil)
}
