package rendrtest

import (
	"testing"

	"go.uber.org/goleak"
)

// A closed relay has ended every goroutine it started, and so have the rendr ends of the
// failover tests: nothing may be left behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
