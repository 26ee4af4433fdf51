package main

import (
	"encoding/binary"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport/gvisor"
)

const (
	gvSockets = 64 // attacker sockets, each its own source port
	gvPerSock = 4000
	gvSeconds = 2 * time.Second
)

// The addresses transport/gvisor's stacks use inside the datagrams (dialer 10.255.0.1,
// listener 10.255.0.2, port 1): the SYNs look as the listener's stack would expect them.
var (
	gvDialerIP   = [4]byte{10, 255, 0, 1}
	gvListenerIP = [4]byte{10, 255, 0, 2}
)

const gvListenerPort = 1

// checksum is the Internet checksum of b, folded, with sum as a starting value.
func checksum(b []byte, sum uint32) uint16 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// bareSYN appends an IPv4 packet carrying a TCP SYN (20-byte headers, no options) from
// srcPort to the listener's stack.
func bareSYN(b []byte, srcPort uint16, seq uint32) []byte {
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[6] = 0x40 // don't fragment
	ip[8] = 64   // TTL
	ip[9] = 6    // TCP
	copy(ip[12:], gvDialerIP[:])
	copy(ip[16:], gvListenerIP[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], srcPort)
	binary.BigEndian.PutUint16(tcp[2:], gvListenerPort)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = 5 << 4 // data offset
	tcp[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	// The pseudo-header: addresses, protocol, TCP length.
	var sum uint32
	for i := 12; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	sum += 6 + 20
	binary.BigEndian.PutUint16(tcp[16:], checksum(tcp, sum))
	return append(append(b, ip...), tcp...)
}

// gvFlood sends, from gvSockets sockets bound to their own ports, datagrams made by mk (i
// counts the datagrams of one socket), at most gvPerSock each and for at most gvSeconds, and
// returns the bytes sent and the bytes that came back to any of the sockets.
func gvFlood(addr string, mk func(i int, port uint16) []byte) (sent, back int64, n int64, err error) {
	to, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return 0, 0, 0, err
	}
	var socks []*net.UDPConn
	defer func() {
		for _, s := range socks {
			s.Close()
		}
	}()
	for range gvSockets {
		s, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return 0, 0, 0, err
		}
		socks = append(socks, s)
	}
	var bSent, bBack, count atomic.Int64
	var readers, senders sync.WaitGroup
	end := time.Now().Add(gvSeconds)
	for _, s := range socks {
		readers.Go(func() {
			b := make([]byte, 65536)
			for {
				n, err := s.Read(b)
				bBack.Add(int64(n))
				if err != nil {
					return
				}
			}
		})
		port := uint16(s.LocalAddr().(*net.UDPAddr).Port)
		senders.Go(func() {
			for i := 0; i < gvPerSock && time.Now().Before(end); i++ {
				d := mk(i, port)
				if n, err := s.WriteToUDP(d, to); err == nil {
					bSent.Add(int64(n))
					count.Add(1)
				}
			}
		})
	}
	senders.Wait()
	time.Sleep(300 * time.Millisecond) // answers still on their way
	for _, s := range socks {
		s.Close()
	}
	readers.Wait()
	socks = nil
	return bSent.Load(), bBack.Load(), count.Load(), nil
}

// attackGVisor floods a transport/gvisor source of a rendr listener with datagrams from 64
// source ports, first bare IPv4 TCP SYNs, then hellos and SYNs with forged tokens, while a
// legitimate rendr client dials over gvisor and writes 1 MiB; it counts every byte that
// comes back to the attacker's sockets.
func attackGVisor(c *config) []result {
	fail := func(err error) []result { return []result{failure("attack", fmt.Errorf("gvisor: %w", err))} }
	k, err := newBenchKeys()
	if err != nil {
		return fail(err)
	}
	src, err := gvisor.Listen("127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	gl := src
	addr := src.Addr().String()
	al, err := newAttackListener(k, rendr.ListenConfig{}, src)
	if err != nil {
		return fail(err)
	}
	defer al.close()
	dial := gvisor.Dialer(addr)
	base := legitDials(k, dial, 3, 0, 10*time.Second)

	kinds := []struct {
		metric, what string
		mk           func(i int, port uint16) []byte
	}{
		{"gvisor_bare_syn_reflection", "bare IPv4+TCP SYNs (40 bytes, 10.255.0.1:port to 10.255.0.2:1, valid checksums), the form the listener's stack takes once a source is proven",
			func(i int, port uint16) []byte { return bareSYN(nil, port, uint32(i)*7919) }},
		{"gvisor_forged_reflection", "in turn: address-check hellos (0xf1, 64 bytes: each gets a 29-byte cookie) and SYNs behind a forged token (0xf3, 20 random bytes, a 40-byte SYN)",
			func(i int, port uint16) []byte {
				if i%2 == 0 {
					b := make([]byte, 64)
					b[0] = 0xf1
					binary.BigEndian.PutUint64(b[1:], mrand.Uint64())
					return b
				}
				b := make([]byte, 21, 61)
				b[0] = 0xf3
				for j := 1; j < 21; j += 4 {
					binary.BigEndian.PutUint32(b[j:], mrand.Uint32())
				}
				return bareSYN(b, port, uint32(i))
			}},
	}
	var out []result
	for _, kd := range kinds {
		st0 := gl.Stats()
		var under dialSample
		var dw sync.WaitGroup
		dw.Go(func() {
			time.Sleep(200 * time.Millisecond)
			under = legitDials(k, dial, 3, 300*time.Millisecond, 10*time.Second)
		})
		sent, back, n, err := gvFlood(addr, kd.mk)
		dw.Wait()
		if err != nil {
			return fail(err)
		}
		st1 := gl.Stats()
		// Most datagrams of a flood die in the listener's full socket buffer; the ratio that
		// matters is against what the listener read: every datagram it took is counted once
		// by one of its counters.
		read := int64(0)
		fa, fb := gvisorFields(st0), gvisorFields(st1)
		for i := range fb {
			if fb[i].name != "Peers" {
				read += fb[i].v - fa[i].v
			}
		}
		readBytes := float64(read) * float64(sent) / math.Max(float64(n), 1)
		ratio := float64(back) / math.Max(readBytes, 1)
		c.logf("attack: %s: %d datagrams, %d bytes sent, %d read by the listener, %d back (%.4f); legitimate dials %d/3 (p99 %.1f ms, unloaded %.1f ms)",
			kd.metric, n, sent, read, back, ratio, len(under.times), percentile(under.times, 0.99), percentile(base.times, 0.99))
		nice := "unknown"
		if lo, hi, err := threadNice(0); err == nil {
			nice = fmt.Sprintf("nice %d to %d", lo, hi)
			if lo == hi {
				nice = fmt.Sprintf("nice %d", lo)
			}
		}
		r := result{Scenario: "attack", Metric: kd.metric, Unit: "bytes back / bytes read", Runs: 1,
			Value: ptr(round(ratio)), Target: ptr("value <= 1"),
			Note: fmt.Sprintf("%s; %d datagrams from %d sockets on 127.0.0.1 (each its own port) in at most %v, %d bytes sent, of which the listener read about %.0f (%d datagrams, the rest dropped by its full socket buffer); %d bytes received back by those sockets (%.4f of the bytes sent); gvisor listener stats: %s; legitimate rendr dials over gvisor during the flood: %d of 3 (%s), slowest %.1f ms (unloaded %.1f ms); the flood runs in the listener's process, not lowered (%s): it counts bytes only",
				kd.what, n, gvSockets, gvSeconds, sent, readBytes, read, back, float64(back)/math.Max(float64(sent), 1), statsDelta(gvisorFields(st0), gvisorFields(st1)),
				len(under.times), errNote(under), percentile(under.times, 1), percentile(base.times, 1), nice)}
		r.Pass = ptr(ratio <= 1)
		out = append(out, r)
	}
	return out
}

func gvisorFields(s gvisor.ListenerStats) []statField {
	return []statField{
		{"Hellos", int64(s.Hellos), false}, {"Short", int64(s.Short), false}, {"Strays", int64(s.Strays), false},
		{"Expired", int64(s.Expired), false}, {"BadTokens", int64(s.BadTokens), false}, {"BadSYNs", int64(s.BadSYNs), false},
		{"Started", int64(s.Started), false}, {"Evicted", int64(s.Evicted), false}, {"Refused", int64(s.Refused), false},
		{"Peers", int64(s.Peers), false},
	}
}
