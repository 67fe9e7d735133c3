package app_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/examples"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// bigPlacement is a placement call with n distinct nodes; seed varies their capacities.
func bigPlacement(n, seed int) *aipb.PlacementRequest {
	req := &aipb.PlacementRequest{WorkloadId: fmt.Sprintf("wl-%d", seed), Requirements: map[string]float64{"cpu": 4, "memory": 16}}
	for i := 0; i < n; i++ {
		req.AvailableNodes = append(req.AvailableNodes, &aipb.NodeInfo{NodeId: fmt.Sprintf("n-%d", i),
			CpuAvailable: 1 + float64((i*7+seed)%64) + float64(i)/1024, MemoryAvailable: float64(2 + (i*13+seed*3)%256)})
	}
	return req
}

// TestLargePlacementCallsUnderDefaultConfig: placement calls of limits.max_nodes (1024) nodes, five
// model rows each (5120 rows, more than the default queue of 4096), are all answered over both
// protocols, whether none, some or all of their rows are cached.
func TestLargePlacementCallsUnderDefaultConfig(t *testing.T) {
	s := start(t, func(c *config.Config) { c.Limits.MaxMessageBytes = 4 << 20 })
	ctx := context.Background()
	// Some nodes of seed 1 cached first, as in the report (205 of 1024).
	if _, err := s.client.OptimizePlacement(ctx, bigPlacement(205, 1)); err != nil {
		t.Fatal(err)
	}
	for round, seed := range []int{1, 2, 1, 3, 2} {
		req := bigPlacement(1024, seed)
		got, err := s.client.OptimizePlacement(ctx, req)
		if err != nil {
			t.Fatalf("round %d (seed %d) over gRPC: %v", round, seed, err)
		}
		if len(got.Candidates) != 1024 {
			t.Fatalf("round %d: %d candidates, want 1024", round, len(got.Candidates))
		}
		body, _ := protojson.Marshal(bigPlacement(1024, seed+10))
		if code, b := s.post(t, "/api/v1/placement", "application/json", body); code != 200 {
			t.Fatalf("round %d over HTTP: %d %s", round, code, b)
		}
	}
}

// patchWeights changes an ONNX model's weights without touching its metadata: every value of its
// smallest float initializer (a bias, in the example models) moves by delta. The file keeps its
// length; the model's declared version and fingerprint stay as they were.
func patchWeights(t *testing.T, model []byte, delta float32) []byte {
	t.Helper()
	out := append([]byte(nil), model...)
	// ModelProto.graph is field 7; GraphProto.initializer field 5; TensorProto.raw_data field 9.
	graph, goff := field(t, out, 0, len(out), 7)
	var best, bestLen = -1, math.MaxInt
	for off := graph; off < goff; {
		num, typ, n := protowire.ConsumeTag(out[off:goff])
		if n < 0 {
			t.Fatal("bad graph")
		}
		off += n
		if typ != protowire.BytesType {
			off += protowire.ConsumeFieldValue(num, typ, out[off:goff])
			continue
		}
		v, m := protowire.ConsumeBytes(out[off:goff])
		start := off + m - len(v)
		if num == 5 {
			if raw, end := fieldOpt(out, start, start+len(v), 9); raw >= 0 && end-raw < bestLen && end-raw >= 4 {
				best, bestLen = raw, end-raw
			}
		}
		off += m
	}
	if best < 0 {
		t.Fatal("no initializer with raw_data")
	}
	for i := best; i+4 <= best+bestLen; i += 4 {
		f := math.Float32frombits(binary.LittleEndian.Uint32(out[i:]))
		binary.LittleEndian.PutUint32(out[i:], math.Float32bits(f+delta))
	}
	return out
}

// field finds the bytes of the first length-delimited field num in b[from:to].
func field(t *testing.T, b []byte, from, to int, num protowire.Number) (int, int) {
	t.Helper()
	s, e := fieldOpt(b, from, to, num)
	if s < 0 {
		t.Fatalf("field %d not found", num)
	}
	return s, e
}

func fieldOpt(b []byte, from, to int, num protowire.Number) (int, int) {
	for off := from; off < to; {
		n, typ, k := protowire.ConsumeTag(b[off:to])
		if k < 0 {
			return -1, -1
		}
		off += k
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b[off:to])
			if m < 0 {
				return -1, -1
			}
			if n == num {
				return off + m - len(v), off + m
			}
			off += m
			continue
		}
		m := protowire.ConsumeFieldValue(n, typ, b[off:to])
		if m < 0 {
			return -1, -1
		}
		off += m
	}
	return -1, -1
}

// TestReloadServesTheNewWeights: a model file replaced by a retrained one that declares the same
// version (as a retrain with the same spec and release did before versions carried the weights'
// digest) is reloaded; an input answered and cached before gets the new model's answer at once.
func TestReloadServesTheNewWeights(t *testing.T) {
	dir := t.TempDir()
	orig, err := fs.ReadFile(examples.FS, "models/placement.onnx")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "placement.onnx")
	if err := os.WriteFile(path, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	s := start(t, func(c *config.Config) { c.Models[2].Path = path })
	ctx := context.Background()
	req := placementReq()
	before, err := s.client.OptimizePlacement(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.OptimizePlacement(ctx, req); err != nil { // now cached
		t.Fatal(err)
	}
	patched := patchWeights(t, orig, -0.75)
	if err := os.WriteFile(path, patched, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := reloadConfig(t, s, func(c *config.Config) { c.Models[2].Path = path })
	if err := s.app.Reload(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	after, err := s.client.OptimizePlacement(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if after.ModelVersion != before.ModelVersion {
		t.Fatalf("the patched model declares %q, the original %q: the test needs the same version", after.ModelVersion, before.ModelVersion)
	}
	// The new model's own answer, uncached, from a sidecar started on it.
	fresh := start(t, func(c *config.Config) { c.Models[2].Path = path; c.Cache.Disabled = true })
	want, err := fresh.client.OptimizePlacement(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if want.Candidates[0].Score == before.Candidates[0].Score {
		t.Fatalf("patching the weights did not change the score (%v): the test proves nothing", want.Candidates[0].Score)
	}
	if after.Candidates[0].Score != want.Candidates[0].Score || after.Candidates[0].NodeId != want.Candidates[0].NodeId {
		t.Errorf("after the reload: best %s %.6f, the new model answers %s %.6f (the old one answered %s %.6f)",
			after.Candidates[0].NodeId, after.Candidates[0].Score, want.Candidates[0].NodeId, want.Candidates[0].Score,
			before.Candidates[0].NodeId, before.Candidates[0].Score)
	}
	_ = strings.TrimSpace
}
