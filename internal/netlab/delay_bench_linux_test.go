package netlab

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// The node's cost is what it takes from the programs it carries, so these benchmarks report
// the CPU time of this process per GiB moved through a 1 Gbit/s node with a 25 ms one-way
// delay, next to the rate reached. Another load on the machine changes the rate more than
// the CPU per GiB, which is the figure to compare. Run them with -benchtime=Nx: one
// iteration moves benchChunk bytes (the Go endpoints) or runs iperf3 for benchIperfTime.

const (
	benchRate      = 1_000_000_000
	benchDelay     = 25 * time.Millisecond
	benchChunk     = 256 << 20
	benchWarm      = 3 * time.Second
	benchIperfTime = 8 * time.Second
	benchSockBuf   = 64 << 20 // holds the 6 MiB of a 50 ms round trip at 1 Gbit/s, and a queue
)

var benchModes = []struct {
	name string
	cfg  DelayConfig
}{
	{"offload", DelayConfig{Delay: benchDelay, RateBits: benchRate}},
	{"packets", DelayConfig{Delay: benchDelay, RateBits: benchRate, DisableOffload: true}},
}

func benchLab(b *testing.B, cfg DelayConfig) *Lab {
	b.Helper()
	if err := Available(); err != nil {
		b.Skip(err)
	}
	l, err := New(Config{Paths: 1, Delay: []DelayConfig{cfg}, Name: "nlb-node"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	for _, side := range []Side{Client, Server} {
		for _, s := range []string{
			fmt.Sprintf("net.core.rmem_max=%d", benchSockBuf),
			fmt.Sprintf("net.core.wmem_max=%d", benchSockBuf),
			fmt.Sprintf("net.ipv4.tcp_rmem=4096 131072 %d", benchSockBuf),
			fmt.Sprintf("net.ipv4.tcp_wmem=4096 16384 %d", benchSockBuf),
		} {
			if _, err := l.Exec(side, "sysctl", "-q", "-w", s); err != nil {
				b.Fatal(err)
			}
		}
	}
	return l
}

// cpuTime is the user and system time this process has used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportNode(b *testing.B, l *Lab, cpu, wall time.Duration, moved int64) {
	gib := float64(moved) / (1 << 30)
	b.ReportMetric(cpu.Seconds()/gib, "cpu-s/GiB")
	b.ReportMetric(float64(moved)*8/wall.Seconds()/1e6, "Mbit/s")
	b.ReportMetric(0, "ns/op")
	st, err := l.DelayStats(0)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%.2f GiB in %v, %v CPU; node %+v", gib, wall.Round(time.Millisecond), cpu.Round(time.Millisecond), st)
}

// BenchmarkDelayNodeTCP moves one kernel TCP flow through the node between two endpoints
// in this process, which therefore pays for the sockets' copies as well as for the node.
func BenchmarkDelayNodeTCP(b *testing.B) {
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			l := benchLab(b, m.cfg)
			ln, err := l.Listen(Server, "tcp", netip.AddrPortFrom(l.ServerAddr(0), 0).String())
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					close(accepted)
					return
				}
				accepted <- c
			}()
			c, err := dialPath(l, 0, ln.Addr().String(), 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			rc, ok := <-accepted
			if !ok {
				b.Fatal("accept failed")
			}
			defer rc.Close()
			// The sender stops when its connection is closed, after the loop.
			sent := make(chan error, 1)
			go func() {
				_, err := io.Copy(c, zeros{})
				sent <- err
			}()
			defer func() { c.Close(); rc.Close(); <-sent }()
			buf := make([]byte, 1<<20)
			read := func(n int64) {
				rc.SetReadDeadline(time.Now().Add(time.Minute))
				if _, err := io.CopyBuffer(io.Discard, io.LimitReader(rc, n), buf); err != nil {
					b.Fatal(err)
				}
			}
			for warm := time.Now().Add(benchWarm); time.Now().Before(warm); {
				read(1 << 20)
			}
			cpu0, t0 := cpuTime(b), time.Now()
			var moved int64
			for b.Loop() {
				read(benchChunk)
				moved += benchChunk
			}
			reportNode(b, l, cpuTime(b)-cpu0, time.Since(t0), moved)
		})
	}
}

// BenchmarkDelayNodeIperf3 runs the endpoints as iperf3 processes in the lab's namespaces,
// so that this process's CPU time is the node's alone (with the kernel's forwarding work
// that its writes set off).
func BenchmarkDelayNodeIperf3(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("no iperf3")
	}
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			l := benchLab(b, m.cfg)
			var cpu, wall time.Duration
			var moved int64
			for b.Loop() {
				srv := exec.Command("ip", "netns", "exec", l.ServerNS(), "iperf3", "-s", "-1", "-B", l.ServerAddr(0).String())
				if err := srv.Start(); err != nil {
					b.Fatal(err)
				}
				var out []byte
				var err error
				cpu0 := cpuTime(b)
				// The server needs a moment to listen; the client retries until it does.
				for range 50 {
					out, err = l.Exec(Client, "iperf3", "-c", l.ServerAddr(0).String(), "-B", l.ClientAddr(0).String(),
						"-t", fmt.Sprint(benchIperfTime.Seconds()), "-J")
					if err == nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				cpu += cpuTime(b) - cpu0
				srv.Process.Kill()
				srv.Wait()
				if err != nil {
					b.Fatal(err)
				}
				var res struct {
					End struct {
						SumReceived struct {
							Bytes   int64
							Seconds float64
						} `json:"sum_received"`
					}
				}
				if err := json.Unmarshal(out, &res); err != nil {
					b.Fatal(err)
				}
				moved += res.End.SumReceived.Bytes
				wall += time.Duration(res.End.SumReceived.Seconds * float64(time.Second))
			}
			reportNode(b, l, cpu, wall, moved)
		})
	}
}
