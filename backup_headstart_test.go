package rendr_test

import (
	"context"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/internal/testlink"
	"github.com/rendr-go/rendr/status"
)

// hsLink is one path of a head-start test: an in-memory source, and the dial that reaches it
// after a delay (the path takes longer to set up), never (a dead path: the dial waits out
// its context) or not at all (refused at once).
type hsLink struct {
	src    *testlink.Listener
	delay  time.Duration
	dead   bool
	refuse bool

	mu    sync.Mutex
	links []*testlink.Link
}

func (p *hsLink) dial(ctx context.Context) (net.Conn, error) {
	if p.refuse {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	wait := p.delay
	if p.dead {
		wait = time.Hour
	}
	select {
	case <-time.After(wait):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c, l, err := p.src.Dial(ctx, stGoodLink, stGoodLink)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.links = append(p.links, l)
	p.mu.Unlock()
	return c, nil
}

// bytes is what every carrier of the path moved, both directions.
func (p *hsLink) bytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n int64
	for _, l := range p.links {
		ab, ba := l.Stats()
		n += ab + ba
	}
	return n
}

// TestSynctestBackupHeadStart: a fresh session gives its primary a head start over its backup
// (DialerConfig.BackupHeadStart). A backup that connects first carries nothing while the
// primary is still setting up: the first route is the primary, on both sides, and the
// backup's carrier moves only its handshake and probes. A dead primary holds the backup back
// for exactly the head start; one that is refused, not at all. Without a head start, the
// backup that connected first carries the first traffic: what this test is here to stop.
func TestSynctestBackupHeadStart(t *testing.T) {
	const payload = 4 << 20
	cases := []struct {
		name      string
		headStart time.Duration
		primary   hsLink // its delay, dead and refuse
		// want: the path the first route takes, and when after the dial started (virtual
		// time; -1: not checked beyond "before the head start ends").
		first string
		at    time.Duration
	}{
		{name: "slow primary", primary: hsLink{delay: 80 * time.Millisecond}, first: "primary", at: -1},
		{name: "dead primary", primary: hsLink{dead: true}, first: "backup", at: 250 * time.Millisecond},
		{name: "refused primary", headStart: -1, primary: hsLink{refuse: true}, first: "backup", at: -1},
		{name: "custom head start", headStart: time.Second, primary: hsLink{dead: true}, first: "backup", at: time.Second},
		{name: "no head start", headStart: -1, primary: hsLink{delay: 80 * time.Millisecond}, first: "backup", at: -1},
	}
	for i := range cases {
		tc := &cases[i]
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				primary := &hsLink{src: testlink.Listen("primary"), delay: tc.primary.delay, dead: tc.primary.dead, refuse: tc.primary.refuse}
				backup := &hsLink{src: testlink.Listen("backup")}
				srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
				var dmig, lmig testkit.Migrations
				ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()},
					Options: rendr.Options{OnMigrate: lmig.Record}}, primary.src, backup.src)
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(), BackupHeadStart: tc.headStart,
					Root: rendr.Selector("uplinks",
						rendr.Path("primary", primary.dial),
						rendr.Path("backup", backup.dial, rendr.Backup())),
					Options: rendr.Options{OnMigrate: dmig.Record}})
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()

				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				dc, lc, err := testkit.OpenFlow(ctx, d, ln)
				if err != nil {
					t.Fatal(err)
				}
				up, down := stDuplex(dc, lc, payload, 7)
				up.check(t, "up", time.Minute)
				down.check(t, "down", time.Minute)

				evs := dmig.All()
				if len(evs) == 0 {
					t.Fatal("no migration at all")
				}
				first := evs[0]
				if first.Cause != status.CauseFirst || first.To != tc.first {
					t.Fatalf("first route: %s -> %s (%v), want -> %s (first); all: %v", first.From, first.To, first.Cause, tc.first, evs)
				}
				took := first.Time.Sub(start)
				switch {
				case tc.at >= 0 && took != tc.at:
					t.Fatalf("first route on %s after %v of virtual time, want %v (the head start)", first.To, took, tc.at)
				case tc.at < 0 && took >= 250*time.Millisecond:
					t.Fatalf("first route on %s after %v: something waited out the head start", first.To, took)
				}
				if tc.first != "primary" {
					return
				}
				// Not one move to the backup on either side, and the backup's carrier moved
				// its handshake and probes alone: far less than one payload's worth.
				for side, all := range map[string][]status.Migration{"dialer": evs, "listener": lmig.All()} {
					for _, ev := range all {
						if slices.Contains(ev.Active, "backup") {
							t.Fatalf("%s routed on the backup: %s -> %s (%v); all: %v", side, ev.From, ev.To, ev.Cause, all)
						}
					}
				}
				if n := backup.bytes(); n > 16<<10 {
					t.Fatalf("the backup's carriers moved %d bytes of a %d-byte exchange; only the handshake and probes belong there", n, 2*payload)
				}
				if n := primary.bytes(); n < 2*payload {
					t.Fatalf("the primary moved %d bytes, less than the %d-byte exchange", n, 2*payload)
				}
			})
		})
	}
}
