//go:build linux

package main

// portfwd across two network namespaces joined by three paths: iperf3 through the forwarded
// port while the path in use is cut twice, and a SHA-exact transfer both ways across a cut.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/examples/internal/extest"
	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/status"
)

// labHost is the program's network in one of the lab's namespaces: its sockets are made there.
func labHost(lab *netlab.Lab, side netlab.Side) host {
	open := func(mk func() (io.Closer, error)) (io.Closer, error) { return lab.Open(side, mk) }
	return host{
		listen:        func(a string) (net.Listener, error) { return lab.Listen(side, "tcp", a) },
		listenCarrier: extest.ListenCarrier(open),
		dialCarrier:   extest.DialCarrier(open),
		dial:          lab.Dialer(side, nil),
	}
}

// labPair runs both sides in lab, of three paths: path i is of tier i, so the path in use is
// known: path0, then path1 once path0 is cut, then path2. The forwarding side listens on
// 127.0.0.1:fwdPort in the client namespace; the serving side forwards to target in the
// server namespace.
func labPair(t *testing.T, lab *netlab.Lab, fwdPort int, target string) *forwarder {
	t.Helper()
	var srcs, paths []string
	for i := range lab.Paths() {
		a := netip.AddrPortFrom(lab.ServerAddr(i), 7000).String()
		srcs = append(srcs, a)
		paths = append(paths, fmt.Sprintf("%s,from=%s,tier=%d", a, lab.ClientAddr(i), i))
	}
	fwd, _ := startPair(t, labHost(lab, netlab.Client), labHost(lab, netlab.Server),
		fmt.Sprintf("127.0.0.1:%d", fwdPort), srcs, paths, target)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fwd.d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	// Every path up before any traffic, and traffic on path0.
	if _, ok := testkit.WaitUntil(10*time.Second, 10*time.Millisecond, func() bool {
		st := fwd.d.Status()
		for _, p := range st.Paths {
			if p.State != status.Up {
				return false
			}
		}
		return len(st.Paths) == 3 && activePath(fwd.d) == 0
	}); !ok {
		t.Fatalf("the three paths are not up with path0 in use: %+v", fwd.d.Status().Paths)
	}
	return fwd
}

// activePath is the index of the path in use (paths are named path<i>), or -1.
func activePath(d *rendr.Dialer) int {
	for _, p := range d.Status().Paths {
		if p.Active {
			i, _ := strconv.Atoi(strings.TrimPrefix(p.Name, "path"))
			return i
		}
	}
	return -1
}

// sentOn is the bytes the forwarding side has sent on path i.
func sentOn(d *rendr.Dialer, i int) int64 {
	for _, p := range d.Status().Paths {
		if p.Name == fmt.Sprintf("path%d", i) {
			return p.BytesSent
		}
	}
	return 0
}

// iperfReport is what the test reads of iperf3's JSON report.
type iperfReport struct {
	Error string `json:"error"`
	End   struct {
		SumSent     struct{ Bytes int64 } `json:"sum_sent"`
		SumReceived struct{ Bytes int64 } `json:"sum_received"`
	} `json:"end"`
}

// TestIperf3Netns runs iperf3 through the forwarded port for 6 seconds: once 32 MiB have
// crossed path0 it is cut, and once 32 MiB have crossed path1 that one is cut too. iperf3
// must succeed, its server must have received what its client sent, and each path must have
// carried its share.
func TestIperf3Netns(t *testing.T) {
	iperf := extest.NeedTool(t, "iperf3")
	const port = 5201 // both namespaces are the test's own
	lab := testkit.NetLab(t, netlab.Config{Paths: 3, Name: "portfwd"})
	fwd := labPair(t, lab, port, fmt.Sprintf("127.0.0.1:%d", port))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	srv := exec.CommandContext(ctx, "ip", "netns", "exec", lab.ServerNS(), iperf, "-s", "-B", "127.0.0.1", "-p", strconv.Itoa(port))
	var srvOut bytes.Buffer
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()
	dialSrv := lab.Dialer(netlab.Server, nil)
	if _, ok := testkit.WaitUntil(10*time.Second, 20*time.Millisecond, func() bool {
		c, err := dialSrv(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	}); !ok {
		t.Fatalf("iperf3 -s does not listen: %s", srvOut.String())
	}

	cli := exec.CommandContext(ctx, "ip", "netns", "exec", lab.ClientNS(), iperf, "-c", "127.0.0.1",
		"-p", strconv.Itoa(port), "-t", "6", "-J")
	var out, errOut bytes.Buffer
	cli.Stdout, cli.Stderr = &out, &errOut
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cli.Wait() }()

	const share = 32 << 20
	for cut := range 2 {
		base := sentOn(fwd.d, cut)
		if _, ok := testkit.WaitUntil(20*time.Second, 5*time.Millisecond, func() bool {
			return sentOn(fwd.d, cut)-base >= share || len(done) > 0
		}); !ok || len(done) > 0 {
			t.Fatalf("path%d did not carry %d bytes while iperf3 ran: %+v", cut, share, fwd.d.Status().Paths)
		}
		if err := lab.Blackhole(cut, true); err != nil {
			t.Fatal(err)
		}
		t.Logf("path%d cut", cut)
	}
	base := sentOn(fwd.d, 2)
	if err := <-done; err != nil {
		t.Fatalf("iperf3 -c: %v: %s %s", err, errOut.String(), out.String())
	}
	var rep iperfReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("iperf3's report: %v: %s", err, out.String())
	}
	if rep.Error != "" {
		t.Fatalf("iperf3: %s", rep.Error)
	}
	sent, recv := rep.End.SumSent.Bytes, rep.End.SumReceived.Bytes
	t.Logf("iperf3: %d bytes sent, %d received; path2 carried %d after the second cut", sent, recv, sentOn(fwd.d, 2)-base)
	if recv < 2*share {
		t.Fatalf("iperf3's server received %d bytes, less than the %d the two cut paths carried", recv, 2*share)
	}
	if sentOn(fwd.d, 2)-base <= 0 {
		t.Fatalf("path2 carried nothing after the second cut")
	}
}

// TestTransferNetns sends 4 MiB to the service and half-closes, while the service answers the
// digest of what it read and 32 MiB; the path in use is cut once 8 MiB of the answer are
// written, before the rest is. Both directions must arrive whole, and the rest must have
// crossed the next path.
func TestTransferNetns(t *testing.T) {
	const port = 9000
	lab := testkit.NetLab(t, netlab.Config{Paths: 3, Name: "portfwd"})
	ln, err := lab.Listen(netlab.Server, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	const size, first = 32 << 20, 8 << 20
	svc := startDigestServer(t, ln, extest.Payload(5, size), first)
	fwd := labPair(t, lab, port, fmt.Sprintf("127.0.0.1:%d", port))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, err := lab.Dialer(netlab.Client, nil)(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	up := extest.Payload(6, 4<<20)
	type result struct {
		got []byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		got, err := extest.Exchange(c, up)
		res <- result{got, err}
	}()
	select {
	case <-svc.sent:
	case r := <-res:
		t.Fatalf("the exchange ended before the answer's first part: %d bytes, %v", len(r.got), r.err)
	}
	cut := activePath(fwd.d)
	if cut < 0 || cut == 2 {
		t.Fatalf("path%d in use, want path0 or path1", cut)
	}
	next := cut + 1
	base := fwdRecvOn(fwd.d, next)
	if err := lab.Blackhole(cut, true); err != nil {
		t.Fatal(err)
	}
	svc.resume()
	r := <-res
	if r.err != nil {
		t.Fatalf("exchange: %v after %d bytes", r.err, len(r.got))
	}
	extest.CheckDigestReply(t, r.got, up, svc.reply)
	if moved := fwdRecvOn(fwd.d, next) - base; moved < size-first {
		t.Fatalf("path%d received %d bytes after the cut, less than the %d sent after it", next, moved, size-first)
	}
}

// fwdRecvOn is the bytes the forwarding side has received on path i.
func fwdRecvOn(d *rendr.Dialer, i int) int64 {
	for _, p := range d.Status().Paths {
		if p.Name == fmt.Sprintf("path%d", i) {
			return p.BytesRecv
		}
	}
	return 0
}
