// Package proto_test checks the served proto against the seed's contract.
package proto_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/reflect/protoreflect"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

func compile(t *testing.T, dir, file string) protoreflect.FileDescriptor {
	t.Helper()
	c := protocompile.Compiler{Resolver: &protocompile.SourceResolver{ImportPaths: []string{dir}}}
	files, err := c.Compile(context.Background(), file)
	if err != nil {
		t.Fatalf("compiling %s: %v", file, err)
	}
	return files[0]
}

// covers reports every way in which got fails to contain want unchanged: same package, services,
// methods and their types, messages, fields with their numbers, names, kinds, cardinality and types.
func covers(want, got protoreflect.FileDescriptor) []string {
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	if want.Package() != got.Package() {
		add("package: want %s, got %s", want.Package(), got.Package())
	}
	for i := 0; i < want.Services().Len(); i++ {
		ws := want.Services().Get(i)
		gs := got.Services().ByName(ws.Name())
		if gs == nil {
			add("service %s missing", ws.FullName())
			continue
		}
		for j := 0; j < ws.Methods().Len(); j++ {
			wm := ws.Methods().Get(j)
			gm := gs.Methods().ByName(wm.Name())
			switch {
			case gm == nil:
				add("rpc %s missing", wm.FullName())
			case wm.Input().FullName() != gm.Input().FullName() || wm.Output().FullName() != gm.Output().FullName():
				add("rpc %s: want (%s) returns (%s), got (%s) returns (%s)", wm.FullName(), wm.Input().FullName(), wm.Output().FullName(), gm.Input().FullName(), gm.Output().FullName())
			case wm.IsStreamingClient() != gm.IsStreamingClient() || wm.IsStreamingServer() != gm.IsStreamingServer():
				add("rpc %s: streaming differs", wm.FullName())
			}
		}
	}
	var msgs func(w, g protoreflect.MessageDescriptors)
	msgs = func(w, g protoreflect.MessageDescriptors) {
		for i := 0; i < w.Len(); i++ {
			wm := w.Get(i)
			gm := g.ByName(wm.Name())
			if gm == nil {
				add("message %s missing", wm.FullName())
				continue
			}
			for j := 0; j < wm.Fields().Len(); j++ {
				wf := wm.Fields().Get(j)
				gf := gm.Fields().ByNumber(wf.Number())
				if gf == nil {
					add("field %s = %d missing", wf.FullName(), wf.Number())
					continue
				}
				if wf.Name() != gf.Name() || wf.Kind() != gf.Kind() || wf.Cardinality() != gf.Cardinality() || wf.IsMap() != gf.IsMap() || wf.IsPacked() != gf.IsPacked() {
					add("field %d of %s: want %s %s %s, got %s %s %s", wf.Number(), wm.FullName(), wf.Cardinality(), wf.Kind(), wf.Name(), gf.Cardinality(), gf.Kind(), gf.Name())
				}
				if wf.Message() != nil && (gf.Message() == nil || wf.Message().FullName() != gf.Message().FullName()) {
					add("field %s: message type differs", wf.FullName())
				}
			}
			msgs(wm.Messages(), gm.Messages())
		}
	}
	msgs(want.Messages(), got.Messages())
	return diffs
}

// TestServedProtoCoversSeed: every service, RPC, message and field of the seed's proto is in the
// served proto with the same name, number and type, so the seed's clients work unchanged.
func TestServedProtoCoversSeed(t *testing.T) {
	seed := compile(t, "../internal/seedpb", "ai_service.proto")
	served := compile(t, ".", "novacron/ai/ai_service.proto")
	for _, d := range covers(seed, served) {
		t.Error(d)
	}
	// The check can fail: a served proto with a renumbered field does not cover the seed.
	if len(covers(served, seed)) == 0 {
		t.Error("the served proto adds nothing to the seed, yet covers() found no difference in reverse: the check is blind")
	}
}

// TestGeneratedCodeIsCurrent: the committed Go code was generated from the committed .proto
// (run make proto after editing it).
func TestGeneratedCodeIsCurrent(t *testing.T) {
	served := compile(t, ".", "novacron/ai/ai_service.proto")
	gen := aipb.File_novacron_ai_ai_service_proto
	for _, d := range append(covers(served, gen), covers(gen, served)...) {
		t.Errorf("generated code differs from novacron/ai/ai_service.proto (run make proto): %s", d)
	}
}

// TestSeedCopyIsTheSeed: internal/seedpb holds the seed's proto byte for byte.
func TestSeedCopyIsTheSeed(t *testing.T) {
	shared := filepath.Join("..", "..", "shared", "seed", "ai_service.proto")
	want, err := os.ReadFile(shared)
	if os.IsNotExist(err) {
		t.Skipf("the seed (%s) is not beside this checkout; the copy in internal/seedpb is checked where it is", shared)
	}
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../internal/seedpb/ai_service.proto")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("internal/seedpb/ai_service.proto differs from %s; copy it again and run make proto", shared)
	}
}
