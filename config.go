// Configuration: the options a Dialer and a Listener share, and their defaults.

package rendr

import (
	"crypto/rand"
	"io"
	"log/slog"
	"time"

	"github.com/rendr-go/rendr/internal/flow"
	"github.com/rendr-go/rendr/internal/path"
	"github.com/rendr-go/rendr/policy"
	"github.com/rendr-go/rendr/status"
)

// Options shared by DialerConfig and ListenConfig. Every zero value means the documented
// default.
type Options struct {
	// Logger receives debug events (paths up and down, migrations). Nil discards them.
	Logger *slog.Logger
	// OnMigrate is called after traffic of a session moves from one path to another. It runs
	// on rendr's engine goroutine and must return quickly; it may call Status.
	OnMigrate func(status.Migration)
	// Trace, if set, receives every decision of the engine as it is made: paths connecting,
	// up, suspect and down with why, migrations, rewinds, handshakes accepted or refused
	// (listening side) or failed (dialing side), sessions ended. Package trace writes them as
	// JSON lines; package metrics counts them. It is called on rendr's goroutines, possibly
	// several at once, and must return quickly (hand the event off; never block on I/O). It
	// must not call Close. Nil costs nothing.
	Trace func(status.Event)
	// ReconnectTimeout is how long a session waits with no path attached before its flows
	// fail with ErrNoPath; zero means 60s.
	ReconnectTimeout time.Duration
	// HandshakeTimeout bounds dialing plus handshaking one carrier; zero means 10s.
	HandshakeTimeout time.Duration
	// InitialWindow and MaxWindow bound each flow's receive window, which starts at
	// InitialWindow and grows, once a round trip, to twice what the application read in it
	// (so it follows the bandwidth-delay product); zero means 256 KiB and 32 MiB, which
	// carries 1 Gbit/s over a 200 ms round trip. A window is memory the peer may fill; the
	// session window bounds the sum over flows.
	InitialWindow, MaxWindow int
	// MaxSessionWindow bounds the bytes buffered for all flows of a session in each
	// direction; zero means 64 MiB.
	MaxSessionWindow int
	// MaxFlows bounds the flows open at once per session; zero means 65536.
	MaxFlows int
	// Backlog bounds the flows per session that wait for Accept; beyond it new flows are
	// refused (the dialer's Conn fails with ErrReset), as a TCP listen backlog does. Zero
	// means 1024.
	Backlog int
	// ProbeIdle is the probe interval of an idle path; zero means 1s. A silently dead idle
	// path is detected within ProbeIdle plus the probe deadline (at most 1.5s).
	ProbeIdle time.Duration
	// Dwell, Hysteresis and RecoverDwell tune Selector groups (see package policy).
	Dwell        time.Duration
	Hysteresis   float64
	RecoverDwell time.Duration
}

func (o *Options) common(key PrivateKey) *common {
	c := &common{
		log:       o.Logger,
		onMigrate: o.OnMigrate,
		trace:     o.Trace,
		reconnect: o.ReconnectTimeout,
		hsTimeout: o.HandshakeTimeout,
		engine: flow.Config{InitialWindow: o.InitialWindow, MaxWindow: o.MaxWindow,
			MaxSessionWindow: o.MaxSessionWindow, MaxFlows: o.MaxFlows, Backlog: o.Backlog},
		path:   path.Config{ProbeIdle: o.ProbeIdle},
		tuning: policy.Tuning{Dwell: o.Dwell, Hysteresis: o.Hysteresis, RecoverDwell: o.RecoverDwell},
		key:    key.keypair(),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.reconnect <= 0 {
		c.reconnect = 60 * time.Second
	}
	if c.hsTimeout <= 0 {
		c.hsTimeout = 10 * time.Second
	}
	if _, err := io.ReadFull(rand.Reader, c.instance[:]); err != nil {
		panic(err)
	}
	return c
}
