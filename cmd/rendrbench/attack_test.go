package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/rendr-go/rendr/internal/handshake"
)

func TestMain(m *testing.M) {
	if os.Getenv(nicedChildEnv) != "" {
		nicedChild()
		return
	}
	goleak.VerifyTestMain(m)
}

// nicedChildEnv makes the test binary the child of TestAtLowestPriority.
const nicedChildEnv = "RENDRBENCH_TEST_NICED_CHILD"

// extraThreads is how many threads nicedChild starts besides those it has.
const extraThreads = 4

// nicedChild lowers itself as an attacker process does, starts threads of its own (each
// goroutine locked to one makes the runtime start another), then prints how many threads it
// has and their lowest and highest nice values.
func nicedChild() {
	atLowestPriority()
	var started, done sync.WaitGroup
	release := make(chan struct{})
	for range extraThreads {
		started.Add(1)
		done.Go(func() {
			runtime.LockOSThread()
			started.Done()
			<-release
		})
	}
	started.Wait()
	lo, hi, err := threadNice(0)
	tasks, _ := os.ReadDir("/proc/self/task")
	close(release)
	done.Wait()
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println(len(tasks), lo, hi)
	os.Exit(0)
}

// An attacker process must run at attackerNice in every thread, those its runtime started
// before main included, and the process that started it must keep its own priority.
func TestAtLowestPriority(t *testing.T) {
	lo0, hi0, err := threadNice(0)
	if err != nil {
		t.Fatal(err)
	}
	if hi0 >= attackerNice {
		t.Fatalf("this process already has a thread at nice %d: nothing to tell apart", hi0)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), nicedChildEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v: %s", err, out.Bytes())
	}
	var n, lo, hi int
	if _, err := fmt.Sscan(out.String(), &n, &lo, &hi); err != nil {
		t.Fatalf("child printed %q: %v", out.Bytes(), err)
	}
	if n < 1+extraThreads {
		t.Fatalf("child had %d threads, want at least %d", n, 1+extraThreads)
	}
	if lo != attackerNice || hi != attackerNice {
		t.Fatalf("child's %d threads at nice %d to %d, want all at %d", n, lo, hi, attackerNice)
	}
	if lo1, hi1, err := threadNice(0); err != nil || lo1 != lo0 || hi1 != hi0 {
		t.Fatalf("this process's threads moved from nice %d..%d to %d..%d (%v)", lo0, hi0, lo1, hi1, err)
	}
}

// The spoofed SYNs must be what a gVisor stack would take, or the gvisor attack measures
// the listener dropping garbage instead.
func TestBareSYNParses(t *testing.T) {
	b := bareSYN(nil, 40000, 12345)
	ip := header.IPv4(b)
	if !ip.IsValid(len(b)) || !ip.IsChecksumValid() {
		t.Fatalf("IPv4 header not valid: % x", b[:20])
	}
	if ip.Protocol() != uint8(header.TCPProtocolNumber) {
		t.Fatalf("protocol %d", ip.Protocol())
	}
	if ip.SourceAddress() != tcpip.AddrFrom4(gvDialerIP) || ip.DestinationAddress() != tcpip.AddrFrom4(gvListenerIP) {
		t.Fatalf("addresses %v -> %v", ip.SourceAddress(), ip.DestinationAddress())
	}
	tcp := header.TCP(ip.Payload())
	if !tcp.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), 0, 0) {
		t.Fatal("TCP checksum not valid")
	}
	if tcp.Flags() != header.TCPFlagSyn || tcp.SourcePort() != 40000 || tcp.DestinationPort() != gvListenerPort || tcp.SequenceNumber() != 12345 {
		t.Fatalf("TCP header: flags %v, ports %d -> %d, seq %d", tcp.Flags(), tcp.SourcePort(), tcp.DestinationPort(), tcp.SequenceNumber())
	}
}

// A captured first message must be framed as docs/wire.md 3.2 says: the preface, a length
// counting the rest, and a Noise message 1 with its two MACs.
func TestFirstMessageFraming(t *testing.T) {
	srv, err := handshake.NewKeypair()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := handshake.NewKeypair()
	if err != nil {
		t.Fatal(err)
	}
	m, err := firstMessage(cli, srv.Public, false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(m, handshake.Preface[:]) {
		t.Fatalf("no preface: % x", m[:8])
	}
	n := int(binary.BigEndian.Uint16(m[8:]))
	// "attack" is the hello's name: 173 + 6 bytes, no carrier data.
	if n != len(m)-10 || n != 173+len("attack") {
		t.Fatalf("length field %d, message %d bytes", n, len(m))
	}
	// Two messages from one key differ (fresh ephemeral key, time, session id).
	m2, err := firstMessage(cli, srv.Public, false)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(m, m2) {
		t.Fatal("two first messages are identical")
	}
}
