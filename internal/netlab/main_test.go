package netlab

import (
	"errors"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// New checks its configuration before it looks at the machine, so a bad one gets the same
// error naming the bad field everywhere, with or without root, on every system.
func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Paths: -1}, "Paths must be in 0..64, got -1"},
		{Config{Paths: MaxPaths + 1}, "Paths must be in 0..64, got 65"},
		{Config{Paths: 1, RateMbit: []int{1, 2}}, "RateMbit has 2 entries for 1 paths"},
		{Config{RateMbit: []int{-1}}, "RateMbit[0] is negative (-1)"},
		{Config{Name: "bad name"}, `Name "bad name" may only contain`},
		{Config{Name: strings.Repeat("n", maxNameBytes+1)}, "longer than 32 bytes"},
	} {
		l, err := New(tc.cfg)
		if l != nil {
			l.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("New(%+v) = %v; want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}
