package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/status"
)

// view shows the run as it happens. On a terminal it redraws one block in place four times a
// second; otherwise (a pipe, a CI log) it prints each event once and a status line every
// second, so the output reads top to bottom.
type view struct {
	out      io.Writer
	tty      bool
	d        *rendr.Dialer // its Status describes the session's paths
	rep      *report
	up, down *direction
	duration time.Duration
	seed     uint64

	drawn     int // lines of the block drawn last (tty)
	width     int // terminal columns: longer lines are clipped, so none wraps and breaks the redraw
	nextEvent int // the first event not yet printed (plain)
	lastLine  time.Time
	carriers  map[string]map[uint32][2]int64 // per path: each carrier's last byte counters
	lastErr   map[string]string              // per path: the last error already reported
	samples   []sample                       // recent byte counters, for throughput
}

type sample struct {
	at       time.Time
	up, down int64
}

// recentEvents is how many events the terminal view keeps on screen.
const recentEvents = 8

func (v *view) run(stop <-chan struct{}) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			v.draw()
		}
	}
}

// draw shows the current state; the last call (after the flows drained) shows the end.
func (v *view) draw() {
	now := time.Now()
	st := v.d.Status()
	v.account(st, now)
	if v.tty {
		v.drawBlock(st, now)
		return
	}
	evs, next := v.rep.eventsSince(v.nextEvent)
	v.nextEvent = next
	var b bytes.Buffer
	for _, e := range evs {
		fmt.Fprintf(&b, "%6.1fs  %s\n", e.at.Seconds(), e.text)
	}
	if now.Sub(v.lastLine) >= time.Second {
		v.lastLine = now
		fmt.Fprintf(&b, "%6.1fs  paths:", now.Sub(v.rep.start).Seconds())
		for _, p := range v.paths(st) {
			mark := ""
			if p.Active {
				mark = "*"
			}
			fmt.Fprintf(&b, " %s%s=%s", mark, p.Name, p.State)
			if p.State == status.Up || p.State == status.Suspect {
				fmt.Fprintf(&b, "/%s", rtt(p.SRTT))
			}
		}
		upRate, downRate := v.rates()
		fmt.Fprintf(&b, "  up %s (%s/s)  down %s (%s/s)\n",
			size(v.up.recv.Load()), size(int64(upRate)), size(v.down.recv.Load()), size(int64(downRate)))
	}
	v.out.Write(b.Bytes())
}

// drawBlock redraws the terminal block: cursor back to its first line, each line cleared
// and rewritten, in one write so it does not flicker.
func (v *view) drawBlock(st status.Session, now time.Time) {
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }

	add("rendr demo  %4.1fs of %v   seed %d   session %x   flows open %d",
		now.Sub(v.rep.start).Seconds(), v.duration, v.seed, st.ID[:4], st.Flows)
	add("")
	add("  %-10s %-10s %9s %9s %11s %11s %6s", "PATH", "STATE", "SRTT", "JITTER", "SENT", "RECEIVED", "DIALS")
	for _, p := range v.paths(st) {
		mark := " "
		if p.Active {
			mark = "*"
		}
		name := p.Name
		if p.Tier > 0 {
			name += " (b)"
		}
		sent, recv := v.carried(p.Name)
		add("%s %-10s %-10s %9s %9s %11s %11s %6d", mark, name, p.State, rtt(p.SRTT), rtt(p.Jitter),
			size(sent), size(recv), p.Dials)
	}
	add("  (* active, (b) backup; carrier bytes, encryption and framing included)")
	add("")
	upRate, downRate := v.rates()
	add("  up   (dialer -> listener) %11s  %11s/s", size(v.up.recv.Load()), size(int64(upRate)))
	add("  down (listener -> dialer) %11s  %11s/s", size(v.down.recv.Load()), size(int64(downRate)))
	moves, last := v.rep.migrations()
	lastText := "none yet"
	if moves > 0 {
		lastText = fmt.Sprintf("%s -> %s (%s) at %.1fs", last.From, last.To, last.Cause, last.Time.Sub(v.rep.start).Seconds())
	}
	add("  migrations %d, last: %s", moves, lastText)
	add("  path kills %d   short flows %d   errors %d", v.rep.kills.Load(), v.rep.shortFlows.Load(), len(v.rep.errors()))
	add("")
	evs, _ := v.rep.eventsSince(0)
	evs = evs[max(0, len(evs)-recentEvents):]
	for _, e := range evs {
		add("  %6.1fs  %s", e.at.Seconds(), e.text)
	}

	var b bytes.Buffer
	if v.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dF", v.drawn) // to the start of the block's first line
	}
	for _, l := range lines {
		b.WriteString("\x1b[2K") // clear the old line
		b.WriteString(clip(l, v.width-1))
		b.WriteByte('\n')
	}
	b.WriteString("\x1b[J") // clear anything left below from a longer block
	v.drawn = len(lines)
	v.out.Write(b.Bytes())
}

// paths returns one entry per configured path, in order. While a path is being replaced
// the session may briefly list an old carrier under the same name; the first entry is the
// configured path's current state.
func (v *view) paths(st status.Session) []status.Path {
	var out []status.Path
	seen := map[string]bool{}
	for _, p := range st.Paths {
		if !seen[p.Name] {
			seen[p.Name] = true
			out = append(out, p)
		}
	}
	return out
}

// account remembers each carrier's byte counters. A re-dialed path starts a new carrier
// with its own counters, so a path's total is the sum over all its carriers (as last sampled:
// the bytes a carrier moved after the last sample and before it died are not counted).
func (v *view) account(st status.Session, now time.Time) {
	if v.carriers == nil {
		v.carriers = map[string]map[uint32][2]int64{}
	}
	if v.lastErr == nil {
		v.lastErr = map[string]string{}
	}
	for _, p := range st.Paths {
		// A path's last error says how it died; report each new one once. (A path that dies
		// and fails again with the same error between two samples is reported once.)
		if p.LastError != "" && p.LastError != v.lastErr[p.Name] {
			v.lastErr[p.Name] = p.LastError
			v.rep.event("%s lost: %s", p.Name, shortError(p.LastError))
		}
		if p.ID == 0 {
			continue // not attached: no carrier
		}
		m := v.carriers[p.Name]
		if m == nil {
			m = map[uint32][2]int64{}
			v.carriers[p.Name] = m
		}
		m[p.ID] = [2]int64{p.BytesSent, p.BytesRecv}
	}
	v.samples = append(v.samples, sample{at: now, up: v.up.recv.Load(), down: v.down.recv.Load()})
	// Keep one sample at least a second old and the ones since.
	for len(v.samples) > 2 && now.Sub(v.samples[1].at) >= time.Second {
		v.samples = v.samples[1:]
	}
}

func (v *view) carried(name string) (sent, recv int64) {
	for _, c := range v.carriers[name] {
		sent += c[0]
		recv += c[1]
	}
	return sent, recv
}

// rates is the delivered throughput of each direction over about the last second.
func (v *view) rates() (up, down float64) {
	if len(v.samples) < 2 {
		return 0, 0
	}
	a, b := v.samples[0], v.samples[len(v.samples)-1]
	dt := b.at.Sub(a.at).Seconds()
	if dt < 0.5 { // too short to mean much
		return 0, 0
	}
	return float64(b.up-a.up) / dt, float64(b.down-a.down) / dt
}

func rtt(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	default:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
}

// size formats a byte count in binary units.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/unit, 0
	for f >= unit && i < 3 {
		f /= unit
		i++
	}
	switch {
	case f >= 100:
		return fmt.Sprintf("%.0f %ciB", f, "KMGT"[i])
	case f >= 10:
		return fmt.Sprintf("%.1f %ciB", f, "KMGT"[i])
	}
	return fmt.Sprintf("%.2f %ciB", f, "KMGT"[i])
}

// shortError drops the addresses from a socket error ("read tcp 127.0.0.1:5->127.0.0.1:6:
// read: connection reset by peer" becomes "connection reset by peer").
func shortError(s string) string {
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.Contains(s, "->") {
		return s[i+2:]
	}
	return s
}

// clip shortens s to n characters.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n || n < 4 {
		return s
	}
	return string(r[:n-3]) + "..."
}

// terminalWidth is $COLUMNS when the shell exports it, else the classic 80.
func terminalWidth() int {
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 20 {
		return n
	}
	return 80
}
