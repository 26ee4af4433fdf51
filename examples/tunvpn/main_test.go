package main

import (
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// mainEnv makes this test binary tunvpn itself: the netns test starts it again, in a
// namespace, with the arguments in this variable.
const mainEnv = "TUNVPN_TEST_MAIN"

func TestMain(m *testing.M) {
	if args := os.Getenv(mainEnv); args != "" {
		if err := run(strings.Fields(args), os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString("tunvpn: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}
