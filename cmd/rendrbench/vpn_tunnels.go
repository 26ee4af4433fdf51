package main

import (
	"bufio"
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/netlab"
)

// tunnel is one running VPN: its processes on both sides.
type tunnel struct {
	kind   string
	procs  []*proc // server first
	status string  // tunvpn: the client's status socket
}

// cpuUse is the user and system CPU time of each of a tunnel's processes, in its order.
type cpuUse []struct{ user, sys time.Duration }

// cpu is what the tunnel's processes have used so far.
func (t *tunnel) cpu() (cpuUse, error) {
	u := make(cpuUse, len(t.procs))
	for i, p := range t.procs {
		if err := p.exited(); err != nil {
			return nil, err
		}
		var err error
		if u[i].user, u[i].sys, err = procCPU(p.cmd.Process.Pid); err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
	}
	return u, nil
}

// since is what u used after earlier, a sample of the same tunnel.
func (u cpuUse) since(earlier cpuUse) cpuUse {
	d := make(cpuUse, len(u))
	for i := range u {
		d[i].user, d[i].sys = u[i].user-earlier[i].user, u[i].sys-earlier[i].sys
	}
	return d
}

func (u cpuUse) total() time.Duration {
	var sum time.Duration
	for _, p := range u {
		sum += p.user + p.sys
	}
	return sum
}

// describe says where the CPU went: user and system time of each process.
func (t *tunnel) describe(u cpuUse) string {
	var parts []string
	for i, p := range u {
		parts = append(parts, fmt.Sprintf("%s %v+%v", t.procs[i].name, p.user.Round(10*time.Millisecond), p.sys.Round(10*time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

// stopTunnel stops the client first, so that the server sees its peer leave, not vanish.
func (b *vpnBench) stopTunnel(t *tunnel) error {
	var errs []error
	for i := len(t.procs) - 1; i >= 0; i-- {
		errs = append(errs, b.stop(t.procs[i]))
	}
	return errors.Join(errs...)
}

// startTunvpn starts tunvpn's server and client, the client over the lab paths uplinks under
// policy, and waits until every uplink is up. Fresh keys and files every time.
func (b *vpnBench) startTunvpn(policy string, uplinks []int) (_ *tunnel, err error) {
	sk, err := rendr.NewKey()
	if err != nil {
		return nil, err
	}
	ck, err := rendr.NewKey()
	if err != nil {
		return nil, err
	}
	skText, _ := sk.MarshalText()
	ckText, _ := ck.MarshalText()
	var listen []string
	var ups strings.Builder
	for _, i := range uplinks {
		server := netip.AddrPortFrom(b.lab.ServerAddr(i), vpnRendrPort).String()
		listen = append(listen, strconv.Quote(server))
		fmt.Fprintf(&ups, "\n[[uplink]]\nname = \"up%d\"\nserver = %q\nsource = %q\ninterface = %q\n",
			i, server, b.lab.ClientAddr(i).String(), b.lab.ClientIface(i))
	}
	t := &tunnel{kind: "tunvpn", status: filepath.Join(b.dir, "tunvpn-client.sock")}
	// No gateway (tun, masquerade) on the server: it carries what is neither TCP nor UDP,
	// and iperf3 and the probe are TCP.
	server := fmt.Sprintf("private_key = %q\npeers = [%q]\nlisten = [%s]\nallow = [%q]\nstatus_socket = %q\n",
		skText, ck.Public().String(), strings.Join(listen, ", "), vpnFarNet, filepath.Join(b.dir, "tunvpn-server.sock"))
	client := fmt.Sprintf("private_key = %q\nserver_key = %q\npolicy = %q\nmtu = %d\naddresses = [\"%s/32\"]\nroutes = [%q]\nstatus_socket = %q\n%s",
		ckText, sk.Public().String(), policy, vpnMTU, vpnTunvpnAddr, vpnFarNet, t.status, ups.String())
	serverCfg, clientCfg := filepath.Join(b.dir, "server.toml"), filepath.Join(b.dir, "client.toml")
	for _, f := range []struct{ path, body string }{{serverCfg, server}, {clientCfg, client}} {
		if err := os.WriteFile(f.path, []byte(f.body), 0o600); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			b.stopTunnel(t)
		}
	}()
	for _, s := range []struct {
		side       netlab.Side
		role, path string
	}{{netlab.Server, "server", serverCfg}, {netlab.Client, "client", clientCfg}} {
		p, err := b.start(s.side, "tunvpn "+s.role, nil, nil, b.tunvpn, s.role, "-c", s.path)
		if err != nil {
			return nil, err
		}
		t.procs = append(t.procs, p)
	}
	deadline := time.Now().Add(vpnStartLimit)
	for {
		r, serr := readTunvpnStatus(t.status)
		up := 0
		if serr == nil && len(r.Sessions) == 1 {
			for _, p := range r.Sessions[0].Paths {
				if p.State == "up" {
					up++
				}
			}
		}
		if up == len(uplinks) {
			return t, nil
		}
		for _, p := range t.procs {
			if err := p.exited(); err != nil {
				return nil, err
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("tunvpn: %d of %d uplinks up after %v (status: %v)", up, len(uplinks), vpnStartLimit, serr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tunvpnReport is the part of tunvpn's status report (examples/tunvpn/status.go) the bench
// reads: which uplink carries the session, and the moves.
type tunvpnReport struct {
	Sessions []struct {
		Paths []struct {
			Name, State string
			Active      bool
		}
	}
	Migrations []struct {
		Time          time.Time
		From, To, Why string
	}
}

func readTunvpnStatus(path string) (tunvpnReport, error) {
	var r tunvpnReport
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return r, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return r, json.NewDecoder(c).Decode(&r)
}

// tunvpnActive is the lab path of the uplink that carries the client's session now.
func tunvpnActive(t *tunnel) (int, error) {
	r, err := readTunvpnStatus(t.status)
	if err != nil {
		return 0, err
	}
	if len(r.Sessions) != 1 {
		return 0, fmt.Errorf("%d sessions in the client's status", len(r.Sessions))
	}
	for _, p := range r.Sessions[0].Paths {
		if p.Active {
			var i int
			if _, err := fmt.Sscanf(p.Name, "up%d", &i); err != nil {
				return 0, fmt.Errorf("uplink name %q: %w", p.Name, err)
			}
			return i, nil
		}
	}
	return 0, errors.New("no active uplink")
}

// startWireguard starts wireguard-go on both sides, its client's one peer at path 0's server
// address, and configures both through their UAPI sockets (no wg tool needed), then gives the
// interfaces their addresses and the client its route to the far network.
func (b *vpnBench) startWireguard() (_ *tunnel, err error) {
	sk, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	ck, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	t := &tunnel{kind: "wireguard-go"}
	defer func() {
		if err != nil {
			b.stopTunnel(t)
		}
	}()
	// Foreground, or it forks a child the bench would not know the id of.
	env := []string{"WG_PROCESS_FOREGROUND=1", "LOG_LEVEL=error"}
	type side struct {
		side       netlab.Side
		ifname     string
		uapi       string
		addr, peer string // the interface's address, and the route through it
	}
	sides := []side{
		{netlab.Server, vpnWGServer,
			fmt.Sprintf("private_key=%x\nlisten_port=%d\nreplace_peers=true\npublic_key=%x\nallowed_ip=%s/32\n",
				sk.Bytes(), vpnWGPort, ck.PublicKey().Bytes(), vpnWGCliAddr),
			vpnWGSrvAddr, vpnWGCliAddr + "/32"},
		{netlab.Client, vpnWGClient,
			fmt.Sprintf("private_key=%x\nreplace_peers=true\npublic_key=%x\nendpoint=%s\nallowed_ip=%s\nallowed_ip=%s/32\n",
				ck.Bytes(), sk.PublicKey().Bytes(), netip.AddrPortFrom(b.lab.ServerAddr(0), vpnWGPort), vpnFarNet, vpnWGSrvAddr),
			vpnWGCliAddr, vpnFarNet},
	}
	for _, s := range sides {
		p, err := b.start(s.side, "wireguard-go "+s.side.String(), env, nil, b.wg, "-f", s.ifname)
		if err != nil {
			return nil, err
		}
		t.procs = append(t.procs, p)
	}
	for i, s := range sides {
		if err := uapiSet(filepath.Join(b.dir, "wg", s.ifname+".sock"), s.uapi, t.procs[i]); err != nil {
			return nil, fmt.Errorf("configuring %s: %w", t.procs[i].name, err)
		}
		for _, args := range [][]string{
			{"addr", "add", s.addr + "/32", "dev", s.ifname},
			{"link", "set", s.ifname, "up"},
			{"route", "add", s.peer, "dev", s.ifname, "src", s.addr},
		} {
			if _, err := b.lab.Exec(s.side, "ip", args...); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

// uapiSet sends one set operation to a wireguard-go UAPI socket, once p has made it, and
// checks the errno it answers.
func uapiSet(sock, body string, p *proc) error {
	deadline := time.Now().Add(vpnStartLimit)
	var c net.Conn
	for {
		var err error
		if c, err = net.DialTimeout("unix", sock, time.Second); err == nil {
			break
		}
		if perr := p.exited(); perr != nil {
			return perr
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no UAPI socket after %v: %w", vpnStartLimit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "set=1\n%s\n", body); err != nil {
		return err
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() && sc.Text() != "" {
		if v, ok := strings.CutPrefix(sc.Text(), "errno="); ok {
			if v != "0" {
				return fmt.Errorf("UAPI set: errno %s: %s", v, p.out.String())
			}
			return nil
		}
	}
	return fmt.Errorf("UAPI set: no errno in the answer (%v)", sc.Err())
}

// iperf runs one iperf3 TCP test from the client namespace to a one-off iperf3 server at the
// far address, for seconds after omit seconds of warm-up.
func (b *vpnBench) iperf(seconds, omit int) (iperfResult, error) {
	port := strconv.Itoa(vpnIperfPort)
	srv, err := b.start(netlab.Server, "iperf3 server", nil, nil, "iperf3", "-s", "-1", "-B", vpnFar, "-p", port)
	if err != nil {
		return iperfResult{}, err
	}
	defer b.stop(srv)
	deadline := time.Now().Add(vpnStartLimit)
	for {
		out, err := b.lab.Exec(netlab.Server, "ss", "-Hltn", "src", vpnFar, "sport", "=", ":"+port)
		if err == nil && strings.TrimSpace(string(out)) != "" {
			break
		}
		if err := srv.exited(); err != nil {
			return iperfResult{}, err
		}
		if time.Now().After(deadline) {
			return iperfResult{}, fmt.Errorf("iperf3 server not listening after %v (%v)", vpnStartLimit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The client is one of the bench's processes too, so that a signal does not leave it
	// behind, and the test's length plus a margin bounds it.
	var out bytes.Buffer
	cli, err := b.start(netlab.Client, "iperf3 client", nil, &out, "iperf3", "-c", vpnFar, "-p", port,
		"-t", strconv.Itoa(seconds), "-O", strconv.Itoa(omit), "-J", "--connect-timeout", "10000")
	if err != nil {
		return iperfResult{}, err
	}
	limit := time.Duration(seconds+omit+30) * time.Second
	select {
	case <-cli.done:
	case <-time.After(limit):
		b.stop(cli)
		return iperfResult{}, fmt.Errorf("iperf3 client still running after %v", limit)
	}
	b.stop(cli)
	r, err := parseIperf(out.Bytes())
	if err != nil {
		return r, fmt.Errorf("iperf3 client: %w (exit: %v) %s", err, cli.err, cli.out.String())
	}
	return r, nil
}
