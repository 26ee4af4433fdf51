package router

import (
	"slices"
	"testing"
	"time"

	"github.com/rendr-go/rendr/policy"
	"github.com/rendr-go/rendr/status"
)

// stalled gives the Router the engine's verdict on f at the rig's now: no progress since
// since, past limit.
func (g *rig) stalled(f *fake, since time.Time, limit time.Duration) (bool, time.Duration) {
	return g.r.Stalled(f.id, since, limit, g.now)
}

// twoPaths is a dialing rig whose Selector routes over first and second (a tier below when
// backupTier), both attached, the first carrying traffic.
func twoPaths(t *testing.T, first, second string, backupTier bool) (*rig, *fake, *fake) {
	g := newRig(t, true)
	a, b := g.selector(first, second, backupTier)
	g.attach(a)
	g.attach(b)
	g.route(0)
	return g, a, b
}

// heardAfterVerdict gives the engine's verdict on a (no progress for 50ms, against a 40ms
// timeout), has b answer the probe it sent then 1ms later, and returns the verdict's start and the Router's answer
// once b is heard.
func (g *rig) heardAfterVerdict(a, b *fake) (since time.Time, acted bool, wait time.Duration) {
	g.t.Helper()
	since = g.now
	g.now = g.now.Add(50 * time.Millisecond)
	if acted, _ := g.stalled(a, since, 40*time.Millisecond); acted {
		g.t.Fatal("the verdict acted before another path was heard")
	}
	g.now = g.now.Add(time.Millisecond)
	b.answer(g.now, time.Millisecond)
	acted, wait = g.stalled(a, since, 40*time.Millisecond)
	return since, acted, wait
}

// stallOff runs a verdict on a, with b heard in time, through to the move off a.
func (g *rig) stallOff(a, b *fake) {
	g.t.Helper()
	since, acted, wait := g.heardAfterVerdict(a, b)
	if acted || wait != grace(a) {
		g.t.Fatalf("acted %v, wait %v with b just heard: want a grace of %v first", acted, wait, grace(a))
	}
	g.now = g.now.Add(wait)
	if acted, _ := g.stalled(a, since, 40*time.Millisecond); !acted || a.rs.State != status.Suspect {
		g.t.Fatalf("acted %v, a %v after the grace", acted, a.rs.State)
	}
}

// verdictAgain starts a new verdict on a (its last one ended without a move), has b answer
// promptly, and runs through the grace after that answer.
func (g *rig) verdictAgain(a, b *fake, since time.Time) {
	g.t.Helper()
	g.now = g.now.Add(time.Millisecond)
	if acted, _ := g.stalled(a, since, 40*time.Millisecond); acted {
		g.t.Fatal("a new verdict acted on the old one's evidence")
	}
	g.now = g.now.Add(time.Millisecond)
	b.answer(g.now, time.Millisecond)
	if acted, wait := g.stalled(a, since, 40*time.Millisecond); acted || wait != grace(a) {
		g.t.Fatalf("b heard again: acted %v, wait %v; want the grace %v", acted, wait, grace(a))
	}
	g.now = g.now.Add(grace(a))
}

// TestStallNeedsEvidence: a stall verdict moves traffic only when another path is Up to take
// it, and another path has answered a probe within its round trip since the verdict (each is
// probed for it), and the stalled path stayed silent for a grace after that. However long
// every path is silent, nothing moves: the peer or this host stopped, not the path; and an
// answer far later than its round trip says the peer just resumed, which moves nothing either.
func TestStallNeedsEvidence(t *testing.T) {
	g := newRig(t, true)
	a, b := g.selector("a", "b", false)
	g.attach(a)
	if got := g.route(0); got[0] != "a" {
		t.Fatalf("route %v", got)
	}
	since := g.now
	g.now = g.now.Add(50 * time.Millisecond)
	if acted, retry := g.stalled(a, since, 40*time.Millisecond); acted || retry != 0 || a.rs.State != status.Up {
		t.Fatalf("the only path: acted %v, retry %v, %v; want it kept, nowhere to move to", acted, retry, a.rs.State)
	}
	g.attach(b)
	b.heard = g.now.Add(-time.Second)
	if acted, retry := g.stalled(a, since, 40*time.Millisecond); acted || retry <= 0 || b.probes != 1 {
		t.Fatalf("first verdict: acted %v, retry %v, b probed %d times; want b probed and a wait", acted, retry, b.probes)
	}
	for range 20 { // 2 s of every path silent
		g.now = g.now.Add(100 * time.Millisecond)
		if acted, retry := g.stalled(a, since, 40*time.Millisecond); acted || retry <= 0 {
			t.Fatalf("every path silent: acted %v, retry %v", acted, retry)
		}
	}
	if a.rs.State != status.Up || b.probes != 1 || len(g.moves) != 1 {
		t.Fatalf("after 2 s of silence everywhere: a %v, b probed %d times, %d moves", a.rs.State, b.probes, len(g.moves))
	}
	// b answers, far later than its round trip: the peer had stopped, for about 2 s. While
	// its backlog drains (as long again, at most a second) nothing is judged; then the
	// verdict starts again, with a new probe.
	g.now = g.now.Add(time.Millisecond)
	b.answer(g.now, 2*time.Second)
	acted, retry := g.stalled(a, since, 40*time.Millisecond)
	if acted || retry < time.Second || a.rs.State != status.Up {
		t.Fatalf("b answered late: acted %v, retry %v, a %v; want no move, and a wait of about the pause", acted, retry, a.rs.State)
	}
	g.now = g.now.Add(retry / 2)
	if acted, again := g.stalled(a, since, 40*time.Millisecond); acted || again <= 0 || b.probes != 1 {
		t.Fatalf("within the pause's length after it: acted %v, retry %v, b probed %d times; want a wait", acted, again, b.probes)
	}
	g.now = g.now.Add(retry)
	if acted, again := g.stalled(a, since, 40*time.Millisecond); acted || again <= 0 || b.probes != 2 {
		t.Fatalf("the next verdict: acted %v, retry %v, b probed %d times; want b probed again", acted, again, b.probes)
	}
	// b answers within its round trip; a stays silent through the grace: a stall.
	g.now = g.now.Add(time.Millisecond)
	b.answer(g.now, time.Millisecond)
	acted, wait := g.stalled(a, since, 40*time.Millisecond)
	if acted || wait != grace(a) {
		t.Fatalf("b heard: acted %v, wait %v; want the grace %v", acted, wait, grace(a))
	}
	g.now = g.now.Add(wait)
	if acted, _ := g.stalled(a, since, 40*time.Millisecond); !acted || a.rs.State != status.Suspect {
		t.Fatalf("after the grace: acted %v, a %v", acted, a.rs.State)
	}
	if got := g.route(0); got[0] != "b" || g.lastMove().Cause != status.CauseStall {
		t.Fatalf("route %v (%+v), want b for a stall", got, g.lastMove())
	}
	// Two probe answers, not the one outstanding at the verdict: it was lost, the move real.
	a.q.Samples += 2
	g.route(time.Second)
	if a.rs.State != status.Up || a.rs.Spurious != 0 || g.r.gap.shift != 0 {
		t.Fatalf("a %v, spurious %d, gap doublings %d after two fresh answers", a.rs.State, a.rs.Spurious, g.r.gap.shift)
	}
}

// TestStallPeerResumes: when the data moves again within the grace (the engine's next verdict
// starts from a later point), the verdict waiting for evidence lapses and nothing moves.
func TestStallPeerResumes(t *testing.T) {
	g, a, b := twoPaths(t, "a", "b", false)
	if _, acted, _ := g.heardAfterVerdict(a, b); acted {
		t.Fatal("acted at once when b was heard")
	}
	// a's acknowledgements arrive; later it stalls again, from a later point.
	g.now = g.now.Add(time.Millisecond)
	since := g.now
	g.now = g.now.Add(50 * time.Millisecond)
	if acted, _ := g.stalled(a, since, 40*time.Millisecond); acted || a.rs.State != status.Up {
		t.Fatalf("a new stall used the old one's evidence: acted %v, a %v", acted, a.rs.State)
	}
}

// TestHeardPathIsSlowNotStalled: a path still heard while its data waits for acknowledgement
// (a queue filling, or the peer's data arriving) is slow, not silent: it keeps its traffic.
func TestHeardPathIsSlowNotStalled(t *testing.T) {
	g, a, b := twoPaths(t, "a", "b", false)
	since, _, wait := g.heardAfterVerdict(a, b)
	a.heard = g.now
	g.now = g.now.Add(wait)
	if acted, retry := g.stalled(a, since, 40*time.Millisecond); acted || retry <= 0 || a.rs.State != status.Up {
		t.Fatalf("a heard after the verdict: acted %v, retry %v, a %v; want it kept", acted, retry, a.rs.State)
	}
}

// TestSpuriousStallUndone: a primary left for a stall answers the probe it had outstanding
// sooner than the backup could have carried a round trip. The move is spurious: the primary
// is Up at once, traffic goes back (undo), both are counted, and the next stall of the
// primary, and the next stall move of the session, are given twice as long.
func TestSpuriousStallUndone(t *testing.T) {
	g, a, b := twoPaths(t, "primary", "backup", true)
	g.stallOff(a, b)
	if got := g.route(0); got[0] != "backup" {
		t.Fatalf("route %v", got)
	}
	if a.rs.stallProbe.IsZero() || !a.rs.stallProbe.Equal(a.probeAt) {
		t.Fatalf("the verdict kept probe %v, the path's outstanding one is %v", a.rs.stallProbe, a.probeAt)
	}
	// The answer comes 5ms after the move: the backup's round trip is 10ms.
	g.now = g.now.Add(5 * time.Millisecond)
	a.answeredSent, a.answeredAt = a.probeAt, g.now
	a.q.Samples++
	g.r.Changed()
	if got := g.route(0); got[0] != "primary" || g.lastMove().Cause != status.CauseUndo {
		t.Fatalf("route %v (%+v), want back on the primary (undo)", got, g.lastMove())
	}
	g.mu.Lock()
	c := g.r.CountsLocked()
	states := slices.Clone(g.states)
	g.mu.Unlock()
	if want := []string{"primary suspect stall", "primary up spurious stall"}; !slices.Equal(states, want) {
		t.Errorf("OnState told %q, want %q", states, want)
	}
	if a.rs.Spurious != 1 || a.rs.Undone != 1 || c.Spurious != 1 || c.Undone != 1 ||
		c.Moves[status.CauseStall] != 1 || c.Moves[status.CauseUndo] != 1 || c.Moves[status.CauseFirst] != 1 {
		t.Fatalf("path spurious %d undone %d; session %+v", a.rs.Spurious, a.rs.Undone, c)
	}
	// The primary's stall timeout doubled: 50ms of silence against 40ms is not enough now.
	since := g.now
	g.now = g.now.Add(50 * time.Millisecond)
	if acted, wait := g.stalled(a, since, 40*time.Millisecond); acted || wait != 30*time.Millisecond {
		t.Fatalf("acted %v, wait %v; want 30ms more of the doubled 80ms", acted, wait)
	}
	// The session's gap between stall moves doubled too: 400ms after the last one.
	g.now = g.now.Add(30 * time.Millisecond)
	lastStall := g.r.lastStall
	if acted, wait := g.stalled(a, since, 40*time.Millisecond); acted || wait != lastStall.Add(400*time.Millisecond).Sub(g.now) {
		t.Fatalf("acted %v, wait %v; want the rest of a 400ms gap since the last stall move", acted, wait)
	}
	// Both relax with time.
	g.now = g.now.Add(2 * backoffDecay)
	if l := a.rs.widen.level(g.now); l != 0 {
		t.Fatalf("the stall timeout is still doubled %d times after a minute", l)
	}
	if l := g.r.gap.level(g.now); l != 0 {
		t.Fatalf("the gap is still doubled %d times after a minute", l)
	}
}

// TestSpuriousStallSameTier: between paths of one tier, a spurious stall puts the path left
// Up again at once, but traffic stays where it is unless that path is better by the margin.
func TestSpuriousStallSameTier(t *testing.T) {
	g, a, b := twoPaths(t, "a", "b", false)
	g.stallOff(a, b)
	g.route(0)
	g.now = g.now.Add(time.Millisecond)
	a.answeredSent, a.answeredAt = a.probeAt, g.now
	a.q.Samples++
	g.r.Changed()
	if got := g.route(0); got[0] != "b" || len(g.moves) != 2 {
		t.Fatalf("route %v after %d moves, want b kept: a is no better", got, len(g.moves))
	}
	if a.rs.State != status.Up || a.rs.Spurious != 1 || a.rs.Undone != 0 {
		t.Fatalf("a %v, spurious %d, undone %d", a.rs.State, a.rs.Spurious, a.rs.Undone)
	}
}

// TestRealStallKept: an answer to the verdict's probe that comes after the new route could
// have carried a round trip says the path was too slow: the move stands, and the gap between
// stall moves does not grow.
func TestRealStallKept(t *testing.T) {
	g, a, b := twoPaths(t, "primary", "backup", true)
	g.stallOff(a, b)
	g.route(0)
	g.now = g.now.Add(150 * time.Millisecond)
	a.answeredSent, a.answeredAt = a.probeAt, g.now
	a.q.Samples++
	g.r.Changed()
	if got := g.route(0); got[0] != "backup" || a.rs.State != status.Suspect || a.rs.Spurious != 0 {
		t.Fatalf("route %v, primary %v, spurious %d: want the move kept", got, a.rs.State, a.rs.Spurious)
	}
	if g.r.gap.shift != 0 || !a.rs.stallAt.IsZero() {
		t.Fatalf("gap doublings %d, stall still open %v", g.r.gap.shift, a.rs.stallAt)
	}
}

// TestHeardElsewhere: a path asks before it dies of silence; the answer is yes only once
// another path answered a probe promptly after the question and the path stayed silent a
// grace longer. Another path heard after the silence began, and then quiet (the peer or this
// host stopped right after), is no evidence.
func TestHeardElsewhere(t *testing.T) {
	g := newRig(t, true)
	a, b := g.selector("a", "b", false)
	g.attach(a)
	g.attach(b)
	since := g.now
	b.heard = since.Add(time.Millisecond)
	g.now = since.Add(400 * time.Millisecond)
	if g.r.HeardElsewhere(a.id, since, g.now) || b.probes != 1 || a.probes != 0 {
		t.Fatalf("b heard only before a pause: heard elsewhere, or probes a %d b %d", a.probes, b.probes)
	}
	g.now = g.now.Add(2 * time.Millisecond)
	b.answer(g.now, time.Millisecond)
	if g.r.HeardElsewhere(a.id, since, g.now) {
		t.Fatal("a may still answer behind b: it dies only after a grace")
	}
	g.now = g.now.Add(grace(a))
	if !g.r.HeardElsewhere(a.id, since, g.now) {
		t.Fatal("b answered promptly and a stayed silent: a may die")
	}
	if !g.r.HeardElsewhere(99, since, g.now) {
		t.Fatal("a path the Router does not route must judge alone")
	}
}

// TestPauseOnEveryPathDefersVerdict: the peer was heard on no path for 300ms (it, or this
// host, stopped) and then on the other path first, promptly: the primary, behind with what
// the peer queued meanwhile, is not judged until it has had as long again, then afresh.
func TestPauseOnEveryPathDefersVerdict(t *testing.T) {
	g, a, b := twoPaths(t, "a", "b", false)
	start := g.now
	g.r.Heard(start, start) // this side's bytes unacknowledged from here on
	g.now = start.Add(300 * time.Millisecond)
	g.r.Heard(g.now, start) // b, after the pause
	since := start
	g.now = g.now.Add(10 * time.Millisecond)
	b.answer(g.now, time.Millisecond)
	acted, wait := g.stalled(a, since, 40*time.Millisecond)
	if acted || a.rs.State != status.Up || wait < 290*time.Millisecond {
		t.Fatalf("acted %v, a %v, wait %v right after a pause of every path: want a wait for the drain", acted, a.rs.State, wait)
	}
	g.now = g.now.Add(wait)
	g.r.Heard(g.now, time.Time{})
	a.heard = g.now // a drained and is heard again
	for range 3 {
		g.now = g.now.Add(time.Millisecond)
		b.answer(g.now, time.Millisecond)
		if acted, _ := g.stalled(a, g.now.Add(-50*time.Millisecond), 40*time.Millisecond); acted {
			t.Fatal("a was heard after the pause: moved")
		}
	}
}

// TestQuietGapIsNoPause: a gap in hearing the peer in which it owed this side nothing (an
// idle session, or an interactive flow between keystrokes: this side's bytes were sent only
// just before the gap ended) is no pause, and does not hold back the verdict on a path that
// then goes silent with bytes outstanding.
func TestQuietGapIsNoPause(t *testing.T) {
	g, a, b := twoPaths(t, "a", "b", false)
	start := g.now
	g.r.Heard(start, time.Time{}) // the peer answered everything: nothing owed
	g.now = start.Add(300 * time.Millisecond)
	g.r.Heard(g.now, g.now.Add(-5*time.Millisecond)) // a keystroke's answer, 5ms after it
	// a goes silent with bytes outstanding: the verdict runs as after no gap at all, a grace
	// after b's prompt answer, and moves traffic.
	g.stallOff(a, b)
	if got := g.route(0); got[0] != "b" {
		t.Fatalf("route %v after a's stall: want b", got)
	}
}

// TestPromptAnswerIsNoPause: the busy path goes dark with bytes owed, and the idle path's
// probe, asked during the gap, is answered promptly: the peer is running, so the gap that
// answer ends is no pause, and the verdict on the dark path runs at once (a late answer to
// that probe would be one).
func TestPromptAnswerIsNoPause(t *testing.T) {
	g, a, b := twoPaths(t, "a", "b", false)
	start := g.now
	g.r.Heard(start, start.Add(-time.Millisecond)) // a, streaming: bytes owed
	g.now = start.Add(300 * time.Millisecond)
	g.r.HeardAnswer(b.q, g.now.Add(-time.Millisecond), g.now, start.Add(-time.Millisecond)) // b's keepalive
	g.stallOff(a, b)

	g2, a2, b2 := twoPaths(t, "a", "b", false)
	start = g2.now
	g2.r.Heard(start, start.Add(-time.Millisecond))
	g2.now = start.Add(300 * time.Millisecond)
	g2.r.HeardAnswer(b2.q, start.Add(10*time.Millisecond), g2.now, start.Add(-time.Millisecond)) // asked early, answered late
	if _, acted, wait := g2.heardAfterVerdict(a2, b2); acted || wait < 200*time.Millisecond {
		t.Fatalf("after a late answer ending a 300ms gap: acted %v, wait %v; want a wait for the drain", acted, wait)
	}
}

// The same gap with bytes owed all along is a pause: the verdict waits for the drain.
func TestOwedGapIsPause(t *testing.T) {
	g, a, b := twoPaths(t, "a", "b", false)
	start := g.now
	g.r.Heard(start, start.Add(-time.Millisecond))
	g.now = start.Add(300 * time.Millisecond)
	g.r.Heard(g.now, start.Add(-time.Millisecond))
	_, acted, wait := g.heardAfterVerdict(a, b)
	if acted || wait < 200*time.Millisecond {
		t.Fatalf("after a 300ms gap with bytes owed: acted %v, wait %v; want a wait for the drain", acted, wait)
	}
}

// TestGroupSilenceNeedsEvidence: a member of a Race silent past its bound is suspected only
// once another path has been heard since, and a grace has passed.
func TestGroupSilenceNeedsEvidence(t *testing.T) {
	g := newRig(t, true)
	n1 := &policy.Node{Kind: policy.KindPath, Name: "a"}
	n2 := &policy.Node{Kind: policy.KindPath, Name: "b"}
	race := &policy.Node{Kind: policy.KindRace, Name: "race", Children: []*policy.Node{n1, n2}}
	race.Init()
	a, b := healthy(newFake(1, "a", status.Connecting)), healthy(newFake(2, "b", status.Connecting))
	g.leaf[n1], g.leaf[n2] = a, b
	g.mu.Lock()
	g.r.SetGraphLocked(race, false)
	g.mu.Unlock()
	g.attach(a)
	g.attach(b)
	if got := g.route(0); len(got) != 2 {
		t.Fatalf("route %v", got)
	}
	a.silence, b.silence = 300*time.Millisecond, 300*time.Millisecond
	b.heard = g.now.Add(-300 * time.Millisecond)
	for range 10 {
		if got := g.route(100 * time.Millisecond); len(got) != 2 {
			t.Fatalf("every path silent: route %v", got)
		}
		a.silence += 100 * time.Millisecond
		b.silence += 100 * time.Millisecond
		b.heard = g.now.Add(-b.silence)
	}
	b.silence = 0
	b.answer(g.now.Add(time.Millisecond), time.Millisecond)
	// The grace runs from b's answer.
	if got := g.route(grace(a) / 2); len(got) != 2 {
		t.Fatalf("b just heard: route %v, want a kept through the grace", got)
	}
	if got := g.route(max(grace(a), cacheFor)); len(got) != 1 || got[0] != "b" || a.rs.State != status.Suspect {
		t.Fatalf("route %v, a %v after the grace, want a routed around", got, a.rs.State)
	}
}

// TestStallUnreadIsHeard: a path whose socket holds bytes from the peer not read yet is heard,
// though this host is behind in reading them (its reader not scheduled, under load): at the
// grace's end it is kept, and the verdict starts again; once nothing waits, a silence through
// a new grace is a stall.
func TestStallUnreadIsHeard(t *testing.T) {
	g, a, b := twoPaths(t, "a", "b", false)
	since, acted, wait := g.heardAfterVerdict(a, b)
	if acted || wait != grace(a) {
		t.Fatalf("acted %v, wait %v with b just heard: want the grace %v", acted, wait, grace(a))
	}
	a.unread = true
	g.now = g.now.Add(wait)
	if acted, _ := g.stalled(a, since, 40*time.Millisecond); acted || a.rs.State != status.Up {
		t.Fatalf("bytes wait unread on a: acted %v, a %v; want it kept", acted, a.rs.State)
	}
	a.unread = false
	g.now = g.now.Add(time.Millisecond)
	if acted, _ := g.stalled(a, since, 40*time.Millisecond); acted {
		t.Fatal("a new verdict acted on the old one's evidence")
	}
	g.now = g.now.Add(time.Millisecond)
	b.answer(g.now, time.Millisecond)
	acted, wait = g.stalled(a, since, 40*time.Millisecond)
	if acted || wait != grace(a) {
		t.Fatalf("b heard again: acted %v, wait %v", acted, wait)
	}
	g.now = g.now.Add(wait)
	if acted, _ := g.stalled(a, since, 40*time.Millisecond); !acted || a.rs.State != status.Suspect {
		t.Fatalf("a silent with nothing unread through the grace: acted %v, a %v; want a stall", acted, a.rs.State)
	}
}

// TestDoubtGathersEvidenceEarly: told half way to a verdict (Doubt), the Router probes the
// other paths then, so that when the verdict comes their answers are in and it acts at once,
// a grace after the answer, instead of probing at the verdict and waiting a round trip more.
// A second Doubt for the same silence probes nothing more; a silent path's own hearing since
// still keeps it.
func TestDoubtGathersEvidenceEarly(t *testing.T) {
	g, a, b := twoPaths(t, "a", "b", false)
	since := g.now
	const limit = 100 * time.Millisecond
	g.now = g.now.Add(limit / 2)
	g.r.Doubt(a.id, since, g.now)
	g.r.Doubt(a.id, since, g.now)
	if b.probes != 1 {
		t.Fatalf("b probed %d times half way to the verdict, want 1", b.probes)
	}
	g.now = g.now.Add(10 * time.Millisecond)
	b.answer(g.now, 10*time.Millisecond)
	g.now = since.Add(limit)
	if acted, retry := g.stalled(a, since, limit); !acted || a.rs.State != status.Suspect {
		t.Fatalf("verdict with b's answer in and its grace over: acted %v, retry %v, a %v; want a routed around", acted, retry, a.rs.State)
	}
	if b.probes != 1 {
		t.Fatalf("b probed %d times, want only the early probe", b.probes)
	}

	// Without the early word the same verdict probes b then, and waits for its answer.
	g2, a2, b2 := twoPaths(t, "a", "b", false)
	since = g2.now
	g2.now = g2.now.Add(limit)
	if acted, retry := g2.stalled(a2, since, limit); acted || retry <= 0 || b2.probes != 1 {
		t.Fatalf("verdict without evidence: acted %v, retry %v, b probed %d times; want a probe and a wait", acted, retry, b2.probes)
	}
}

// TestStallCarrierTakingBytesIsSlow: a silent path whose carrier shows the peer's host taking
// this side's bytes (TCP's own acknowledgements: new bytes after the verdict began, or every
// byte written) is slow, not silent: the peer's process is behind, starved of CPU, while it
// answers an idle path's probe at once. It is kept, and with nothing left in flight it is
// probed, so that a carrier that stops taking bytes ends the excuse. The carrier's word holds
// for maxDrain of silence only: a TCP-terminating proxy acknowledges bytes for a dead hop.
func TestStallCarrierTakingBytesIsSlow(t *testing.T) {
	g, a, b := twoPaths(t, "a", "b", false)
	since, acted, wait := g.heardAfterVerdict(a, b)
	if acted || wait != grace(a) {
		t.Fatalf("acted %v, wait %v with b just heard: want the grace %v", acted, wait, grace(a))
	}
	a.delivered = g.now // new bytes acknowledged after the verdict began
	g.now = g.now.Add(wait)
	if acted, _ := g.stalled(a, since, 40*time.Millisecond); acted || a.rs.State != status.Up {
		t.Fatalf("a's carrier took new bytes: acted %v, a %v; want it kept", acted, a.rs.State)
	}

	// Every byte acknowledged, none since the verdict: kept too, and probed.
	a.deliveredAll = true
	probes := a.probes
	g.verdictAgain(a, b, since)
	if acted, _ := g.stalled(a, since, 40*time.Millisecond); acted || a.rs.State != status.Up || a.probes == probes {
		t.Fatalf("a's carrier took every byte: acted %v, a %v, probed %d times (%d before); want it kept and probed",
			acted, a.rs.State, a.probes, probes)
	}

	// The same, maxDrain after the silence began: the verdict stands.
	g.now = since.Add(maxDrain)
	g.verdictAgain(a, b, since)
	if acted, _ := g.stalled(a, since, 40*time.Millisecond); !acted || a.rs.State != status.Suspect {
		t.Fatalf("a silent for %v, its carrier taking bytes: acted %v, a %v; want a stall", g.now.Sub(since), acted, a.rs.State)
	}
}

// TestSpannedRoundTrip: a round trip spans a pause of the peer when the peer went unheard on
// every path, with bytes owed, for pauseMin or more within it: in a gap its answer ends, or
// in one that ended after it was asked. Without bytes owed, a gap is only a quiet session.
func TestSpannedRoundTrip(t *testing.T) {
	g, _, _ := twoPaths(t, "a", "b", false)
	start := g.now
	owed := start.Add(-time.Millisecond)
	g.r.Heard(start, owed)
	ms := func(n int) time.Time { return start.Add(time.Duration(n) * time.Millisecond) }
	for _, c := range []struct {
		name          string
		sent, at, owe time.Time
		want          bool
	}{
		{"answer ends a 300ms gap with bytes owed", ms(10), ms(300), owed, true},
		{"nothing owed: a quiet session", ms(10), ms(300), time.Time{}, false},
		{"owed only for the last 10ms", ms(10), ms(300), ms(290), false},
		{"a short round trip in a short gap", ms(20), ms(30), owed, false},
	} {
		if got := g.r.Spanned(c.sent, c.at, c.owe); got != c.want {
			t.Errorf("%s: spanned %v, want %v", c.name, got, c.want)
		}
	}
	// The peer is heard again at 280ms, ending that gap: a pause, which a round trip asked
	// before it spans and one asked after it does not.
	g.r.Heard(ms(280), owed)
	if !g.r.Spanned(ms(10), ms(300), owed) {
		t.Error("a round trip across a pause that ended within it: not spanned")
	}
	if g.r.Spanned(ms(285), ms(300), owed) {
		t.Error("a round trip asked after the pause ended: spanned")
	}
}
