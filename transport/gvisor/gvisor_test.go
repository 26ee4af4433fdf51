package gvisor_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/rendr-go/rendr/internal/carriertest"
	"github.com/rendr-go/rendr/transport/gvisor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func pair(t *testing.T, opts ...gvisor.Option) (*gvisor.Listener, net.Conn, net.Conn) {
	t.Helper()
	ln, err := gvisor.Listen("127.0.0.1:0", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := gvisor.Dialer(ln.Addr().String(), opts...)(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return ln, c, s
}

func TestStreamBothWays(t *testing.T) {
	_, c, s := pair(t)
	carriertest.Stream(t, c, s, 8<<20, nil)
	carriertest.Stream(t, s, c, 8<<20, nil)
}

// TestCloseEndsPeer: closing one end reaches the other as the end of the stream.
func TestCloseEndsPeer(t *testing.T) {
	_, c, s := pair(t)
	c.Close()
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Read(make([]byte, 10)); !errors.Is(err, io.EOF) {
		t.Fatalf("read after the peer closed: %v", err)
	}
}

// TestStrayPacketsStartNothing: datagrams that are not a SYN to the listening stack start no
// stack and get no answer. A hello after them is the barrier: the listener takes a source's
// datagrams in order, so by its cookie every answer to the strays would have come.
func TestStrayPacketsStartNothing(t *testing.T) {
	ln, _, _ := pair(t)
	u := udp(t, ln)
	for _, b := range [][]byte{{0x45}, bytes.Repeat([]byte{0x45, 0}, 40), []byte("hello, stack")} {
		if _, err := u.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if _, n := cookie(t, u, 1); n != 0 {
		t.Fatalf("stray datagrams got %d bytes back", n)
	}
	if st := ln.Stats(); st.Strays != 3 || st.Started != 1 || st.Peers != 1 {
		t.Fatalf("stats after 3 strays beside one connection: %+v", st)
	}
}

// syn builds the IPv4 TCP SYN a dialing stack sends first, from port, with valid checksums
// when valid is set and a wrong TCP checksum otherwise.
func syn(port uint16, valid bool) []byte {
	src := tcpip.AddrFrom4([4]byte{10, 255, 0, 1})
	dst := tcpip.AddrFrom4([4]byte{10, 255, 0, 2})
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: src, DstAddr: dst})
	ip.SetChecksum(^ip.CalculateChecksum())
	seg := header.TCP(b[header.IPv4MinimumSize:])
	seg.Encode(&header.TCPFields{SrcPort: port, DstPort: 1, SeqNum: 1000, DataOffset: header.TCPMinimumSize,
		Flags: header.TCPFlagSyn, WindowSize: 65535})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, header.TCPMinimumSize)
	seg.SetChecksum(^seg.CalculateChecksum(xsum))
	if !valid {
		seg.SetChecksum(seg.Checksum() + 1)
	}
	return b
}
