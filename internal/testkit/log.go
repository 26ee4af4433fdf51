package testkit

// Log: the last lines rendr logged, kept for a failing test to show without flooding a
// passing one.

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// ringKeep is how many lines a Ring keeps.
const ringKeep = 200

// Ring keeps the last 200 lines written to it, each stamped with the time it was written.
// The zero value is ready to use.
type Ring struct {
	mu    sync.Mutex
	lines []string
	next  int
}

// Write keeps p as one line, dropping the oldest line when the ring is full.
func (r *Ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	line := time.Now().Format("15:04:05.000 ") + strings.TrimRight(string(p), "\n")
	if len(r.lines) < ringKeep {
		r.lines = append(r.lines, line)
	} else {
		r.lines[r.next] = line
		r.next = (r.next + 1) % ringKeep
	}
	return len(p), nil
}

// String is the kept lines, oldest first.
func (r *Ring) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(append(append([]string(nil), r.lines[r.next:]...), r.lines[:r.next]...), "\n")
}

// Logger logs rendr's debug events, prefixed with side, into ring.
func Logger(ring *Ring, side string) *slog.Logger {
	return slog.New(slog.NewTextHandler(ring, &slog.HandlerOptions{Level: slog.LevelDebug})).With("side", side)
}

// ErrorLog is an slog.Handler that keeps the errors the library logs (a path's cause of death
// among them), so a test can match them with errors.Is. The zero value is ready to use.
type ErrorLog struct {
	mu   sync.Mutex
	errs []error
}

// Enabled takes every level: a cause of death may be logged at any.
func (h *ErrorLog) Enabled(context.Context, slog.Level) bool { return true }

// WithAttrs returns h: attributes given up front are not errors worth keeping.
func (h *ErrorLog) WithAttrs([]slog.Attr) slog.Handler { return h }

// WithGroup returns h: groups do not change which errors are kept.
func (h *ErrorLog) WithGroup(string) slog.Handler { return h }

// Handle keeps every non-nil error among r's attributes.
func (h *ErrorLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && err != nil {
			h.mu.Lock()
			h.errs = append(h.errs, err)
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

// Logged reports whether an error matching target was logged.
func (h *ErrorLog) Logged(target error) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.errs {
		if errors.Is(e, target) {
			return true
		}
	}
	return false
}
