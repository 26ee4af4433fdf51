//go:build linux

package main

// End-to-end traffic through tunvpn: TCP over IPv6, DNS under a full tunnel, and a
// half-closed connection. The iperf3 helpers are in tunvpn_iperf_netns_test.go.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/rendr-go/rendr/internal/netlab"
)

// TestNetnsTunvpnIPv6TCP: TCP over IPv6 through the tunnel (the uplinks are IPv4): curl -6
// downloads 8 MiB from a web server at fd99::1 in the far network, SHA-256 equal, and
// "iperf3 -6" for 2 s ends with exit status 0 and bytes at the receiver.
func TestNetnsTunvpnIPv6TCP(t *testing.T) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 is not installed")
	}
	const size = 8 << 20
	v := trafficUp(t, false)
	web, err := v.lab.Listen(netlab.Server, "tcp", "["+farAddr6+"]:8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: payload{size}}
	go srv.Serve(web)
	t.Cleanup(func() { srv.Close() })
	out, err := exec.Command("ip", "netns", "exec", v.lab.ClientNS(), "curl", "-6", "-g", "-sS", "--max-time", "60",
		"http://["+farAddr6+"]:8080/").Output()
	if err != nil {
		t.Fatalf("curl -6 through the tunnel: %v", err)
	}
	want := sha256.New()
	payload{size}.ServeHTTP(hashWriter{want}, nil)
	if len(out) != size || sha256.Sum256(out) != [sha256.Size]byte(want.Sum(nil)) {
		t.Fatalf("curl -6 read %d bytes, want %d, or they differ", len(out), size)
	}

	trafficIperfServer(t, v, farAddr6, 5201)
	// Capped, as in TestNetnsTunvpnIperfBlackhole: the CPU is shared with the other tests.
	rep := trafficIperfClient(t, v, "-6", "-c", farAddr6, "-p", "5201", "-t", "2", "-b", "100M").wait(t, time.Minute)
	t.Logf("iperf3 -6: %.1f MB received of %.1f MB sent", float64(rep.End.SumReceived.Bytes)/1e6, float64(rep.End.SumSent.Bytes)/1e6)
	if rep.End.SumReceived.Bytes <= 0 || rep.End.SumReceived.Bytes > rep.End.SumSent.Bytes {
		t.Errorf("iperf3 -6: %d bytes received of %d sent", rep.End.SumReceived.Bytes, rep.End.SumSent.Bytes)
	}
	r, err := readStatus(v.clientSock)
	if err != nil || r.Ingress == nil || r.Ingress.TCPOpened < 3 { // curl, iperf3's control and data
		t.Errorf("the client's ingress: %+v (%v)", r.Ingress, err)
	}
}

// trafficResolverAddr is the DNS server of the DNS test: in the far network, on the server
// namespace's loopback, inside the server's allow and the client's full tunnel.
const trafficResolverAddr = "10.99.0.53"

// trafficDNSAnswer is the one name the test's DNS server knows, and its address.
const trafficDNSName = "tunvpn-test.example."

var trafficDNSAnswer = [4]byte{192, 0, 2, 53}

// trafficQuery is a question the test's DNS server was asked.
type trafficQuery struct {
	from netip.Addr
	q    dnsmessage.Question
}

func (q trafficQuery) String() string {
	return fmt.Sprintf("%v %v from %v", q.q.Type, q.q.Name, q.from)
}

// trafficDNSServer answers on pc: trafficDNSAnswer for an A question of trafficDNSName, an
// empty answer for its other types, NXDOMAIN for every other name. It keeps the questions.
type trafficDNSServer struct {
	pc      net.PacketConn
	mu      sync.Mutex
	queries []trafficQuery
	done    chan struct{}
}

func (s *trafficDNSServer) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		addr, _ := netip.AddrFromSlice(from.(*net.UDPAddr).IP)
		s.mu.Lock()
		s.queries = append(s.queries, trafficQuery{addr.Unmap(), q})
		s.mu.Unlock()
		rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
		if !strings.EqualFold(q.Name.String(), trafficDNSName) {
			rh.RCode = dnsmessage.RCodeNameError
		}
		b := dnsmessage.NewBuilder(nil, rh)
		b.StartQuestions()
		b.Question(q)
		b.StartAnswers()
		if rh.RCode == dnsmessage.RCodeSuccess && q.Type == dnsmessage.TypeA {
			b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60},
				dnsmessage.AResource{A: trafficDNSAnswer})
		}
		if msg, err := b.Finish(); err == nil {
			s.pc.WriteTo(msg, from)
		}
	}
}

func (s *trafficDNSServer) asked() []trafficQuery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]trafficQuery(nil), s.queries...)
}

// trafficResolver points the system resolver of the lab's client namespace at addr, for the
// programs run there by "ip netns exec", which bind-mounts each file of /etc/netns/<ns>/ over
// /etc's: resolv.conf names addr, and nsswitch.conf asks DNS alone for host names (not the
// host's own files, nor a local resolving daemon outside the lab). Both go at the end of
// the test, and /etc/netns too if this made it.
func trafficResolver(t *testing.T, lab *netlab.Lab, addr string) {
	t.Helper()
	// nscd would answer in the host's namespace, from its own resolver, around the lab.
	if _, err := os.Stat("/var/run/nscd/socket"); err == nil {
		t.Skip("nscd runs: lookups would go through it, outside the lab")
	}
	const top = "/etc/netns"
	_, err := os.Stat(top)
	madeTop := errors.Is(err, os.ErrNotExist)
	dir := filepath.Join(top, lab.ClientNS())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(dir)
		if madeTop {
			os.Remove(top) // only if empty: another lab may have put its own there since
		}
	})
	// Short timeouts: a query the tunnel loses costs 2 s, not glibc's 5, before its retry.
	for name, body := range map[string]string{
		"resolv.conf":   "nameserver " + addr + "\noptions timeout:2 attempts:2\n",
		"nsswitch.conf": "hosts: dns\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// trafficCounter reads the packets of a named nftables counter in the namespace of side.
func trafficCounter(t *testing.T, lab *netlab.Lab, side netlab.Side, table, name string) int {
	t.Helper()
	out, err := lab.Exec(side, "nft", "list", "counter", "inet", table, name)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`packets (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no packet count in:\n%s", out)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestNetnsTunvpnDNSFullTunnel: under a full tunnel, the client's system resolver (glibc,
// through getent) asks a DNS server in the far network and gets its answer. The query went
// through the tunnel: it left by the TUN and by no uplink (nftables counters on the client's
// output; the uplinks could reach the server namespace directly, so only the counters tell),
// the client's ingress opened a UDP flow for it, and the DNS server saw it come from the
// server's side, not from a client's uplink address.
func TestNetnsTunvpnDNSFullTunnel(t *testing.T) {
	if _, err := exec.LookPath("getent"); err != nil {
		t.Skip("getent is not installed")
	}
	v := trafficUp(t, true)
	if _, err := v.lab.Exec(netlab.Server, "ip", "addr", "add", trafficResolverAddr+"/32", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	pc, err := v.lab.ListenPacket(netlab.Server, "udp", trafficResolverAddr+":53")
	if err != nil {
		t.Fatal(err)
	}
	dns := &trafficDNSServer{pc: pc, done: make(chan struct{})}
	go dns.serve()
	t.Cleanup(func() { pc.Close(); <-dns.done })

	if err := v.lab.NFT(netlab.Client, fmt.Sprintf(`table inet trafficdns {
	counter tun {}
	counter uplinks {}
	chain out {
		type filter hook output priority 0; policy accept;
		oifname "tunvpn0" udp dport 53 counter name "tun"
		oifname { %q, %q } udp dport 53 counter name "uplinks"
	}
}
`, v.lab.ClientIface(0), v.lab.ClientIface(1))); err != nil {
		t.Fatal(err)
	}
	// The server namespace drops what the uplinks bring for the DNS server: the client's
	// default routes would otherwise reach it around the tunnel, and the answer would prove
	// nothing. The tunnel's own query reaches it from the server's process, by lo.
	if err := v.lab.NFT(netlab.Server, fmt.Sprintf(`table inet trafficdns {
	counter around {}
	chain in {
		type filter hook input priority 0; policy accept;
		iifname { %q, %q } ip daddr %s counter name "around" drop
	}
}
`, v.lab.ServerIface(0), v.lab.ServerIface(1), trafficResolverAddr)); err != nil {
		t.Fatal(err)
	}
	trafficResolver(t, v.lab, trafficResolverAddr)
	before, err := readStatus(v.clientSock)
	if err != nil || before.Ingress == nil {
		t.Fatalf("the client's status: %v", err)
	}

	name := strings.TrimSuffix(trafficDNSName, ".")
	out, err := v.lab.Exec(netlab.Client, "getent", "ahostsv4", name)
	want := netip.AddrFrom4(trafficDNSAnswer).String()
	if err != nil || !strings.Contains(string(out), want) {
		t.Fatalf("getent ahostsv4 %s in the client namespace: %v\n%s\nthe DNS server was asked %v", name, err, out, dns.asked())
	}
	asked := dns.asked()
	t.Logf("getent: %s; the DNS server was asked %d question(s): %v", strings.TrimSpace(string(out)), len(asked), asked)
	if len(asked) == 0 {
		t.Errorf("the answer came, but not from the test's DNS server")
	}
	for _, q := range asked {
		for i := range v.lab.Paths() {
			if q.from == v.lab.ClientAddr(i) {
				t.Errorf("a query came straight from uplink %d's address %v, around the tunnel", i, q.from)
			}
		}
	}
	if n := trafficCounter(t, v.lab, netlab.Client, "trafficdns", "tun"); n < 1 {
		t.Errorf("no DNS query left by the TUN")
	}
	if n := trafficCounter(t, v.lab, netlab.Client, "trafficdns", "uplinks"); n != 0 {
		t.Errorf("%d DNS queries left by the uplinks, around the tunnel", n)
	}
	if n := trafficCounter(t, v.lab, netlab.Server, "trafficdns", "around"); n != 0 {
		t.Errorf("%d packets for the DNS server came by the uplinks, around the tunnel", n)
	}
	after, err := readStatus(v.clientSock)
	if err != nil || after.Ingress == nil || after.Ingress.UDPOpened <= before.Ingress.UDPOpened {
		t.Errorf("the client's ingress opened no UDP flow for the query: before %+v, after %+v (%v)", before.Ingress, after.Ingress, err)
	}
}

// TestNetnsTunvpnHalfClose: a program on the client sends its request through the tunnel and
// shuts its sending side (CloseWrite). The far application reads the request to its EOF, and
// only then answers with 1 MiB, which the client reads whole, SHA-256 equal, to the far side's
// own EOF: a half-closed connection stays open the other way through tunvpn end to end (the
// tun package's test covers the ingress alone; this one adds the server's egress and both
// processes).
func TestNetnsTunvpnHalfClose(t *testing.T) {
	const (
		reqSize   = 64 << 10
		replySize = 1 << 20
	)
	v := trafficUp(t, false)
	gen := func(n int, seed uint64) []byte {
		b := make([]byte, n)
		fillRand(b, rand.New(rand.NewPCG(seed, seed)))
		return b
	}
	request, reply := gen(reqSize, 11), gen(replySize, 12)

	ln, err := v.lab.Listen(netlab.Server, "tcp", farAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	type served struct {
		req []byte
		err error
	}
	far := make(chan served, 1)
	var farConn net.Conn
	accepted := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			far <- served{err: err}
			return
		}
		farConn = c
		close(accepted)
		c.SetDeadline(time.Now().Add(time.Minute))
		req, err := io.ReadAll(c) // to the client's FIN
		if err == nil {
			_, err = c.Write(reply)
		}
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		far <- served{req, err}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-accepted
		if farConn != nil {
			farConn.Close()
		}
		far <- <-far
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := v.lab.Dialer(netlab.Client, nil)(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("connect through the tunnel: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := c.Write(request); err != nil {
		t.Fatalf("writing the request: %v", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the reply after the half-close, %d bytes in: %v", len(got), err)
	}
	s := <-far
	far <- s
	if s.err != nil {
		t.Fatalf("the far side: %v", s.err)
	}
	if !bytes.Equal(s.req, request) {
		t.Errorf("the far side read %d bytes, want the %d of the request", len(s.req), len(request))
	}
	if len(got) != replySize || sha256.Sum256(got) != sha256.Sum256(reply) {
		t.Errorf("the client read %d bytes of reply, want %d, or they differ", len(got), replySize)
	}
}
