package testkit

// Kill: plans that end the path carrying traffic while bytes flow, so migration is proved
// mid-frame and not only between transfers.

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr/internal/relay"
	"github.com/rendr-go/rendr/status"
)

// PathCtl is what a rig can do to the path in front of a source: a TCP relay, or for a
// carrier over UDP (QUIC, gVisor) a UDP relay plus the carriers at both ends, which a UDP
// relay cannot close.
type PathCtl interface {
	Addr() string
	// Kill ends the path's carriers: Close and Reset at once (for QUIC: the dialing end,
	// then the listening end, closes its carriers), Stall silently.
	Kill(relay.Mode) int
	// Block blackholes the path, new carriers included, while on.
	Block(on bool)
	Close() error
}

// KillPlan kills the active path each time progress crosses the next threshold, so every
// kill lands while bytes flow (mid-frame included). A stalled path is blocked until the next
// kill (or the end), then released with a FIN. Paths are found by the names PathName gives.
type KillPlan struct {
	status func() status.Session
	paths  []PathCtl
	at     []int64
	modes  []relay.Mode

	rng     *rand.Rand
	hits    int             // kills that hit the path carrying traffic
	events  []string        // what happened, for the log
	blocked int             // path blocked by a stall, or -1
	killed  map[uint32]bool // path ids already killed: a dead carrier may look active a moment longer
}

// NewKillPlan draws n thresholds within [5%, 90%] of total and a mix of modes containing
// each of modes at least once (when n allows), against paths as the session reports them
// through st.
func NewKillPlan(st func() status.Session, paths []PathCtl, rng *rand.Rand, n int, total int64, modes []relay.Mode) *KillPlan {
	p := &KillPlan{status: st, paths: paths, blocked: -1, killed: map[uint32]bool{}, rng: rng}
	for range n {
		p.at = append(p.at, total/20+rng.Int64N(total*85/100))
	}
	slices.Sort(p.at)
	for i := range n {
		if i < len(modes) {
			p.modes = append(p.modes, modes[i])
		} else {
			p.modes = append(p.modes, modes[rng.IntN(len(modes))])
		}
	}
	rng.Shuffle(len(p.modes), func(i, j int) { p.modes[i], p.modes[j] = p.modes[j], p.modes[i] })
	return p
}

// Run executes the plan until it is done or stop closes.
func (p *KillPlan) Run(progress *atomic.Int64, stop <-chan struct{}) {
	for i, at := range p.at {
		target := -1
		for target < 0 {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if progress.Load() < at {
				continue
			}
			// Never pick the stalled path (it is still routed until the stall is noticed) nor
			// a carrier already killed: each kill must hit a live carrier that carries traffic.
			// Under a Race or a Bond several carry it: any of them.
			var cands []status.Path
			for _, ps := range p.status().Paths {
				if i := PathIndex(ps.Name); ps.Active && ps.State != status.Down && i >= 0 && i != p.blocked && !p.killed[ps.ID] {
					cands = append(cands, ps)
				}
			}
			if len(cands) > 0 {
				c := cands[p.rng.IntN(len(cands))]
				target = PathIndex(c.Name)
				p.killed[c.ID] = true
			}
		}
		p.Release()
		rl := p.paths[target]
		switch p.modes[i] {
		case relay.Stall:
			rl.Block(true)
			p.blocked = target
		default:
			rl.Kill(p.modes[i])
		}
		p.hits++
		p.events = append(p.events, fmt.Sprintf("%s@%d:%v", PathName(target), progress.Load(), p.modes[i]))
	}
}

// Release lets a blocked path come back: its stalled carriers are closed and new ones pass.
func (p *KillPlan) Release() {
	if p.blocked >= 0 {
		p.paths[p.blocked].Block(false)
		p.paths[p.blocked].Kill(relay.Close)
		p.blocked = -1
	}
}

// Hits is how many kills hit a path carrying traffic. Read it after Run returned.
func (p *KillPlan) Hits() int { return p.hits }

// Events is what the plan did, one "path@progress:mode" per kill. Read it after Run returned.
func (p *KillPlan) Events() []string { return p.events }

// Killer kills whichever path carries traffic, again and again, until halted.
type Killer struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	kills atomic.Int64
}

// StartKiller kills the active path every 100-200ms, alternating a FIN and an RST.
func StartKiller(st func() status.Session, paths []PathCtl, seed uint64) *Killer {
	k := &Killer{stop: make(chan struct{})}
	rng := rand.New(rand.NewPCG(seed, 7))
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		modes := []relay.Mode{relay.Close, relay.Reset}
		for n := 0; n < 100000; n++ {
			t := time.NewTimer(time.Duration(100+rng.IntN(101)) * time.Millisecond)
			select {
			case <-k.stop:
				t.Stop()
				return
			case <-t.C:
			}
			if i := Active(st()); i >= 0 {
				paths[i].Kill(modes[k.kills.Load()%2])
				k.kills.Add(1)
			}
		}
	}()
	return k
}

// Halt stops the killer, waits for it and returns how many kills it made.
func (k *Killer) Halt() int64 {
	close(k.stop)
	k.wg.Wait()
	return k.kills.Load()
}
