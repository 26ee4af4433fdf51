package excli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/tcp"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// dialLog is a DialCarrier that records what each path was made with, and dials nothing.
type dialLog struct {
	addrs []string
	opts  []int // how many tcp options each was given
}

func (d *dialLog) dial(addr string, opts ...tcp.Option) transport.DialFunc {
	d.addrs = append(d.addrs, addr)
	d.opts = append(d.opts, len(opts))
	return func(context.Context) (net.Conn, error) { return nil, errors.New("not dialed in tests") }
}

func TestParsePath(t *testing.T) {
	cases := []struct {
		spec     string
		name     string // the path's name; "" when the spec is refused
		addr     string
		tcpOpts  int
		errWords string
	}{
		{spec: "203.0.113.7:7001", name: "p", addr: "203.0.113.7:7001"},
		{spec: "[2001:db8::1]:7001,from=2001:db8::2", name: "p", addr: "[2001:db8::1]:7001", tcpOpts: 1},
		{spec: "203.0.113.7:7002,from=10.20.0.5,backup", name: "p", addr: "203.0.113.7:7002", tcpOpts: 1},
		{spec: "server.example:7003,tier=2,name=lte", name: "lte", addr: "server.example:7003"},
		{spec: "203.0.113.7:7001,tier=0", name: "p", addr: "203.0.113.7:7001"},
		// Malformed: each refused with an error naming the spec and what is wrong.
		{spec: "", errWords: "missing port"},
		{spec: "nowhere", errWords: "missing port"},
		{spec: "203.0.113.7:7001,from=nowhere", errWords: "from"},
		{spec: "203.0.113.7:7001,from=", errWords: "from"},
		{spec: "203.0.113.7:7001,tier=-1", errWords: "tier is a number"},
		{spec: "203.0.113.7:7001,tier=x", errWords: "tier is a number"},
		{spec: "203.0.113.7:7001,tier", errWords: "tier is a number"},
		{spec: "203.0.113.7:7001,name=", errWords: "an empty name"},
		{spec: "203.0.113.7:7001,fast", errWords: `unknown option "fast"`},
		{spec: "203.0.113.7:7001,,backup", errWords: `unknown option ""`},
	}
	for _, tc := range cases {
		var d dialLog
		p, err := ParsePath(tc.spec, "p", d.dial)
		if tc.errWords != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errWords) || !strings.Contains(err.Error(), "-path") {
				t.Errorf("%q: %v, want an error about -path saying %q", tc.spec, err, tc.errWords)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.spec, err)
			continue
		}
		if p.Name() != tc.name {
			t.Errorf("%q: path named %q, want %q", tc.spec, p.Name(), tc.name)
		}
		if len(d.addrs) != 1 || d.addrs[0] != tc.addr || d.opts[0] != tc.tcpOpts {
			t.Errorf("%q: dials %q with %v options, want %q with %d", tc.spec, d.addrs, d.opts, tc.addr, tc.tcpOpts)
		}
	}
}

func TestPathGraph(t *testing.T) {
	for _, policy := range []string{"selector", "race", "bond"} {
		var d dialLog
		root, err := PathGraph(policy, []string{"192.0.2.1:1", "192.0.2.2:2,name=b", "192.0.2.3:3,backup"}, "server", d.dial)
		if err != nil {
			t.Fatalf("%s: %v", policy, err)
		}
		if root.Name() != "paths" {
			t.Errorf("%s: root %q, want paths", policy, root.Name())
		}
		if want := []string{"192.0.2.1:1", "192.0.2.2:2", "192.0.2.3:3"}; !equal(d.addrs, want) {
			t.Errorf("%s: paths dial %q, want %q", policy, d.addrs, want)
		}
	}
	var d dialLog
	if _, err := PathGraph("fastest", []string{"192.0.2.1:1"}, "server", d.dial); err == nil || !strings.Contains(err.Error(), "-policy") {
		t.Errorf("an unknown policy: %v, want an error about -policy", err)
	}
	if _, err := PathGraph("selector", nil, "serving side", d.dial); err == nil || !strings.Contains(err.Error(), "-path is required: the serving side's address") {
		t.Errorf("no path: %v, want -path is required", err)
	}
	if _, err := PathGraph("selector", []string{"192.0.2.1:1", "192.0.2.2:2,tier=x"}, "server", d.dial); err == nil || !strings.Contains(err.Error(), "tier=x") {
		t.Errorf("a malformed second path: %v, want an error naming it", err)
	}
}

func equal(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n") && len(a) == len(b)
}

// TestKeys: a key genkey writes to a file loads, pubkey gives its public key, and loadKey
// refuses a missing flag, a file others can read and a file that is no key.
func TestKeys(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.key")
	// As the shell makes it for genkey > a.key: open to others by the umask.
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Chmod(0o644); err != nil {
		t.Fatal(err)
	}
	err = GenKey(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	k, err := loadKey(path, "prog")
	if err != nil {
		t.Fatalf("loadKey of what genkey wrote: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pub bytes.Buffer
	if err := PubKey(bytes.NewReader(b), &pub); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(pub.String()); got != k.Public().String() {
		t.Fatalf("pubkey %q, want %q", got, k.Public())
	}
	peers, err := parsePeers([]string{pub.String()[:len(pub.String())-1]}, "a client's key")
	if err != nil || len(peers) != 1 || peers[0] != k.Public() {
		t.Fatalf("parsePeers: %v, %v", peers, err)
	}

	if _, err := loadKey("", "prog"); err == nil || !strings.Contains(err.Error(), "-key is required") || !strings.Contains(err.Error(), "prog genkey") {
		t.Errorf("no -key: %v", err)
	}
	if _, err := loadKey(filepath.Join(dir, "none"), "prog"); err == nil || !strings.HasPrefix(err.Error(), "-key: ") {
		t.Errorf("a missing file: %v", err)
	}
	notKey := filepath.Join(dir, "not.key")
	if err := os.WriteFile(notKey, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadKey(notKey, "prog"); err == nil || !strings.HasPrefix(err.Error(), "-key: ") {
		t.Errorf("a file that is no key: %v", err)
	}
	if runtime.GOOS != "windows" {
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := loadKey(path, "prog"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("a key others can read: %v, want it refused", err)
		}
	}
	if err := PubKey(strings.NewReader("nonsense"), io.Discard); err == nil {
		t.Error("pubkey of nonsense: no error")
	}
	if _, err := parsePeers(nil, "a client's public key"); err == nil || !strings.Contains(err.Error(), "-peer is required: a client's public key") {
		t.Errorf("no -peer: %v", err)
	}
	if _, err := parsePeers([]string{"nonsense"}, "x"); err == nil || !strings.Contains(err.Error(), `-peer "nonsense"`) {
		t.Errorf("a malformed -peer: %v", err)
	}
}

// TestListenAll: when one address cannot be listened on, those opened before it are closed.
func TestListenAll(t *testing.T) {
	var opened []net.Listener
	listen := func(a string) (net.Listener, error) {
		l, err := net.Listen("tcp", a)
		if err == nil {
			opened = append(opened, l)
		}
		return l, err
	}
	lns, err := listenAll([]string{"127.0.0.1:0", "127.0.0.1:0", "not an address"}, listen)
	if err == nil || !strings.Contains(err.Error(), "-listen not an address") || lns != nil {
		t.Fatalf("listenAll: %v, %v, want an error naming the address", lns, err)
	}
	for _, l := range opened {
		if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("%v left open: %v", l.Addr(), err)
		}
	}
	lns, err = listenAll([]string{"127.0.0.1:0", "127.0.0.1:0"}, listen)
	if err != nil || len(lns) != 2 {
		t.Fatalf("listenAll: %v, %v", lns, err)
	}
	closeAll(lns)
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	log, rlog := logger(&buf, false)
	log.Debug("hidden")
	log.Info("shown")
	if rlog != nil {
		t.Error("rendr gets a logger without -v")
	}
	if s := buf.String(); strings.Contains(s, "hidden") || !strings.Contains(s, "shown") {
		t.Errorf("without -v: %q", s)
	}
	buf.Reset()
	log, rlog = logger(&buf, true)
	log.Debug("debug")
	if rlog != log || !strings.Contains(buf.String(), "debug") {
		t.Errorf("with -v: rendr's logger %p, the program's %p, log %q", rlog, log, buf.String())
	}
	var l ListFlag
	l.Set("a")
	l.Set("b")
	if l.String() != "a b" || len(l) != 2 {
		t.Errorf("ListFlag: %q", l)
	}
}
