package metrics_test

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/metrics"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport/tcp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// value sums the samples of the metric name whose labels include want.
func value(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) (float64, int) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var sum float64
	n := 0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue metric
				}
			}
			n++
			sum += sampleOf(m)
		}
	}
	return sum, n
}

func sampleOf(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

// TestLivePair reads the metrics of a dialer and a listener on loopback while traffic moves,
// a path change is forced and a stranger is refused.
func TestLivePair(t *testing.T) {
	m := metrics.New()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(m); err != nil {
		t.Fatal(err)
	}
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
		Options: rendr.Options{Trace: m.Trace}}, srcs...)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m.WatchListener(ln)
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root:    rendr.Selector("g", rendr.Path("a", tcp.Dialer(addrs[0])), rendr.Path("b", tcp.Dialer(addrs[1]))),
		Options: rendr.Options{Trace: m.Trace}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	m.WatchDialer(d)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.AcceptContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const payload = 256 << 10
	go func() { c.Write(make([]byte, payload)) }()
	if _, err := io.ReadFull(s, make([]byte, payload)); err != nil {
		t.Fatal(err)
	}
	if !testkit.Wait(20*time.Second, func() bool { return testkit.AllUp(d.Status(), 2) }) {
		t.Fatalf("paths not up: %+v", d.Status().Paths)
	}

	if sent, n := value(t, reg, "rendr_path_sent_bytes_total", map[string]string{"side": "dialer"}); n != 2 || sent <= payload {
		t.Errorf("dialer's paths sent %v bytes over %d series; want more than the %d-byte payload over 2", sent, n, payload)
	}
	if recv, _ := value(t, reg, "rendr_path_received_bytes_total", map[string]string{"side": "listener"}); recv <= payload {
		t.Errorf("listener's paths received %v bytes; want more than %d", recv, payload)
	}
	for _, side := range []string{"dialer", "listener"} {
		if v, _ := value(t, reg, "rendr_sessions", map[string]string{"side": side}); v != 1 {
			t.Errorf("%s sessions = %v, want 1", side, v)
		}
		if v, _ := value(t, reg, "rendr_session_flows", map[string]string{"side": side}); v != 1 {
			t.Errorf("%s flows = %v, want 1", side, v)
		}
	}
	if up, n := value(t, reg, "rendr_path_state", map[string]string{"side": "dialer", "state": "up"}); up != 2 || n != 2 {
		t.Errorf("dialer paths up: %v of %d", up, n)
	}
	if v, _ := value(t, reg, "rendr_path_srtt_seconds", map[string]string{"side": "dialer", "path": "a"}); v <= 0 {
		t.Errorf("path a's srtt = %v, want > 0", v)
	}

	// A forced move: counted by cause in the snapshot and through Trace.
	to := "b"
	for _, p := range d.Status().Paths {
		if p.Active && p.Name == "b" {
			to = "a"
		}
	}
	if err := d.Select(to); err != nil {
		t.Fatal(err)
	}
	moved := func() bool {
		v, _ := value(t, reg, "rendr_session_migrations_total", map[string]string{"side": "dialer", "cause": "control"})
		w, _ := value(t, reg, "rendr_migrations_total", map[string]string{"side": "dialer", "cause": "control"})
		a, _ := value(t, reg, "rendr_path_active", map[string]string{"side": "dialer", "path": to})
		return v >= 1 && w >= 1 && a == 1
	}
	if !testkit.Wait(20*time.Second, moved) {
		t.Fatalf("no control migration to %s in the metrics", to)
	}
	if v, _ := value(t, reg, "rendr_session_rewinds_total", map[string]string{"side": "dialer"}); v < 1 {
		t.Errorf("rewinds = %v after a move, want >= 1", v)
	}

	// A stranger's handshake, refused for its key.
	stranger, err := rendr.NewDialer(rendr.DialerConfig{Key: rendr.MustNewKey(), PeerKey: srv.Public(),
		Root: rendr.Path("x", tcp.Dialer(addrs[0])), Options: rendr.Options{HandshakeTimeout: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { stranger.Connect(sctx); close(done) }()
	refused := func() bool {
		v, _ := value(t, reg, "rendr_listener_refused_handshakes_total", map[string]string{"reason": "unknown_key"})
		w, _ := value(t, reg, "rendr_handshake_refusals_total", map[string]string{"reason": "unknown_key"})
		return v >= 1 && w >= 1
	}
	if !testkit.Wait(20*time.Second, refused) {
		t.Error("the stranger's refusal was not counted")
	}
	scancel()
	<-done
	stranger.Close()

	if problems, err := testutil.CollectAndLint(m); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
	if n := testutil.CollectAndCount(m, "rendr_path_state"); n != 16 { // 2 sides x 2 paths x 4 states
		t.Errorf("%d path_state series, want 16", n)
	}
}

// fakeListener serves fixed snapshots.
type fakeListener struct {
	ss []status.Session
	st status.Listener
}

func (f *fakeListener) Sessions() []status.Session { return append([]status.Session(nil), f.ss...) }
func (f *fakeListener) Stats() status.Listener     { return f.st }

type fakeDialer struct{ s status.Session }

func (f *fakeDialer) Status() status.Session { return f.s }

func TestExposition(t *testing.T) {
	s := status.Session{ID: [16]byte{0xde, 0xad, 0xbe, 0xef, 1}, Flows: 3, Resent: 1000, Rewinds: 2,
		Drops: status.Drops{RecvQueue: 7},
		Paths: []status.Path{
			{Name: "wifi", ID: 4, State: status.Up, Active: true, SRTT: 20 * time.Millisecond, BytesSent: 5000},
			{Name: "wifi", ID: 2, State: status.Down, BytesSent: 9}, // an old carrier of the same path
			{Name: "lte", ID: 3, State: status.Suspect, Packets: &status.Packets{Sent: 10, Lost: 1, Marked: 2, MarkedIn: 5}},
		}}
	s.Moves[status.CauseDeath] = 1
	reg := prometheus.NewPedanticRegistry()
	if _, err := metrics.Register(reg, &fakeDialer{s}, nil); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP rendr_path_sent_bytes_total Carrier bytes written on the path's current carrier, headers and tags included.
# TYPE rendr_path_sent_bytes_total counter
rendr_path_sent_bytes_total{path="lte",session="deadbeef",side="dialer"} 0
rendr_path_sent_bytes_total{path="wifi",session="deadbeef",side="dialer"} 5000
# HELP rendr_path_marked_packets_total Packets that met a filling receive queue: this side's (direction sent) or the peer's (received).
# TYPE rendr_path_marked_packets_total counter
rendr_path_marked_packets_total{direction="received",path="lte",session="deadbeef",side="dialer"} 5
rendr_path_marked_packets_total{direction="sent",path="lte",session="deadbeef",side="dialer"} 2
# HELP rendr_path_srtt_seconds Smoothed round trip of the path's probes.
# TYPE rendr_path_srtt_seconds gauge
rendr_path_srtt_seconds{path="lte",session="deadbeef",side="dialer"} 0
rendr_path_srtt_seconds{path="wifi",session="deadbeef",side="dialer"} 0.02
# HELP rendr_session_resent_bytes_total Flow bytes sent again: after a rewind, or reported lost by a datagram path.
# TYPE rendr_session_resent_bytes_total counter
rendr_session_resent_bytes_total{session="deadbeef",side="dialer"} 1000
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "rendr_path_sent_bytes_total",
		"rendr_path_marked_packets_total", "rendr_path_srtt_seconds", "rendr_session_resent_bytes_total"); err != nil {
		t.Error(err)
	}
	if v, _ := value(t, reg, "rendr_session_dropped_datagrams_total", map[string]string{"cause": "recv_queue"}); v != 7 {
		t.Errorf("recv_queue drops = %v, want 7", v)
	}
	if v, _ := value(t, reg, "rendr_session_migrations_total", map[string]string{"cause": "death"}); v != 1 {
		t.Errorf("death migrations = %v, want 1", v)
	}
	if v, _ := value(t, reg, "rendr_path_state", map[string]string{"path": "lte", "state": "suspect"}); v != 1 {
		t.Errorf("lte suspect = %v, want 1", v)
	}
}

// A listener's sessions beyond MaxSessions get no series of their own, and two sessions whose
// ids start alike are told apart.
func TestSessionBound(t *testing.T) {
	f := &fakeListener{st: status.Listener{UnknownKey: 4}}
	for i := range 5 {
		id := [16]byte{1, 2, 3, 4, byte(i)} // the same short id for all
		f.ss = append(f.ss, status.Session{ID: id, Paths: []status.Path{{Name: "p", State: status.Up}}})
	}
	reg := prometheus.NewPedanticRegistry()
	if _, err := metrics.Register(reg, nil, f, metrics.WithMaxSessions(2)); err != nil {
		t.Fatal(err)
	}
	if v, _ := value(t, reg, "rendr_sessions", map[string]string{"side": "listener"}); v != 5 {
		t.Errorf("sessions = %v, want 5", v)
	}
	if v, _ := value(t, reg, "rendr_sessions_omitted", map[string]string{"side": "listener"}); v != 3 {
		t.Errorf("omitted = %v, want 3", v)
	}
	if _, n := value(t, reg, "rendr_session_flows", nil); n != 2 {
		t.Errorf("%d sessions exported, want 2", n)
	}
	if _, n := value(t, reg, "rendr_session_flows", map[string]string{"session": "01020304000000000000000000000000"}); n != 1 {
		t.Error("sessions sharing a short id are not exported under their whole id")
	}
	if v, _ := value(t, reg, "rendr_listener_refused_handshakes_total", map[string]string{"reason": "unknown_key"}); v != 4 {
		t.Errorf("unknown_key refusals = %v, want 4", v)
	}
}
