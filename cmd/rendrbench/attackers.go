package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/rendr-go/rendr/internal/handshake"
)

// The attack scenario's floods run in a process of their own, the rendrbench binary started
// again with -attacker ROLE, at the lowest CPU priority (atLowestPriority), so that the CPU they burn
// is not counted as the listener's and takes as little as may be from it. The
// child sends from attackSource (another loopback address, so that the listener's rate per
// source tells it apart from the legitimate client on 127.0.0.1) to -attack-addr, for at most
// -attack-seconds and -attack-count messages or until its stdin ends, on one core, and prints
// one JSON object with what it sent and what came back.
const attackSource = "127.0.0.2"

// attackerArgs are the hidden flags of an attacker process.
type attackerArgs struct {
	role    string
	addr    string  // the target, ip:port on loopback
	key     string  // the listener's public key, base64
	msg     string  // hsflood-replay: the recorded first message, hex
	seconds float64 // at most this long
	count   int     // at most this many messages (connections, datagrams)
	// stop is closed when the attacker's stdin ends: the parent has measured what it came
	// for, and the flood stops before its bounds.
	stop <-chan struct{}
}

// stopped reports whether the parent asked the flood to stop.
func (a attackerArgs) stopped() bool {
	select {
	case <-a.stop:
		return true
	default:
		return false
	}
}

// attackerReport is what an attacker process prints when it is done.
type attackerReport struct {
	Sent      int64   `json:"sent"`       // messages sent: connections written to, datagrams
	BytesSent int64   `json:"bytes_sent"` // payload bytes written
	BytesBack int64   `json:"bytes_back"` // bytes the attacker's sockets received
	Answers   int64   `json:"answers"`    // connections that got any answer (hsflood)
	Completed int64   `json:"completed"`  // hsflood-full: handshakes that got message 2
	Errors    int64   `json:"errors"`     // dials or writes that failed
	Seconds   float64 `json:"seconds"`    // how long it sent
	CPU       float64 `json:"cpu_s"`      // the attacker's own CPU seconds
	// The lowest and highest nice value among its threads when it was done (attackerNice,
	// set by the parent at its start).
	NiceLo int `json:"nice_lo"`
	NiceHi int `json:"nice_hi"`
}

// nicedEnv marks a process that atLowestPriority has started again.
const nicedEnv = "RENDRBENCH_ATTACKER_NICED"

// atLowestPriority makes the calling process run at attackerNice in every thread, or ends it.
// Linux keeps a nice value per thread, and setpriority(PRIO_PROCESS, 0) sets the calling
// thread's only: the threads the Go runtime started before main would keep theirs. A new
// thread takes the value of the thread that made it, and exec keeps the calling thread's. So
// the process lowers one thread, locked to this goroutine, and executes itself again from it:
// the new image starts from that one thread, and every thread its runtime makes descends from
// it. The second time through, every thread is at attackerNice and it returns.
func atLowestPriority() {
	die := func(err error) {
		fmt.Fprintln(os.Stderr, "rendrbench: attacker priority:", err)
		os.Exit(1)
	}
	lo, _, err := threadNice(0)
	if err != nil {
		die(err)
	}
	if lo >= attackerNice {
		return
	}
	if os.Getenv(nicedEnv) != "" {
		die(fmt.Errorf("started again at nice %d, yet a thread is at nice %d", attackerNice, lo))
	}
	runtime.LockOSThread()
	if err := setNice(attackerNice); err != nil {
		die(err)
	}
	exe, err := os.Executable()
	if err != nil {
		die(err)
	}
	die(syscall.Exec(exe, os.Args, append(os.Environ(), nicedEnv+"=1")))
}

// runAttacker is main for an attacker process.
func runAttacker(a attackerArgs) {
	atLowestPriority()
	// One core: the brief of each flood is "as fast as one core sends".
	runtime.GOMAXPROCS(1)
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	a.stop = stop
	var rep attackerReport
	var err error
	start, c0 := time.Now(), cpuTime()
	switch a.role {
	case "udpflood":
		rep, err = udpFlood(a)
	case "hsflood-random", "hsflood-replay", "hsflood-full":
		rep, err = hsFlood(a)
	default:
		err = fmt.Errorf("unknown role %q", a.role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rendrbench: attacker:", err)
		os.Exit(1)
	}
	rep.Seconds = time.Since(start).Seconds()
	rep.CPU = (cpuTime() - c0).Seconds()
	if rep.NiceLo, rep.NiceHi, err = threadNice(0); err != nil {
		fmt.Fprintln(os.Stderr, "rendrbench: attacker:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		os.Exit(1)
	}
}

func (a attackerArgs) listenerKey() ([handshake.KeySize]byte, error) {
	var k [handshake.KeySize]byte
	b, err := base64.StdEncoding.DecodeString(a.key)
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("bad -attack-key %q", a.key)
	}
	copy(k[:], b)
	return k, nil
}

func (a attackerArgs) deadline() time.Time {
	return time.Now().Add(time.Duration(a.seconds * float64(time.Second)))
}

// captureConn records what handshake.Initiate writes and fails its read: the way to get a
// first message (with its valid mac1) without a responder.
type captureConn struct{ out []byte }

func (c *captureConn) Write(b []byte) (int, error)      { c.out = append(c.out, b...); return len(b), nil }
func (c *captureConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)} }
func (c *captureConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// firstMessage is the preface, length, Noise message 1 and MACs that key would send to the
// listener peer for a NEW session, as handshake.Initiate writes them.
func firstMessage(key handshake.Keypair, peer [handshake.KeySize]byte, packets bool) ([]byte, error) {
	h := handshake.Hello{Time: uint64(time.Now().UnixNano()), Mode: handshake.ModeNew, Name: "attack"}
	rand.Read(h.Instance[:])
	rand.Read(h.Session[:])
	if packets {
		h.Flags |= handshake.FlagPackets
	}
	var c captureConn
	if _, err := handshake.Initiate(context.Background(), &c, key, peer, h, nil); err == nil {
		return nil, errors.New("capture: the handshake completed without a responder")
	}
	if len(c.out) == 0 {
		return nil, errors.New("capture: nothing written")
	}
	return c.out, nil
}

// randomFirstMessages makes n first messages from n fresh random static keys.
func randomFirstMessages(peer [handshake.KeySize]byte, n int, packets bool) ([][]byte, error) {
	out := make([][]byte, 0, n)
	for range n {
		k, err := handshake.NewKeypair()
		if err != nil {
			return nil, err
		}
		m, err := firstMessage(k, peer, packets)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// hsFlood opens TCP connections to the listener's source as fast as one core does, from
// hsWorkers connections at a time, and on each writes one first message:
//
//   - hsflood-random: messages from random static keys, each with a valid mac1;
//   - hsflood-replay: the one recorded valid initiation of an allowed key, again and again;
//   - hsflood-full: a whole handshake.Initiate from a random key on each connection, which
//     follows cookie replies with mac2 as a real initiator does (and pays its own DH for it).
//
// With random keys and replays the attacker writes its message and closes the connection
// (FIN, after the message: the listener reads it all) without reading any answer, which would
// only slow it down; ports in TIME_WAIT are reused on loopback (net.ipv4.tcp_tw_reuse, 2 by
// default). hsflood-full reads its answers, as handshake.Initiate does.
func hsFlood(a attackerArgs) (attackerReport, error) {
	var rep attackerReport
	peer, err := a.listenerKey()
	if err != nil {
		return rep, err
	}
	var msgs [][]byte
	var keys []handshake.Keypair
	switch a.role {
	case "hsflood-random":
		if msgs, err = randomFirstMessages(peer, 256, false); err != nil {
			return rep, err
		}
	case "hsflood-replay":
		m, err := hex.DecodeString(a.msg)
		if err != nil || len(m) == 0 {
			return rep, fmt.Errorf("bad -attack-msg")
		}
		msgs = [][]byte{m}
	case "hsflood-full":
		for range 64 {
			k, err := handshake.NewKeypair()
			if err != nil {
				return rep, err
			}
			keys = append(keys, k)
		}
	}
	// Many connections at once, so that the attacker's core bounds the rate, not round trips.
	const hsWorkers = 64
	end := a.deadline()
	var next, sent, bytesSent, back, answers, completed, errs atomic.Int64
	jar := new(handshake.CookieJar)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(attackSource)}, Timeout: time.Second}
	var wg sync.WaitGroup
	for range hsWorkers {
		wg.Go(func() {
			for time.Now().Before(end) && !a.stopped() {
				i := next.Add(1)
				if i > int64(a.count) {
					return
				}
				c, err := d.Dial("tcp", a.addr)
				if err != nil {
					errs.Add(1)
					continue
				}
				sent.Add(1)
				if keys != nil {
					h := handshake.Hello{Time: uint64(time.Now().UnixNano()), Mode: handshake.ModeNew, Name: "attack"}
					binary.BigEndian.PutUint64(h.Session[:], uint64(i))
					ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
					cc := &countConn{Conn: c}
					res, _ := handshake.Initiate(ctx, cc, keys[i%int64(len(keys))], peer, h, jar)
					cancel()
					back.Add(cc.back)
					bytesSent.Add(cc.sent)
					if cc.back > 0 {
						answers.Add(1)
					}
					if res != nil {
						completed.Add(1)
					}
					c.Close()
					continue
				}
				m := msgs[i%int64(len(msgs))]
				if _, err := c.Write(m); err != nil {
					errs.Add(1)
				} else {
					bytesSent.Add(int64(len(m)))
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	rep.Sent, rep.BytesSent, rep.BytesBack = sent.Load(), bytesSent.Load(), back.Load()
	rep.Answers, rep.Completed, rep.Errors = answers.Load(), completed.Load(), errs.Load()
	return rep, nil
}

// countConn counts the bytes one connection moves.
type countConn struct {
	net.Conn
	back, sent int64
}

func (c *countConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.back += int64(n)
	return n, err
}

func (c *countConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.sent += int64(n)
	return n, err
}

// udpFlood sends udpflow hellos (flags 0x01, a random 8-byte connection id, a 2-byte length,
// a payload, zero padding to 1200 bytes) from one UDP socket, in batches of 64 with
// sendmmsg, as fast as one core goes. Each payload is a rendr first message from a random
// static key with a valid mac1, so that the listener gets as far into the handshake as a
// stranger can make it. A reader counts every byte that comes back.
func udpFlood(a attackerArgs) (attackerReport, error) {
	var rep attackerReport
	peer, err := a.listenerKey()
	if err != nil {
		return rep, err
	}
	msgs, err := randomFirstMessages(peer, 64, true)
	if err != nil {
		return rep, err
	}
	to, err := netip.ParseAddrPort(a.addr)
	if err != nil {
		return rep, err
	}
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(attackSource)})
	if err != nil {
		return rep, err
	}
	defer uc.Close()
	var back atomic.Int64
	rdone := make(chan struct{})
	go func() {
		defer close(rdone)
		b := make([]byte, 65536)
		for {
			n, err := uc.Read(b)
			back.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	const batch = 64
	const size = 1200
	pc := ipv4.NewPacketConn(uc)
	ms := make([]ipv4.Message, batch)
	dst := net.UDPAddrFromAddrPort(to)
	for i := range ms {
		b := make([]byte, size)
		b[0] = 0x01
		m := msgs[i%len(msgs)]
		binary.BigEndian.PutUint16(b[9:], uint16(len(m)))
		copy(b[11:], m)
		ms[i] = ipv4.Message{Buffers: [][]byte{b}, Addr: dst}
	}
	rng := mrand.NewPCG(mrand.Uint64(), mrand.Uint64())
	end := a.deadline()
	for rep.Sent < int64(a.count) && time.Now().Before(end) && !a.stopped() {
		for i := range ms {
			binary.LittleEndian.PutUint64(ms[i].Buffers[0][1:9], rng.Uint64())
		}
		n, err := pc.WriteBatch(ms, 0)
		if err != nil {
			// A full socket buffer (ENOBUFS) on loopback: the listener is behind. Count and
			// go on; the count and the time still bound the flood.
			rep.Errors++
			continue
		}
		rep.Sent += int64(n)
		rep.BytesSent += int64(n * size)
	}
	// Answers to the last hellos (cookie replies, handshake answers) may still be on their way.
	time.Sleep(300 * time.Millisecond)
	uc.Close()
	<-rdone
	rep.BytesBack = back.Load()
	return rep, nil
}
