package status_test

import (
	"strings"
	"testing"

	"github.com/rendr-go/rendr/status"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every kind has a name of its own, as a trace prints it; an unknown one says so.
func TestEventKindNames(t *testing.T) {
	seen := map[string]bool{}
	for k := status.PathConnecting; k <= status.SessionEnded; k++ {
		s := k.String()
		if strings.HasPrefix(s, "EventKind(") || seen[s] {
			t.Errorf("kind %d: name %q missing or repeated", int(k), s)
		}
		seen[s] = true
	}
	if s := status.EventKind(0).String(); s != "EventKind(0)" {
		t.Errorf("the zero kind is %q", s)
	}
}
