package router

// Stalls: when a path of the route stops moving data, it is suspected and routed around
// until it answers probes again. Three things suspect a path: its data going unacknowledged
// (Stalled, from the flow engine), its probes going unanswered while it carries a Race or
// Bond (refreshSuspectsLocked), and the peer's data arriving on another path (PeerData).
//
// Only a path's own silence counts against it. When every path goes quiet at once, the peer
// or this host stopped (a stopped process, a stalled VM, a long pause), and moving traffic
// would gain nothing: so a silence becomes a stall only once another path of the session has
// answered a probe since the verdict (each is probed for it) within its usual round trip, and
// the silent path has stayed silent a moment longer, since a peer that resumes sends on every
// path at once and the answers of one may come a little behind another's. An answer far later
// than its path's round trip says the peer had stopped and just resumed: while what it queued
// meanwhile drains (as long as it was stopped, at most a second), no silence is judged, and
// then the verdict starts again. A path that is heard while its data waits for
// acknowledgement is slow (a queue filling), not silent, and keeps its traffic; so, for up to
// maxDrain, is one whose carrier shows the peer's host taking its bytes (TCP's own
// acknowledgements): a peer starved of CPU answers an idle path's probe at once and reads what
// came on the busy one tens of milliseconds later. A round trip that spans a pause measured
// the pause, and is kept out of the path's estimate (Spanned), which the promptness of the
// next answer is judged by.
//
// A move can still prove spurious, as a TCP retransmission timeout can (Eifel, RFC 3522;
// F-RTO, RFC 5682): the path left answers the probe it had outstanding when it was suspected
// before the new route could have carried a round trip. Then the path is Up again at once (a
// Selector goes back to it if it is the better one), its stall timeout doubles, and so does
// the least time between two stall moves of the session; both halve again with time, and the
// second also with each move that proves real.

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr/status"
)

// stallGapBase is the least time between two moves for a stall while none has proved
// spurious. It doubles with each that does, up to stallGapBase << maxBackoff.
const stallGapBase = 200 * time.Millisecond

// backoff is a doubling that decays: up doubles what it scales, down halves it, and it halves
// by itself for every backoffDecay without a change, as a TCP sender's timeout returns to its
// estimate once spurious timeouts stop.
type backoff struct {
	shift uint
	at    time.Time // the last change
}

const (
	backoffDecay = 30 * time.Second
	maxBackoff   = 5
)

// level is the number of doublings in force at now.
func (b *backoff) level(now time.Time) uint {
	if b.shift > 0 {
		if n := now.Sub(b.at) / backoffDecay; n > 0 {
			b.shift -= uint(min(n, time.Duration(b.shift)))
			b.at = b.at.Add(n * backoffDecay)
		}
	}
	return b.shift
}

func (b *backoff) up(now time.Time) {
	b.shift = min(b.level(now)+1, maxBackoff)
	b.at = now
}

func (b *backoff) down(now time.Time) {
	if b.level(now) > 0 {
		b.shift--
		b.at = now
	}
}

// Stalled is the flow engine's verdict at now: data sent on the path of id has gone
// unacknowledged since since, longer than the engine's stall timeout limit. The path is suspected, and
// traffic moves, once the verdict holds against this path (see the top of this file); acted
// says so, or that the path is routed around already, and the engine looks at its route
// again. Otherwise retry is when to ask again (zero: there is no other path to move to, and
// traffic stays).
func (r *Router) Stalled(id uint32, since time.Time, limit time.Duration, now time.Time) (acted bool, retry time.Duration) {
	r.c.Lock.Lock()
	defer r.c.Lock.Unlock()
	p := r.paths[id]
	if p == nil || p.Standing().State != status.Up {
		return true, 0
	}
	if !r.otherUpLocked(p) {
		return false, 0
	}
	st := p.Standing()
	// A path whose stalls proved spurious before is given longer.
	if need, age := limit<<st.widen.level(now), now.Sub(since); age < need {
		return false, need - age
	}
	if !r.lastStall.IsZero() {
		if w := r.lastStall.Add(stallGapBase << r.gap.level(now)).Sub(now); w > 0 {
			return false, w
		}
	}
	if w := r.evidenceLocked(p, &st.stallEv, since, now, limit); w > 0 {
		return false, w
	}
	r.stallLocked(p, now)
	r.stateLocked(p, "stall")
	r.c.Log.Debug("rendr: path stalled", "path", p.Name())
	return true, 0
}

// Doubt is the flow engine's word half way to a Stalled verdict: data sent on the path of id
// has gone unacknowledged since since. The verdict will need another path to answer a probe
// promptly after it was asked (evidenceLocked): the other paths are probed now, so that their
// answers are in when the verdict is due, a round trip sooner than if they were asked then.
func (r *Router) Doubt(id uint32, since, now time.Time) {
	r.c.Lock.Lock()
	defer r.c.Lock.Unlock()
	p := r.paths[id]
	if p == nil || p.Standing().State != status.Up || !r.otherUpLocked(p) {
		return
	}
	ev := &p.Standing().stallEv
	if !ev.pendAt.IsZero() && !ev.pendAt.Before(since) {
		return // asked already, for this silence
	}
	ev.pendAt, ev.heardAt = now, time.Time{}
	r.probeOthersLocked(p)
}

// stallLocked suspects p for a stall, keeping the probe it has outstanding (sending one if it
// has none) to judge the move by (judgeStallLocked).
func (r *Router) stallLocked(p Path, now time.Time) {
	r.suspectLocked(p, now)
	st := p.Standing()
	st.stallAt, st.stallProbe = now, p.ProbeNow()
}

// otherUpLocked reports whether a path other than p could take its traffic.
func (r *Router) otherUpLocked(p Path) bool {
	for _, o := range r.paths {
		if o != p && o.Standing().State == status.Up && o.Joined() {
			return true
		}
	}
	return false
}

// evidence is a verdict of silence waiting for evidence against its path: taken at pendAt;
// another path first answered promptly after it at heardAt.
type evidence struct{ pendAt, heardAt time.Time }

// evidenceLocked is how long to wait before p's silence since since may be held against it
// (zero: now). It waits for another path to answer a probe promptly after the verdict,
// probing each the first time, and then for a grace of p's own round trip, in which p's answers may still
// come; p must have stayed silent all along. Without another path heard, or with p heard, it
// waits for fallback, or for a probe answer to make the engine ask again sooner. After the
// peer resumed from a pause (a late answer, or a gap in which no path heard anything), no
// silence is judged while what it queued may still drain.
func (r *Router) evidenceLocked(p Path, ev *evidence, since, now time.Time, fallback time.Duration) time.Duration {
	// A gap that the verdict's own probes ended (the other paths idle until probed) is no
	// pause: only one that ended before the verdict began defers it.
	w := r.resumed.Sub(now)
	if end, drained := r.heard.pause(); !end.IsZero() && (ev.pendAt.IsZero() || end.Before(ev.pendAt)) {
		w = max(w, drained.Sub(now))
	}
	if w > 0 {
		ev.pendAt = time.Time{}
		return max(w, fallback)
	}
	if ev.pendAt.IsZero() || ev.pendAt.Before(since) {
		ev.pendAt, ev.heardAt = now, time.Time{}
		r.probeOthersLocked(p)
		return fallback
	}
	if ev.heardAt.IsZero() {
		prompt, pause, at := r.answeredElsewhereLocked(p, ev.pendAt)
		if pause > 0 && !prompt {
			// Another path answered, but far later than its round trip: the peer (or this
			// host) had stopped, for about pause, and has just resumed. What it queued
			// meanwhile drains for about as long, and its answers on p may come behind
			// it: no path is judged before that, then afresh.
			r.resumed = now.Add(min(pause, maxDrain))
			ev.pendAt = time.Time{}
			return max(min(pause, maxDrain), fallback)
		}
		if !prompt {
			return fallback
		}
		ev.heardAt = at // the grace runs from the answer, however late the engine asks
	}
	if w := ev.heardAt.Add(grace(p)).Sub(now); w > 0 {
		return w
	}
	if p.Heard().After(ev.pendAt) || p.Unread() || carries(p, ev.pendAt, since, now) {
		// p is heard too: slow (a queue filling), not silent. It is not a stall while it
		// is; the verdict starts again at the engine's next look. Bytes waiting unread in
		// its socket are heard too: this host is behind in reading them (its reader not
		// scheduled yet, under load), which says nothing against the path. So, for a while,
		// is a carrier that shows the peer's host taking this side's bytes (carries).
		ev.pendAt = time.Time{}
		return fallback
	}
	ev.pendAt = time.Time{}
	return 0
}

// carries reports whether p's carrier shows the peer's host taking this side's bytes at the
// transport level (Path.Delivered), while the silence since since is younger than maxDrain:
// new bytes acknowledged after the verdict began at pendAt, or every byte written
// acknowledged. Then the path carries and the peer's process is behind: starved of CPU, it
// may answer a probe on an idle path at once and take tens of milliseconds to read what came
// on the busy one. With nothing left in flight there is nothing to judge the path by, so it
// is probed: a probe its carrier never acknowledges ends the excuse. The bound is for a
// TCP-terminating proxy, which acknowledges while the hop beyond it is dead.
func carries(p Path, pendAt, since, now time.Time) bool {
	if now.Sub(since) >= maxDrain {
		return false
	}
	at, all := p.Delivered()
	if all {
		p.ProbeNow()
	}
	return all || at.After(pendAt)
}

// hearing is when the peer was last heard on any path of the session, and the last gap in
// that longer than pauseMin while it owed this side an answer (bytes of this side's were
// unacknowledged): when it ended and how long it was. While the peer has anything to answer,
// it is heard within a round trip; such a gap on every path at once means it stopped
// (SIGSTOP, a stalled VM), or that this host did (its readers not scheduled). A gap with
// nothing owed is only a quiet session (idle, or an interactive flow between keystrokes), and
// must not slow the verdicts that follow it. Either way,
// what the peer queued meanwhile comes after the gap, on each path at its own pace, and a
// path a little behind the others then is not silent. A probe answer that comes late says
// the same (answeredElsewhereLocked), but only when a probe happened to span the gap.
type hearing struct {
	last atomic.Int64 // unix nanos
	mu   sync.Mutex
	end  time.Time
	span time.Duration
}

// noteGrain is the resolution of hearing.last: a gap is measured up to that much long.
const noteGrain = time.Millisecond

// pauseMin is the least gap in hearing the peer on every path that counts as a pause: far
// longer than a sending peer leaves between records, shorter than any verdict of silence.
const pauseMin = 2 * promptFloor

// note records that the peer was heard at at, with bytes of this side's unacknowledged since
// owed (zero: none).
func (h *hearing) note(at, owed time.Time) {
	n := at.UnixNano()
	for {
		prev := h.last.Load()
		if n-prev <= int64(noteGrain) && prev != 0 {
			// Every record of every path comes here: the shared word is written at most
			// once a noteGrain, which measures gaps of pauseMin well enough.
			return
		}
		if !h.last.CompareAndSwap(prev, n) {
			continue
		}
		if gap, ok := pauseGap(prev, at, owed); ok {
			h.mu.Lock()
			h.end, h.span = at, gap
			h.mu.Unlock()
		}
		return
	}
}

// pauseGap is the part of the gap from prev (unix nanos; zero: never heard) to at in which the
// peer owed an answer (bytes unacknowledged since owed; zero: none), and whether it is a
// pause: pauseMin or longer.
func pauseGap(prev int64, at, owed time.Time) (time.Duration, bool) {
	if prev == 0 || owed.IsZero() {
		return 0, false
	}
	from := time.Unix(0, prev)
	if owed.After(from) {
		from = owed
	}
	gap := at.Sub(from)
	return gap, gap >= pauseMin
}

// spanned reports whether the peer was unheard on every path for pauseMin or longer, with
// bytes of this side's unacknowledged since owed (zero: none), at some time between sent and
// at: in a gap that at ends, or in one that ended after sent.
func (h *hearing) spanned(sent, at, owed time.Time) bool {
	if _, ok := pauseGap(h.last.Load(), at, owed); ok {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.end.IsZero() && h.end.After(sent) && !h.end.After(at)
}

// pause is when the last pause ended, and when what the peer queued in it has had as long to
// come as the pause lasted (at most maxDrain); zero times before the first.
func (h *hearing) pause() (end, drained time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.end.IsZero() {
		return time.Time{}, time.Time{}
	}
	return h.end, h.end.Add(min(h.span, maxDrain))
}

// Heard notes that the peer was heard on a path at at (when its record was read), while bytes
// of this side's had been unacknowledged since owed (zero: none were). It takes no lock: it is
// called for every record.
func (r *Router) Heard(at, owed time.Time) { r.heard.note(at, owed) }

// Spanned reports whether a round trip from sent to at spanned a pause of the peer: a gap of
// pauseMin or more in which it was heard on no path while bytes of this side's were
// unacknowledged since owed (zero: none were). Such a round trip measured the pause, and the
// path leaves it out of its estimate, which the prompt answers are judged by. It takes no lock
// of the Router's.
func (r *Router) Spanned(sent, at, owed time.Time) bool { return r.heard.spanned(sent, at, owed) }

// HeardAnswer notes a probe answer on a path with quality q: asked at sent, answered at at. An
// answer within the path's usual round trip shows the peer was running when it was asked, so
// the gap it ends is no pause (an idle path's probe answered while the busy path went dark
// must not pass for one); a late answer is heard as any record is.
func (r *Router) HeardAnswer(q Quality, sent, at, owed time.Time) {
	if bound := max(2*q.SRTT+4*q.RTTVar, promptFloor); at.Sub(sent) <= bound {
		owed = time.Time{}
	}
	r.heard.note(at, owed)
}

// answeredElsewhereLocked reports whether a path other than p answered a probe after t within
// its usual round trip (prompt, the first such answer at at), and, of those answered after t
// only later than that, by how much the latest was late (pause: about how long the peer was
// stopped).
// Only a prompt answer shows the peer was running while p was silent: records that merely
// arrive after t may have waited out a pause of the peer in its queues, and come on every path
// at once when it resumes.
func (r *Router) answeredElsewhereLocked(p Path, t time.Time) (prompt bool, pause time.Duration, at time.Time) {
	for _, o := range r.paths {
		if o == p {
			continue
		}
		sent, got := o.Answered()
		if !got.After(t) {
			continue
		}
		q := o.Quality()
		if bound := max(2*q.SRTT+4*q.RTTVar, promptFloor); got.Sub(sent) <= bound {
			if !prompt || got.Before(at) {
				at = got
			}
			prompt = true
		} else {
			pause = max(pause, got.Sub(sent)-bound)
		}
	}
	return prompt, pause, at
}

// maxDrain bounds the wait after a pause of the peer, so that a path that died while the peer
// was stopped long is still left within about a second of its resumption.
const maxDrain = time.Second

// promptFloor is the least round trip a probe answer may take and still count as prompt: this
// host's scheduling alone can delay an answer by several milliseconds.
const promptFloor = 25 * time.Millisecond

// grace is how long a path may lag behind another in answering when the peer resumes: its
// round trip and variation, and 2ms for this host's scheduling.
func grace(p Path) time.Duration {
	q := p.Quality()
	return q.SRTT + 2*q.RTTVar + 2*time.Millisecond
}

// HeardElsewhere is a path's question before it declares itself dead of silence, since since:
// is the silence its own? It is once another path answered a probe promptly after the
// question, and the path stayed silent a grace longer (evidenceLocked): the peer was running
// then, and heard elsewhere. Another path merely heard after since is no evidence: the peer,
// or this host, may have stopped right after. A path the Router does not route (not attached
// yet) is left to judge alone.
func (r *Router) HeardElsewhere(id uint32, since, now time.Time) bool {
	r.c.Lock.Lock()
	defer r.c.Lock.Unlock()
	p := r.paths[id]
	if p == nil {
		return true
	}
	return r.evidenceLocked(p, &p.Standing().deathEv, since, now, time.Millisecond) == 0
}

// probeOthersLocked probes every attached path but p, so that whether the peer can be heard
// elsewhere is known within a round trip.
func (r *Router) probeOthersLocked(p Path) {
	for _, o := range r.paths {
		if o != p {
			o.ProbeNow()
		}
	}
}

// refreshSuspectsLocked judges the stall of each suspect path once it answers, returns a
// suspect path to Up once it has answered two probes since it was suspected, and suspects a
// path that carries a Race or Bond and has not answered a probe within silenceFloor or
// 3*srtt + 4*rttvar: datagrams are never acknowledged, so for packet flows nothing else would
// notice a blackhole before the path is declared dead.
func (r *Router) refreshSuspectsLocked(now time.Time) {
	for _, p := range r.paths {
		st := p.Standing()
		if st.State != status.Suspect {
			continue
		}
		if !st.stallAt.IsZero() {
			r.judgeStallLocked(p, now)
		}
		if st.State == status.Suspect && p.Quality().Samples >= st.suspectSamples+2 {
			st.State, st.Since = status.Up, now
			r.stateLocked(p, "answered")
		}
	}
	if len(r.active) < 2 {
		return // one path: nowhere to move to; the stall check and probes handle it
	}
	for _, p := range r.active {
		if p.Standing().State != status.Up {
			continue
		}
		q := p.Quality()
		if s := p.Silence(); s > max(3*q.SRTT+4*q.RTTVar, silenceFloor) && r.otherUpLocked(p) && r.evidenceLocked(p, &p.Standing().stallEv, now.Add(-s), now, silenceFloor) == 0 {
			r.stallLocked(p, now)
			r.stateLocked(p, "silent")
			r.c.Log.Debug("rendr: path silent", "path", p.Name())
		}
	}
}

// judgeStallLocked decides whether the move off p, suspected for a stall, was spurious, once
// the probe p had outstanding then is answered: spurious when the answer came before the route
// that took over could have carried a round trip, real when later. A stall whose probe is
// never answered (the path died, or lost it) is real too.
func (r *Router) judgeStallLocked(p Path, now time.Time) {
	st := p.Standing()
	sent, at := p.Answered()
	if st.stallProbe.IsZero() || !sent.Equal(st.stallProbe) || !at.After(st.stallAt) {
		if p.Quality().Samples >= st.suspectSamples+2 {
			r.stallJudgedLocked(st, false, now) // answered since, but not that probe: it was lost
		}
		return
	}
	var took time.Duration
	for _, o := range r.active {
		if o != p {
			took = max(took, o.Quality().SRTT)
		}
	}
	if at.Sub(st.stallAt) > took+grace(p) {
		r.stallJudgedLocked(st, false, now)
		return
	}
	after := at.Sub(st.stallAt)
	r.stallJudgedLocked(st, true, now)
	st.State, st.Since, st.undo = status.Up, now, true
	r.countSpuriousLocked(st)
	st.widen.up(now)
	r.dirty.Store(true)
	r.stateLocked(p, "spurious stall")
	r.c.Log.Debug("rendr: stall move spurious", "path", p.Name(), "answered after", after)
}

// SpuriousDeathLocked counts the death of p's predecessor as spurious: declared dead of
// silence, its path carried a new carrier again within the deadline it had been given (dialing
// side). It was slow, not dead. The count is the stall's: the session's and this path's.
func (r *Router) SpuriousDeathLocked(p Path) {
	r.countSpuriousLocked(p.Standing())
	r.c.Log.Debug("rendr: death by silence spurious", "path", p.Name())
}

// countSpuriousLocked counts a spurious stall or death on the path's and the session's counts.
func (r *Router) countSpuriousLocked(st *Standing) {
	st.Spurious++
	r.spurious++
}

// stallJudgedLocked closes a stall's case: a spurious one widens the gap between stall moves,
// a real one narrows it.
func (r *Router) stallJudgedLocked(st *Standing, spurious bool, now time.Time) {
	st.stallAt, st.stallProbe = time.Time{}, time.Time{}
	if spurious {
		r.gap.up(now)
	} else {
		r.gap.down(now)
	}
}

// suspectLocked routes around p until it answers probes again (refreshSuspectsLocked).
func (r *Router) suspectLocked(p Path, now time.Time) {
	st := p.Standing()
	st.State, st.Since = status.Suspect, now
	st.suspectSamples = p.Quality().Samples
	st.stallEv = evidence{}
	r.dirty.Store(true)
}

// PeerData notes flow data from the peer on p (dialing side), and reports whether it
// suspected the route. The listening side follows our route, so data that keeps arriving on
// another path, longer than a round trip after we last moved, means the peer found our route
// stalled for its traffic (a download: we have nothing outstanding, so our own stall check
// cannot fire). Suspect the route then, as the peer did, instead of waiting for the probes
// to declare it dead.
//
// Over a route of several paths (Race, Bond) the peer's answers may come on any of them; only
// data on a path outside the route counts, and only a route of one path is suspected.
func (r *Router) PeerData(p Path) bool {
	set := r.activeSet.Load()
	if set == nil || len(*set) != 1 || slices.Contains(*set, p) {
		return false
	}
	cur := (*set)[0]
	q := p.Quality()
	seen := max(2*q.SRTT+4*q.RTTVar, 50*time.Millisecond) // for the peer to see our last move
	now := time.Now()
	if now.UnixNano()-r.movedAt.Load() < int64(seen) {
		return false // the peer has not seen our move yet: its data on the old path is in flight
	}
	r.c.Lock.Lock()
	defer r.c.Lock.Unlock()
	if len(r.active) != 1 || r.active[0] != cur || cur.Standing().State != status.Up || p.Standing().State != status.Up {
		return false
	}
	r.stallLocked(cur, now)
	r.stateLocked(cur, "peer moved")
	r.c.Log.Debug("rendr: peer moved away from route", "route", cur.Name(), "peer", p.Name())
	return true
}
