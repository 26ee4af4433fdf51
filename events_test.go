// Options.Trace: the engine's decisions as events, with the fields that say what happened.

package rendr_test

import (
	"context"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport/tcp"
)

// eventLog collects the events a Trace hook receives.
type eventLog struct {
	mu  sync.Mutex
	evs []status.Event
}

func (l *eventLog) add(ev status.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

// find returns the first event that match accepts.
func (l *eventLog) find(match func(status.Event) bool) (status.Event, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := slices.IndexFunc(l.evs, match)
	if i < 0 {
		return status.Event{}, false
	}
	return l.evs[i], true
}

func (l *eventLog) wait(t *testing.T, what string, match func(status.Event) bool) status.Event {
	t.Helper()
	var ev status.Event
	if !testkit.Wait(20*time.Second, func() (ok bool) { ev, ok = l.find(match); return ok }) {
		l.mu.Lock()
		defer l.mu.Unlock()
		t.Fatalf("no %s event; got %d events: %+v", what, len(l.evs), l.evs)
	}
	return ev
}

// TestTraceEvents drives a session through a path coming up, a forced move and a stranger's
// refused handshake, and checks that Trace hears each on the side that decided it.
func TestTraceEvents(t *testing.T) {
	var dl, ll eventLog
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	ln, addrs := lmListen(t, rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()},
		Options: rendr.Options{Trace: ll.add}}, 2)
	lmEcho(t, ln)
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root:    rendr.Selector("g", rendr.Path("a", tcp.Dialer(addrs[0])), rendr.Path("b", tcp.Dialer(addrs[1]))),
		Options: rendr.Options{Trace: dl.add}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !testkit.Wait(20*time.Second, func() bool { return testkit.AllUp(d.Status(), 2) }) {
		t.Fatalf("paths never all up: %+v", d.Status().Paths)
	}
	sid := d.Status().ID

	for _, name := range []string{"a", "b"} {
		ev := dl.wait(t, "path_up "+name, func(ev status.Event) bool {
			return ev.Kind == status.PathUp && ev.Path == name && ev.Reason == ""
		})
		if !ev.Dialer || ev.Session != sid || ev.PathID == 0 || ev.Remote == "" || ev.Time.IsZero() {
			t.Errorf("dialer's path_up %s: %+v (session %x)", name, ev, sid)
		}
		if _, ok := dl.find(func(ev status.Event) bool { return ev.Kind == status.PathConnecting && ev.Path == name }); !ok {
			t.Errorf("no path_connecting for %s", name)
		}
		ev = ll.wait(t, "listener's handshake_accepted "+name, func(ev status.Event) bool {
			return ev.Kind == status.HandshakeAccepted && ev.Path == name
		})
		if ev.Dialer || ev.Session != sid || ev.Remote == "" {
			t.Errorf("listener's handshake_accepted %s: %+v", name, ev)
		}
	}

	// A move the application asks for: off the path carrying traffic, onto the other. Both
	// paths up, the route may not be chosen yet.
	if !testkit.Wait(20*time.Second, func() bool { return activePath(d.Status()) != "" }) {
		t.Fatalf("no path carries traffic: %+v", d.Status().Paths)
	}
	from := activePath(d.Status())
	to := map[string]string{"a": "b", "b": "a"}[from]
	if _, err := c.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	if err := d.Select(to); err != nil {
		t.Fatal(err)
	}
	mv := dl.wait(t, "migration to "+to, func(ev status.Event) bool {
		return ev.Kind == status.Migrated && ev.To == to
	})
	if mv.Cause != status.CauseControl || mv.From != from || mv.ToID == 0 || mv.FromID == 0 ||
		mv.Session != sid || !slices.Equal(mv.Active, []string{to}) {
		t.Errorf("migration: %+v, want control from %s to %s", mv, from, to)
	}
	rw := dl.wait(t, "rewind", func(ev status.Event) bool { return ev.Kind == status.Rewound })
	if rw.Session != sid || !rw.Dialer {
		t.Errorf("rewind: %+v", rw)
	}
	if _, err := io.ReadFull(c, make([]byte, 64<<10)); err != nil { // the echo, after the move
		t.Fatal(err)
	}
	st := d.Status()
	if st.Rewinds == 0 || st.Moves[status.CauseControl] == 0 {
		t.Errorf("status after the move: rewinds %d, moves %v", st.Rewinds, st.Moves)
	}

	// A dialer with a key the listener does not know: refused on one side, failed on the other.
	var sl eventLog
	stranger, err := rendr.NewDialer(rendr.DialerConfig{Key: rendr.MustNewKey(), PeerKey: srv.Public(),
		Root: rendr.Path("x", tcp.Dialer(addrs[0])), Options: rendr.Options{Trace: sl.add, HandshakeTimeout: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	go stranger.Connect(sctx)
	ref := ll.wait(t, "handshake_refused", func(ev status.Event) bool { return ev.Kind == status.HandshakeRefused })
	if ref.Reason != status.RefuseUnknownKey || ref.Remote == "" || ref.Err == "" || ref.Session != ([16]byte{}) {
		t.Errorf("refusal: %+v, want reason %s", ref, status.RefuseUnknownKey)
	}
	fail := sl.wait(t, "handshake_failed", func(ev status.Event) bool { return ev.Kind == status.HandshakeFailed })
	if fail.Path != "x" || !fail.Dialer || fail.Err == "" {
		t.Errorf("stranger's failure: %+v", fail)
	}
	scancel()
	stranger.Close()

	// The session's end, on both sides.
	c.Close()
	d.Close()
	end := dl.wait(t, "session_ended", func(ev status.Event) bool { return ev.Kind == status.SessionEnded })
	if end.Session != sid || end.Err == "" {
		t.Errorf("session end: %+v", end)
	}
	ll.wait(t, "listener's session_ended", func(ev status.Event) bool {
		return ev.Kind == status.SessionEnded && ev.Session == sid
	})
	down := dl.wait(t, "path_down", func(ev status.Event) bool { return ev.Kind == status.PathDown && ev.Path == to })
	if down.Err == "" || down.PathID != mv.ToID || down.Session != sid {
		t.Errorf("path_down: %+v", down)
	}
}

// activePath names the path carrying traffic, "" for none.
func activePath(st status.Session) string {
	for _, p := range st.Paths {
		if p.Active {
			return p.Name
		}
	}
	return ""
}
