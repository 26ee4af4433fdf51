//go:build linux

package main

// End-to-end traffic through tunvpn measured by iperf3: a long TCP transfer and an
// interactive stream across the loss of the active uplink, and UDP over IPv4 and IPv6. Every
// helper here and in tunvpn_traffic_netns_test.go is named traffic… so that it cannot collide
// with the helpers of the package's other test files.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/internal/testkit"
)

// trafficUp builds a lab, starts both sides and waits until both of the client's uplinks are
// up, so that a test that cuts one always has the other to move to.
func trafficUp(t *testing.T, full bool) *tunvpnLab {
	t.Helper()
	v := newTunvpnLab(t, 1<<20, full)
	start(t, v.lab.ServerNS(), "server", "-c", v.serverCfg)
	start(t, v.lab.ClientNS(), "client", "-c", v.clientCfg)
	up := func() int { return upCount(v.clientSock) }
	// Polled every 20 ms: each poll is a round on the status socket, which the client under
	// the race detector should not spend its time answering.
	if _, ok := testkit.WaitUntil(30*time.Second, 20*time.Millisecond, func() bool { return up() == 2 }); !ok {
		t.Fatalf("%d of 2 uplinks up after 30s", up())
	}
	return v
}

// trafficActive returns the lab path index of the client's active uplink (the uplinks are
// named up<i> after their path), or -1.
func trafficActive(sock string) int {
	r, err := readStatus(sock)
	if err != nil || len(r.Sessions) != 1 {
		return -1
	}
	for _, p := range r.Sessions[0].Paths {
		if i, err := strconv.Atoi(strings.TrimPrefix(p.Name, "up")); err == nil && p.Active {
			return i
		}
	}
	return -1
}

// trafficStatus is the client's status for a person, for the logs.
func trafficStatus(sock string) string {
	r, err := readStatus(sock)
	if err != nil {
		return err.Error()
	}
	var sb strings.Builder
	printStatus(&sb, r)
	return sb.String()
}

// trafficIperfSum is one summary of iperf3's JSON report: an interval's or the whole test's.
// For UDP, Packets is the highest sequence number the receiver saw and LostPackets the gaps
// below it, so the datagrams that arrived are Packets-LostPackets.
type trafficIperfSum struct {
	Start       float64 `json:"start"`
	End         float64 `json:"end"`
	Seconds     float64 `json:"seconds"`
	Bytes       int64   `json:"bytes"`
	Packets     int64   `json:"packets"`
	LostPackets int64   `json:"lost_packets"`
	LostPercent float64 `json:"lost_percent"`
}

// trafficIperfReport is what "iperf3 -J" prints. With --get-server-output the client's report
// holds the server's, whose intervals are the receiver's view of an upload.
type trafficIperfReport struct {
	Intervals []struct {
		Sum trafficIperfSum `json:"sum"`
	} `json:"intervals"`
	End struct {
		SumSent     trafficIperfSum `json:"sum_sent"`
		SumReceived trafficIperfSum `json:"sum_received"`
	} `json:"end"`
	Server *trafficIperfReport `json:"server_output_json"`
	Error  string              `json:"error"`
}

// trafficIperfServer runs "iperf3 -s -1" bound to bind:port in the server namespace (the far
// network), and waits until it listens. It serves one test and exits; whatever is left of it
// is killed at the end of the test.
func trafficIperfServer(t *testing.T, v *tunvpnLab, bind string, port int) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", v.lab.ServerNS(), "iperf3", "-s", "-1", "-J", "-B", bind, "-p", strconv.Itoa(port))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("iperf3 server on %s port %d:\n%s", bind, port, out.String())
		}
	})
	// A probe connection would be taken for the one test the server runs (-1), so the socket
	// is looked for with ss instead.
	listening := func() bool {
		o, err := v.lab.Exec(netlab.Server, "ss", "-Hltn", fmt.Sprintf("sport = :%d", port))
		return err == nil && strings.Contains(string(o), "LISTEN")
	}
	if _, ok := testkit.WaitUntil(10*time.Second, 20*time.Millisecond, listening); !ok {
		select {
		case <-done:
			t.Fatalf("iperf3 -s exited:\n%s", out.String())
		default:
		}
		t.Fatalf("iperf3 -s does not listen on %s port %d", bind, port)
	}
}

// trafficIperfRun is an iperf3 client running in the client namespace.
type trafficIperfRun struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan error
}

// trafficIperfClient starts "iperf3 -J --get-server-output args" in the client namespace.
func trafficIperfClient(t *testing.T, v *tunvpnLab, args ...string) *trafficIperfRun {
	t.Helper()
	r := &trafficIperfRun{done: make(chan error, 1)}
	r.cmd = exec.Command("ip", append([]string{"netns", "exec", v.lab.ClientNS(), "iperf3", "-J", "--get-server-output"}, args...)...)
	var stderr bytes.Buffer
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := r.cmd.Wait()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, stderr.String())
		}
		r.done <- err
	}()
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		r.done <- <-r.done
	})
	return r
}

// wait waits at most within for the client's exit and returns its report: exit status 0 and
// a report without an error, or the test fails with iperf3's words.
func (r *trafficIperfRun) wait(t *testing.T, within time.Duration) *trafficIperfReport {
	t.Helper()
	var err error
	select {
	case err = <-r.done:
		r.done <- err
	case <-time.After(within):
		t.Fatalf("iperf3 -c did not end within %v", within)
	}
	rep := &trafficIperfReport{}
	jerr := json.Unmarshal(r.out.Bytes(), rep)
	if err != nil || jerr != nil || rep.Error != "" {
		t.Fatalf("iperf3 -c: exit %v, report %v %q:\n%s", err, jerr, rep.Error, r.out.String())
	}
	if rep.Server == nil {
		t.Fatalf("iperf3 -c: the report has no server output:\n%s", r.out.String())
	}
	return rep
}

// trafficIntervals is a report's intervals for the log: start and bytes (or datagrams).
func trafficIntervals(rep *trafficIperfReport, udp bool) string {
	var sb strings.Builder
	for _, iv := range rep.Intervals {
		if udp {
			fmt.Fprintf(&sb, " %.0fs:%d/%d", iv.Sum.Start, iv.Sum.Packets-iv.Sum.LostPackets, iv.Sum.Packets)
		} else {
			fmt.Fprintf(&sb, " %.0fs:%.1fMB", iv.Sum.Start, float64(iv.Sum.Bytes)/1e6)
		}
	}
	return sb.String()
}

// trafficEchoServer accepts connections on ln, in the far network, and echoes each until the
// client half-closes, then half-closes in turn. At the end of the test it closes ln and every
// connection itself (not counting on the tunnel to end them) and waits for its goroutines.
func trafficEchoServer(t *testing.T, ln net.Listener) {
	var (
		mu     sync.Mutex
		conns  []net.Conn
		closed bool // by the cleanup: a connection accepted after it is closed at once
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			if closed {
				c.Close()
			}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// trafficLine is the i-th line of the interactive stream: small, like a keystroke's worth of
// a terminal session, and different for every i so that a lost, repeated or reordered line
// shows.
func trafficLine(i int) []byte {
	return fmt.Appendf(nil, "%08d echo me back byte for byte\n", i)
}

// trafficEcho is how an interactive stream went.
type trafficEcho struct {
	lines    int
	lastSent time.Time // when the last line echoed was written
	maxRTT   time.Duration
	err      error
}

// trafficKeystrokes writes a line to c every 50 ms, as a person typing into ssh does, whether
// or not the echoes of the earlier ones have come back, and reads each echo, which must be the
// line exactly. When stop closes it half-closes c and reads the echoes still on their way up to
// the server's EOF. The round trip of a line runs from its write to its echo's arrival.
func trafficKeystrokes(c *net.TCPConn, stop <-chan struct{}) trafficEcho {
	sent := make(chan time.Time, 4096) // 200 s of lines: the writer never waits on the reader
	werr := make(chan error, 1)
	go func() {
		defer close(sent)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				werr <- c.CloseWrite()
				return
			case <-tick.C:
			}
			sent <- time.Now()
			if _, err := c.Write(trafficLine(i)); err != nil {
				werr <- fmt.Errorf("writing line %d: %w", i, err)
				return
			}
		}
	}()
	var r trafficEcho
	buf := make([]byte, len(trafficLine(0)))
	for ; ; r.lines++ {
		// Bounded, so that a stream that stalls for good fails the test instead of hanging
		// it; far above any round trip of a working tunnel.
		c.SetReadDeadline(time.Now().Add(time.Minute))
		_, err := io.ReadFull(c, buf)
		at, more := <-sent
		if err == io.EOF && !more {
			break
		}
		if err != nil {
			r.err = fmt.Errorf("reading the echo of line %d: %w", r.lines, err)
			break
		}
		if !bytes.Equal(buf, trafficLine(r.lines)) {
			r.err = fmt.Errorf("echo %d is %q, want %q", r.lines, buf, trafficLine(r.lines))
			break
		}
		r.maxRTT, r.lastSent = max(r.maxRTT, time.Since(at)), at
	}
	if err := <-werr; err != nil && r.err == nil {
		r.err = err
	}
	return r
}

// TestNetnsTunvpnIperfBlackhole: "iperf3 -c far -t 20", one TCP connection from the client
// through the tunnel to a server in the far network, runs to its end with exit status 0 while
// the active uplink is blackholed 5 s in; the receiver's report shows bytes moved before the
// cut, after it, and in the last second, so the connection was carried on over the other
// uplink rather than merely surviving. Alongside it an interactive stream (a line every 50 ms
// to an echo server in the far network, ssh-like) sees no error and every echo byte-exact.
// Its longest round trip is logged, not judged: timing belongs in the benchmarks.
func TestNetnsTunvpnIperfBlackhole(t *testing.T) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 is not installed")
	}
	const (
		duration = 20 * time.Second
		cutAt    = 5 * time.Second
	)
	v := trafficUp(t, false)
	trafficIperfServer(t, v, farAddr, 5201)

	echoLn, err := v.lab.Listen(netlab.Server, "tcp", farAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	trafficEchoServer(t, echoLn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ec, err := v.lab.Dialer(netlab.Client, nil)(ctx, "tcp", echoLn.Addr().String())
	if err != nil {
		t.Fatalf("the interactive stream's connection through the tunnel: %v", err)
	}
	stop, echoed := make(chan struct{}), make(chan trafficEcho, 1)
	go func() { echoed <- trafficKeystrokes(ec.(*net.TCPConn), stop) }()
	// On a failure below, the stream is stopped and its goroutines waited for all the same.
	stopOnce := sync.OnceFunc(func() { close(stop) })
	t.Cleanup(func() {
		stopOnce()
		ec.Close()
		echoed <- <-echoed
	})

	// The iperf3 rate is capped: the test is of the connection across the cut, not of
	// throughput, and an uncapped transfer through two race-instrumented tunvpn processes
	// would take both cores for 20 s from every other test running beside it.
	began := time.Now()
	run := trafficIperfClient(t, v, "-c", farAddr, "-p", "5201", "-t", strconv.Itoa(int(duration/time.Second)), "-b", "50M")
	select {
	case err := <-run.done:
		run.done <- err // for the cleanup's wait
		t.Fatalf("iperf3 -c ended before the cut: %v\n%s", err, run.out.String())
	case <-time.After(cutAt):
	}
	// iperf3's clocks start once its connections are up, after began: the cut comes at most
	// cutSecs into its test, so its intervals that start at cutSecs or later are after the
	// cut, and those that end by then before it.
	cut := trafficActive(v.clientSock)
	if cut < 0 {
		t.Fatalf("no active uplink %v into the transfer:\n%s", cutAt, trafficStatus(v.clientSock))
	}
	if err := v.lab.Blackhole(cut, true); err != nil {
		t.Fatal(err)
	}
	cutTime := time.Now()
	cutSecs := cutTime.Sub(began).Seconds()
	rep := run.wait(t, duration+time.Minute)
	stopOnce()
	var e trafficEcho
	select {
	case e = <-echoed:
		echoed <- e
	case <-time.After(2 * time.Minute): // the read deadline ends it first
		t.Fatal("the interactive stream did not end")
	}

	recv := rep.Server.Intervals
	var before, after int64
	for _, iv := range recv {
		switch {
		case iv.Sum.End <= cutSecs:
			before += iv.Sum.Bytes
		case iv.Sum.Start >= cutSecs:
			after += iv.Sum.Bytes
		}
	}
	t.Logf("up%d blackholed %.2fs into iperf3 -t %v; received %.1f MB of %.1f MB sent; per second:%s",
		cut, cutSecs, duration, float64(rep.End.SumReceived.Bytes)/1e6, float64(rep.End.SumSent.Bytes)/1e6, trafficIntervals(rep.Server, false))
	t.Logf("interactive stream: %d lines echoed exact, longest round trip %v", e.lines, e.maxRTT)
	if e.err != nil {
		t.Errorf("interactive stream, after %d lines: %v", e.lines, e.err)
	}
	if !e.lastSent.After(cutTime) {
		t.Errorf("interactive stream: no line written after the cut came back (%d lines)", e.lines)
	}
	if rep.End.SumReceived.Bytes <= 0 || before <= 0 {
		t.Errorf("the receiver got %d bytes, %d of them before the cut", rep.End.SumReceived.Bytes, before)
	}
	if after <= 0 {
		t.Errorf("no byte reached the receiver after up%d was blackholed", cut)
	}
	// The last whole second: the connection was still moving at the end.
	for i := len(recv) - 1; i >= 0; i-- {
		if recv[i].Sum.Seconds >= 0.5 {
			if recv[i].Sum.Bytes <= 0 {
				t.Errorf("nothing received in the last second (from %.1fs)", recv[i].Sum.Start)
			}
			break
		}
	}
	if now := trafficActive(v.clientSock); now == cut || now < 0 {
		t.Errorf("after the cut of up%d the active uplink is up%d", cut, now)
	}
	t.Logf("the client's status:\n%s", trafficStatus(v.clientSock))
}

// TestNetnsTunvpnIperfUDP: "iperf3 -u" at a modest 20 Mbit/s for 3 s, IPv4 and IPv6 at
// once, crosses the tunnel as UDP flows: exit status 0, and the receiver's report (the far
// server's, taken back by the client) shows datagrams arriving, in the last second as in the
// first. Loss is logged, not judged: a datagram the race-instrumented tunvpn drops under load
// is allowed to UDP, a flow that stops carrying is not.
func TestNetnsTunvpnIperfUDP(t *testing.T) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 is not installed")
	}
	v := trafficUp(t, false)
	for _, tc := range []struct {
		name, far string
		port      int
		flags     []string
	}{
		{"IPv4", farAddr, 5201, nil},
		{"IPv6", farAddr6, 5202, []string{"-6"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			trafficIperfServer(t, v, tc.far, tc.port)
			args := append([]string{"-c", tc.far, "-p", strconv.Itoa(tc.port), "-u", "-b", "20M", "-t", "3"}, tc.flags...)
			rep := trafficIperfClient(t, v, args...).wait(t, time.Minute)
			got := rep.End.SumReceived
			t.Logf("%s: %d of %d datagrams received (%.2f%% lost), %d bytes; per second:%s",
				tc.name, got.Packets-got.LostPackets, got.Packets, got.LostPercent, got.Bytes, trafficIntervals(rep.Server, true))
			if got.LostPackets > 0 {
				t.Logf("%s: the server namespace's sockets dropped %d datagrams for want of room (its counter for the family, since the lab began)",
					tc.name, trafficRcvbufErrors(v.lab, tc.far == farAddr6))
			}
			if got.Packets-got.LostPackets <= 0 || got.Bytes <= 0 {
				t.Fatalf("no datagram reached the far server: %+v", got)
			}
			recv := rep.Server.Intervals
			if len(recv) == 0 || recv[0].Sum.Packets-recv[0].Sum.LostPackets <= 0 {
				t.Errorf("no datagram in the receiver's first second")
			}
			for i := len(recv) - 1; i >= 0; i-- {
				if recv[i].Sum.Seconds >= 0.5 {
					if recv[i].Sum.Packets-recv[i].Sum.LostPackets <= 0 {
						t.Errorf("no datagram in the receiver's last second (from %.1fs)", recv[i].Sum.Start)
					}
					break
				}
			}
		})
	}
	t.Cleanup(func() {
		r, err := readStatus(v.clientSock)
		if err != nil || r.Ingress == nil || r.Ingress.UDPOpened < 2 {
			t.Errorf("the client's ingress opened no UDP flow for each family: %+v (%v)", r.Ingress, err)
			return
		}
		t.Logf("the client's ingress: %+v", *r.Ingress)
	})
}

// trafficRcvbufErrors is the count of UDP datagrams (UDP over IPv6 with v6) dropped in the
// server namespace for want of room in a socket's receive buffer: for the log, to tell loss
// at the receiver from loss on the way. -1 if it cannot be read.
func trafficRcvbufErrors(lab *netlab.Lab, v6 bool) int {
	if v6 {
		out, err := lab.Exec(netlab.Server, "cat", "/proc/net/snmp6")
		if m := regexp.MustCompile(`Udp6RcvbufErrors\s+(\d+)`).FindSubmatch(out); err == nil && m != nil {
			n, _ := strconv.Atoi(string(m[1]))
			return n
		}
		return -1
	}
	out, err := lab.Exec(netlab.Server, "cat", "/proc/net/snmp")
	if err != nil {
		return -1
	}
	// Two lines start with "Udp:": the names, then the values.
	var names, values []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "Udp:" {
			if names == nil {
				names = f
			} else {
				values = f
			}
		}
	}
	for i, name := range names {
		if name == "RcvbufErrors" && i < len(values) {
			n, _ := strconv.Atoi(values[i])
			return n
		}
	}
	return -1
}
