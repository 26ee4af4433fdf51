package trace_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/trace"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// lines parses a trace.
func lines(t *testing.T, b []byte) []trace.Record {
	t.Helper()
	var out []trace.Record
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var r trace.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

func TestWritesOneLinePerEvent(t *testing.T) {
	var buf bytes.Buffer
	tw := trace.New(&buf)
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	sid := [16]byte{0xab, 1}
	tw.Event(status.Event{Time: at, Kind: status.Migrated, Dialer: true, Session: sid, Cause: status.CauseStall,
		From: "wifi", To: "lte", FromID: 1, ToID: 2, Active: []string{"lte"}, Path: "lte", PathID: 2})
	tw.Event(status.Event{Time: at, Kind: status.HandshakeRefused, Remote: "192.0.2.1:5", Reason: status.RefuseUnknownKey, Err: "no"})
	tw.Event(status.Event{Time: at, Kind: status.PathDown, Dialer: true, Path: "wifi", PathID: 1, SRTT: 1500 * time.Microsecond, Err: "reset"})
	tw.Event(status.Event{Time: at, Kind: status.Rewound, Flows: 3, Bytes: 4096})
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "\n"); n != 4 {
		t.Fatalf("%d lines, want 4:\n%s", n, buf.String())
	}
	rs := lines(t, buf.Bytes())
	m := rs[0]
	if m.Kind != "migration" || m.Side != "dialer" || m.Cause != "stall" || m.From != "wifi" || m.To != "lte" ||
		m.FromID != 1 || m.ToID != 2 || len(m.Active) != 1 || !m.Time.Equal(at) ||
		m.Session != "ab010000000000000000000000000000" {
		t.Errorf("migration line: %+v", m)
	}
	if r := rs[1]; r.Kind != "handshake_refused" || r.Side != "listener" || r.Reason != "unknown_key" ||
		r.Remote != "192.0.2.1:5" || r.Session != "" || r.Cause != "" {
		t.Errorf("refusal line: %+v", r)
	}
	if r := rs[2]; r.Kind != "path_down" || r.SRTTms != 1.5 || r.Err != "reset" || r.PathID != 1 {
		t.Errorf("path_down line: %+v", r)
	}
	if r := rs[3]; r.Kind != "rewind" || r.Flows != 3 || r.Bytes != 4096 {
		t.Errorf("rewind line: %+v", r)
	}
}

func TestConcurrentEvents(t *testing.T) {
	var buf bytes.Buffer
	tw := trace.New(&buf, trace.Buffer(8000))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				tw.Event(status.Event{Time: time.Now(), Kind: status.PathUp, PathID: uint32(g*1000 + i)})
			}
		})
	}
	wg.Wait()
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	rs := lines(t, buf.Bytes())
	seen := map[uint32]bool{}
	for _, r := range rs {
		seen[r.PathID] = true
	}
	if len(rs) != 4000 || len(seen) != 4000 || tw.Dropped() != 0 {
		t.Fatalf("%d lines, %d distinct, %d dropped; want 4000, 4000, 0", len(rs), len(seen), tw.Dropped())
	}
}

// stuckWriter blocks every Write until released.
type stuckWriter struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// A writer that does not move never holds up the caller: events beyond the buffer are
// dropped, counted, and the trace says so.
func TestFullBufferDropsAndCounts(t *testing.T) {
	w := &stuckWriter{release: make(chan struct{})}
	tw := trace.New(w, trace.Buffer(4))
	const n = 1000
	for i := range n {
		tw.Event(status.Event{Time: time.Now(), Kind: status.PathSuspect, PathID: uint32(i + 1)})
	}
	if tw.Dropped() == 0 {
		t.Fatal("nothing dropped with a buffer of 4 and a stuck writer")
	}
	close(w.release)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var events, dropped uint64
	for _, r := range lines(t, w.buf.Bytes()) {
		switch r.Kind {
		case trace.KindDropped:
			dropped += r.Dropped
		case "path_suspect":
			events++
		default:
			t.Errorf("unexpected line %+v", r)
		}
	}
	if events+dropped != n || dropped != tw.Dropped() {
		t.Fatalf("%d written + %d dropped lines != %d events (Dropped %d)", events, dropped, n, tw.Dropped())
	}
	tw.Event(status.Event{Kind: status.PathUp})
	if tw.Dropped() != dropped+1 {
		t.Errorf("an event after Close was not counted as dropped")
	}
}

type failWriter struct{}

var errDisk = errors.New("disk full")

func (failWriter) Write([]byte) (int, error) { return 0, errDisk }

func TestWriteErrorReturnedByClose(t *testing.T) {
	tw := trace.New(failWriter{})
	tw.Event(status.Event{Kind: status.PathUp})
	if err := tw.Close(); !errors.Is(err, errDisk) {
		t.Fatalf("Close: %v, want %v", err, errDisk)
	}
	if err := tw.Close(); !errors.Is(err, errDisk) {
		t.Fatalf("second Close: %v", err)
	}
}
