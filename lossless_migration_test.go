// Lossless migration: while the path carrying a flow dies (FIN, RST, silent stall), over
// every carrier kind, both ends get every byte exactly once and in order.

package rendr_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/relay"
	"github.com/rendr-go/rendr/internal/testcert"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport/quic"
	"golang.org/x/net/nettest"
)

// TestNettestMigrating runs the net.Conn conformance suite while the path carrying the flow
// is killed every 100-200ms. Each pipe also starts with its active path just killed, so even
// the shortest subtest does its I/O across a migration: it must be invisible to every net.Conn
// behaviour.
func TestNettestMigrating(t *testing.T) {
	testkit.EachCarrierAtOnce(t, testNettestMigrating)
}

func testNettestMigrating(t *testing.T, carrier string) {
	seed := testkit.Seed(t)
	var pipes, kills, moves, still atomic.Int64
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		n := pipes.Add(1)
		r := testkit.NewRig(t, testkit.RigConfig{Paths: 2, Carrier: carrier})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		d, err := r.D.DialContext(ctx)
		if err != nil {
			r.Close()
			return nil, nil, nil, err
		}
		a, err := r.LN.AcceptContext(ctx)
		if err != nil {
			r.Close()
			return nil, nil, nil, err
		}
		first := testkit.Active(d.Status())
		if first < 0 {
			r.Close()
			return nil, nil, nil, fmt.Errorf("no active path after the flow opened: %s", testkit.Describe(d.Status()))
		}
		r.Relays[first].Kill([]relay.Mode{relay.Close, relay.Reset}[n%2])
		k := testkit.StartKiller(r.D.Status, r.Relays, seed+uint64(n))
		return d, a, func() {
			kills.Add(1 + k.Halt())
			// The first kill may be moments old when a short subtest ends: give the
			// session a bounded while to notice it.
			testkit.Wait(10*time.Second, func() bool { return r.Mig.Moves() > 0 })
			m := r.Mig.Moves()
			moves.Add(int64(m))
			if m == 0 {
				still.Add(1)
			}
			d.Close()
			a.Close()
			r.Close()
		}, nil
	})
	t.Logf("%d pipes, %d kills of the active path, %d migrations", pipes.Load(), kills.Load(), moves.Load())
	if still.Load() > 0 {
		t.Fatalf("%d of %d pipes never migrated although their active path was killed", still.Load(), pipes.Load())
	}
}

// rtTransferUnderKills moves size bytes each way between c1 and c2 (SHA-256 checked) while a
// kill plan of kills kills (close, reset and stall each at least once) runs against r, and
// returns the plan with the transfer's error. The stalled path, if any, is released after.
func rtTransferUnderKills(r *testkit.Rig, rng *rand.Rand, c1, c2 net.Conn, size int64, kills int, seed uint64) (*testkit.KillPlan, error) {
	plan := testkit.NewKillPlan(r.D.Status, r.Relays, rng, kills, 2*size, []relay.Mode{relay.Close, relay.Reset, relay.Stall})
	var progress atomic.Int64
	stop := make(chan struct{})
	planDone := make(chan struct{})
	go func() {
		defer close(planDone)
		plan.Run(&progress, stop)
	}()
	// A bound against a hang, far above what the transfer needs.
	c1.SetDeadline(time.Now().Add(150 * time.Second))
	c2.SetDeadline(time.Now().Add(150 * time.Second))
	// The plan's kills fall within 90% of the bytes; the readers wait at 95% until it has run,
	// so that the transfer cannot end first however slowly a busy machine runs the plan.
	at := 2 * size * 95 / 100
	err := testkit.Both(rtHeldReads{c1, &progress, at, planDone}, rtHeldReads{c2, &progress, at, planDone}, size, seed, &progress)
	close(stop)
	<-planDone
	plan.Release()
	return plan, err
}

// rtHeldReads is a connection whose reads wait, once progress has reached at, until release
// closes (at most a minute, so that a plan that cannot finish fails the test rather than
// hanging it).
type rtHeldReads struct {
	net.Conn
	progress *atomic.Int64
	at       int64
	release  <-chan struct{}
}

func (g rtHeldReads) Read(p []byte) (int, error) {
	if g.progress.Load() >= g.at {
		select {
		case <-g.release:
		default:
			select {
			case <-g.release:
			case <-time.After(time.Minute):
			}
		}
	}
	return g.Conn.Read(p)
}

// TestLosslessMigration moves 64 MiB each way at once over one flow while the carrying path
// dies at least 10 times by FIN, RST or silent stall: both ends must get every byte exactly
// once and in order, then a clean EOF, and the paths must all come back.
// TestLosslessMigration runs over encrypted records and over carriers declared secure, where
// the engine sends payload by reference into the path's vectored writes: a path dying with
// such a record half written must lose nothing either.
// Every carrier runs the same plan: for QUIC, Close and Reset close the carrier at the dialing
// and at the listening end (a UDP relay cannot), and Stall blackholes its datagrams.
func TestLosslessMigration(t *testing.T) {
	for _, carrier := range testkit.CarrierKinds() {
		for _, secure := range []bool{false, true} {
			name := carrier + "/encrypted"
			if secure {
				name = carrier + "/secure-carrier"
			}
			t.Run(name, func(t *testing.T) { testLosslessMigration(t, carrier, secure) })
		}
	}
}

func testLosslessMigration(t *testing.T, carrier string, secure bool) {
	// Ten kills of every kind within the transfer are the point, not its volume: the soak
	// (RENDR_SOAK) and rendrbench move gigabytes. gVisor's user-space TCP is the slowest per
	// byte under the race detector; it gets half as many.
	size, kills := int64(32<<20), 10
	if carrier == "gvisor" {
		size = 16 << 20
	}
	if testing.Short() {
		size, kills = 8<<20, 4
	}
	seed := testkit.Seed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	r := testkit.NewRig(t, testkit.RigConfig{Paths: 3, Options: rendr.Options{HandshakeTimeout: time.Second}, Secure: secure,
		Carrier: carrier})
	c1, c2 := r.Open()
	start := time.Now()
	plan, err := rtTransferUnderKills(r, rng, c1, c2, size, kills, seed)
	t.Logf("%d MiB each way in %v; kills: %v", size>>20, time.Since(start).Round(time.Millisecond), plan.Events())
	t.Logf("migrations: %v", r.Mig)
	if err != nil {
		t.Fatalf("transfer: %v", err)
	}
	if plan.Hits() != kills {
		t.Fatalf("only %d of %d kills happened during the transfer", plan.Hits(), kills)
	}
	if m := r.Mig.Moves(); m < plan.Hits() {
		t.Fatalf("%d migrations for %d kills of the active path", m, plan.Hits())
	}
	if got := c1.Migrations(); got < plan.Hits() {
		t.Fatalf("Conn.Migrations() = %d, want at least %d", got, plan.Hits())
	}

	c1.SetDeadline(time.Now().Add(30 * time.Second))
	c2.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c1.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := testkit.ExpectEOF(c2); err != nil {
		t.Fatalf("dialer to listener: %v", err)
	}
	if err := c2.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := testkit.ExpectEOF(c1); err != nil {
		t.Fatalf("listener to dialer: %v", err)
	}
	testkit.WaitUp(t, "dialer", c1.Status, 3, 30*time.Second)
	testkit.WaitUp(t, "listener", c2.Status, 3, 30*time.Second)
}

// TestMultipleFlowsShareSession runs 50 flows at once on one Dialer while paths die: every
// flow's bytes arrive exact, the listener sees one session, and flows never cost a handshake
// of their own.
func TestMultipleFlowsShareSession(t *testing.T) {
	const flows, paths, kills = 50, 3, 5
	size := int64(320 << 10)
	if testing.Short() {
		size = 128 << 10
	}
	seed := testkit.Seed(t)
	rng := rand.New(rand.NewPCG(seed, 3))
	r := testkit.NewRig(t, testkit.RigConfig{Paths: paths})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Dial concurrently; the listener pairs its side by flow id.
	dialed := make([]*rendr.Conn, flows)
	errs := make([]error, flows)
	var wg sync.WaitGroup
	for i := range flows {
		wg.Go(func() { dialed[i], errs[i] = r.D.DialContext(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("dial: %v", err)
	}
	accepted := map[uint64]*rendr.Conn{}
	for range flows {
		c, err := r.LN.AcceptContext(ctx)
		if err != nil {
			t.Fatalf("accept after %d flows: %v", len(accepted), err)
		}
		accepted[c.FlowID()] = c
	}
	for i, c := range dialed {
		if accepted[c.FlowID()] == nil {
			t.Fatalf("flow %d (id %d) was not accepted", i, c.FlowID())
		}
		if c.Status().ID != dialed[0].Status().ID {
			t.Fatalf("flow %d is on another session", i)
		}
	}

	var progress atomic.Int64
	plan := testkit.NewKillPlan(r.D.Status, r.Relays, rng, kills, 2*flows*size, []relay.Mode{relay.Close, relay.Reset})
	stop := make(chan struct{})
	planDone := make(chan struct{})
	go func() {
		defer close(planDone)
		plan.Run(&progress, stop)
	}()
	at := 2 * flows * size * 95 / 100 // the readers wait here for the plan: see rtTransferUnderKills
	for i, c := range dialed {
		a := accepted[c.FlowID()]
		c.SetDeadline(time.Now().Add(100 * time.Second))
		a.SetDeadline(time.Now().Add(100 * time.Second))
		wg.Go(func() {
			if err := testkit.Both(rtHeldReads{c, &progress, at, planDone}, rtHeldReads{a, &progress, at, planDone},
				size, seed+uint64(2*i), &progress); err != nil {
				errs[i] = fmt.Errorf("flow %d: %w", c.FlowID(), err)
			}
		})
	}
	wg.Wait()
	close(stop)
	<-planDone
	t.Logf("kills: %v; migrations: %v", plan.Events(), r.Mig)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if plan.Hits() != kills {
		t.Fatalf("only %d of %d kills happened during the transfer", plan.Hits(), kills)
	}
	if n := len(r.LN.Sessions()); n != 1 {
		t.Fatalf("listener has %d sessions for one dialer, want 1", n)
	}
	carriers := 0
	for _, s := range r.Srcs {
		carriers += len(s.Carriers())
	}
	t.Logf("%d carriers accepted for %d flows over %d paths with %d kills", carriers, flows, paths, kills)
	if carriers > paths*(kills+1) || carriers >= flows {
		t.Fatalf("%d carriers accepted: handshakes are repeated per flow (bound %d)", carriers, paths*(kills+1))
	}
	for _, c := range dialed {
		c.Close()
		accepted[c.FlowID()].Close()
	}
}

// TestMigrationWithSessionCreditSpent: the path dies silently while all the session credit
// is in flight on it, and the writer is held by the flow window. After the move every lost
// byte must be sent again on the new path, although no new credit can come (the receiver waits
// for exactly those bytes) and the writer adds nothing: resending costs no credit.
func TestMigrationWithSessionCreditSpent(t *testing.T) {
	// The receiver's flow window (2 MiB) is larger than its session window (1 MiB), so the
	// session credit runs out first; the sender's own buffer cap stays the default 64 MiB, so
	// what holds its writer is the flow window.
	r := testkit.NewRig(t, testkit.RigConfig{Paths: 2, ListenOptions: &rendr.Options{
		InitialWindow: 2 << 20, MaxWindow: 2 << 20, MaxSessionWindow: 1 << 20}})
	c1, c2 := r.Open()
	c1.SetDeadline(time.Now().Add(30 * time.Second))
	c2.SetDeadline(time.Now().Add(30 * time.Second))
	if err := testkit.Both(c1, c2, 64<<10, 21, nil); err != nil {
		t.Fatal(err)
	}
	active := testkit.Active(c1.Status())
	if active < 0 {
		t.Fatalf("no active path: %s", testkit.Describe(c1.Status()))
	}
	// Everything written from here on goes into a blackhole until the stall is noticed.
	r.Relays[active].Block(true)
	if err := testkit.Transfer(c1, c2, 3<<20, 22, nil); err != nil {
		t.Fatalf("after the silent death of %s: %v (migrations %v; dialer %s)", testkit.PathName(active), err, r.Mig,
			testkit.Describe(c1.Status()))
	}
	if r.Mig.Moves() == 0 {
		t.Fatalf("traffic never left the blackholed path: %v", r.Mig)
	}
	c1.Close()
	c2.Close()
}

// rtGate holds the bytes of a proxy in place while closed, like a link that goes quiet for a
// moment and comes back.
type rtGate struct {
	mu   sync.Mutex
	open chan struct{} // closed while bytes may pass
}

func rtNewGate() *rtGate {
	g := &rtGate{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *rtGate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
}

func (g *rtGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

func (g *rtGate) pass(int, int64, []byte) {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	<-ch
}

// TestSuspectPathRecoversWhenIdle: a path that went quiet just long enough to be suspected,
// and then answers again, must be reported Up again even if the session has nothing more to
// send.
func TestSuspectPathRecoversWhenIdle(t *testing.T) {
	gates := []*rtGate{rtNewGate(), rtNewGate()}
	r := testkit.NewRig(t, testkit.RigConfig{Paths: 2, Front: func(i int, src string) string {
		p := testkit.NewProxy(t, src, gates[i].pass, gates[i].pass)
		t.Cleanup(gates[i].release) // runs before the proxy closes: nothing stays held
		return p.Addr()
	}})
	c1, c2 := r.Open()
	testkit.WaitUp(t, "dialer", c1.Status, 2, 20*time.Second)
	c1.SetDeadline(time.Now().Add(30 * time.Second))
	c2.SetDeadline(time.Now().Add(30 * time.Second))
	active := testkit.Active(c1.Status())
	if active < 0 {
		t.Fatalf("no active path: %s", testkit.Describe(c1.Status()))
	}
	// Quiet just long enough for the stall check (tens of milliseconds) to move the traffic,
	// far less than it takes to declare the path dead.
	gates[active].hold()
	err := testkit.Transfer(c1, c2, 256<<10, 31, nil)
	gates[active].release()
	if err != nil {
		t.Fatal(err)
	}
	suspected := false
	for _, ev := range r.Mig.All() {
		suspected = suspected || (ev.From == testkit.PathName(active) && ev.Cause == status.CauseStall)
	}
	if !suspected {
		t.Skipf("%s died instead of being suspected: nothing to check (migrations %v)", testkit.PathName(active), r.Mig)
	}
	testkit.WaitUp(t, "dialer", c1.Status, 2, 20*time.Second)
	c1.Close()
	c2.Close()
}

// TestQUICMigratesInPlace: the dialing host's address changes mid-transfer (127.0.0.1 to
// 127.0.0.2 here; Wi-Fi to cellular on a phone) and the embedder calls Migrate. The QUIC
// connection moves under the path: the same path id carries on, no rendr migration or path
// death is counted, every byte arrives both ways, and the path reports its new address.
func TestQUICMigratesInPlace(t *testing.T) {
	srvTLS, cliTLS := testcert.Must()
	src := testkit.ListenQUIC(t, srvTLS)
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	qd := quic.NewClient(src.Addr().String(), cliTLS, quic.LocalAddr("127.0.0.1"))
	mig := &testkit.Migrations{}
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root: rendr.Path("p0", qd.Dial), Options: rendr.Options{OnMigrate: mig.Record}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c1, c2 := testkit.DialAccept(t, d, ln)
	if p := c1.Status().Paths; len(p) != 1 || p[0].Local.(*net.UDPAddr).IP.String() != "127.0.0.1" {
		t.Fatalf("before: %s", testkit.Describe(c1.Status()))
	}
	rtTransferMovingInPlace(t, c1, c2, mig, 11, netip.MustParseAddr("127.0.0.2"), func() error {
		mctx, mcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer mcancel()
		return qd.Migrate(mctx, "127.0.0.2")
	})
}

// rtTransferMovingInPlace moves 32 MiB each way between c1 and c2 (SHA-256 checked), calling
// move halfway, and checks that the flow's single path carried on through it: the same path
// id, up, never dialed again, now at local address to, and no rendr migration.
func rtTransferMovingInPlace(t *testing.T, c1, c2 *rendr.Conn, mig *testkit.Migrations, seed uint64, to netip.Addr, move func() error) {
	t.Helper()
	before, m0 := c1.Status().Paths, c1.Migrations()
	const size = 32 << 20
	var progress atomic.Int64
	moved := make(chan error, 1)
	go func() {
		for progress.Load() < size/2 {
			time.Sleep(time.Millisecond)
		}
		moved <- move()
	}()
	c1.SetDeadline(time.Now().Add(90 * time.Second))
	c2.SetDeadline(time.Now().Add(90 * time.Second))
	if err := testkit.Both(c1, c2, size, seed, &progress); err != nil {
		t.Logf("dialer: %s", testkit.Describe(c1.Status()))
		t.Logf("listener: %s", testkit.Describe(c2.Status()))
		select {
		case merr := <-moved:
			t.Logf("move: %v", merr)
		default:
		}
		t.Fatal(err)
	}
	if err := <-moved; err != nil {
		t.Fatalf("move: %v", err)
	}
	after := c1.Status().Paths
	if len(after) != 1 || after[0].ID != before[0].ID || after[0].State != status.Up || after[0].Dials != before[0].Dials {
		t.Fatalf("the path did not carry on: before %s, after %s", testkit.Describe(status.Session{Paths: before}), testkit.Describe(c1.Status()))
	}
	if got := after[0].Local.(*net.UDPAddr).AddrPort().Addr().Unmap(); got != to {
		t.Fatalf("dialer's path is at %s after the move, want %s", got, to)
	}
	if m := mig.Moves(); m != 0 || c1.Migrations() != m0 {
		t.Fatalf("%d rendr migrations (%v) for an in-place QUIC migration", m, mig)
	}
}

// TestMixedCarriers: one flow over a Bond, then a Race, of a TCP path, a QUIC path, a udpflow
// path and a gVisor path, while the path the status names active is killed by close, reset and silent stall:
// every byte arrives both ways, SHA-256 checked, whichever carrier kind carried it.
func TestMixedCarriers(t *testing.T) {
	groups := map[string]func(string, ...*rendr.Target) *rendr.Target{"bond": rendr.Bond, "race": rendr.Race}
	for _, name := range []string{"bond", "race"} {
		t.Run(name, func(t *testing.T) {
			size, kills := int64(32<<20), 6
			if testing.Short() {
				size, kills = 8<<20, 3
			}
			seed := testkit.Seed(t)
			rng := rand.New(rand.NewPCG(seed, 3))
			r := testkit.NewRig(t, testkit.RigConfig{Paths: 4, Carrier: "tcp,quic,udpflow,gvisor", Group: groups[name],
				Options: rendr.Options{HandshakeTimeout: time.Second}})
			c1, c2 := r.Open()
			plan, err := rtTransferUnderKills(r, rng, c1, c2, size, kills, seed)
			t.Logf("kills: %v; migrations: %v", plan.Events(), r.Mig)
			if err != nil {
				t.Fatalf("transfer: %v", err)
			}
			if plan.Hits() != kills {
				t.Fatalf("only %d of %d kills happened during the transfer", plan.Hits(), kills)
			}
			testkit.WaitUp(t, "dialer", c1.Status, 4, 30*time.Second)
			var kinds []string
			for _, p := range c1.Status().Paths {
				kinds = append(kinds, p.Local.Network())
			}
			slices.Sort(kinds)
			if !slices.Equal(kinds, []string{"tcp", "udp", "udp", "udp"}) {
				t.Fatalf("carriers after the transfer: %v", kinds)
			}
		})
	}
}
