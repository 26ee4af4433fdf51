package testkit

// NetLab: the network-namespace lab, built for one test and torn down after it.

import (
	"testing"

	"github.com/rendr-go/rendr/internal/netlab"
)

// NetLab builds the network-namespace lab for a test and tears it down after; without root
// or the kernel features it needs, the test is skipped.
func NetLab(t *testing.T, cfg netlab.Config) *netlab.Lab {
	t.Helper()
	if err := netlab.Available(); err != nil {
		t.Skip(err)
	}
	lab, err := netlab.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	return lab
}
