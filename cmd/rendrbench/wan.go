package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/quic"
	"github.com/rendr-go/rendr/transport/udpflow"
)

// The wan scenario runs every transfer across the lab's delay node (netlab.DelayConfig): an
// emulated WAN link with a round trip of tens to hundreds of milliseconds, a rate and a queue
// of a chosen depth, which kernel TCP, MPTCP, QUIC and udpflow all cross alike.

const (
	// wanSockBuf is the largest socket buffer the lab's hosts allow, as on a host tuned for
	// long fat paths: the Linux default wmem limit (4 MiB) holds a 1 Gbit/s transfer to
	// 160 Mbit/s at a 200 ms round trip, whatever the protocol above it does.
	wanSockBuf = 64 << 20
	// wanCC is the TCP congestion control of every TCP socket the scenario makes: Linux's
	// default, whatever the machine's own namespace uses (a namespace inherits it). It fills
	// a deep queue, as the TCP of most hosts does; BBR would not.
	wanCC      = "cubic"
	wanWarm    = 3 * time.Second // slow start at 200 ms takes a dozen round trips
	wanMeasure = 8 * time.Second
)

// wanLink is one emulated path: its round trip (each direction gets half) and rate.
type wanLink struct {
	rtt   time.Duration
	mbit  int
	queue time.Duration // worth of rate the node queues; 0: one round trip
}

func (w wanLink) name() string {
	r := fmt.Sprintf("%dM", w.mbit)
	if w.mbit >= 1000 && w.mbit%1000 == 0 {
		r = fmt.Sprintf("%dG", w.mbit/1000)
	}
	return fmt.Sprintf("%dms_%s", w.rtt.Milliseconds(), r)
}

// queueTime is how long the node's queue takes to drain at the link's rate.
func (w wanLink) queueTime() time.Duration { return pick(w.queue == 0, w.rtt, w.queue) }

func (w wanLink) delay(seed uint64) netlab.DelayConfig {
	q := w.queueTime()
	rate := int64(w.mbit) * 1e6
	return netlab.DelayConfig{Delay: w.rtt / 2, RateBits: rate, Seed: seed,
		QueueBytes: int(rate / 8 * int64(q) / int64(time.Second))}
}

// wanLab builds a lab whose path i crosses a delay node for links[i], with socket buffers of
// up to wanSockBuf on both hosts.
func wanLab(name string, links []wanLink) (*netlab.Lab, func(), error) {
	cfg := netlab.Config{Paths: len(links), Name: name}
	for i, w := range links {
		cfg.Delay = append(cfg.Delay, w.delay(uint64(i+1)))
	}
	lab, err := netlab.New(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("building the lab: %w", err)
	}
	undo := atExit(func() { lab.Close() })
	done := func() { undo(); lab.Close() }
	for _, side := range []netlab.Side{netlab.Client, netlab.Server} {
		for _, s := range []string{
			fmt.Sprintf("net.core.rmem_max=%d", wanSockBuf),
			fmt.Sprintf("net.core.wmem_max=%d", wanSockBuf),
			fmt.Sprintf("net.ipv4.tcp_rmem=4096 131072 %d", wanSockBuf),
			fmt.Sprintf("net.ipv4.tcp_wmem=4096 16384 %d", wanSockBuf),
		} {
			if _, err := lab.Exec(side, "sysctl", "-q", "-w", s); err != nil {
				done()
				return nil, nil, err
			}
		}
	}
	return lab, done, nil
}

func runWAN(c *config) []result {
	if err := netlab.Available(); err != nil {
		return []result{{Scenario: "wan", Metric: "goodput", Skipped: err.Error()}}
	}
	keys, err := newBenchKeys()
	if err != nil {
		return []result{failure("wan", err)}
	}
	tlsCfg, err := newTLSConfigs()
	if err != nil {
		return []result{failure("wan", err)}
	}
	var out []result
	for _, bc := range wanBondCases() {
		if !wantCase(c, bc.name) {
			continue
		}
		res, err := wanBondCase(c, keys, bc)
		if err != nil {
			return append(out, failure("wan", fmt.Errorf("%s: %w", bc.name, err)))
		}
		out = append(out, res...)
	}
	wan50 := wanLink{rtt: 50 * time.Millisecond, mbit: 100}
	if wantCase(c, "failover") {
		out = append(out, wanFailover(c, keys, wan50)...)
	}
	if wantCase(c, "race") {
		out = append(out, wanRace(c, keys, wan50)...)
	}
	for _, w := range []wanLink{{rtt: 50 * time.Millisecond, mbit: 1000}, {rtt: 50 * time.Millisecond, mbit: 100},
		{rtt: 200 * time.Millisecond, mbit: 1000}, {rtt: 200 * time.Millisecond, mbit: 100}} {
		if !wantCase(c, w.name()) {
			continue
		}
		res, err := wanFlowCase(c, keys, tlsCfg, w)
		if err != nil {
			return append(out, failure("wan", fmt.Errorf("%s: %w", w.name(), err)))
		}
		out = append(out, res...)
	}
	return out
}

// wantCase says whether -cases (comma-separated prefixes) selects the case named name.
func wantCase(c *config, name string) bool {
	if c.cases == "" {
		return true
	}
	for _, p := range strings.Split(c.cases, ",") {
		if strings.HasPrefix(name, strings.TrimSpace(p)) {
			return true
		}
	}
	return false
}

// wanRow is one way of moving one flow across the link.
type wanRow struct {
	name, note string
	pair       func(lab *netlab.Lab) (snd, rcv net.Conn, done func(), err error)
}

// wanFlowCase moves one flow across one emulated link, by each row in turn, interleaved over
// the runs as the throughput scenario does.
func wanFlowCase(c *config, k benchKeys, tc *tlsConfigs, w wanLink) ([]result, error) {
	lab, done, err := wanLab("rwan", []wanLink{w})
	if err != nil {
		return nil, err
	}
	defer done()
	rows := []wanRow{
		{"tcp", "kernel TCP (CUBIC), default socket options", func(lab *netlab.Lab) (net.Conn, net.Conn, func(), error) {
			return wanTCP(lab)
		}},
		{"rendr_tcp", "one rendr flow over a transport/tcp path (encrypted records)", func(lab *netlab.Lab) (net.Conn, net.Conn, func(), error) {
			return wanRendr(lab, k, "tcp", tc)
		}},
		{"rendr_udpflow", "one rendr flow over a transport/udpflow path", func(lab *netlab.Lab) (net.Conn, net.Conn, func(), error) {
			return wanRendr(lab, k, "udpflow", tc)
		}},
		{"quic", "bare quic-go " + quicVersion() + ", one stream, with the configuration rendr's QUIC paths use", func(lab *netlab.Lab) (net.Conn, net.Conn, func(), error) {
			return wanQUIC(lab, tc)
		}},
	}
	rows = onlyRows(c, rows, func(r wanRow) string { return r.name })
	measure := wanMeasure
	if c.seconds > 0 {
		measure = time.Duration(c.seconds * float64(time.Second))
	}
	c.logf("wan %s: one flow, %d runs, %v warm-up + %v measured per transfer", w.name(), c.runs, wanWarm, measure)
	runs := make([][]float64, len(rows))
	for run := range c.runs {
		for j := range rows {
			i := (j + run) % len(rows)
			r := rows[i]
			snd, rcv, closeAll, err := r.pair(lab)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", r.name, err)
			}
			br, err := bulkFor(snd, rcv, wanWarm, measure, nil)
			closeAll()
			if err != nil {
				return nil, fmt.Errorf("%s run %d: %w", r.name, run, err)
			}
			st, _ := lab.DelayStats(0)
			c.logf("wan %s: run %d %-14s %7.1f Mbit/s p99 delay %v (node: offload %v, dropped %d to server)", w.name(), run, r.name, br.mbit, br.p99, st.Offload, st.ToServer.Dropped)
			runs[i] = append(runs[i], br.mbit)
		}
	}
	out := make([]result, len(rows), len(rows)+1)
	res := map[string]*result{}
	for i, r := range rows {
		out[i] = result{Scenario: "wan", Metric: w.name() + "_" + r.name, Unit: "Mbit/s",
			Note: fmt.Sprintf("%s; %v round trip, %d Mbit/s, %v of queue", r.note, w.rtt, w.mbit, w.queueTime())}
		measured(&out[i], runs[i])
		res[r.name] = &out[i]
	}
	against(res["rendr_tcp"], res["tcp"], 0.9, true)
	against(res["rendr_udpflow"], res["rendr_tcp"], 0.9, true)
	if u, q := res["rendr_udpflow"], res["quic"]; u != nil && q != nil {
		// A second comparison of the same row: its own line, so that both targets show.
		v := *u
		v.Metric += "_vs_quic"
		v.Ratio, v.Target, v.Pass, v.Baseline, v.BaselineValue = nil, nil, nil, nil, nil
		against(&v, q, 1.0, true)
		out = append(out, v)
	}
	return out, nil
}

// wanTCP connects plain kernel TCP across path 0.
func wanTCP(lab *netlab.Lab) (net.Conn, net.Conn, func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ln, err := lab.ListenConfig(netlab.Server, &net.ListenConfig{Control: labControl(false, wanCC)}, "tcp", netip.AddrPortFrom(lab.ServerAddr(0), 0).String())
	if err != nil {
		return nil, nil, nil, err
	}
	defer ln.Close()
	dial := lab.Dialer(netlab.Client, &net.Dialer{Control: labControl(false, wanCC), LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(lab.ClientAddr(0), 0))})
	snd, rcv, err := tcpPair(ctx, ln, func(ctx context.Context) (net.Conn, error) { return dial(ctx, "tcp", ln.Addr().String()) })
	if err != nil {
		return nil, nil, nil, err
	}
	return snd, rcv, func() { snd.Close(); rcv.Close() }, nil
}

// inNS opens UDP sockets in the namespace of side, for the transports' ListenPacket options.
func inNS(lab *netlab.Lab, side netlab.Side) func(network, address string) (net.PacketConn, error) {
	return func(network, address string) (net.PacketConn, error) { return lab.ListenPacket(side, network, address) }
}

// wanSource is a rendr source and the matching dial function on path i for one carrier.
func wanSource(lab *netlab.Lab, i int, carrier string, tc *tlsConfigs) (net.Listener, transport.DialFunc, error) {
	srvAddr := netip.AddrPortFrom(lab.ServerAddr(i), 0).String()
	local := lab.ClientAddr(i).String()
	switch carrier {
	case "tcp":
		src, err := lab.ListenConfig(netlab.Server, &net.ListenConfig{KeepAlive: -1, Control: labControl(true, wanCC)}, "tcp", srvAddr)
		if err != nil {
			return nil, nil, err
		}
		dial := lab.Dialer(netlab.Client, &net.Dialer{KeepAlive: -1, Control: labControl(true, wanCC),
			LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(lab.ClientAddr(i), 0))})
		addr := src.Addr().String()
		return lowatListener{src}, func(ctx context.Context) (net.Conn, error) { return dial(ctx, "tcp", addr) }, nil
	case "udpflow":
		src, err := udpflow.Listen(srvAddr, udpflow.ListenPacket(inNS(lab, netlab.Server)))
		if err != nil {
			return nil, nil, err
		}
		return src, udpflow.Dialer(src.Addr().String(), udpflow.LocalAddr(local), udpflow.ListenPacket(inNS(lab, netlab.Client))), nil
	case "quic":
		src, err := quic.Listen(srvAddr, tc.server, quic.ListenPacket(inNS(lab, netlab.Server)))
		if err != nil {
			return nil, nil, err
		}
		cl := quic.NewClient(src.Addr().String(), tc.client, quic.LocalAddr(local), quic.ListenPacket(inNS(lab, netlab.Client)))
		return src, cl.Dial, nil
	}
	return nil, nil, fmt.Errorf("unknown carrier %q", carrier)
}

// wanRendr opens one rendr flow over a path of carrier on path 0.
func wanRendr(lab *netlab.Lab, k benchKeys, carrier string, tc *tlsConfigs) (net.Conn, net.Conn, func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, dial, err := wanSource(lab, 0, carrier, tc)
	if err != nil {
		return nil, nil, nil, err
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: k.srv, Peers: []rendr.PublicKey{k.cli.Public()}})
	if err != nil {
		src.Close()
		return nil, nil, nil, err
	}
	if err := ln.AddSource(src); err != nil {
		src.Close()
		ln.Close()
		return nil, nil, nil, err
	}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: k.cli, PeerKey: k.srv.Public(), Root: rendr.Path("p0", dial)})
	if err != nil {
		ln.Close()
		return nil, nil, nil, err
	}
	snd, rcv, err := rendrPair(ctx, d, ln)
	if err != nil {
		d.Close()
		ln.Close()
		return nil, nil, nil, err
	}
	return snd, rcv, func() {
		if tx := snd.Paths(); len(tx) == 1 && tx[0].Packets != nil {
			p := tx[0].Packets
			fmt.Fprintf(os.Stderr, "rendrbench: wan:   packets sent %d, lost %d, marked %d; window %d, srtt %v\n",
				p.Sent, p.Lost, p.Marked, p.Window, tx[0].SRTT.Round(time.Microsecond))
		}
		snd.Close()
		rcv.Close()
		d.Close()
		ln.Close()
	}, nil
}

// wanQUIC connects bare quic-go across path 0: one stream.
func wanQUIC(lab *netlab.Lab, tc *tlsConfigs) (net.Conn, net.Conn, func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, dial, err := wanSource(lab, 0, "quic", tc)
	if err != nil {
		return nil, nil, nil, err
	}
	snd, rcv, err := quicPair(ctx, src, dial)
	if err != nil {
		src.Close()
		return nil, nil, nil, err
	}
	return snd, rcv, func() { snd.Close(); rcv.Close(); src.Close() }, nil
}

// wanFailover is the failover scenario's cases (blackhole and reset of the path carrying a
// paced stream, rendr beside MPTCP) on two emulated links w.
func wanFailover(c *config, keys benchKeys, w wanLink) []result {
	lab, done, err := wanLab("rwfail", []wanLink{w, w})
	if err != nil {
		return []result{failure("wan", fmt.Errorf("failover: %w", err))}
	}
	defer done()
	c.logf("wan failover: 2 paths of %v at %d Mbit/s, %d runs per case", w.rtt, w.mbit, c.runs)
	return failoverIn(c, failLab{scenario: "wan", prefix: "failover_" + w.name() + "_", cc: wanCC, lab: lab, keys: keys, ratioTarget: 0.5})
}

// wanRace is the race scenario's rows (paced chunks over Race(clean, lossy), beside each path
// alone) on two emulated links w, path 1 losing raceLoss%.
func wanRace(c *config, keys benchKeys, w wanLink) []result {
	lab, done, err := wanLab("rwrace", []wanLink{w, w})
	if err != nil {
		return []result{failure("wan", fmt.Errorf("race: %w", err))}
	}
	defer done()
	c.logf("wan race: 2 paths of %v at %d Mbit/s, path 1 losing %d%%, %d runs", w.rtt, w.mbit, raceLoss, c.runs)
	return raceIn(c, "wan", w.name()+"_", lab, keys, wanCC)
}
