package testkit

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
)

// The ring keeps the newest lines, oldest first, and drops the rest.
func TestRingKeepsTheLast(t *testing.T) {
	var r Ring
	for i := range ringKeep + 50 {
		fmt.Fprintf(&r, "line %d\n", i)
	}
	lines := strings.Split(r.String(), "\n")
	if len(lines) != ringKeep {
		t.Fatalf("%d lines kept, want %d", len(lines), ringKeep)
	}
	if !strings.HasSuffix(lines[0], " line 50") || !strings.HasSuffix(lines[ringKeep-1], fmt.Sprintf(" line %d", ringKeep+49)) {
		t.Fatalf("kept %q ... %q", lines[0], lines[ringKeep-1])
	}
}

func TestLoggerWritesToRing(t *testing.T) {
	var r Ring
	Logger(&r, "dialer").Debug("path down", "path", "p1")
	if s := r.String(); !strings.Contains(s, "side=dialer") || !strings.Contains(s, "path=p1") {
		t.Fatalf("ring holds %q", s)
	}
}

// ErrorLog keeps the errors logged as attributes, wrapped ones included, and nothing else.
func TestErrorLogMatches(t *testing.T) {
	var h ErrorLog
	errDead := errors.New("dead")
	log := slog.New(&h)
	log.Info("path down", "path", "p0", "err", fmt.Errorf("carrier: %w", errDead))
	if !h.Logged(errDead) {
		t.Fatal("a wrapped error logged as an attribute was not kept")
	}
	if h.Logged(io.EOF) {
		t.Fatal("an error never logged matched")
	}
}
