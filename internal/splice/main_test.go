package splice_test

import (
	"testing"

	"go.uber.org/goleak"
)

// No test may leave a goroutine running after it returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
