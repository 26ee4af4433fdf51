package testkit

// MemLab: a Listener and a Dialer joined by in-memory links, one testlink listener per path,
// with every carrier's Link kept so a test can inject faults on the path's live carrier.
// Built inside a testing/synctest bubble, its delays, rates and liveness deadlines run on
// virtual time, so what a test checks about when things happen is exact. Everything in a lab
// must be created inside the bubble that uses it.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testlink"
	"github.com/rendr-go/rendr/status"
)

// LinkSpec describes one path of a MemLab: its name, the shaping of each direction, and
// target options.
type LinkSpec struct {
	Name   string
	AB, BA testlink.Config // dialer->listener and listener->dialer
	Opts   []rendr.PathOption
}

// MemPath is one configured path of a MemLab and every carrier it has dialed.
type MemPath struct {
	name string
	src  *testlink.Listener

	mu struct {
		sync.Mutex
		ab, ba testlink.Config
		links  []*testlink.Link
		cut    bool // while set, dials fail: the path cannot come back
	}
}

// ErrCut is what a path's dials fail with while it is cut.
var ErrCut = errors.New("test: path is cut")

func (p *MemPath) dial(ctx context.Context) (net.Conn, error) {
	p.mu.Lock()
	ab, ba, cut := p.mu.ab, p.mu.ba, p.mu.cut
	p.mu.Unlock()
	if cut {
		return nil, ErrCut
	}
	c, l, err := p.src.Dial(ctx, ab, ba)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.mu.links = append(p.mu.links, l)
	p.mu.Unlock()
	return c, nil
}

// Live is the newest carrier: the one the path runs on while it is Up (nil before the first
// dial).
func (p *MemPath) Live() *testlink.Link {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.mu.links) == 0 {
		return nil
	}
	return p.mu.links[len(p.mu.links)-1]
}

// Dials is how many carriers the path has dialed so far.
func (p *MemPath) Dials() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.mu.links)
}

// SetShape changes the shaping of the live carrier and of every later one.
func (p *MemPath) SetShape(ab, ba testlink.Config) {
	p.mu.Lock()
	p.mu.ab, p.mu.ba = ab, ba
	p.mu.Unlock()
	if l := p.Live(); l != nil {
		l.Set(ab, ba)
	}
}

// SetCut makes every dial fail with ErrCut while on: the path cannot come back.
func (p *MemPath) SetCut(on bool) {
	p.mu.Lock()
	p.mu.cut = on
	p.mu.Unlock()
}

// MemLab is a Listener and a Dialer over MemPaths, keyed to each other.
type MemLab struct {
	T     *testing.T
	LN    *rendr.Listener
	D     *rendr.Dialer
	Paths map[string]*MemPath
	Logs  *ErrorLog // what both ends logged
}

// NewMemLab builds the lab with a Selector over the specs, in order. Close runs in Cleanup.
func NewMemLab(t *testing.T, opts rendr.Options, specs ...LinkSpec) *MemLab {
	t.Helper()
	return NewMemLabGraph(t, opts, func(paths map[string]*rendr.Target) *rendr.Target {
		var targets []*rendr.Target
		for _, s := range specs {
			targets = append(targets, paths[s.Name])
		}
		return rendr.Selector("root", targets...)
	}, specs...)
}

// NewMemLabGraph builds the lab with the target graph root makes from the specs' paths.
// opts.Logger is replaced by the lab's ErrorLog. Close runs in Cleanup.
func NewMemLabGraph(t *testing.T, opts rendr.Options, root func(map[string]*rendr.Target) *rendr.Target, specs ...LinkSpec) *MemLab {
	t.Helper()
	return NewMemLabListen(t, opts, nil, root, specs...)
}

// NewMemLabListen is NewMemLabGraph with the listener's configuration edited by edit (its
// keys, peers and options set already) before the listener starts.
func NewMemLabListen(t *testing.T, opts rendr.Options, edit func(*rendr.ListenConfig), root func(map[string]*rendr.Target) *rendr.Target, specs ...LinkSpec) *MemLab {
	t.Helper()
	lb := &MemLab{T: t, Paths: map[string]*MemPath{}, Logs: &ErrorLog{}}
	opts.Logger = slog.New(lb.Logs)
	srv, cli := rendr.MustNewKey(), rendr.MustNewKey()
	var srcs []net.Listener
	targets := map[string]*rendr.Target{}
	for _, s := range specs {
		p := &MemPath{name: s.Name, src: testlink.Listen(s.Name)}
		p.mu.ab, p.mu.ba = s.AB, s.BA
		lb.Paths[s.Name] = p
		srcs = append(srcs, p.src)
		targets[s.Name] = rendr.Path(s.Name, p.dial, s.Opts...)
	}
	var err error
	lc := rendr.ListenConfig{Key: srv, Peers: []rendr.PublicKey{cli.Public()}, Options: opts}
	if edit != nil {
		edit(&lc)
	}
	lb.LN, err = rendr.Listen(lc, srcs...)
	if err != nil {
		t.Fatal(err)
	}
	lb.D, err = rendr.NewDialer(rendr.DialerConfig{Key: cli, PeerKey: srv.Public(),
		Root: root(targets), Options: opts})
	if err != nil {
		lb.LN.Close()
		t.Fatal(err)
	}
	t.Cleanup(lb.Close)
	return lb
}

// Close closes the dialer and the listener.
func (lb *MemLab) Close() {
	lb.D.Close()
	lb.LN.Close()
}

// Open dials a flow and accepts it on the other side.
func (lb *MemLab) Open() (dc, lc *rendr.Conn) {
	lb.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dc, lc, err := OpenFlow(ctx, lb.D, lb.LN)
	if err != nil {
		lb.T.Fatal(err)
	}
	return dc, lc
}

// Status is the dialer's view of its session.
func (lb *MemLab) Status() status.Session { return lb.D.Status() }

// PathStatus is the dialer's snapshot of one path.
func (lb *MemLab) PathStatus(name string) status.Path { return PathStatus(lb.D.Status(), name) }

// Active is the name of the path the dialer sends on ("" for none).
func (lb *MemLab) Active() string {
	for _, p := range lb.D.Status().Paths {
		if p.Active {
			return p.Name
		}
	}
	return ""
}

// AllUp reports whether every path is Up.
func (lb *MemLab) AllUp() bool { return AllUp(lb.D.Status(), len(lb.Paths)) }

// MustWait is MustWait on the dialer's status.
func (lb *MemLab) MustWait(what string, limit time.Duration, cond func() bool) time.Duration {
	lb.T.Helper()
	return MustWait(lb.T, what, limit, lb.D.Status, cond)
}
