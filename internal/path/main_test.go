package path

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test of the package, fuzz targets' seeds included, must leave no goroutine behind: a
// path's Wait joins its goroutines, and the idle paths of the fuzz targets start none.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
