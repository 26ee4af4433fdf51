// No test leaves a goroutine behind.

package rendr_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test in this package must leave no goroutine behind: Close joins everything.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
