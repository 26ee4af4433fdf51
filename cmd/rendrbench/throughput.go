package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testcert"
	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/tcp"
)

// ioSize is the size of every Write and Read buffer, in every row alike.
const ioSize = 64 << 10

// A transfer that takes longer than this is reported as an error rather than waited for.
const transferLimit = 3 * time.Minute

// stream is one connected pair for a transfer: snd writes, rcv reads.
type stream struct {
	snd, rcv net.Conn
	close    func()
	note     string
}

type closeWriter interface{ CloseWrite() error }

type tputRow struct {
	name  string
	note  string
	setup func(ctx context.Context) (*stream, error)
}

func runThroughput(c *config) []result {
	keys, err := newBenchKeys()
	if err != nil {
		return []result{failure("throughput", err)}
	}
	tlsCfg, err := newTLSConfigs()
	if err != nil {
		return []result{failure("throughput", err)}
	}
	rows := []tputRow{
		{name: "raw_tcp", note: "net.Dial/net.Listen on 127.0.0.1, default socket options",
			setup: setupRawTCP},
		{name: "raw_tcp_tuned", note: "informational: net TCP with transport/tcp's socket options (TCP_NOTSENT_LOWAT 128 KiB, pacing), the carrier rendr runs on",
			setup: setupTunedTCP},
		{name: "tls13", note: "crypto/tls 1.3, self-signed ECDSA P-256 certificate made at start",
			setup: func(ctx context.Context) (*stream, error) { return setupTLS(ctx, tlsCfg) }},
		{name: "rendr_encrypted", note: "one rendr flow, one transport/tcp path, Noise AES-256-GCM records",
			setup: func(ctx context.Context) (*stream, error) { return setupRendr(ctx, keys, false) }},
		{name: "rendr_secure_carrier", note: "one rendr flow, one transport/tcp path declared secure (SecureCarrier/SecureSource): records not encrypted",
			setup: func(ctx context.Context) (*stream, error) { return setupRendr(ctx, keys, true) }},
		{name: "quic_go", note: "bare quic-go " + quicVersion() + ": one stream of one connection, transport/quic's configuration (its own quic.Transport per side, datagrams on)",
			setup: func(ctx context.Context) (*stream, error) { return setupQUIC(ctx, tlsCfg) }},
		{name: "rendr_quic", note: "one rendr flow, one transport/quic path, Noise AES-256-GCM records inside QUIC's own encryption",
			setup: func(ctx context.Context) (*stream, error) { return setupRendrQUIC(ctx, keys, tlsCfg, false) }},
		{name: "rendr_quic_secure", note: "one rendr flow, one transport/quic path declared secure: QUIC's TLS 1.3 alone encrypts",
			setup: func(ctx context.Context) (*stream, error) { return setupRendrQUIC(ctx, keys, tlsCfg, true) }},
		{name: "gvisor_tcp", note: "bare transport/gvisor: one gVisor netstack TCP connection between two user-space stacks, IP packets in UDP datagrams (MTU 1400)",
			setup: setupGVisor},
		{name: "rendr_gvisor", note: "one rendr flow, one transport/gvisor path, Noise AES-256-GCM records",
			setup: func(ctx context.Context) (*stream, error) { return setupRendrGVisor(ctx, keys) }},
		{name: "rendr_udpflow", note: "one rendr flow, one transport/udpflow path as it comes (sendmmsg, recvmmsg, UDP GSO and GRO on), Noise AES-256-GCM packets; the path MTU search finds loopback's 64 KiB",
			setup: func(ctx context.Context) (*stream, error) { return setupRendrUDPFlow(ctx, keys, 0, true) }},
		{name: "rendr_udpflow_1500", note: "informational: the same with datagrams capped at 1472 bytes (an Ethernet path's), where GSO and GRO carry runs of 44 packets per call",
			setup: func(ctx context.Context) (*stream, error) { return setupRendrUDPFlow(ctx, keys, 1472, true) }},
		{name: "rendr_udpflow_1500_nobatch", note: "informational: the same, one system call per datagram (udpflow.NoBatching)",
			setup: func(ctx context.Context) (*stream, error) { return setupRendrUDPFlow(ctx, keys, 1472, false) }},
	}
	rows = onlyRows(c, rows, func(r tputRow) string { return r.name })
	mode := fmt.Sprintf("%d bytes", c.bytes)
	if c.seconds > 0 {
		mode = fmt.Sprintf("%gs", c.seconds)
	}
	c.logf("throughput: %d rows x %d runs, %s per transfer, %d KiB writes and reads", len(rows), c.runs, mode, ioSize>>10)

	// One unmeasured short transfer per row fills pools and faults pages in.
	for _, r := range rows {
		if _, err := measureOnce(c, r, min(c.bytes, 64<<20), 0, ""); err != nil {
			return []result{failure("throughput", fmt.Errorf("%s warm-up: %w", r.name, err))}
		}
	}
	samples := make([][]float64, len(rows))
	cpu := make([][]float64, len(rows))
	notes := make([]string, len(rows))
	for run := range c.runs {
		// Rotate the order so that no row always runs first or right after another.
		for k := range rows {
			i := (k + run) % len(rows)
			prof := ""
			if c.cpuDir != "" {
				prof = filepath.Join(c.cpuDir, fmt.Sprintf("%s-%d.pprof", rows[i].name, run))
			}
			mibs, err := measureOnce(c, rows[i], c.bytes, time.Duration(c.seconds*float64(time.Second)), prof)
			if err != nil {
				return []result{failure("throughput", fmt.Errorf("%s run %d: %w", rows[i].name, run, err))}
			}
			c.logf("throughput: run %d %-21s %8.1f MiB/s %6.3f CPU s/GiB", run, rows[i].name, mibs.rate, mibs.cpu)
			samples[i] = append(samples[i], mibs.rate)
			cpu[i] = append(cpu[i], mibs.cpu)
			if mibs.note != "" {
				notes[i] = mibs.note
			}
		}
	}
	out := make([]result, len(rows))
	byName := map[string]*result{}
	for i, r := range rows {
		out[i] = result{Scenario: "throughput", Metric: r.name, Unit: "MiB/s", Note: r.note}
		if notes[i] != "" {
			out[i].Note += "; " + notes[i]
		}
		measured(&out[i], samples[i])
		out[i].CPUPerGiB = ptr(round(median(cpu[i])))
		byName[r.name] = &out[i]
	}
	against(byName["rendr_encrypted"], byName["tls13"], 0.9, true)
	against(byName["rendr_secure_carrier"], byName["raw_tcp"], 0.8, true)
	against(byName["rendr_quic_secure"], byName["quic_go"], 0.9, true)
	against(byName["rendr_quic"], byName["quic_go"], 0, true)
	against(byName["rendr_gvisor"], byName["gvisor_tcp"], 0, true)
	against(byName["rendr_udpflow"], byName["rendr_encrypted"], 1, true)
	against(byName["rendr_udpflow_1500"], byName["rendr_encrypted"], 0, true)
	against(byName["rendr_udpflow_1500_nobatch"], byName["rendr_udpflow_1500"], 0, true)
	return out
}

type measurement struct {
	rate float64 // MiB/s at the receiver
	cpu  float64 // process CPU seconds (user and system) per GiB
	note string
}

// measureOnce sets up a fresh connection for row, moves n bytes (or streams for dur when dur
// is positive) from sender to receiver and returns the rate the receiver saw: bytes over the
// time from the sender's first Write to the receiver's last Read. Setup and teardown are not
// timed. prof, when set, receives a CPU profile of the transfer alone.
func measureOnce(c *config, row tputRow, n int64, dur time.Duration, prof string) (measurement, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	st, err := row.setup(ctx)
	cancel()
	if err != nil {
		return measurement{}, fmt.Errorf("setup: %w", err)
	}
	defer st.close()
	limit := time.Now().Add(transferLimit)
	st.snd.SetDeadline(limit)
	st.rcv.SetDeadline(limit)

	if prof != "" {
		f, err := os.Create(prof)
		if err != nil {
			return measurement{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return measurement{}, err
		}
		defer pprof.StopCPUProfile()
	}

	sent := make(chan error, 1)
	cpu0 := cpuTime()
	start := time.Now()
	go func() { sent <- send(st.snd, n, dur, start) }()
	got, last, rerr := receive(st.rcv)
	serr := <-sent
	cpu := cpuTime() - cpu0
	if err := errors.Join(serr, rerr); err != nil {
		return measurement{}, err
	}
	if dur <= 0 && got != n {
		return measurement{}, fmt.Errorf("received %d bytes, sent %d", got, n)
	}
	el := last.Sub(start).Seconds()
	if el <= 0 || got == 0 {
		return measurement{}, errors.New("nothing received")
	}
	gib := float64(got) / (1 << 30)
	return measurement{rate: float64(got) / el / (1 << 20), cpu: cpu.Seconds() / gib, note: st.note}, nil
}

// send writes n bytes (or for dur) in ioSize writes, then half-closes.
func send(c net.Conn, n int64, dur time.Duration, start time.Time) error {
	buf := make([]byte, ioSize)
	rand.Read(buf)
	var total int64
	for {
		k := int64(len(buf))
		if dur > 0 {
			if time.Since(start) >= dur {
				break
			}
		} else {
			if total >= n {
				break
			}
			k = min(k, n-total)
		}
		w, err := c.Write(buf[:k])
		total += int64(w)
		if err != nil {
			return fmt.Errorf("write after %d bytes: %w", total, err)
		}
	}
	cw, ok := c.(closeWriter)
	if !ok {
		return fmt.Errorf("%T cannot half-close", c)
	}
	if err := cw.CloseWrite(); err != nil {
		return fmt.Errorf("close write: %w", err)
	}
	return nil
}

// receive reads to EOF and returns the byte count and the time of the last Read that
// returned data.
func receive(c net.Conn) (int64, time.Time, error) {
	buf := make([]byte, ioSize)
	var total int64
	var last time.Time
	for {
		k, err := c.Read(buf)
		if k > 0 {
			total += int64(k)
			last = time.Now()
		}
		if err == io.EOF {
			return total, last, nil
		}
		if err != nil {
			return total, last, fmt.Errorf("read after %d bytes: %w", total, err)
		}
	}
}

// tcpPair connects a dialer to a listener on loopback and returns both ends.
func tcpPair(ctx context.Context, ln net.Listener, dial func(ctx context.Context) (net.Conn, error)) (snd, rcv net.Conn, err error) {
	type acc struct {
		c   net.Conn
		err error
	}
	ch := make(chan acc, 1)
	go func() {
		c, err := ln.Accept()
		ch <- acc{c, err}
	}()
	snd, err = dial(ctx)
	if err != nil {
		ln.Close() // unblocks Accept
		<-ch
		return nil, nil, err
	}
	a := <-ch
	if a.err != nil {
		snd.Close()
		return nil, nil, a.err
	}
	return snd, a.c, nil
}

func setupRawTCP(ctx context.Context) (*stream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	snd, rcv, err := tcpPair(ctx, ln, func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	})
	ln.Close()
	if err != nil {
		return nil, err
	}
	return &stream{snd: snd, rcv: rcv, close: func() { snd.Close(); rcv.Close() }}, nil
}

func setupTunedTCP(ctx context.Context) (*stream, error) {
	ln, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	snd, rcv, err := tcpPair(ctx, ln, tcp.Dialer(ln.Addr().String()))
	ln.Close()
	if err != nil {
		return nil, err
	}
	return &stream{snd: snd, rcv: rcv, close: func() { snd.Close(); rcv.Close() }}, nil
}

type tlsConfigs struct{ server, client *tls.Config }

// newTLSConfigs makes a self-signed ECDSA P-256 certificate and configs that accept only TLS
// 1.3 and only that certificate. Go picks the 1.3 suite (AES-GCM on hardware with AES).
func newTLSConfigs() (*tlsConfigs, error) {
	srv, cli, err := testcert.New()
	if err != nil {
		return nil, err
	}
	return &tlsConfigs{server: srv, client: cli}, nil
}

func setupTLS(ctx context.Context, cfg *tlsConfigs) (*stream, error) {
	raw, err := setupRawTCP(ctx)
	if err != nil {
		return nil, err
	}
	cli := tls.Client(raw.snd, cfg.client)
	srv := tls.Server(raw.rcv, cfg.server)
	hs := make(chan error, 1)
	go func() { hs <- srv.HandshakeContext(ctx) }()
	err = cli.HandshakeContext(ctx)
	if err != nil {
		raw.close() // fails the server's handshake too
	}
	if err = errors.Join(err, <-hs); err != nil {
		raw.close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	cs := cli.ConnectionState()
	return &stream{snd: cli, rcv: srv, close: func() { cli.Close(); srv.Close() },
		note: fmt.Sprintf("negotiated %s %s", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))}, nil
}

type benchKeys struct{ srv, cli rendr.PrivateKey }

func newBenchKeys() (benchKeys, error) {
	s, err := rendr.NewKey()
	if err != nil {
		return benchKeys{}, err
	}
	c, err := rendr.NewKey()
	return benchKeys{srv: s, cli: c}, err
}

// setupRendr starts a Listener and a Dialer joined by one loopback transport/tcp path and
// opens one flow. secure declares the carrier secure on both ends.
func setupRendr(ctx context.Context, k benchKeys, secure bool) (*stream, error) {
	src, err := tcp.Listen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return setupRendrOver(ctx, k, src, tcp.Dialer(src.Addr().String()), secure)
}

// setupRendrOver starts a Listener on src and a Dialer with one path dialed by dial, and opens
// one flow. It owns src from then on.
func setupRendrOver(ctx context.Context, k benchKeys, src net.Listener, dial transport.DialFunc, secure bool) (*stream, error) {
	ln, err := rendr.Listen(rendr.ListenConfig{Key: k.srv, Peers: []rendr.PublicKey{k.cli.Public()}})
	if err != nil {
		src.Close()
		return nil, err
	}
	var opts []rendr.PathOption
	var srcOpts []rendr.SourceOption
	if secure {
		opts = append(opts, rendr.SecureCarrier())
		srcOpts = append(srcOpts, rendr.SecureSource())
	}
	if err := ln.AddSource(src, srcOpts...); err != nil {
		src.Close()
		ln.Close()
		return nil, err
	}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: k.cli, PeerKey: k.srv.Public(),
		Root: rendr.Path("bench", dial, opts...)})
	if err != nil {
		ln.Close()
		return nil, err
	}
	snd, rcv, err := rendrPair(ctx, d, ln)
	if err != nil {
		d.Close()
		ln.Close()
		return nil, err
	}
	return &stream{snd: snd, rcv: rcv, close: func() {
		if tx, rx := snd.Paths(), rcv.Paths(); len(tx) == 1 && len(rx) == 1 && tx[0].Packets != nil && rx[0].Packets != nil {
			// What the packet path saw: losses, marks and acknowledgements explain a slow run.
			k, a := tx[0].Packets, rx[0].Packets
			fmt.Fprintf(os.Stderr, "rendrbench: throughput:   packets sent %d, lost %d, marked %d; sent back %d; window %d, srtt %v\n",
				k.Sent, k.Lost, k.Marked, a.Sent, k.Window, tx[0].SRTT.Round(time.Microsecond))
		}
		snd.Close()
		rcv.Close()
		d.Close()
		ln.Close()
	}}, nil
}

// rendrPair opens one flow and accepts it.
func rendrPair(ctx context.Context, d *rendr.Dialer, ln *rendr.Listener) (*rendr.Conn, *rendr.Conn, error) {
	snd, err := d.DialContext(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("rendr dial: %w", err)
	}
	rcv, err := ln.AcceptContext(ctx)
	if err != nil {
		snd.Close()
		return nil, nil, fmt.Errorf("rendr accept: %w", err)
	}
	return snd, rcv, nil
}
