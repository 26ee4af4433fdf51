package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rendr-go/rendr/internal/netlab"
)

// The far network is an address on the server namespace's loopback: the client namespace
// has no route to it but through a tunnel, so a test that reaches it crossed one.
const (
	vpnFar       = "10.99.0.1"
	vpnFarNet    = "10.99.0.0/16"
	vpnIperfPort = 5201
	vpnRendrPort = 7000
	vpnWGPort    = 51820
	// The MTU wireguard-go gives its TUN (device.DefaultMTU); tunvpn's TUN gets the same.
	vpnMTU = 1420
	// wireguard-go's interfaces; its UAPI sockets are named after them, in the bench's dir.
	vpnWGClient = "rbwgc"
	vpnWGServer = "rbwgs"
	// Tunnel addresses: tunvpn's client, and wireguard-go's two ends.
	vpnTunvpnAddr = "10.98.0.2"
	vpnWGCliAddr  = "10.97.0.2"
	vpnWGSrvAddr  = "10.97.0.1"
	vpnStartLimit = 30 * time.Second // a tunnel up, or an iperf3 server listening
	vpnStopLimit  = 10 * time.Second // a process gone after SIGTERM, before SIGKILL
	vpnBuildLimit = 10 * time.Minute
)

const modulePath = "github.com/rendr-go/rendr"

// vpnAvailable says why a vpn scenario cannot run here, if it cannot: the lab, the go command
// (which builds tunvpn and wireguard-go), and iperf3 where the scenario measures with it.
func vpnAvailable(iperf bool) error {
	if err := netlab.Available(); err != nil {
		return err
	}
	var errs []error
	if _, err := exec.LookPath("go"); err != nil {
		errs = append(errs, errors.New("go not found in PATH: it builds tunvpn and wireguard-go"))
	}
	if _, err := exec.LookPath("iperf3"); err != nil && iperf {
		errs = append(errs, errors.New("iperf3 not found in PATH"))
	}
	return errors.Join(errs...)
}

// vpnBench is one scenario's lab, the tunnels' binaries built for it, and every process it
// started; close undoes all of it, on every exit path.
type vpnBench struct {
	c        *config
	scenario string
	dir      string // binaries, configuration files, sockets
	tunvpn   string
	wg       string

	mu     sync.Mutex
	lab    *netlab.Lab
	procs  map[*proc]bool
	closed bool

	once       sync.Once
	unregister func()
}

// newVPNBench builds tunvpn and wireguard-go into a temporary directory, then the lab, with the
// far address on the server's loopback.
func newVPNBench(c *config, scenario string, lc netlab.Config) (_ *vpnBench, err error) {
	dir, err := os.MkdirTemp("", "rendrbench-vpn-")
	if err != nil {
		return nil, err
	}
	b := &vpnBench{c: c, scenario: scenario, dir: dir, procs: map[*proc]bool{}}
	b.unregister = atExit(b.close)
	defer func() {
		if err != nil {
			b.done()
		}
	}()
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	b.tunvpn = filepath.Join(dir, "tunvpn")
	b.wg = filepath.Join(dir, "wireguard-go")
	c.logf("%s: building tunvpn and wireguard-go in %s", scenario, dir)
	if err := goBuild(root, b.tunvpn, "", modulePath+"/examples/tunvpn"); err != nil {
		return nil, err
	}
	// The UAPI sockets go to the bench's directory rather than /var/run/wireguard, so that
	// nothing outside it is touched and nothing stays behind.
	ld := "-X golang.zx2c4.com/wireguard/ipc.socketDirectory=" + filepath.Join(dir, "wg")
	if err := goBuild(root, b.wg, ld, "golang.zx2c4.com/wireguard"); err != nil {
		return nil, err
	}
	lab, err := netlab.New(lc)
	if err != nil {
		return nil, fmt.Errorf("building the lab: %w", err)
	}
	b.mu.Lock()
	closed := b.closed
	b.lab = lab
	b.mu.Unlock()
	if closed {
		lab.Close()
		return nil, errors.New("interrupted")
	}
	if _, err := lab.Exec(netlab.Server, "ip", "addr", "add", vpnFar+"/32", "dev", "lo"); err != nil {
		return nil, err
	}
	return b, nil
}

// close stops every process, then removes the lab and the directory. It runs from a signal
// too, so it does not touch the exit registry (done does).
func (b *vpnBench) close() {
	b.once.Do(func() {
		b.mu.Lock()
		b.closed = true
		procs := make([]*proc, 0, len(b.procs))
		for p := range b.procs {
			procs = append(procs, p)
		}
		lab := b.lab
		b.mu.Unlock()
		// Namespaces outlive their names while a process is in them: processes first.
		for _, p := range procs {
			p.cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(vpnStopLimit):
			}
		}
		if lab != nil {
			lab.Close()
		}
		os.RemoveAll(b.dir)
	})
}

// done is close for the scenario's own exit paths.
func (b *vpnBench) done() {
	b.unregister()
	b.close()
}

// moduleRoot finds the directory of rendr's go.mod, which go build needs to resolve tunvpn
// and the wireguard-go rendr requires: the go command's module when run inside the repository,
// else the one this source file was compiled from.
func moduleRoot() (string, error) {
	var tried []string
	if out, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull {
			tried = append(tried, gomod)
			if isRendrModule(gomod) {
				return filepath.Dir(gomod), nil
			}
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		gomod := filepath.Join(filepath.Dir(file), "..", "..", "go.mod")
		tried = append(tried, gomod)
		if isRendrModule(gomod) {
			return filepath.Dir(gomod), nil
		}
	}
	return "", fmt.Errorf("no go.mod of %s (tried %v): run rendrbench from the repository, which builds tunvpn and wireguard-go", modulePath, tried)
}

func isRendrModule(gomod string) bool {
	b, err := os.ReadFile(gomod)
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == modulePath
		}
	}
	return false
}

// goBuild builds pkg with rendr's go.mod and go.sum as they are: the go command refuses to
// change them, so a missing go.sum line is an error here, not an edit.
func goBuild(root, out, ldflags, pkg string) error {
	ctx, cancel := context.WithTimeout(context.Background(), vpnBuildLimit)
	defer cancel()
	args := []string{"build", "-mod=readonly", "-o", out}
	if ldflags != "" {
		args = append(args, "-ldflags", ldflags)
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w: %s", strings.Join(cmd.Args[1:], " "), err, strings.TrimSpace(string(b)))
	}
	return nil
}

// proc is a process the bench started in one of the lab's namespaces.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
	err  error // Wait's, once done is closed
}

// tailBuffer keeps the end of a process's output, for the error that says why it failed.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

const tailBytes = 4 << 10

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 2*tailBytes {
		t.b = append(t.b[:0:0], t.b[len(t.b)-tailBytes:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b[max(0, len(t.b)-tailBytes):]))
}

// start runs argv in the namespace of side, its standard output to stdout if not nil. ip
// netns exec execs the program in its own place, so the process's id is the program's, which
// CPU accounting and signals rely on.
func (b *vpnBench) start(side netlab.Side, name string, env []string, stdout io.Writer, argv ...string) (*proc, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errors.New("interrupted")
	}
	ns := b.lab.ClientNS()
	if side == netlab.Server {
		ns = b.lab.ServerNS()
	}
	p := &proc{name: name, out: &tailBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if stdout != nil {
		p.cmd.Stdout = stdout
	}
	p.cmd.WaitDelay = time.Second
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	b.procs[p] = true
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited says, if p is gone, how it ended and what it said last.
func (p *proc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v): %s", p.name, p.err, p.out.String())
	default:
		return nil
	}
}

// stop ends p with SIGTERM, so that tunvpn takes its rules back, and SIGKILL after
// vpnStopLimit. An exit status other than a clean one after SIGTERM is the error.
func (b *vpnBench) stop(p *proc) error {
	defer func() {
		b.mu.Lock()
		delete(b.procs, p)
		b.mu.Unlock()
	}()
	if err := p.exited(); err != nil {
		return err
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(vpnStopLimit):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %v of SIGTERM: %s", p.name, vpnStopLimit, p.out.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) && !ee.Success() {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return nil // iperf3's server, say, has no handler: dying of it is its clean stop
		}
		return fmt.Errorf("%s after SIGTERM: %v: %s", p.name, p.err, p.out.String())
	}
	return nil
}
