package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// kindTypes are proxy's kinds of target. Outside the files listed in mayAskKind, proxy's code
// reaches a target through its task's interface (Forecaster, Detector, Placer) and never asks
// which kind it is: split, shadow and comparison then work over any target.
var kindTypes = map[string]bool{"Model": true, "Legacy": true}

// mayAskKind lists the files of proxy allowed a type assertion to a kind: the snapshot, which
// keeps the tensor models the Open Inference Protocol serves apart.
var mayAskKind = map[string]bool{"service.go": true}

// TestHandlersDoNotAskTheKind fails on a type assertion or type switch to *Model or *Legacy in
// proxy outside mayAskKind.
func TestHandlersDoNotAskTheKind(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "proxy", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, path := range files {
		name := filepath.Base(path)
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, at := range kindAssertions(f) {
			if !mayAskKind[name] {
				t.Errorf("%s: asks whether a target is a *%s; reach it through its task's interface instead", fset.Position(at.pos), at.kind)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no proxy files found")
	}
}

type assertion struct {
	pos  token.Pos
	kind string
}

// kindAssertions finds x.(*Kind) and the *Kind cases of type switches.
func kindAssertions(f *ast.File) []assertion {
	var out []assertion
	kindOf := func(e ast.Expr) (string, bool) {
		if s, ok := e.(*ast.StarExpr); ok {
			if id, ok := s.X.(*ast.Ident); ok && kindTypes[id.Name] {
				return id.Name, true
			}
		}
		return "", false
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.TypeAssertExpr:
			if k, ok := kindOf(n.Type); ok {
				out = append(out, assertion{n.Pos(), k})
			}
		case *ast.TypeSwitchStmt:
			for _, c := range n.Body.List {
				for _, e := range c.(*ast.CaseClause).List {
					if k, ok := kindOf(e); ok {
						out = append(out, assertion{e.Pos(), k})
					}
				}
			}
		}
		return true
	})
	return out
}

// TestKindAssertionsFound: the check sees both forms.
func TestKindAssertionsFound(t *testing.T) {
	src := `package proxy
func f(t any) {
	if _, ok := t.(*Legacy); ok {}
	switch t.(type) { case *Model: }
	_ = t.(Target)
}`
	f, err := parser.ParseFile(token.NewFileSet(), "x.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := kindAssertions(f)
	if len(got) != 2 || got[0].kind != "Legacy" || got[1].kind != "Model" {
		t.Errorf("found %v, want a *Legacy assertion and a *Model case", got)
	}
}
