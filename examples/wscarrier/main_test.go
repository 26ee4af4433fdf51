package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Once rendr, the HTTP server and the WebSocket listener are closed, no goroutine of the
// carrier's (a handler waiting for rendr to close its connection) may be left.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRun runs the example with a smaller transfer: the WebSocket carriers are cut under it
// and the digests must match.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, 16<<20, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "digests equal") {
		t.Fatalf("output: %s", out.String())
	}
	t.Log(out.String())
}
