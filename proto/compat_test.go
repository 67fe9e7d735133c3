// Package proto_test checks the served proto against the seed's contract.
package proto_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/novacron/sidecar/proto/inference"
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

// TestOpenInferenceProtocolNumbers pins inference/grpc_service.proto to the published Open
// Inference Protocol (kserve/open-inference-protocol, open_inference_grpc.proto): every field's
// number and type as the specification gives them, so a published client's messages decode here.
// The generated code must match the .proto too.
func TestOpenInferenceProtocolNumbers(t *testing.T) {
	fd := compile(t, ".", "inference/grpc_service.proto")
	if fd.Package() != "inference" || fd.Services().ByName("GRPCInferenceService") == nil {
		t.Fatalf("package %s, want inference with service GRPCInferenceService", fd.Package())
	}
	spec := map[string][]string{
		"ServerLiveResponse":     {"live=1 bool"},
		"ServerReadyResponse":    {"ready=1 bool"},
		"ModelReadyRequest":      {"name=1 string", "version=2 string"},
		"ModelReadyResponse":     {"ready=1 bool"},
		"ServerMetadataResponse": {"name=1 string", "version=2 string", "extensions=3 repeated string"},
		"ModelMetadataRequest":   {"name=1 string", "version=2 string"},
		"ModelMetadataResponse": {"name=1 string", "versions=2 repeated string", "platform=3 string",
			"inputs=4 repeated message", "outputs=5 repeated message"},
		"ModelMetadataResponse.TensorMetadata": {"name=1 string", "datatype=2 string", "shape=3 repeated int64"},
		"ModelInferRequest": {"model_name=1 string", "model_version=2 string", "id=3 string", "parameters=4 repeated message",
			"inputs=5 repeated message", "outputs=6 repeated message", "raw_input_contents=7 repeated bytes"},
		"ModelInferRequest.InferInputTensor": {"name=1 string", "datatype=2 string", "shape=3 repeated int64",
			"parameters=4 repeated message", "contents=5 message"},
		"ModelInferRequest.InferRequestedOutputTensor": {"name=1 string", "parameters=2 repeated message"},
		"ModelInferResponse": {"model_name=1 string", "model_version=2 string", "id=3 string", "parameters=4 repeated message",
			"outputs=5 repeated message", "raw_output_contents=6 repeated bytes"},
		"ModelInferResponse.InferOutputTensor": {"name=1 string", "datatype=2 string", "shape=3 repeated int64",
			"parameters=4 repeated message", "contents=5 message"},
		"InferParameter": {"bool_param=1 bool", "int64_param=2 int64", "string_param=3 string", "double_param=4 double", "uint64_param=5 uint64"},
		"InferTensorContents": {"bool_contents=1 repeated bool", "int_contents=2 repeated int32", "int64_contents=3 repeated int64",
			"uint_contents=4 repeated uint32", "uint64_contents=5 repeated uint64", "fp32_contents=6 repeated float",
			"fp64_contents=7 repeated double", "bytes_contents=8 repeated bytes"},
	}
	for name, want := range spec {
		d := fd.Messages().ByName(protoreflect.Name(strings.Split(name, ".")[0]))
		if parts := strings.Split(name, "."); d != nil && len(parts) == 2 {
			d = d.Messages().ByName(protoreflect.Name(parts[1]))
		}
		if d == nil {
			t.Errorf("message %s missing", name)
			continue
		}
		var got []string
		for i := 0; i < d.Fields().Len(); i++ {
			f := d.Fields().Get(i)
			card := ""
			if f.Cardinality() == protoreflect.Repeated {
				card = "repeated "
			}
			got = append(got, fmt.Sprintf("%s=%d %s%s", f.Name(), f.Number(), card, f.Kind()))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: fields %v, the specification has %v", name, got, want)
		}
	}
	gen := inference.File_inference_grpc_service_proto
	for _, d := range append(covers(fd, gen), covers(gen, fd)...) {
		t.Errorf("generated code differs from inference/grpc_service.proto (run make proto): %s", d)
	}
}
