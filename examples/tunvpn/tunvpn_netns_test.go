//go:build linux

package main

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/internal/testkit"
)

// farAddr is the network behind the server: on the server namespace's loopback, reached from
// the client namespace only through the tunnel.
const (
	farAddr  = "10.99.0.1"
	farAddr6 = "fd99::1"
)

// carrierAddr is where the server's carriers listen under a full tunnel: beyond the
// uplinks' subnets, reached by their default routes.
const carrierAddr = "10.88.0.1"

// payload is the test download: size bytes from a fixed seed.
type payload struct{ size int64 }

func (p payload) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Length", fmt.Sprint(p.size))
	rng := rand.New(rand.NewPCG(5, 5))
	b := make([]byte, 64<<10)
	for n := int64(0); n < p.size; n += int64(len(b)) {
		fillRand(b, rng)
		if _, err := w.Write(b[:min(int64(len(b)), p.size-n)]); err != nil {
			return
		}
	}
}

func fillRand(b []byte, rng *rand.Rand) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// sideProc is a tunvpn process in a namespace.
type sideProc struct {
	cmd     *exec.Cmd
	out     *strings.Builder // written until scanned is closed
	scanned chan struct{}
	done    chan error
}

// start runs this test binary as "tunvpn args" in namespace ns.
func start(t *testing.T, ns string, args ...string) *sideProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &sideProc{out: &strings.Builder{}, scanned: make(chan struct{}), done: make(chan error, 1)}
	p.cmd = exec.Command("ip", "netns", "exec", ns, exe)
	p.cmd.Env = append(os.Environ(), mainEnv+"="+strings.Join(args, " "))
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	go func() {
		defer close(p.scanned)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.out.WriteString(sc.Text() + "\n")
		}
		io.Copy(io.Discard, r)
	}()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait(); w.Close() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		<-p.scanned
		if t.Failed() {
			t.Logf("%s's output:\n%s", args[0], p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *sideProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("tunvpn after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("tunvpn did not stop within 30s of SIGTERM")
	}
}

// TestNetnsTunvpn: tunvpn's server and client, each a process in its namespace, the client
// with two uplinks under a Selector. curl downloads 64 MiB from a web server behind the
// server through the tunnel while the active uplink is blackholed: exit status 0, SHA-256
// equal. tunvpn status shows the paths and the move. After SIGTERM no rule, route or TUN of
// the client's is left; after SIGKILL, the next start clears what the killed one left, and
// stops clean in turn.
// tunvpnLab is the lab of the tunvpn tests: two namespaces with two uplinks, a web server
// serving size bytes in the far network behind the server, keys, and both configuration
// files.
type tunvpnLab struct {
	lab                                          *netlab.Lab
	serverCfg, clientCfg, serverSock, clientSock string
}

// newTunvpnLab builds the lab. With full, the client routes everything through the tunnel,
// and the server's carriers listen on an address (10.88.0.1) the client reaches only by the
// default routes of its uplinks, as a real host reaches a server: only the carriers' mark
// keeps them out of the tunnel.
func newTunvpnLab(t *testing.T, size int64, full bool) *tunvpnLab {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	lab := testkit.NetLab(t, netlab.Config{Paths: 2, Name: "tvpn"})
	for _, a := range []string{farAddr + "/32", farAddr6 + "/128"} {
		if _, err := lab.Exec(netlab.Server, "ip", "addr", "add", a, "dev", "lo", "nodad"); err != nil {
			t.Fatal(err)
		}
	}
	if full {
		cmds := [][]string{{"ip", "addr", "add", carrierAddr + "/32", "dev", "lo"}}
		for i := range lab.Paths() {
			cmds = append(cmds, []string{"client", "ip", "route", "add", "default", "via", lab.ServerAddr(i).String(),
				"dev", lab.ClientIface(i), "metric", fmt.Sprint(100 * (i + 1))})
		}
		for _, c := range cmds {
			side := netlab.Server
			if c[0] == "client" {
				side, c = netlab.Client, c[1:]
			}
			if _, err := lab.Exec(side, c[0], c[1:]...); err != nil {
				t.Fatal(err)
			}
		}
	}
	web, err := lab.Listen(netlab.Server, "tcp", farAddr+":8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: payload{size}}
	go srv.Serve(web)
	t.Cleanup(func() { srv.Close() })

	dir := t.TempDir()
	sk, ck := rendr.MustNewKey(), rendr.MustNewKey()
	skText, _ := sk.MarshalText()
	ckText, _ := ck.MarshalText()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var listen, uplinks []string
	routes := `["10.99.0.0/16", "fd99::/16"]`
	for i := range lab.Paths() {
		server := fmt.Sprintf("%s:7000", lab.ServerAddr(i))
		if full {
			server = carrierAddr + ":7000"
		}
		if !full || i == 0 {
			listen = append(listen, fmt.Sprintf("%q", server))
		}
		// Under a full tunnel the second uplink is given by its source address alone: tunvpn
		// finds its interface, and its carrier must leave by it, not by the first uplink's
		// default route (the main table prefers that one).
		iface := fmt.Sprintf("interface = %q\n", lab.ClientIface(i))
		if full && i == 1 {
			iface = ""
		}
		uplinks = append(uplinks, fmt.Sprintf("[[uplink]]\nname = \"up%d\"\nserver = %q\nsource = \"%s\"\n%s",
			i, server, lab.ClientAddr(i), iface))
	}
	if full {
		routes = `["0.0.0.0/0", "fd99::/16"]`
	}
	v := &tunvpnLab{lab: lab, serverSock: filepath.Join(dir, "server.sock"), clientSock: filepath.Join(dir, "client.sock")}
	v.serverCfg = write("server.toml", fmt.Sprintf("private_key = %q\npeers = [%q]\nlisten = [%s]\nallow = [\"10.99.0.0/16\", \"fd99::/16\"]\nstatus_socket = %q\n"+
		"tun = \"tvgw0\"\ntun_addresses = [\"10.98.255.1/32\", \"fd98::ffff/128\"]\nclient_networks = [\"10.98.0.0/16\", \"fd98::/64\"]\nmasquerade = true\n",
		skText, ck.Public(), strings.Join(listen, ", "), v.serverSock))
	v.clientCfg = write("client.toml", fmt.Sprintf("private_key = %q\nserver_key = %q\naddresses = [\"10.98.0.2/32\", \"fd98::2/128\"]\nroutes = %s\nmtu = 1420\nstatus_socket = %q\n%s",
		ckText, sk.Public(), routes, v.clientSock, strings.Join(uplinks, "\n")))
	return v
}

func TestNetnsTunvpn(t *testing.T) {
	const size = 64 << 20
	v := newTunvpnLab(t, size, false)
	lab, clientCfg, clientSock, serverSock := v.lab, v.clientCfg, v.clientSock, v.serverSock
	server := start(t, lab.ServerNS(), "server", "-c", v.serverCfg)
	client := start(t, lab.ClientNS(), "client", "-c", clientCfg)
	if !testkit.Wait(30*time.Second, func() bool { _, err := readStatus(clientSock); return err == nil }) {
		t.Fatalf("the client's status socket did not answer")
	}

	blackholed := downloadCutting(t, v, size)
	r, err := readStatus(clientSock)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	printStatus(&sb, r)
	t.Logf("64 MiB through the tunnel with up%d blackholed at 16 MiB; tunvpn status:\n%s", blackholed, sb.String())
	if len(r.Migrations) < 2 || r.Ingress == nil || r.Ingress.TCPOpened < 1 {
		t.Errorf("the status shows no move off the blackholed uplink, or no connection")
	}
	if _, err := readStatus(serverSock); err != nil {
		t.Errorf("the server's status: %v", err)
	}

	client.stop(t)
	checkClean(t, lab)
	// Killed, the client leaves its rules behind; the next start clears them.
	killed := start(t, lab.ClientNS(), "client", "-c", clientCfg)
	if !testkit.Wait(30*time.Second, func() bool { _, err := readStatus(clientSock); return err == nil }) {
		t.Fatal("the second client's status socket did not answer")
	}
	killed.cmd.Process.Kill()
	<-killed.done
	killed.done <- nil
	if rules, _ := lab.Exec(netlab.Client, "ip", "rule", "list"); !strings.Contains(string(rules), "7264") {
		t.Logf("after SIGKILL, no rule was left to clear:\n%s", rules)
	}
	again := start(t, lab.ClientNS(), "client", "-c", clientCfg)
	if !testkit.Wait(30*time.Second, func() bool { _, err := readStatus(clientSock); return err == nil }) {
		t.Fatalf("the client did not start again after a SIGKILL")
	}
	again.stop(t)
	checkClean(t, lab)
	server.stop(t)
}

// downloadCutting downloads the far web server's size bytes with curl in the client namespace
// through the tunnel, blackholes the active uplink once a quarter has come, and fails the
// test unless every byte arrives, exact. It returns the uplink it cut.
func downloadCutting(t *testing.T, v *tunvpnLab, size int64) int {
	t.Helper()
	curl := exec.Command("ip", "netns", "exec", v.lab.ClientNS(), "curl", "-sS", "--max-time", "120", "http://"+farAddr+":8080/")
	stdout, err := curl.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var curlErr strings.Builder
	curl.Stderr = &curlErr
	if err := curl.Start(); err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	h := sha256.New()
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.MultiWriter(h, countWriter{&got}), stdout)
		copied <- err
	}()
	cut := -1
	testkit.Wait(2*time.Minute, func() bool { return got.Load() >= size/4 })
	if r, err := readStatus(v.clientSock); err == nil && len(r.Sessions) == 1 {
		for i, p := range r.Sessions[0].Paths {
			if p.Active {
				cut = i
			}
		}
	}
	if cut < 0 {
		curl.Process.Kill()
		<-copied
		curl.Wait()
		t.Fatalf("no active uplink at a quarter of the download (%d bytes)", got.Load())
	}
	if err := v.lab.Blackhole(cut, true); err != nil {
		t.Fatal(err)
	}
	if err := <-copied; err != nil {
		t.Fatal(err)
	}
	if err := curl.Wait(); err != nil {
		t.Fatalf("curl: %v: %s", err, curlErr.String())
	}
	want := sha256.New()
	payload{size}.ServeHTTP(hashWriter{want}, nil)
	if got.Load() != size || string(h.Sum(nil)) != string(want.Sum(nil)) {
		t.Fatalf("curl read %d bytes, want %d, or they differ", got.Load(), size)
	}
	return cut
}

// upCount is how many of the client's paths its status (on sock) shows up.
func upCount(sock string) int {
	r, err := readStatus(sock)
	if err != nil || len(r.Sessions) != 1 {
		return 0
	}
	n := 0
	for _, p := range r.Sessions[0].Paths {
		if p.State == "up" {
			n++
		}
	}
	return n
}

// checkClean fails the test if the client namespace holds a rule, route or TUN of tunvpn's.
func checkClean(t *testing.T, lab *netlab.Lab) {
	t.Helper()
	for _, args := range [][]string{{"ip", "rule", "list"}, {"ip", "-6", "rule", "list"}, {"ip", "route", "show", "table", "all"}, {"ip", "link"}} {
		out, err := lab.Exec(netlab.Client, args[0], args[1:]...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if s := string(out); strings.Contains(s, "7264") || strings.Contains(s, "tunvpn0") {
			t.Errorf("left behind (%s):\n%s", strings.Join(args, " "), s)
		}
	}
}

type countWriter struct{ n *atomic.Int64 }

func (w countWriter) Write(p []byte) (int, error) { w.n.Add(int64(len(p))); return len(p), nil }

// hashWriter lets payload.ServeHTTP write into a hash.
type hashWriter struct{ w io.Writer }

func (h hashWriter) Header() http.Header         { return http.Header{} }
func (h hashWriter) Write(p []byte) (int, error) { return h.w.Write(p) }
func (h hashWriter) WriteHeader(int)             {}

// TestNetnsTunvpnFirstUplinkDown: the client starts with its first-listed uplink's interface
// down. It comes up on the other (no uplink is the master), a download through it is whole,
// and when the interface comes back the uplink rejoins without a restart.
func TestNetnsTunvpnFirstUplinkDown(t *testing.T) {
	const size = 4 << 20
	v := newTunvpnLab(t, size, false)
	if _, err := v.lab.Exec(netlab.Client, "ip", "link", "set", v.lab.ClientIface(0), "down"); err != nil {
		t.Fatal(err)
	}
	server := start(t, v.lab.ServerNS(), "server", "-c", v.serverCfg)
	client := start(t, v.lab.ClientNS(), "client", "-c", v.clientCfg)
	up := func(name string) bool {
		r, err := readStatus(v.clientSock)
		if err != nil || len(r.Sessions) != 1 {
			return false
		}
		for _, p := range r.Sessions[0].Paths {
			if p.Name == name && p.State == "up" {
				return true
			}
		}
		return false
	}
	if !testkit.Wait(30*time.Second, func() bool { return up("up1") }) {
		t.Fatal("the client did not come up on its second uplink")
	}
	out, err := exec.Command("ip", "netns", "exec", v.lab.ClientNS(), "curl", "-sS", "--max-time", "60", "http://"+farAddr+":8080/").Output()
	if err != nil {
		t.Fatalf("curl with the first uplink down: %v", err)
	}
	want := sha256.New()
	payload{size}.ServeHTTP(hashWriter{want}, nil)
	if len(out) != size || sha256.Sum256(out) != [sha256.Size]byte(want.Sum(nil)) {
		t.Fatalf("curl read %d bytes, want %d, or they differ", len(out), size)
	}
	if _, err := v.lab.Exec(netlab.Client, "ip", "link", "set", v.lab.ClientIface(0), "up"); err != nil {
		t.Fatal(err)
	}
	if !testkit.Wait(60*time.Second, func() bool { return up("up0") }) {
		r, _ := readStatus(v.clientSock)
		var sb strings.Builder
		printStatus(&sb, r)
		t.Fatalf("the first uplink did not rejoin after its interface came back:\n%s", sb.String())
	}
	client.stop(t)
	server.stop(t)
}

// TestNetnsTunvpnFullTunnel: the client routes everything through the tunnel (0.0.0.0/0),
// and the server's carriers are reached only by the uplinks' default routes. The carriers'
// firewall mark keeps them out of the tunnel (no packet to the server's carrier address
// leaves by the TUN: an nftables counter says so), both uplinks come up, a 4 MiB download
// through the tunnel is whole, and after SIGTERM nothing of the client's is left.
func TestNetnsTunvpnFullTunnel(t *testing.T) {
	const size = 4 << 20
	v := newTunvpnLab(t, size, true)
	if _, err := v.lab.Exec(netlab.Client, "nft", "add table inet tvcount"); err != nil {
		t.Fatal(err)
	}
	for _, rule := range []string{
		"add chain inet tvcount out { type filter hook output priority 0; policy accept; }",
		"add rule inet tvcount out oifname \"tunvpn0\" ip daddr " + carrierAddr + " counter",
		"add chain inet tvcount up1 { type filter hook output priority 0; policy accept; }",
		"add rule inet tvcount up1 oifname \"" + v.lab.ClientIface(1) + "\" ip saddr " + v.lab.ClientAddr(1).String() + " ip daddr " + carrierAddr + " counter",
	} {
		if _, err := v.lab.Exec(netlab.Client, "nft", rule); err != nil {
			t.Fatal(err)
		}
	}
	server := start(t, v.lab.ServerNS(), "server", "-c", v.serverCfg)
	client := start(t, v.lab.ClientNS(), "client", "-c", v.clientCfg)
	up := func() int { return upCount(v.clientSock) }
	if !testkit.Wait(30*time.Second, func() bool { return up() == 2 }) {
		t.Fatalf("%d of 2 uplinks up under a full tunnel", up())
	}
	rules, _ := v.lab.Exec(netlab.Client, "ip", "rule", "list")
	if !strings.Contains(string(rules), "suppress_prefixlength 0") || !strings.Contains(string(rules), "not from all fwmark") {
		t.Errorf("the full tunnel's rules are not in place:\n%s", rules)
	}
	out, err := exec.Command("ip", "netns", "exec", v.lab.ClientNS(), "curl", "-sS", "--max-time", "60", "http://"+farAddr+":8080/").Output()
	if err != nil {
		t.Fatalf("curl through a full tunnel: %v", err)
	}
	want := sha256.New()
	payload{size}.ServeHTTP(hashWriter{want}, nil)
	if len(out) != size || sha256.Sum256(out) != [sha256.Size]byte(want.Sum(nil)) {
		t.Fatalf("curl read %d bytes, want %d, or they differ", len(out), size)
	}
	counted, err := v.lab.Exec(netlab.Client, "nft", "list", "chain", "inet", "tvcount", "out")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(counted), "counter packets 0 bytes 0") {
		t.Errorf("packets to the server's carriers went into the tunnel:\n%s", counted)
	}
	// up1, given by its source alone, left by its own interface.
	own, err := v.lab.Exec(netlab.Client, "nft", "list", "chain", "inet", "tvcount", "up1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(own), "counter packets 0 bytes 0") {
		t.Errorf("the uplink given by its source address did not leave by its own interface:\n%s", own)
	}
	client.stop(t)
	checkClean(t, v.lab)
	server.stop(t)
}

// TestNetnsTunvpnPing: ping crosses the tunnel, IPv4 and IPv6: its packets go whole over a raw
// flow to the server's gateway, whose host answers (the client side answers nothing itself:
// a host that does not exist gets no reply). The server's masquerade is in place while it
// runs, and gone, with its gateway, after SIGTERM.
func TestNetnsTunvpnPing(t *testing.T) {
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("ping is not installed (iputils-ping)")
	}
	v := newTunvpnLab(t, 1<<20, false)
	server := start(t, v.lab.ServerNS(), "server", "-c", v.serverCfg)
	client := start(t, v.lab.ClientNS(), "client", "-c", v.clientCfg)
	if !testkit.Wait(30*time.Second, func() bool { _, err := readStatus(v.clientSock); return err == nil }) {
		t.Fatal("the client's status socket did not answer")
	}
	for _, args := range [][]string{
		{"ping", "-c", "3", "-i", "0.2", "-W", "5", farAddr},
		{"ping", "-6", "-c", "3", "-i", "0.2", "-W", "5", farAddr6},
	} {
		out, err := v.lab.Exec(netlab.Client, args[0], args[1:]...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if !strings.Contains(string(out), "3 received") {
			t.Errorf("%s:\n%s", strings.Join(args, " "), out)
		}
	}
	if out, err := v.lab.Exec(netlab.Client, "ping", "-c", "2", "-i", "0.2", "-W", "1", "10.99.3.3"); err == nil {
		t.Errorf("a host that does not exist answered:\n%s", out)
	}
	tables, err := v.lab.Exec(netlab.Server, "nft", "list", "tables")
	if err != nil || !strings.Contains(string(tables), "tunvpn") {
		t.Errorf("the server's masquerade table is missing (%v):\n%s", err, tables)
	}
	r, err := readStatus(v.clientSock)
	if err != nil || r.Ingress == nil || r.Ingress.RawOut < 6 || r.Ingress.RawIn < 6 {
		t.Errorf("the client's raw packets: %+v (%v)", r.Ingress, err)
	}
	client.stop(t)
	server.stop(t)
	tables, _ = v.lab.Exec(netlab.Server, "nft", "list", "tables")
	links, _ := v.lab.Exec(netlab.Server, "ip", "link")
	if strings.Contains(string(tables), "tunvpn") || strings.Contains(string(links), "tvgw0") {
		t.Errorf("the server left its gateway behind:\n%s\n%s", tables, links)
	}
}
