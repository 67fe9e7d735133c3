// Package archtest keeps ARCHITECTURE.md's package table true: it lists each package's imports and fails
// on an edge the table forbids.
package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/novacron/sidecar"

// allowed maps a package (by path under the module; a trailing /... covers subpackages) to the
// project packages its non-test files may import. Packages not listed may import nothing of the
// project's. Generated code (proto/..., internal/seedpb) imports only itself.
var allowed = map[string][]string{
	"cmd/...":        {"*"},
	"internal/app":   {"backends/...", "batcher", "cache", "config", "features/...", "proxy/...", "proto/..."},
	"internal/bench": {"backends/...", "features/...", "proto/..."},
	// proxy reaches backends through the contract and the protocol codec only: never a concrete
	// kind (onnx is cgo; kserve and legacy are clients the wiring builds).
	"proxy": {"batcher", "cache", "features/...", "backends", "backends/oip", "proto/..."},
	// Routing's subpackages sit on proxy: migrate drives its routes and compares their answers;
	// admin serves migrate's controls. proxy itself imports neither.
	"proxy/migrate":   {"proxy", "proto/..."},
	"proxy/admin":     {"proxy/migrate", "proxy", "proto/..."},
	"batcher":         {},
	"cache":           {},
	"features/...":    {"features/...", "proto/..."},
	"backends":        {},
	"backends/oip":    {"backends", "proto/..."},
	"backends/onnx":   {"backends"},
	"backends/kserve": {"backends", "backends/oip", "proto/..."},
	"backends/legacy": {"backends", "proto/..."},
	"config":          {"backends/...", "batcher", "cache", "features/...", "proxy/..."},
	"examples/...":    {"backends/...", "batcher", "cache", "config", "features/...", "proxy/...", "proto/...", "examples/internal/..."},
	// The demos' child-process handling, shared by examples/drift and examples/migration.
	"examples/internal/...": {},
	"proto/...":             {"proto/..."},
	"internal/seedpb":       {},
}

func match(pattern, pkg string) bool {
	if pattern == "*" {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	return pkg == pattern
}

func rule(pkg string) ([]string, bool) {
	// The most specific (longest) matching pattern wins.
	best, found := "", false
	for p := range allowed {
		if match(p, pkg) && len(p) > len(best) {
			best, found = p, true
		}
	}
	return allowed[best], found
}

// imports returns, per package directory under root, the project packages its non-test files import.
func imports(t *testing.T, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		pkg := filepath.ToSlash(rel)
		if _, ok := out[pkg]; !ok {
			out[pkg] = nil
		}
		for _, s := range f.Imports {
			p, _ := strconv.Unquote(s.Path.Value)
			if dep, ok := strings.CutPrefix(p, module+"/"); ok {
				out[pkg] = append(out[pkg], dep)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func violations(graph map[string][]string) []string {
	var bad []string
	for pkg, deps := range graph {
		may, listed := rule(pkg)
		for _, dep := range deps {
			if dep == pkg {
				continue
			}
			ok := false
			for _, p := range may {
				ok = ok || match(p, dep)
			}
			if !ok {
				why := "its rule does not allow it"
				if !listed {
					why = "the package has no rule in archtest.allowed, so it may import no project package"
				}
				bad = append(bad, pkg+" imports "+dep+": "+why)
			}
		}
	}
	sort.Strings(bad)
	return bad
}

func TestImportDirection(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s: %v", root, err)
	}
	graph := imports(t, root)
	for _, top := range []string{"cmd/sidecar", "proxy", "batcher", "cache", "features", "backends", "backends/onnx", "config", "examples"} {
		if _, ok := graph[top]; !ok {
			t.Errorf("package %s is missing: DESIGN.md's layout names it", top)
		}
	}
	for _, v := range violations(graph) {
		t.Error(v)
	}
}

// TestImportDirectionCatchesBackEdges shows the check can fail: a backend reaching up into the
// proxy or across to another kind, the batcher importing anything of the project's, and the proxy
// importing a concrete backend kind (cgo onnx, the kserve and legacy clients) or its own routing
// subpackage are reported.
func TestImportDirectionCatchesBackEdges(t *testing.T) {
	got := violations(map[string][]string{
		"batcher":       {"backends"},
		"features":      {"proto/novacron/ai"},
		"newpkg":        {"features"},
		"proxy":         {"backends", "backends/oip", "backends/onnx", "backends/kserve", "backends/legacy", "proxy/migrate"},
		"backends/onnx": {"proxy", "backends/kserve"},
	})
	want := 8
	if len(got) != want {
		t.Fatalf("got %d violations, want %d: %q", len(got), want, got)
	}
}
