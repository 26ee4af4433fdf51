//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/internal/testkit"
)

// The tests of the client following its uplinks and keeping its rules: each changes the client
// namespace under a running tunvpn, with a stream through the tunnel that must not notice.

// watchBufferEnv sets the client's notification buffer (watchBuffer) in the tunvpn processes
// this test binary runs, which inherit the test's environment: a tiny one makes overflows
// certain.
const watchBufferEnv = "TUNVPN_TEST_WATCH_BUFFER"

func init() {
	if v := os.Getenv(watchBufferEnv); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			watchBuffer = n
		}
	}
}

// echoPort is where echoServer listens, in the far network behind the server.
const echoPort = "7007"

// echoServer echoes every connection to farAddr:echoPort in the server namespace until the
// test ends.
func echoServer(t *testing.T, lab *netlab.Lab) {
	ln, err := lab.Listen(netlab.Server, "tcp", farAddr+":"+echoPort)
	if err != nil {
		t.Fatal(err)
	}
	trafficEchoServer(t, ln)
}

// echoStream is a connection from the client namespace through the tunnel to echoServer,
// sending a known sequence of bytes one chunk at a time and checking each chunk that comes
// back, until stopped.
type echoStream struct {
	conn     net.Conn
	verified atomic.Int64 // bytes back and equal to what was sent
	stopping chan struct{}
	done     chan error
}

const echoChunk = 4 << 10

// echoByte is byte n of the stream: a sequence that shows a byte lost, doubled or reordered.
func echoByte(n int64) byte { return byte(n ^ n>>8 ^ (n>>16)*7) }

func startEcho(t *testing.T, lab *netlab.Lab) *echoStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := lab.Dialer(netlab.Client, nil)(ctx, "tcp", farAddr+":"+echoPort)
	if err != nil {
		t.Fatalf("dialing the echo server through the tunnel: %v", err)
	}
	e := &echoStream{conn: conn, stopping: make(chan struct{}), done: make(chan error, 1)}
	go func() { e.done <- e.run() }()
	t.Cleanup(func() {
		select {
		case <-e.stopping:
		default:
			close(e.stopping)
		}
		conn.Close()
		<-e.done
		e.done <- nil
	})
	return e
}

// run sends a chunk, reads it back and checks it, round after round: the stream is never
// idle, and never has more than a chunk in flight.
func (e *echoStream) run() error {
	out, in := make([]byte, echoChunk), make([]byte, echoChunk)
	var off int64
	for {
		select {
		case <-e.stopping:
			return nil
		default:
		}
		for i := range out {
			out[i] = echoByte(off + int64(i))
		}
		// A guard against a hang only: the test's own waits fail long before it.
		e.conn.SetDeadline(time.Now().Add(60 * time.Second))
		if _, err := e.conn.Write(out); err != nil {
			return fmt.Errorf("echo: writing at %d: %w", off, err)
		}
		if _, err := io.ReadFull(e.conn, in); err != nil {
			return fmt.Errorf("echo: reading at %d: %w", off, err)
		}
		for i := range in {
			if in[i] != echoByte(off+int64(i)) {
				return fmt.Errorf("echo: byte %d came back %#x, sent %#x", off+int64(i), in[i], echoByte(off+int64(i)))
			}
		}
		off += echoChunk
		e.verified.Store(off)
	}
}

// flowing waits until n more bytes have come back, and fails the test if the stream failed
// or stalled.
func (e *echoStream) flowing(t *testing.T, n int64, what string) {
	t.Helper()
	from := e.verified.Load()
	var err error
	if !testkit.Wait(30*time.Second, func() bool {
		select {
		case err = <-e.done:
			e.done <- err
			return true
		default:
		}
		return e.verified.Load() >= from+n
	}) || err != nil {
		t.Fatalf("%s: the echo stream stopped at %d bytes: %v", what, e.verified.Load(), err)
	}
}

// stop ends the stream and fails the test if it failed.
func (e *echoStream) stop(t *testing.T) {
	t.Helper()
	close(e.stopping)
	err := <-e.done
	e.done <- nil
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("echo: %d bytes through the tunnel, each back as sent", e.verified.Load())
}

// clientView is what the client's status says of its paths and uplinks out of use.
type clientView struct {
	paths map[string]pathView
	out   map[string]uplinkOut
	text  string // the status as tunvpn status prints it
}

func viewClient(sock string) (clientView, bool) {
	r, err := readStatus(sock)
	if err != nil || len(r.Sessions) != 1 {
		return clientView{}, false
	}
	v := clientView{paths: map[string]pathView{}, out: map[string]uplinkOut{}}
	for _, p := range r.Sessions[0].Paths {
		v.paths[p.Name] = p
	}
	for _, o := range r.Out {
		v.out[o.Name] = o
	}
	var sb strings.Builder
	printStatus(&sb, r)
	v.text = sb.String()
	return v, true
}

// waitClient waits until the client's status satisfies cond, and fails the test with the
// last status otherwise.
func waitClient(t *testing.T, sock, what string, cond func(v clientView) bool) clientView {
	t.Helper()
	var last clientView
	if !testkit.Wait(30*time.Second, func() bool {
		v, ok := viewClient(sock)
		if ok {
			last = v
		}
		return ok && cond(v)
	}) {
		t.Fatalf("%s: not seen; the last status:\n%s", what, last.text)
	}
	return last
}

func bothUp(v clientView) bool {
	return len(v.paths) == 2 && v.paths["up0"].State == "up" && v.paths["up1"].State == "up"
}

// startPair starts the server and the client and waits for both uplinks to be up.
func startPair(t *testing.T, v *tunvpnLab, clientCfg string) (server, client *sideProc) {
	t.Helper()
	server = start(t, v.lab.ServerNS(), "server", "-c", v.serverCfg)
	client = start(t, v.lab.ClientNS(), "client", "-c", clientCfg)
	waitClient(t, v.clientSock, "both uplinks up", bothUp)
	return server, client
}

// stopAndRead stops p and returns what it wrote.
func stopAndRead(t *testing.T, p *sideProc) string {
	t.Helper()
	p.stop(t)
	<-p.scanned
	return p.out.String()
}

// withoutSource writes a copy of the lab's client file in which the uplinks named have no
// source address: only their interface binds them, and they dial from whatever address it
// has.
func withoutSource(t *testing.T, v *tunvpnLab, names ...string) string {
	t.Helper()
	b, err := os.ReadFile(v.clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(b), "[[uplink]]")
	for i := 1; i < len(blocks); i++ {
		for _, n := range names {
			if strings.Contains(blocks[i], fmt.Sprintf("name = %q\n", n)) {
				blocks[i] = regexp.MustCompile(`(?m)^source = .*\n`).ReplaceAllString(blocks[i], "")
			}
		}
	}
	p := filepath.Join(filepath.Dir(v.clientCfg), "client-nosource.toml")
	if err := os.WriteFile(p, []byte(strings.Join(blocks, "[[uplink]]")), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ipClient runs ip in the client namespace.
func ipClient(t *testing.T, lab *netlab.Lab, args ...string) {
	t.Helper()
	if out, err := lab.Exec(netlab.Client, "ip", args...); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// ipBatch runs lines as one ip -batch in the client namespace: one process, so the changes
// follow each other within microseconds, inside one look of the watcher's.
func ipBatch(t *testing.T, lab *netlab.Lab, lines ...string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(f, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ipClient(t, lab, "-batch", f)
}

// remakePath makes path i's veth pair again, as the lab first made it but for the static
// neighbours (ARP finds them): same names, same addresses, both ends up.
func remakePath(t *testing.T, lab *netlab.Lab, i int) {
	t.Helper()
	ipClient(t, lab, "link", "add", lab.ClientIface(i), "type", "veth", "peer", "name", lab.ServerIface(i), "netns", lab.ServerNS())
	for _, c := range [][]string{
		{"addr", "add", lab.ServerAddr(i).String() + "/24", "dev", lab.ServerIface(i)},
		{"link", "set", lab.ServerIface(i), "up"},
	} {
		if out, err := lab.Exec(netlab.Server, "ip", c...); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	ipClient(t, lab, "addr", "add", lab.ClientAddr(i).String()+"/24", "dev", lab.ClientIface(i))
	ipClient(t, lab, "link", "set", lab.ClientIface(i), "up")
}

// TestNetnsTunvpnUplinkInterfaceGone: the interface of the uplink carrying an echo stream is
// deleted. Its path leaves the client's status (and is listed out of use) while the stream
// carries on over the other uplink, every byte back as sent. The interface is made again
// under the same name and addresses: the path is back, and up. Deleted and made again at once,
// the path re-dials on the new interface.
func TestNetnsTunvpnUplinkInterfaceGone(t *testing.T) {
	v := newTunvpnLab(t, 1<<20, false)
	echoServer(t, v.lab)
	server, client := startPair(t, v, v.clientCfg)
	e := startEcho(t, v.lab)
	e.flowing(t, 64<<10, "before the change")

	st := waitClient(t, v.clientSock, "an active uplink", func(v clientView) bool {
		return v.paths["up0"].Active || v.paths["up1"].Active
	})
	i := 0
	if st.paths["up1"].Active {
		i = 1
	}
	name := fmt.Sprintf("up%d", i)
	ipClient(t, v.lab, "link", "del", v.lab.ClientIface(i))
	st = waitClient(t, v.clientSock, name+" out of the status", func(v clientView) bool {
		_, there := v.paths[name]
		return !there && strings.Contains(v.out[name].Why, "is gone")
	})
	t.Logf("%s's interface deleted:\n%s", name, st.text)
	e.flowing(t, 256<<10, "with "+name+"'s interface gone")

	remakePath(t, v.lab, i)
	st = waitClient(t, v.clientSock, name+" back and up", func(v clientView) bool {
		return bothUp(v) && len(v.out) == 0
	})
	t.Logf("%s's interface made again:\n%s", name, st.text)
	e.flowing(t, 256<<10, "with "+name+" back")

	// Deleted and made again in one go, most likely within one look of the watcher's: the
	// carrier bound to the interface that went is replaced all the same.
	before := st.paths[name]
	remake := fmt.Sprintf("ip link del %s && ip link add %s type veth peer name %s netns %s && "+
		"ip -n %s addr add %s/24 dev %s && ip -n %s link set %s up && ip addr add %s/24 dev %s && ip link set %s up",
		v.lab.ClientIface(i), v.lab.ClientIface(i), v.lab.ServerIface(i), v.lab.ServerNS(),
		v.lab.ServerNS(), v.lab.ServerAddr(i), v.lab.ServerIface(i), v.lab.ServerNS(), v.lab.ServerIface(i),
		v.lab.ClientAddr(i), v.lab.ClientIface(i), v.lab.ClientIface(i))
	if out, err := v.lab.Exec(netlab.Client, "sh", "-c", remake); err != nil {
		t.Fatalf("%s: %v: %s", remake, err, out)
	}
	st = waitClient(t, v.clientSock, name+" re-dialed on its new interface", func(v clientView) bool {
		p := v.paths[name]
		return bothUp(v) && p.ID != before.ID
	})
	e.flowing(t, 256<<10, "with "+name+"'s interface made again at once")
	e.stop(t)

	log := stopAndRead(t, client)
	// "is gone", or "is down" if the watcher looked between the link going down and its
	// deletion.
	for _, want := range []string{name + ": interface " + v.lab.ClientIface(i) + " is ", "; path removed", name + ": usable again"} {
		if !strings.Contains(log, want) {
			t.Errorf("the client's log does not say %q", want)
		}
	}
	if strings.Contains(log, "was made again; re-dialing") {
		t.Logf("the interface deleted and made again at once was seen within one look")
	}
	checkClean(t, v.lab)
	server.stop(t)
}

// TestNetnsTunvpnUplinkAddress: addresses change under an echo stream. up0 is bound by its
// interface alone: its address replaced by another (a DHCP renewal), its path re-dials from
// the new one; that address removed and put back at once, it re-dials again; removed until
// the path is down, then put back, the path comes up again. up1 is bound by its
// source address too: that address removed, its path leaves the status; put back, the path
// is back and up. The stream never notices.
func TestNetnsTunvpnUplinkAddress(t *testing.T) {
	v := newTunvpnLab(t, 1<<20, false)
	echoServer(t, v.lab)
	server, client := startPair(t, v, withoutSource(t, v, "up0"))
	e := startEcho(t, v.lab)
	e.flowing(t, 64<<10, "before the change")
	lab := v.lab

	// up0: the address replaced.
	before := waitClient(t, v.clientSock, "up0 up", bothUp).paths["up0"]
	old := lab.ClientAddr(0)
	renewed := netip.AddrFrom4([4]byte{old.As4()[0], old.As4()[1], old.As4()[2], 3})
	ipBatch(t, lab, "addr del "+old.String()+"/24 dev "+lab.ClientIface(0), "addr add "+renewed.String()+"/24 dev "+lab.ClientIface(0))
	st := waitClient(t, v.clientSock, "up0 re-dialed from "+renewed.String(), func(v clientView) bool {
		p := v.paths["up0"]
		return p.ID != before.ID && p.State == "up" && strings.HasPrefix(p.Local, renewed.String()+":")
	})
	t.Logf("up0's address %v replaced by %v:\n%s", old, renewed, st.text)
	e.flowing(t, 64<<10, "after up0's new address")

	// up0: the address removed and put back at once.
	before = st.paths["up0"]
	ipBatch(t, lab, "addr del "+renewed.String()+"/24 dev "+lab.ClientIface(0), "addr add "+renewed.String()+"/24 dev "+lab.ClientIface(0))
	st = waitClient(t, v.clientSock, "up0 re-dialed after its address came back", func(v clientView) bool {
		p := v.paths["up0"]
		return p.ID != before.ID && p.State == "up"
	})
	e.flowing(t, 64<<10, "after up0's address came back")

	// up0: the address removed, and put back once the path is down for it. While up0 has no
	// address it stays in the graph (an interface may get one at any time), its carrier closed.
	ipClient(t, lab, "addr", "del", renewed.String()+"/24", "dev", lab.ClientIface(0))
	waitClient(t, v.clientSock, "up0 down without an address", func(v clientView) bool {
		return v.paths["up0"].State != "up"
	})
	e.flowing(t, 64<<10, "with up0 without an address")
	ipClient(t, lab, "addr", "add", renewed.String()+"/24", "dev", lab.ClientIface(0))
	waitClient(t, v.clientSock, "up0 up again", bothUp)

	// up1: its source address removed, then put back.
	src := lab.ClientAddr(1).String() + "/24"
	ipClient(t, lab, "addr", "del", src, "dev", lab.ClientIface(1))
	st = waitClient(t, v.clientSock, "up1 out of the status", func(v clientView) bool {
		_, there := v.paths["up1"]
		return !there && v.out["up1"].Why != ""
	})
	t.Logf("up1's source address removed:\n%s", st.text)
	e.flowing(t, 64<<10, "with up1's address gone")
	ipClient(t, lab, "addr", "add", src, "dev", lab.ClientIface(1))
	waitClient(t, v.clientSock, "up1 back and up", func(v clientView) bool { return bothUp(v) && len(v.out) == 0 })
	e.flowing(t, 64<<10, "with up1 back")
	e.stop(t)

	log := stopAndRead(t, client)
	for _, want := range []string{
		"up0: its carrier's address " + old.String() + " is gone; re-dialing",
		"up0: its carrier's address " + renewed.String() + " was removed and is back; re-dialing",
		"up0: its carrier's address " + renewed.String() + " is gone; carrier closed",
		"up1: address " + lab.ClientAddr(1).String() + " is not on c1; path removed",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the client's log does not say %q", want)
		}
	}
	server.stop(t)
}

// TestNetnsTunvpnRulesRestored: another program deletes the client's rules and flushes the
// tunnel's table. Both are back within a bounded wait, and a download through the tunnel is
// whole. After SIGTERM nothing of the client's is left: the watcher put nothing back after the
// teardown.
func TestNetnsTunvpnRulesRestored(t *testing.T) {
	const size = 1 << 20
	v := newTunvpnLab(t, size, false)
	server, client := startPair(t, v, v.clientCfg)
	lab := v.lab
	show := func() string {
		var b strings.Builder
		for _, args := range [][]string{{"rule"}, {"-6", "rule"}, {"route", "show", "table", "7264"}, {"-6", "route", "show", "table", "7264"}} {
			out, _ := lab.Exec(netlab.Client, "ip", args...)
			b.Write(out)
		}
		return b.String()
	}
	want := []string{"7264:\tnot from all fwmark 0x7264 lookup 7264", "10.99.0.0/16 dev tunvpn0", "fd99::/16 dev tunvpn0"}
	in := func(s string) int {
		n := 0
		for _, w := range want {
			n += strings.Count(s, w)
		}
		return n
	}
	// Two rules (IPv4 and IPv6) and two routes, each once.
	if got := show(); in(got) != len(want)+1 {
		t.Fatalf("the client's rules and routes are not as expected:\n%s", got)
	}
	ipClient(t, lab, "rule", "del", "priority", "7264")
	ipClient(t, lab, "-6", "rule", "del", "priority", "7264")
	ipClient(t, lab, "route", "flush", "table", "7264")
	ipClient(t, lab, "-6", "route", "flush", "table", "7264")
	if !testkit.Wait(10*time.Second, func() bool { return in(show()) == len(want)+1 }) {
		t.Fatalf("the rules and routes deleted were not put back:\n%s", show())
	}
	out, err := exec.Command("ip", "netns", "exec", lab.ClientNS(), "curl", "-sS", "--max-time", "60", "http://"+farAddr+":8080/").Output()
	if err != nil {
		t.Fatalf("curl after the rules were put back: %v", err)
	}
	if len(out) != size || string(out) != string(payloadBytes(size)) {
		t.Fatalf("curl read %d bytes, want %d, or they differ", len(out), size)
	}
	log := stopAndRead(t, client)
	if n := strings.Count(log, "deleted by someone else; put back"); n != 4 {
		t.Errorf("the client's log tells of %d restores, want 4:\n%s", n, log)
	}
	checkClean(t, lab)
	server.stop(t)
}

// payloadBytes is what the lab's web server sends for size.
func payloadBytes(size int64) []byte {
	var b strings.Builder
	payload{size}.ServeHTTP(hashWriter{&b}, nil)
	return []byte(b.String())
}

// TestNetnsTunvpnWatchOverflow: the client's notification socket is made tiny, and a flood of
// address changes overflows it while a rule is deleted and an uplink's interface taken away.
// The client says it lost notifications, and the full look after puts the rule back and
// takes the uplink out all the same; after SIGTERM nothing of the client's is left.
func TestNetnsTunvpnWatchOverflow(t *testing.T) {
	v := newTunvpnLab(t, 1<<20, false)
	t.Setenv(watchBufferEnv, "1") // the kernel makes it its minimum, a few notifications
	server, client := startPair(t, v, v.clientCfg)
	lab := v.lab
	var batch strings.Builder
	flood := func(from, to int) {
		for i := from; i < to; i++ {
			fmt.Fprintf(&batch, "addr add 10.55.%d.%d/32 dev lo\n", i/250, 1+i%250)
		}
	}
	flood(0, 500)
	batch.WriteString("rule del priority 7264\n")
	fmt.Fprintf(&batch, "link del %s\n", lab.ClientIface(0))
	flood(500, 1000)
	if out, err := lab.Exec(netlab.Client, "sh", "-c", "ip -batch - <<'EOF'\n"+batch.String()+"EOF\n"); err != nil {
		t.Fatalf("the flood: %v: %s", err, out)
	}
	waitClient(t, v.clientSock, "up0 out of the status", func(v clientView) bool {
		_, there := v.paths["up0"]
		return !there && v.out["up0"].Why != ""
	})
	if !testkit.Wait(10*time.Second, func() bool {
		out, _ := lab.Exec(netlab.Client, "ip", "rule")
		return strings.Contains(string(out), "not from all fwmark 0x7264 lookup 7264")
	}) {
		out, _ := lab.Exec(netlab.Client, "ip", "rule")
		t.Fatalf("the rule deleted in the flood was not put back:\n%s", out)
	}
	log := stopAndRead(t, client)
	for _, want := range []string{"notifications were lost", "deleted by someone else; put back", "up0: interface c0 is ", "; path removed"} {
		if !strings.Contains(log, want) {
			t.Errorf("the client's log does not say %q", want)
		}
	}
	checkClean(t, lab)
	server.stop(t)
}
