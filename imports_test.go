// Layering: the import boundaries between the packages hold.

package rendr_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImportBoundaries keeps the layering of DESIGN.md honest: carriers never reach into the
// engine, the engine never opens sockets through a transport, examples use only the public
// API, and the public test kit stands on the standard library alone.
func TestImportBoundaries(t *testing.T) {
	const mod = "github.com/rendr-go/rendr/"
	rules := []struct {
		dir       string
		forbidden []string
		allowed   []string // exceptions to forbidden, by exact import path
	}{
		{dir: "transport", forbidden: []string{mod + "internal/flow", mod + "internal/path", mod + "policy", "github.com/rendr-go/rendr"}},
		{dir: "internal/flow", forbidden: []string{mod + "transport", "net/http"}},
		{dir: "policy", forbidden: []string{mod + "internal/flow", mod + "internal/path", mod + "transport"}},
		{dir: "status", forbidden: []string{mod}},
		// The router decides where traffic goes; it neither opens carriers nor knows the API.
		{dir: "internal/router", forbidden: []string{mod + "transport", "github.com/rendr-go/rendr"}},
		// The test rigs are for tests: no shipped code leans on them.
		{dir: ".", forbidden: []string{mod + "internal/testkit"}},
		{dir: "examples", forbidden: []string{mod + "internal/"}},
		// rendrtest is what users test their own programs with: no rendr internals in it.
		{dir: "rendrtest", forbidden: []string{mod}},
		// Observability reads the public snapshots and events only: the trace and the metrics
		// stand apart from the engine, and only metrics/ speaks Prometheus.
		{dir: "trace", forbidden: []string{"github.com/rendr-go/rendr", mod + "internal/", "github.com/prometheus"}},
		{dir: "metrics", forbidden: []string{"github.com/rendr-go/rendr", mod + "internal/"}},
	}
	for _, r := range rules {
		filepath.WalkDir(r.dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.ImportsOnly)
			if err != nil {
				t.Error(err)
				return nil
			}
			for _, imp := range f.Imports {
				ip, _ := strconv.Unquote(imp.Path.Value)
				ok := true
				for _, bad := range r.forbidden {
					// "x/" forbids x's subtree; "x" forbids x and its sub-packages, except
					// for the module root, which forbids only the facade package itself.
					sub := strings.HasSuffix(bad, "/") || (bad+"/" != mod && strings.HasPrefix(ip, bad+"/"))
					if ip == strings.TrimSuffix(bad, "/") || (sub && strings.HasPrefix(ip, strings.TrimSuffix(bad, "/")+"/")) {
						ok = false
					}
				}
				for _, good := range r.allowed {
					if ip == good {
						ok = true
					}
				}
				if !ok {
					t.Errorf("%s imports %s, which %s/ must not use", p, ip, r.dir)
				}
			}
			return nil
		})
	}
}

// TestPrometheusOnlyInMetrics: an embedder who does not import package metrics gets no
// Prometheus code, directly or through any dependency: no package of the module but metrics/
// (and the examples and commands, programs that may import it on purpose) depends on it.
func TestPrometheusOnlyInMetrics(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Deps " "}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/rendr-go/rendr"
	checked := 0
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		pkg := fields[0]
		if pkg == mod+"/metrics" || strings.HasPrefix(pkg, mod+"/examples/") || strings.HasPrefix(pkg, mod+"/cmd/") {
			continue
		}
		checked++
		for _, dep := range fields[1:] {
			if strings.HasPrefix(dep, "github.com/prometheus/") || dep == mod+"/metrics" {
				t.Errorf("%s depends on %s: only package metrics may pull in Prometheus", pkg, dep)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d packages listed: %q", checked, out)
	}
}
