package rendr_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering keeps the layers of the design apart by what each package needs in all, not
// only by what it imports itself (TestImportBoundaries): the flow engine stands alone (no
// path, no carrier, no cryptography under it), the router decides without carriers, policy
// is pure, and no carrier reaches into the engine. A dependency that comes back through a
// third package fails here.
func TestLayering(t *testing.T) {
	const mod = "github.com/rendr-go/rendr/"
	rules := []struct {
		pkg       string
		forbidden []string // packages, and everything under them
	}{
		{"./internal/flow", []string{mod + "internal/path", mod + "transport", mod + "policy", mod + "internal/router", "github.com/flynn/noise", "net/http"}},
		{"./internal/router", []string{mod + "transport", mod + "internal/path", "github.com/flynn/noise"}},
		{"./policy", []string{mod + "internal/flow", mod + "internal/path", mod + "transport"}},
		{"./status", []string{mod}},
		{"./l3", []string{mod}},
		{"./transport/...", []string{mod + "internal/flow", mod + "internal/path", mod + "policy", mod + "internal/router", "github.com/rendr-go/rendr"}},
	}
	for _, r := range rules {
		self, err := exec.Command("go", "list", r.pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", r.pkg, err)
		}
		own := map[string]bool{}
		for _, p := range strings.Fields(string(self)) {
			own[p] = true
		}
		out, err := exec.Command("go", "list", "-deps", r.pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", r.pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if own[dep] {
				continue
			}
			for _, bad := range r.forbidden {
				if dep == bad || strings.HasPrefix(dep, strings.TrimSuffix(bad, "/")+"/") && bad != "github.com/rendr-go/rendr" {
					t.Errorf("%s depends on %s", r.pkg, dep)
				}
			}
		}
	}
}
