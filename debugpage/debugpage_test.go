package debugpage_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/debugpage"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport/tcp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, h http.Handler, target, accept string) (*http.Response, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

// TestLivePair shows a dialer and a listener on loopback, after a forced move.
func TestLivePair(t *testing.T) {
	page := debugpage.New()
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	var srcs []net.Listener
	var addrs []string
	for range 2 {
		l, err := tcp.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, l)
		addrs = append(addrs, l.Addr().String())
	}
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()},
		Options: rendr.Options{Trace: page.Trace}}, srcs...)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	page.WatchListener(ln)
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root:    rendr.Selector("g", rendr.Path("wifi", tcp.Dialer(addrs[0])), rendr.Path("lte", tcp.Dialer(addrs[1]))),
		Options: rendr.Options{Trace: page.Trace}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	page.WatchDialer(d)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !testkit.Wait(20*time.Second, func() bool { return testkit.AllUp(d.Status(), 2) }) {
		t.Fatalf("paths not up: %+v", d.Status().Paths)
	}
	to := "lte"
	for _, p := range d.Status().Paths {
		if p.Active && p.Name == "lte" {
			to = "wifi"
		}
	}
	if err := d.Select(to); err != nil {
		t.Fatal(err)
	}

	var v debugpage.View
	moved := func() bool {
		res, body := get(t, page, "/debug/rendr?format=json", "")
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("Content-Type %q", ct)
		}
		v = debugpage.View{}
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatalf("%v in %s", err, body)
		}
		for _, r := range v.Recent {
			if r.Kind == "migration" && r.Cause == "control" && r.To == to && r.Side == "dialer" {
				return true
			}
		}
		return false
	}
	if !testkit.Wait(20*time.Second, moved) {
		t.Fatalf("no control migration to %s among the recent events: %+v", to, v.Recent)
	}
	if v.Dialer == nil || len(v.Dialer.Paths) != 2 || len(v.Dialer.ID) != 32 {
		t.Fatalf("dialer: %+v", v.Dialer)
	}
	var active string
	for _, p := range v.Dialer.Paths {
		if p.State != "up" || p.Remote == "" || p.SRTTms <= 0 || p.BytesSent <= 0 {
			t.Errorf("dialer path %+v", p)
		}
		if p.Active {
			active = p.Name
		}
	}
	if active != to {
		t.Errorf("active path %q, want %q", active, to)
	}
	if v.Listener == nil || len(v.Listener.Sessions) != 1 || v.Listener.Sessions[0].ID != v.Dialer.ID ||
		v.Listener.Sessions[0].Flows != 1 || v.Listener.Stats.Sessions != 1 {
		t.Errorf("listener: %+v", v.Listener)
	}
	if v.Dialer.Moves["control"] < 1 {
		t.Errorf("moves: %v", v.Dialer.Moves)
	}

	// The same as JSON when asked by Accept, and as HTML otherwise.
	if res, _ := get(t, page, "/", "application/json"); res.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Accept: application/json gave %q", res.Header.Get("Content-Type"))
	}
	res, body := get(t, page, "/", "text/html,application/xhtml+xml,*/*;q=0.8")
	if !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("browser got %q", res.Header.Get("Content-Type"))
	}
	for _, want := range []string{"<h2>Dialer: session " + v.Dialer.ID[:8], "<td>wifi</td>", "<td>lte</td>", "control: ", `class="up"`} {
		if !strings.Contains(body, want) {
			t.Errorf("HTML lacks %q:\n%s", want, body)
		}
	}
}

type fakeDialer struct{ s status.Session }

func (f fakeDialer) Status() status.Session { return f.s }

// The HTML escapes what the peer or the embedder chose (path names, errors), the ring keeps
// only the newest events, newest first, and only GET and HEAD are served.
func TestEscapingRingAndMethods(t *testing.T) {
	page := debugpage.New(debugpage.Recent(3))
	page.WatchDialer(fakeDialer{status.Session{ID: [16]byte{1}, Paths: []status.Path{
		{Name: "<script>x</script>", State: status.Down, LastError: "a&b"}}}})
	for i := range 5 {
		page.Trace(status.Event{Time: time.Now(), Kind: status.PathDown, PathID: uint32(i + 1)})
	}
	page.OnMigrate(status.Migration{Time: time.Now(), From: "a", To: "b", Cause: status.CauseDeath})
	v := page.Snapshot()
	if len(v.Recent) != 3 || v.Recent[0].Kind != "migration" || v.Recent[1].PathID != 5 || v.Recent[2].PathID != 4 {
		t.Errorf("recent: %+v", v.Recent)
	}
	_, body := get(t, page, "/", "")
	if strings.Contains(body, "<script>x") || !strings.Contains(body, "&lt;script&gt;x") || !strings.Contains(body, "a&amp;b") {
		t.Errorf("not escaped:\n%s", body)
	}
	if !strings.Contains(body, "death: a -&gt; b") {
		t.Errorf("migration not shown:\n%s", body)
	}
	rec := httptest.NewRecorder()
	page.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rec.Code)
	}
}
