package main

// Status: the running side answers on a local socket with a JSON report, which
// "tunvpn status" prints.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/tun"
)

// report is what a running side says of itself.
type report struct {
	Role       string            // "client" or "server"
	Sessions   []sessionView     // the client's one session, or the server's
	Migrations []migrationView   // the client's most recent moves, oldest first
	Ingress    *tun.Stats        `json:",omitempty"` // the client's TUN ingress
	Listener   *status.Listener  `json:",omitempty"` // the server's listener
	Gateway    *tun.GatewayStats `json:",omitempty"` // the server's gateway
	// Out are the client's uplinks out of use (interface gone or down, address gone), whose
	// paths were taken out of the graph, or, for the last one, stay and fail.
	Out []uplinkOut `json:",omitempty"`
}

type sessionView struct {
	Paths      []pathView
	Flows      int
	Migrations int
	Moves      map[string]int
}

type pathView struct {
	Name, State        string
	Active             bool
	Tier               int
	SRTT, Jitter, Loss string
	Sent, Received     int64
	LastError          string `json:",omitempty"`
	// ID is the path's carrier's (a re-dial gives a new one), Local the carrier's own
	// address, Dials the carriers dialed so far.
	ID    uint32
	Local string `json:",omitempty"`
	Dials int
}

// uplinkOut is a client's uplink out of use, and why.
type uplinkOut struct {
	Name, Why string
	Stuck     bool // the last uplink: its path stays in the graph and keeps dialing
}

type migrationView struct {
	Time          time.Time
	From, To, Why string
}

func viewSession(s status.Session) sessionView {
	v := sessionView{Flows: s.Flows, Migrations: s.Migrations, Moves: map[string]int{}}
	for c, n := range s.Moves {
		if n > 0 {
			v.Moves[status.Cause(c).String()] = n
		}
	}
	for _, p := range s.Paths {
		pv := pathView{Name: p.Name, State: p.State.String(), Active: p.Active, Tier: p.Tier,
			SRTT: p.SRTT.Round(time.Microsecond).String(), Jitter: p.Jitter.Round(time.Microsecond).String(),
			Loss: fmt.Sprintf("%.1f%%", 100*p.Loss), Sent: p.BytesSent, Received: p.BytesRecv, LastError: p.LastError,
			ID: p.ID, Dials: p.Dials}
		if p.Local != nil {
			pv.Local = p.Local.String()
		}
		v.Paths = append(v.Paths, pv)
	}
	return v
}

// moveLog keeps the most recent migrations.
type moveLog struct {
	mu   sync.Mutex
	last []migrationView
}

func (l *moveLog) add(m status.Migration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = append(l.last, migrationView{Time: m.Time, From: m.From, To: m.To, Why: m.Cause.String()})
	if len(l.last) > 16 {
		l.last = l.last[len(l.last)-16:]
	}
}

func (l *moveLog) recent() []migrationView {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]migrationView(nil), l.last...)
}

// serveStatus answers each connection to the socket at path with get's report. A socket left
// by a process that died is replaced; one that a running process answers on is not.
func serveStatus(path string, get func() report) (io.Closer, error) {
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("status socket %s: another tunvpn answers on it", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			json.NewEncoder(c).Encode(get())
			c.Close()
		}
	}()
	return ln, nil
}

// readStatus asks the process at the socket for its report.
func readStatus(path string) (report, error) {
	var r report
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return r, fmt.Errorf("no tunvpn answers at %s: %w", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		return r, fmt.Errorf("status from %s: %w", path, err)
	}
	return r, nil
}

// printStatus writes r for a person.
func printStatus(w io.Writer, r report) {
	for i, s := range r.Sessions {
		fmt.Fprintf(w, "session %d: %d flows, %d migrations %v\n", i+1, s.Flows, s.Migrations, s.Moves)
		fmt.Fprintf(w, "  %-1s %-12s %-9s %4s %10s %10s %6s %12s %12s\n", "", "path", "state", "tier", "srtt", "jitter", "loss", "sent", "received")
		for _, p := range s.Paths {
			mark := " "
			if p.Active {
				mark = "*"
			}
			fmt.Fprintf(w, "  %-1s %-12s %-9s %4d %10s %10s %6s %12d %12d %s\n", mark, p.Name, p.State, p.Tier, p.SRTT, p.Jitter, p.Loss, p.Sent, p.Received, p.LastError)
		}
	}
	for _, o := range r.Out {
		stays := ""
		if o.Stuck {
			stays = " (the last uplink: its path stays)"
		}
		fmt.Fprintf(w, "  uplink %s out of use: %s%s\n", o.Name, o.Why, stays)
	}
	if len(r.Migrations) > 0 {
		fmt.Fprintln(w, "recent migrations:")
		for _, m := range r.Migrations {
			fmt.Fprintf(w, "  %s  %s -> %s (%s)\n", m.Time.Format("15:04:05.000"), or(m.From, "-"), or(m.To, "-"), m.Why)
		}
	}
	if in := r.Ingress; in != nil {
		fmt.Fprintf(w, "tun: %d TCP connections (%d connecting), %d UDP flows, %d raw flows; since start %d TCP opened, %d reset, %d unanswered, %d SYNs dropped, %d UDP flows, %d ICMP errors, %d raw packets out and %d in\n",
			in.TCPActive, in.TCPPending, in.UDPActive, in.RawFlows, in.TCPOpened, in.TCPReset, in.TCPUnanswered, in.TCPSynDropped, in.UDPOpened, in.ICMPErrors, in.RawOut, in.RawIn)
	}
	if g := r.Gateway; g != nil {
		fmt.Fprintf(w, "gateway: %d raw flows; %d packets out, %d in, %d dropped\n", g.Flows, g.Out, g.In, g.Dropped)
	}
	if l := r.Listener; l != nil {
		fmt.Fprintf(w, "listener: %d sessions from %d peers; egress: %d carried now, %d since start, %d refused, %d unreachable, %d timed out, %d not allowed, %d over the limit\n",
			l.Sessions, l.Peers, l.EgressActive, l.EgressCarried, l.EgressRefused, l.EgressUnreachable, l.EgressTimedOut, l.EgressRejected, l.EgressFull)
	}
}

func or(s, def string) string {
	if strings.TrimSpace(s) == "" {
		return def
	}
	return s
}
