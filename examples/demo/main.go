// Command demo runs both ends of rendr in one process and shows a flow surviving the loss of
// the paths under it. It needs no root and ends on its own.
//
// The dialer reaches the listener over three loopback TCP paths, "wifi", "ethernet" and a
// backup "lte", each through a rendrtest.Relay that can kill the connections through it the
// ways real paths die: closed, reset, or silently stalled. One flow streams pseudo-random
// data both ways while, every two seconds, the path carrying it is killed; short flows come
// and go beside it. At the end both ends compare SHA-256 digests of what was sent and what
// was received, and the demo prints one verdict line. It exits non-zero if any byte was lost,
// duplicated or corrupted, or if any Read or Write on a flow failed.
//
//	go run ./examples/demo [-duration 20s] [-seed 1] [-rate 32] [-plain]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/rendrtest"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport/tcp"
)

type config struct {
	duration time.Duration
	seed     uint64
	rate     float64 // bytes per second in each direction; 0 means no cap
	plain    bool
	verbose  bool
}

func main() {
	var cfg config
	var mibs float64
	flag.DurationVar(&cfg.duration, "duration", 20*time.Second, "how long to stream while paths are killed")
	flag.Uint64Var(&cfg.seed, "seed", 1, "seed of the pseudo-random data")
	flag.Float64Var(&mibs, "rate", 32, "cap on each direction's data rate, in MiB/s (0: no cap)")
	flag.BoolVar(&cfg.plain, "plain", false, "print plain lines even on a terminal")
	flag.BoolVar(&cfg.verbose, "v", false, "log rendr's debug events (paths, migrations) to stderr")
	flag.Parse()
	cfg.rate = mibs * (1 << 20)

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, cfg)
	cancel()
	os.Exit(code)
}

const (
	// drainTimeout bounds how long the flows may take to deliver what is in flight once the
	// senders stop. Reaching it is an error: something is stuck.
	drainTimeout = 20 * time.Second
	// stuckTimeout is the last resort: if the demo has not finished this long after the
	// senders stopped, it prints where every goroutine is and exits.
	stuckTimeout = 60 * time.Second
)

func run(ctx context.Context, cfg config) int {
	rep := newReport()
	// rendr logs through the slog.Logger it is given, and only there.
	var dialerLog, listenerLog *slog.Logger
	if cfg.verbose {
		h := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
		dialerLog, listenerLog = slog.New(h).With("side", "dialer"), slog.New(h).With("side", "listener")
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}

	// Things to close at the end, in reverse order of opening: flows, then the dialer, the
	// listener (which closes its sources) and the relays.
	var closers []func() error
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		closers = nil
	}
	defer closeAll()

	// 1. The network: three listening sockets, the sources of the listener, each behind a
	// relay. The dialer dials the relays, so killing a relay's connections kills a path.
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
	var sources []net.Listener
	relays := map[string]*rendrtest.Relay{}
	for _, name := range []string{"wifi", "ethernet", "lte"} {
		src, err := tcp.Listen("127.0.0.1:0")
		if err != nil {
			return fail(err)
		}
		sources = append(sources, src)
		r, err := rendrtest.NewRelay(src.Addr().String())
		if err != nil {
			src.Close()
			return fail(err)
		}
		closers = append(closers, r.Close)
		relays[name] = r
	}

	// 2. The listening side accepts carriers on all three sources, from one peer key.
	ln, err := rendr.Listen(rendr.ListenConfig{
		Key:     srvKey,
		Peers:   []rendr.PublicKey{cliKey.Public()},
		Options: rendr.Options{Logger: listenerLog},
	}, sources...)
	if err != nil {
		for _, s := range sources {
			s.Close()
		}
		return fail(err)
	}
	closers = append(closers, ln.Close)

	// 3. The dialing side: one Selector over the three paths. It carries traffic on one
	// primary path at a time, moves when that path dies or stalls, and uses the backup only
	// while neither primary is usable.
	d, err := rendr.NewDialer(rendr.DialerConfig{
		Key:     cliKey,
		PeerKey: srvKey.Public(),
		Root: rendr.Selector("uplinks",
			rendr.Path("wifi", tcp.Dialer(relays["wifi"].Addr())),
			rendr.Path("ethernet", tcp.Dialer(relays["ethernet"].Addr())),
			rendr.Path("lte", tcp.Dialer(relays["lte"].Addr()), rendr.Backup()),
		),
		Options: rendr.Options{OnMigrate: rep.migrated, Logger: dialerLog},
	})
	if err != nil {
		return fail(err)
	}
	closers = append(closers, d.Close)

	// 4. The listening application. It runs until the end of the demo.
	serveCtx, stopServing := context.WithCancel(ctx)
	var serving sync.WaitGroup
	mainc := make(chan *rendr.Conn, 1)
	serving.Add(1)
	go serve(serveCtx, ln, mainc, rep, &serving)
	shutdown := func() {
		stopServing()
		closeAll()
		serving.Wait()
	}
	defer shutdown()

	// 5. The main flow. The first DialContext handshakes on the paths; the flow's first
	// byte tells the listening application what the flow is for.
	dialCtx, cancelDial := context.WithTimeout(ctx, 10*time.Second)
	cc, err := d.DialContext(dialCtx)
	cancelDial()
	if err != nil {
		return fail(err)
	}
	closers = append(closers, cc.Close)
	if _, err := cc.Write([]byte{kindMain}); err != nil {
		return fail(err)
	}
	var sc *rendr.Conn
	select {
	case sc = <-mainc:
		closers = append(closers, sc.Close)
	case <-time.After(10 * time.Second):
		return fail(fmt.Errorf("the listener did not accept the main flow: %s", describe(d.Status())))
	case <-ctx.Done():
		return 1
	}
	session := cc.Status().ID
	rep.event("main flow %d open on session %x; streaming both ways for %v", cc.FlowID(), session[:4], cfg.duration)

	// 6. Everything that runs until stop: both directions of the main flow, short flows, the
	// fault schedule, and the view.
	up, down := newDirection("up", cfg.seed), newDirection("down", cfg.seed)
	stop := make(chan struct{})
	var flows sync.WaitGroup
	start := func(f func()) {
		flows.Add(1)
		go func() {
			defer flows.Done()
			f()
		}()
	}
	start(func() { up.send(cc, cfg.rate, stop, rep) })
	start(func() { up.receive(sc, rep) })
	start(func() { down.send(sc, cfg.rate, stop, rep) })
	start(func() { down.receive(cc, rep) })
	start(func() { shortFlows(d, session, cfg.seed, stop, rep) })
	f := &faults{relays: relays, conn: cc, rep: rep, stalled: map[string]time.Time{}}
	start(func() { f.run(cfg.duration, stop) })

	v := &view{out: os.Stdout, tty: !cfg.plain && isTerminal(os.Stdout), d: d, rep: rep,
		up: up, down: down, duration: cfg.duration, seed: cfg.seed, width: terminalWidth()}
	viewStop, viewDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(viewDone)
		v.run(viewStop)
	}()

	select {
	case <-time.After(cfg.duration):
		rep.event("time is up: both ends stop sending, close their sending side and drain")
	case <-ctx.Done():
		rep.event("interrupted: stopping early")
	}
	close(stop)
	watchdog := time.AfterFunc(stuckTimeout, stuck)
	defer watchdog.Stop()

	// 7. Drain: every byte written must arrive and each side must read EOF.
	drained := make(chan struct{})
	go func() {
		flows.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		rep.fail("the flows did not drain within %v; dialer's paths: %s", drainTimeout, describe(d.Status()))
		for _, st := range ln.Sessions() {
			rep.fail("listener's paths: %s", describe(st))
		}
		// Deadlines in the past unblock every pending Read and Write.
		cc.SetDeadline(time.Now())
		sc.SetDeadline(time.Now())
		<-drained
	}
	close(viewStop)
	<-viewDone
	v.draw()

	// 8. Close everything: flows, dialer, listener, relays.
	shutdown()

	return verdict(rep, up, down)
}

// verdict prints the errors, the digests and one verdict line, and returns the exit code.
func verdict(rep *report, up, down *direction) int {
	errs := rep.errors()
	for _, e := range errs {
		fmt.Println("error:", e)
	}
	// Each direction is complete (every byte written was read) and intact (the digests of
	// what was written and what was read are equal), or the verdict says which it is not.
	var problems []string
	for _, dir := range []*direction{up, down} {
		sent, recv := dir.sent.Load(), dir.recv.Load()
		fmt.Printf("%-4s sent %s sha256 %x...  received %s sha256 %x...\n", dir.name,
			size(sent), dir.sentSum[:min(8, len(dir.sentSum))], size(recv), dir.recvSum[:min(8, len(dir.recvSum))])
		switch {
		case recv != sent:
			problems = append(problems, fmt.Sprintf("%s INCOMPLETE (%d of %d bytes)", dir.name, recv, sent))
		case len(dir.sentSum) == 0 || string(dir.sentSum) != string(dir.recvSum):
			problems = append(problems, dir.name+" DIGESTS DIFFER")
		}
	}
	result, digests := "PASS", "digests equal"
	if len(problems) > 0 {
		digests = strings.Join(problems, ", ")
	}
	if len(problems) > 0 || len(errs) > 0 {
		result = "FAIL"
	}
	moves, _ := rep.migrations()
	fmt.Printf("verdict: %s moved %s (%s up, %s down), %d migrations, %d path kills, %d short flows, %d errors, %s\n",
		result, size(up.recv.Load()+down.recv.Load()), size(up.recv.Load()), size(down.recv.Load()),
		moves, rep.kills.Load(), rep.shortFlows.Load(), len(errs), digests)
	if result != "PASS" {
		return 1
	}
	return 0
}

// describe is a one-line summary of the paths, for error messages.
func describe(st status.Session) string {
	var b strings.Builder
	for i, p := range st.Paths {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s id=%d %s active=%v srtt=%v", p.Name, p.ID, p.State, p.Active, p.SRTT)
		if p.LastError != "" {
			fmt.Fprintf(&b, " last error: %s", p.LastError)
		}
	}
	return b.String()
}

// stuck ends a demo that hangs, showing where: a hang is a bug worth a report, not a reason
// to wait forever.
func stuck() {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	fmt.Fprintf(os.Stderr, "demo: still running %v after the end; goroutines:\n%s\n", stuckTimeout, buf)
	os.Exit(2)
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}
