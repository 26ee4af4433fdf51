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
		{Config{Paths: 1, Delay: []DelayConfig{{}, {}}}, "Delay has 2 entries for 1 paths"},
		{Config{Delay: []DelayConfig{{}, {Delay: -1}}}, "Delay[1]: Delay and Jitter must not be negative"},
		{Config{Delay: []DelayConfig{{Delay: maxDelay, Jitter: 1}}}, "sum to at most 30s"},
		{Config{Delay: []DelayConfig{{RateBits: -1}}}, "RateBits is negative (-1)"},
		{Config{Delay: []DelayConfig{{QueueBytes: 1000}}}, "QueueBytes (1000) needs a RateBits"},
		{Config{Delay: []DelayConfig{{RateBits: 1e6, QueueBytes: -1}}}, "QueueBytes is negative (-1)"},
		{Config{Delay: []DelayConfig{{LossPercent: 101}}}, "LossPercent must be in 0..100, got 101"},
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
