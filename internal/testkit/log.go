package testkit

// Log: the last lines rendr logged, kept for a failing test to show without flooding a
// passing one.

import (
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
