package testkit

import (
	"testing"

	"go.uber.org/goleak"
)

// The kit starts goroutines for transfers, proxies and killers: each must end with its owner.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
