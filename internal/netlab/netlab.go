// Package netlab builds a two-namespace lab joined by several veth paths,
// with tbf rate limits and nftables faults, for tests and benchmarks that
// need the real kernel.
//
// A lab has a "client" and a "server" network namespace. Path i is a veth
// pair whose client end is named c<i> and whose server end is named s<i>.
// Traffic never leaves the lab's namespaces, so tests may use it freely.
//
// A path can carry a delay node (Config.Delay): an emulated WAN link with a one-way delay,
// jitter, a rate with a queue of bounded depth, and random loss, in each direction. Its
// packets then cross a third, "router", namespace, where Go code running in the lab's
// process forwards them between two TUN devices through a delay line per direction; the
// client and server addresses stay as they are. The kernel has no netem here, and this
// carries kernel TCP, MPTCP, QUIC and UDP alike over the same emulated link. See
// DelayConfig for the model and its limits.
//
// Labs need Linux. Elsewhere the package builds, but Available and New
// return an error wrapping errors.ErrUnsupported, so tests skip with that
// reason and benchmarks report it.
package netlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Side selects one of the lab's two namespaces.
type Side int

const (
	// Client is the namespace holding the c<i> ends of the paths.
	Client Side = iota
	// Server is the namespace holding the s<i> ends of the paths.
	Server
)

// String returns "client" or "server".
func (s Side) String() string {
	switch s {
	case Client:
		return "client"
	case Server:
		return "server"
	}
	return fmt.Sprintf("Side(%d)", int(s))
}

// MaxPaths bounds Config.Paths. A lab needs one /24 per path; the bound
// keeps one lab from eating the subnet space of the others.
const MaxPaths = 64

// Config describes a lab.
type Config struct {
	// Paths is the number of veth pairs between the two namespaces;
	// 0 means 2.
	Paths int
	// RateMbit is the tbf rate of path i in Mbit/s, applied on the egress
	// of both ends. Missing entries and 0 leave the path unshaped.
	RateMbit []int
	// Delay puts a delay node on path i when Delay[i] is not the zero value; missing
	// entries leave their paths plain veth pairs.
	Delay []DelayConfig
	// Name is an optional prefix for the namespace names; a random suffix
	// is always added so that parallel labs, even in different
	// processes, never collide. It defaults to "netlab".
	Name string
}

// Lab is a running two-namespace lab. Its methods are safe for concurrent
// use. Close it to remove the namespaces.
type Lab struct {
	client, server string // namespace names
	router         string // namespace of the delay nodes; "" without any
	paths          []path // fixed after New except the fault fields

	mu      sync.Mutex // guards the fault fields of paths, created, closed
	created []string   // namespaces New made, so Close only removes ours
	closed  bool
}

type path struct {
	clientIf, serverIf     string
	clientAddr, serverAddr netip.Addr
	clientMAC, serverMAC   string

	// With a delay node, the MACs of the router's ends facing the client and the
	// server, its settings, and the running node; fixed after New.
	routerCMAC, routerSMAC string
	delay                  DelayConfig
	node                   *delayNode

	// Fault state, guarded by Lab.mu. The nftables chain of a path is
	// rebuilt from these on every change so that blackhole and loss never
	// step on each other.
	blackhole bool
	loss      int
}

// subnetSeq hands out /24 indices so that labs alive at the same time in
// this process get distinct subnets. The addresses only exist inside the
// lab's namespaces, so other processes do not matter.
var subnetSeq atomic.Uint64

// The first lab gets 10.77.1.0/24, 10.77.2.0/24, ...; later /24s continue
// in 10.77.x, then 10.78.x, and wrap after subnetSpan /24s, far more than
// any process keeps alive at once.
const (
	firstOctet2  = 77
	octet2Count  = 150
	perOctet2    = 254 // third octets 1..254
	subnetSpan   = octet2Count * perOctet2
	netnsDir     = "/var/run/netns"
	cmdTimeout   = 30 * time.Second
	defaultName  = "netlab"
	maxNameBytes = 32
)

func subnetAddrs(idx uint64) (client, server netip.Addr) {
	idx %= subnetSpan
	b := byte(firstOctet2 + idx/perOctet2)
	c := byte(1 + idx%perOctet2)
	return netip.AddrFrom4([4]byte{10, b, c, 1}), netip.AddrFrom4([4]byte{10, b, c, 2})
}

// Available reports whether labs can be built here: nil when running as
// root with ip, tc and nft in PATH and `ip netns add` working. Otherwise
// the error says what is missing; tests pass it to t.Skip.
func Available() error {
	if err := platformErr(); err != nil {
		return fmt.Errorf("netlab unavailable: %w", err)
	}
	var errs []error
	if uid := os.Geteuid(); uid != 0 {
		errs = append(errs, fmt.Errorf("not running as root (euid %d)", uid))
	}
	for _, tool := range []string{"ip", "tc", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			errs = append(errs, fmt.Errorf("%s not found in PATH (install iproute2/nftables)", tool))
		}
	}
	if _, err := os.Stat("/proc/thread-self/ns/net"); err != nil {
		errs = append(errs, fmt.Errorf("per-thread network namespaces unavailable: %w", err))
	}
	if len(errs) == 0 {
		// Probe for real: containers often have the tools but lack
		// CAP_SYS_ADMIN or a writable /var/run/netns.
		suffix, err := randomSuffix()
		if err == nil {
			probe := "netlab-probe-" + suffix
			if _, err = run("", "ip", "netns", "add", probe); err == nil {
				_, err = run("", "ip", "netns", "del", probe)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("ip netns add does not work: %w", err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("netlab unavailable: %w", errors.Join(errs...))
	}
	return nil
}

// New builds a lab. Everything it created is removed again if a later
// step fails.
func New(cfg Config) (*Lab, error) {
	return build(cfg, nil)
}

// build is New with a hook called before each setup stage, so tests can
// inject a failure and check the cleanup.
func build(cfg Config, hook func(stage string) error) (l *Lab, err error) {
	n := cfg.Paths
	if n == 0 {
		n = 2
	}
	if n < 0 || n > MaxPaths {
		return nil, fmt.Errorf("netlab: Paths must be in 0..%d, got %d", MaxPaths, cfg.Paths)
	}
	if len(cfg.RateMbit) > n {
		return nil, fmt.Errorf("netlab: RateMbit has %d entries for %d paths", len(cfg.RateMbit), n)
	}
	for i, r := range cfg.RateMbit {
		if r < 0 {
			return nil, fmt.Errorf("netlab: RateMbit[%d] is negative (%d)", i, r)
		}
	}
	if len(cfg.Delay) > n {
		return nil, fmt.Errorf("netlab: Delay has %d entries for %d paths", len(cfg.Delay), n)
	}
	delayed := false
	for i, d := range cfg.Delay {
		if err := d.validate(i); err != nil {
			return nil, err
		}
		delayed = delayed || !d.isZero()
	}
	prefix := cfg.Name
	if prefix == "" {
		prefix = defaultName
	}
	if err := checkName(prefix); err != nil {
		return nil, err
	}
	if err := platformErr(); err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	suffix, err := randomSuffix()
	if err != nil {
		return nil, err
	}
	l = &Lab{
		client: prefix + "-" + suffix + "-c",
		server: prefix + "-" + suffix + "-s",
		paths:  make([]path, n),
	}
	if delayed {
		l.router = prefix + "-" + suffix + "-r"
	}
	first := subnetSeq.Add(uint64(n)) - uint64(n)
	for i := range l.paths {
		p := &l.paths[i]
		p.clientIf = fmt.Sprintf("c%d", i)
		p.serverIf = fmt.Sprintf("s%d", i)
		p.clientAddr, p.serverAddr = subnetAddrs(first + uint64(i))
		// Locally administered MACs; each path is its own L2 link, so
		// they only need to differ within a pair.
		p.clientMAC = fmt.Sprintf("02:6e:6c:%02x:%02x:01", i>>8, i&0xff)
		p.serverMAC = fmt.Sprintf("02:6e:6c:%02x:%02x:02", i>>8, i&0xff)
		if i < len(cfg.Delay) && !cfg.Delay[i].isZero() {
			p.delay = cfg.Delay[i]
			p.routerCMAC = fmt.Sprintf("02:6e:6c:%02x:%02x:03", i>>8, i&0xff)
			p.routerSMAC = fmt.Sprintf("02:6e:6c:%02x:%02x:04", i>>8, i&0xff)
		}
	}
	// Every failure path below returns nil, which clears l, so the
	// cleanup holds its own reference.
	lab := l
	defer func() {
		if err != nil {
			err = errors.Join(err, lab.Close())
		}
	}()
	stage := func(name string) error {
		if hook == nil {
			return nil
		}
		return hook(name)
	}

	namespaces := []string{l.client, l.server}
	if l.router != "" {
		namespaces = append(namespaces, l.router)
	}
	for _, ns := range namespaces {
		if err := stage("netns"); err != nil {
			return nil, err
		}
		if _, err := run("", "ip", "netns", "add", ns); err != nil {
			return nil, err
		}
		l.created = append(l.created, ns)
	}
	if l.router != "" {
		if err := stage("router"); err != nil {
			return nil, err
		}
		if err := l.setupRouterSysctls(); err != nil {
			return nil, err
		}
	}
	if err := stage("links"); err != nil {
		return nil, err
	}
	if err := l.setupLinks(); err != nil {
		return nil, err
	}
	if err := stage("nft"); err != nil {
		return nil, err
	}
	if err := l.setupNFT(); err != nil {
		return nil, err
	}
	if err := stage("rate"); err != nil {
		return nil, err
	}
	for i, r := range cfg.RateMbit {
		if r > 0 {
			if err := l.applyRate(i, r); err != nil {
				return nil, err
			}
		}
	}
	if l.router != "" {
		if err := stage("delay"); err != nil {
			return nil, err
		}
		if err := l.setupDelays(); err != nil {
			return nil, err
		}
	}
	if err := l.waitLinksUp(); err != nil {
		return nil, err
	}
	return l, nil
}

// setupLinks creates the veth pairs directly inside the namespaces (so
// their names never meet in the root namespace), addresses them and adds
// permanent neighbour entries. Static neighbours keep ARP out of the
// picture: with random loss or a blackhole, ARP retries would add
// second-long stalls that have nothing to do with what is being tested.
// Each end gets an interface index of its own (see ifindexClient). A
// delayed path is two veth pairs through the router namespace instead,
// and each end's neighbour entry names the router's end it faces (see
// router.go); setupDelays finishes the router's side.
//
// Each end has an entry for the far addresses of every path, not only of
// its own. A socket bound to c<i> that sends to another path's server
// address (an MPTCP subflow endpoint with "dev" does, towards the address
// the first subflow used) finds no route through c<i>, so the kernel takes
// the address for on-link there and needs its neighbour. On a plain veth
// the far end would answer ARP for it, but the router of a delayed path
// holds no address and ARP does not cross its TUN devices, so the subflow
// would never leave.
func (l *Lab) setupLinks() error {
	var cb, sb strings.Builder
	cb.WriteString("link set lo up\n")
	sb.WriteString("link set lo up\n")
	for i, p := range l.paths {
		peerOfC, peerOfS := p.serverMAC, p.clientMAC
		if p.delay.isZero() {
			fmt.Fprintf(&cb, "link add %s index %d address %s type veth peer name %s index %d address %s netns %s\n",
				p.clientIf, ifindexClient+i, p.clientMAC, p.serverIf, ifindexServer+i, p.serverMAC, l.server)
		} else {
			n := routerIfNames(i)
			peerOfC, peerOfS = p.routerCMAC, p.routerSMAC
			fmt.Fprintf(&cb, "link add %s index %d address %s type veth peer name %s index %d address %s netns %s\n",
				p.clientIf, ifindexClient+i, p.clientMAC, n.rc, ifindexRouterC+i, p.routerCMAC, l.router)
			fmt.Fprintf(&sb, "link add %s index %d address %s type veth peer name %s index %d address %s netns %s\n",
				p.serverIf, ifindexServer+i, p.serverMAC, n.rs, ifindexRouterS+i, p.routerSMAC, l.router)
		}
		fmt.Fprintf(&cb, "addr add %s/24 dev %s\n", p.clientAddr, p.clientIf)
		fmt.Fprintf(&cb, "link set %s up\n", p.clientIf)
		fmt.Fprintf(&sb, "addr add %s/24 dev %s\n", p.serverAddr, p.serverIf)
		fmt.Fprintf(&sb, "link set %s up\n", p.serverIf)
		for _, q := range l.paths {
			fmt.Fprintf(&cb, "neigh replace %s lladdr %s dev %s nud permanent\n", q.serverAddr, peerOfC, p.clientIf)
			fmt.Fprintf(&sb, "neigh replace %s lladdr %s dev %s nud permanent\n", q.clientAddr, peerOfS, p.serverIf)
		}
	}
	// The client batch must finish first: it creates the server ends.
	if _, err := run(cb.String(), "ip", "-n", l.client, "-batch", "-"); err != nil {
		return err
	}
	_, err := run(sb.String(), "ip", "-n", l.server, "-batch", "-")
	return err
}

// Interface indices of the veth ends of path i: base+i. Each namespace
// numbers its devices from 1, so without them both ends of a pair get the
// same index, and the kernel's link watcher then takes a veth's carrier-on
// for an unimportant event that it may put off by up to a second, during
// which the device drops what is sent (see waitLinksUp). With the two ends'
// indices different it handles the event at once.
const (
	ifindexClient  = 1000
	ifindexServer  = 2000
	ifindexRouterC = 3000
	ifindexRouterS = 4000
)

// linksUpTimeout bounds waitLinksUp; the kernel takes at most about a
// second, so only a broken setup meets it.
const linksUpTimeout = 10 * time.Second

// waitLinksUp returns once every veth end of every path is operationally
// up. A veth's qdisc only starts passing packets when the kernel's link
// watcher has handled its carrier-on event, which it may put off by up to
// a second; until then the device drops whatever is sent. A lab returned by New must carry its first packet, so New waits
// for the operational state, which the watcher sets in the same step.
func (l *Lab) waitLinksUp() error {
	want := map[string][]string{}
	for i, p := range l.paths {
		want[l.client] = append(want[l.client], p.clientIf)
		want[l.server] = append(want[l.server], p.serverIf)
		if !p.delay.isZero() {
			n := routerIfNames(i)
			want[l.router] = append(want[l.router], n.rc, n.rs)
		}
	}
	deadline := time.Now().Add(linksUpTimeout)
	for ns, devs := range want {
		for {
			down, err := linksNotUp(ns, devs)
			if err != nil {
				return err
			}
			if len(down) == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("netlab: links %s in %s not up after %v", strings.Join(down, ", "), ns, linksUpTimeout)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// linksNotUp returns those of devs in namespace ns whose operational
// state is not UP.
func linksNotUp(ns string, devs []string) ([]string, error) {
	out, err := run("", "ip", "-n", ns, "-j", "link", "show")
	if err != nil {
		return nil, err
	}
	var links []struct{ Ifname, Operstate string }
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, fmt.Errorf("netlab: ip -n %s -j link show: %w", ns, err)
	}
	up := map[string]bool{}
	for _, k := range links {
		up[k.Ifname] = k.Operstate == "UP"
	}
	var down []string
	for _, d := range devs {
		if !up[d] {
			down = append(down, d)
		}
	}
	return down, nil
}

// Close stops the delay nodes, whose goroutines have all returned when it
// does, and deletes the namespaces, which also removes the veths. It is
// idempotent. Sockets created in the lab keep their namespace alive in the
// kernel until they are closed, but the names are gone at once.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	if err := l.stopDelays(); err != nil {
		errs = append(errs, err)
	}
	for i := len(l.created) - 1; i >= 0; i-- {
		if _, err := run("", "ip", "netns", "del", l.created[i]); err != nil {
			errs = append(errs, err)
		}
	}
	l.created = nil
	return errors.Join(errs...)
}

// Paths returns the number of paths.
func (l *Lab) Paths() int { return len(l.paths) }

// ClientAddr returns the client address of path i. It panics if i is out
// of range, like a slice index.
func (l *Lab) ClientAddr(i int) netip.Addr { return l.paths[i].clientAddr }

// ServerAddr returns the server address of path i. It panics if i is out
// of range.
func (l *Lab) ServerAddr(i int) netip.Addr { return l.paths[i].serverAddr }

// ClientIface returns the client-side interface name of path i. It panics
// if i is out of range.
func (l *Lab) ClientIface(i int) string { return l.paths[i].clientIf }

// ServerIface returns the server-side interface name of path i. It panics
// if i is out of range.
func (l *Lab) ServerIface(i int) string { return l.paths[i].serverIf }

// ClientNS returns the client namespace name, for `ip netns exec`.
func (l *Lab) ClientNS() string { return l.client }

// ServerNS returns the server namespace name, for `ip netns exec`.
func (l *Lab) ServerNS() string { return l.server }

func (l *Lab) nsName(side Side) (string, error) {
	switch side {
	case Client:
		return l.client, nil
	case Server:
		return l.server, nil
	}
	return "", fmt.Errorf("netlab: unknown side %v", side)
}

func (l *Lab) checkPath(i int) error {
	if i < 0 || i >= len(l.paths) {
		return fmt.Errorf("netlab: path %d out of range (lab has %d paths)", i, len(l.paths))
	}
	return nil
}

func checkName(name string) error {
	if len(name) > maxNameBytes {
		return fmt.Errorf("netlab: Name %q longer than %d bytes", name, maxNameBytes)
	}
	for _, r := range name {
		ok := r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("netlab: Name %q may only contain letters, digits, '-' and '_'", name)
		}
	}
	return nil
}

func randomSuffix() (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("netlab: random suffix: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// run executes one setup command with a timeout, so a wedged tool cannot
// hang a test run. stdin, when not empty, is fed to the command and
// repeated in the error because batch errors refer to its line numbers.
func run(stdin, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	// Do not wait forever for a grandchild that inherited the pipes.
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		input := ""
		if stdin != "" {
			input = "\ninput:\n" + stdin
		}
		return out, fmt.Errorf("netlab: %s: %w: %s%s", cmdLine(name, args), err, strings.TrimSpace(string(out)), input)
	}
	return out, nil
}

func cmdLine(name string, args []string) string {
	return strings.Join(append([]string{name}, args...), " ")
}
