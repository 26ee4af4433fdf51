//go:build linux

package main

// curl through the proxy across two network namespaces: the client half in one, the server
// half and a web server in the other, joined by two paths, the one in use blackholed in the
// middle of a download.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/examples/internal/extest"
	"github.com/rendr-go/rendr/internal/netlab"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/l3"
	"github.com/rendr-go/rendr/status"
)

// labHost is the program's network in one of the lab's namespaces: its sockets are made there.
func labHost(lab *netlab.Lab, side netlab.Side, lookup lookupFunc) host {
	open := func(mk func() (io.Closer, error)) (io.Closer, error) { return lab.Open(side, mk) }
	dial := lab.Dialer(side, nil)
	return host{
		listen:        func(a string) (net.Listener, error) { return lab.Listen(side, "tcp", a) },
		listenCarrier: extest.ListenCarrier(open),
		dialCarrier:   extest.DialCarrier(open),
		egress: func(ctx context.Context, _ rendr.PublicKey, id l3.Identity) (net.Conn, error) {
			return dial(ctx, "tcp", id.Dst.String())
		},
		lookup: lookup,
	}
}

// pathStatus is the dialer's path of that name.
func pathStatus(t *testing.T, d *rendr.Dialer, name string) status.Path {
	t.Helper()
	for _, p := range d.Status().Paths {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no path %s", name)
	return status.Path{}
}

// held is a payload served in two parts: the handler sends the first, says so on sent, and
// sends the rest once resume is called.
type held struct {
	body        []byte
	first       int
	sent        chan struct{}
	release     chan struct{}
	once, relOK sync.Once
}

// resume lets the handler send the rest.
func (h *held) resume() { h.relOK.Do(func() { close(h.release) }) }

func (h *held) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", strconv.Itoa(len(h.body)))
	if _, err := w.Write(h.body[:h.first]); err != nil {
		return
	}
	w.(http.Flusher).Flush()
	h.once.Do(func() { close(h.sent) })
	select {
	case <-h.release:
	case <-r.Context().Done():
		return
	}
	w.Write(h.body[h.first:])
}

// TestCurlNetns downloads 48 MiB with curl through the proxy, the name resolved at the server
// (--socks5-hostname), while the path in use is blackholed: curl must succeed and write
// exactly the served bytes, and the bytes sent after the cut must have crossed the other path.
// Then a connect to a closed port must reach curl as the proxy's refusal.
func TestCurlNetns(t *testing.T) {
	curl := extest.NeedTool(t, "curl")
	lab := testkit.NetLab(t, netlab.Config{Paths: 2, Name: "socks5"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The web server, on the server namespace's loopback: only a connection made there
	// reaches it.
	const size, first = 48 << 20, 8 << 20
	web := &held{body: extest.Payload(7, size), first: first, sent: make(chan struct{}), release: make(chan struct{})}
	webLn, err := lab.Listen(netlab.Server, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: web}
	var wg sync.WaitGroup
	wg.Go(func() { hs.Serve(webLn) })
	defer func() {
		web.resume()
		hs.Close()
		wg.Wait()
	}()
	webPort := webLn.Addr().(*net.TCPAddr).Port

	// The server's resolver knows one name, and counts the lookups of it.
	var lookups atomic.Int32
	lookup := func(_ context.Context, name string) ([]netip.Addr, error) {
		if name == "files.lab.test" {
			lookups.Add(1)
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	cliKey, srvKey, cliPub, srvPub := keyFiles(t)
	srv, err := newServer([]string{"-key", srvKey, "-peer", cliPub,
		"-listen", netip.AddrPortFrom(lab.ServerAddr(0), 7000).String(),
		"-listen", netip.AddrPortFrom(lab.ServerAddr(1), 7000).String(),
		"-allow", "127.0.0.0/8"}, io.Discard, labHost(lab, netlab.Server, lookup))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := newClient([]string{"-key", cliKey, "-peer", srvPub, "-listen", "127.0.0.1:0",
		"-path", fmt.Sprintf("%s,from=%s", netip.AddrPortFrom(lab.ServerAddr(0), 7000), lab.ClientAddr(0)),
		"-path", fmt.Sprintf("%s,from=%s,backup", netip.AddrPortFrom(lab.ServerAddr(1), 7000), lab.ClientAddr(1)),
	}, io.Discard, labHost(lab, netlab.Client, nil))
	if err != nil {
		srv.ln.Close()
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	wg.Go(func() { srv.serve(runCtx) })
	wg.Go(func() { cli.serve(runCtx) })
	defer stop() // runs before the deferred wg.Wait above
	socks := cli.ln.Addr().String()

	out := filepath.Join(t.TempDir(), "download")
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", lab.ClientNS(), curl, "-sS", "--fail",
		"--socks5-hostname", socks, "-o", out, fmt.Sprintf("http://files.lab.test:%d/payload", webPort))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-web.sent:
	case err := <-done:
		t.Fatalf("curl ended before the first %d bytes were served: %v: %s", first, err, stderr.String())
	}
	// Cut the path that carries the download (the backup when it came up first: the
	// Selector stays on it while it is healthy).
	// The paths are named path<i> after the lab's path i (the -path flags' order).
	st := cli.d.Status()
	cut := -1
	for _, p := range st.Paths {
		if p.Active {
			cut, _ = strconv.Atoi(strings.TrimPrefix(p.Name, "path"))
		}
	}
	if len(st.Paths) != 2 || cut < 0 {
		t.Fatalf("no path carries the download: %+v", st.Paths)
	}
	other := fmt.Sprintf("path%d", 1-cut)
	before := pathStatus(t, cli.d, other).BytesRecv
	if err := lab.Blackhole(cut, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("path%d cut after %d bytes", cut, first)
	web.resume()
	if err := <-done; err != nil {
		t.Fatalf("curl: %v: %s", err, stderr.String())
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(web.body) {
		t.Fatalf("curl wrote %d bytes with sha256 %x, the server sent %d with %x", len(got), sha256.Sum256(got), size, sha256.Sum256(web.body))
	}
	if n := lookups.Load(); n != 1 {
		t.Errorf("the server resolved the name %d times, want once", n)
	}
	if moved := pathStatus(t, cli.d, other).BytesRecv - before; moved < size-first {
		t.Errorf("%s received %d bytes after the cut, less than the %d sent after it", other, moved, size-first)
	}

	// A closed port: the server's egress is refused, and curl hears the SOCKS refusal.
	cmd = exec.CommandContext(ctx, "ip", "netns", "exec", lab.ClientNS(), curl, "-sS",
		"--socks5-hostname", socks, "http://files.lab.test:1/")
	msg, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 97 {
		t.Fatalf("curl to a closed port: %v, want exit status 97 (a proxy error): %s", err, msg)
	}
	t.Logf("curl to a closed port: %s", bytes.TrimSpace(msg))
}
