// Package trace writes what a rendr engine decided, one JSON object per line, in the spirit of
// qlog: each path's changes of state with their cause, each migration with its cause and its
// two ends, each rewind (the bytes sent again after a move), each handshake's outcome. Switch
// it on to see why traffic moved, or did not:
//
//	tw := trace.New(f)
//	defer tw.Close()
//	d, _ := rendr.NewDialer(rendr.DialerConfig{..., Options: rendr.Options{Trace: tw.Event}})
//
// The engine never waits for the writer: events go through a bounded buffer to a goroutine of
// the Writer's own, and when the buffer is full they are dropped and counted rather than
// holding up a migration (the next line written says how many were lost).
package trace

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rendr-go/rendr/status"
)

// DefaultBuffer is how many events wait to be written before new ones are dropped.
const DefaultBuffer = 4096

// Option configures a Writer.
type Option func(*config)

type config struct{ buffer int }

// Buffer sets how many events may wait to be written (DefaultBuffer when n < 1). A burst
// larger than that, while the writer is slow, loses events, counted.
func Buffer(n int) Option { return func(c *config) { c.buffer = n } }

// Record is one line of a trace: an event as JSON. Fields that do not apply are left out.
type Record struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`           // status.EventKind's name: path_up, migration...
	Side    string    `json:"side,omitempty"` // dialer or listener
	Session string    `json:"session,omitempty"`
	Path    string    `json:"path,omitempty"`
	PathID  uint32    `json:"path_id,omitempty"`
	Remote  string    `json:"remote,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Err     string    `json:"error,omitempty"`
	Cause   string    `json:"cause,omitempty"` // migration
	From    string    `json:"from,omitempty"`
	To      string    `json:"to,omitempty"`
	FromID  uint32    `json:"from_id,omitempty"`
	ToID    uint32    `json:"to_id,omitempty"`
	Active  []string  `json:"active,omitempty"`
	Flows   int       `json:"flows,omitempty"` // rewind
	Bytes   uint64    `json:"bytes,omitempty"`
	SRTTms  float64   `json:"srtt_ms,omitempty"`
	// Dropped is set on a line of kind "dropped" only: how many events the buffer had no
	// room for since the last such line.
	Dropped uint64 `json:"dropped,omitempty"`
}

// KindDropped is the kind of a line that counts events lost to a full buffer.
const KindDropped = "dropped"

// FromEvent turns an event into its line.
func FromEvent(ev status.Event) Record {
	r := Record{Time: ev.Time, Kind: ev.Kind.String(), Side: "listener", Path: ev.Path, PathID: ev.PathID,
		Remote: ev.Remote, Reason: ev.Reason, Err: ev.Err, Flows: ev.Flows, Bytes: ev.Bytes,
		SRTTms: float64(ev.SRTT) / float64(time.Millisecond)}
	if ev.Dialer {
		r.Side = "dialer"
	}
	if ev.Session != ([16]byte{}) {
		r.Session = hex.EncodeToString(ev.Session[:])
	}
	if ev.Kind == status.Migrated {
		r.Cause, r.From, r.To, r.FromID, r.ToID = ev.Cause.String(), ev.From, ev.To, ev.FromID, ev.ToID
		r.Active = ev.Active
	}
	return r
}

// Writer writes events as JSON lines. Make it with New; its Event method is what
// rendr.Options.Trace takes. It is safe for concurrent use: a Dialer and a Listener may share
// one.
type Writer struct {
	ch      chan status.Event
	closed  atomic.Bool
	dropped atomic.Uint64 // lost to a full buffer, or sent after Close
	done    chan struct{} // closed by Close: the goroutine drains what is buffered and ends
	ended   chan struct{} // closed when the goroutine has ended
	once    sync.Once

	// Written by the goroutine; read after ended.
	err error
}

// New starts a Writer on w. It owns one goroutine until Close. w is written from that
// goroutine only, a line at a time.
func New(w io.Writer, opts ...Option) *Writer {
	c := config{buffer: DefaultBuffer}
	for _, o := range opts {
		o(&c)
	}
	if c.buffer < 1 {
		c.buffer = DefaultBuffer
	}
	t := &Writer{ch: make(chan status.Event, c.buffer), done: make(chan struct{}), ended: make(chan struct{})}
	go t.routineWrite(w)
	return t
}

// Event queues ev to be written. It never blocks: with the buffer full, or after Close, the
// event is dropped and counted.
func (t *Writer) Event(ev status.Event) {
	if t.closed.Load() {
		t.dropped.Add(1)
		return
	}
	select {
	case t.ch <- ev:
	default:
		t.dropped.Add(1)
	}
}

// Dropped is how many events were lost so far: the buffer was full, or they came after Close.
func (t *Writer) Dropped() uint64 { return t.dropped.Load() }

// Close writes what is buffered, stops the goroutine and returns the first write error. Later
// events are dropped. Close the Writer after the Dialer or Listener it traces, or their last
// events (the session's end) are lost.
func (t *Writer) Close() error {
	t.once.Do(func() {
		t.closed.Store(true)
		close(t.done)
	})
	<-t.ended
	return t.err
}

// routineWrite writes each event as a line, flushing whenever the buffer runs empty, until
// Close. After a write error it writes nothing more, and Close returns the error.
func (t *Writer) routineWrite(w io.Writer) {
	defer close(t.ended)
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	var told uint64 // drops already written in a "dropped" line
	write := func(ev status.Event) {
		if t.err != nil {
			return
		}
		if d := t.dropped.Load(); d > told {
			t.err = enc.Encode(Record{Time: time.Now(), Kind: KindDropped, Dropped: d - told})
			told = d
		}
		if t.err == nil {
			t.err = enc.Encode(FromEvent(ev))
		}
	}
	flush := func() {
		if t.err == nil {
			t.err = bw.Flush()
		}
	}
	for {
		select {
		case ev := <-t.ch:
			write(ev)
			if len(t.ch) == 0 {
				flush()
			}
		case <-t.done:
			for {
				select {
				case ev := <-t.ch:
					write(ev)
					continue
				default:
				}
				break
			}
			if d := t.dropped.Load(); d > told && t.err == nil {
				t.err = enc.Encode(Record{Time: time.Now(), Kind: KindDropped, Dropped: d - told})
			}
			flush()
			if t.err != nil {
				t.err = fmt.Errorf("trace: writing the trace: %w", t.err)
			}
			return
		}
	}
}
