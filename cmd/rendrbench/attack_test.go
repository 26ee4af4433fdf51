package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
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
