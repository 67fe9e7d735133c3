package onnx

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/novacron/sidecar/backends"
)

// affineFingerprint is what testdata/make_models.py writes into affine.onnx.
const affineFingerprint = "089b0604aacd6f5e9a70f6b49ef45068697e62834d091b9c1d0dd53cbaac8010"

// otherFingerprint is some other spec's fingerprint.
const otherFingerprint = "9c1d5e0b3fa24c7e8d6b1a2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d"

// openRuntime opens ONNX Runtime for one test. The library must be there: the Makefile runs
// scripts/fetch-onnxruntime.sh before the tests.
func openRuntime(t testing.TB) *Runtime {
	t.Helper()
	path, err := LibraryPath("")
	if err != nil {
		t.Fatalf("%v\n(run scripts/fetch-onnxruntime.sh from the repository root, or set %s)", err, EnvLibrary)
	}
	rt, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := rt.Close(); err != nil {
			t.Errorf("Runtime.Close: %v", err)
		}
	})
	return rt
}

func readModel(t testing.TB, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func load(t testing.TB, rt *Runtime, name, file string, cfg Config) *Session {
	t.Helper()
	s, err := rt.Load(name, readModel(t, file), cfg)
	if err != nil {
		t.Fatalf("Load(%s): %v", file, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// affineBatch makes a [rows, 3] batch whose values start at base and are exact in float32.
func affineBatch(rows int, base float32) *backends.Batch {
	x := make([]float32, rows*3)
	for i := range x {
		x[i] = base + float32(i)/4
	}
	return &backends.Batch{Model: "affine", Inputs: []backends.Tensor{backends.F32("x", []int64{int64(rows), 3}, x)}}
}

// checkAffine checks y = 2x + 1 row by row.
func checkAffine(t testing.TB, b *backends.Batch, res *backends.Result) {
	t.Helper()
	x := b.Inputs[0].Data.([]float32)
	rows := b.Inputs[0].Shape[0]
	if len(res.Outputs) != 1 {
		t.Fatalf("got %d outputs, want 1", len(res.Outputs))
	}
	y, ok := res.Output("y")
	if !ok {
		t.Fatalf("no output y in %+v", res.Outputs)
	}
	if y.DType != backends.FP32 || !slices.Equal(y.Shape, []int64{rows, 3}) {
		t.Fatalf("output y: %s %v, want FP32 [%d 3]", y.DType, y.Shape, rows)
	}
	got, err := y.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(x) {
		t.Fatalf("output y has %d elements, want %d", len(got), len(x))
	}
	for i := range x {
		if want := 2*x[i] + 1; got[i] != want {
			t.Fatalf("row %d col %d: y = %v, want %v (x = %v)", i/3, i%3, got[i], want, x[i])
		}
	}
}

func TestInferAffine(t *testing.T) {
	rt := openRuntime(t)
	fromBytes := load(t, rt, "affine", "affine.onnx", Config{Fingerprint: affineFingerprint})
	fromFile, err := rt.LoadFile("affine", filepath.Join("testdata", "affine.onnx"), Config{Sessions: 2, Fingerprint: affineFingerprint})
	if err != nil {
		t.Fatalf("LoadFile: %v", err)
	}
	defer fromFile.Close()

	for _, s := range []struct {
		name string
		s    *Session
	}{{"bytes", fromBytes}, {"file", fromFile}} {
		for _, rows := range []int{1, 2, 64} {
			t.Run(fmt.Sprintf("%s/rows=%d", s.name, rows), func(t *testing.T) {
				b := affineBatch(rows, -3)
				res, err := s.s.Infer(t.Context(), b)
				if err != nil {
					t.Fatal(err)
				}
				checkAffine(t, b, res)
			})
		}
	}
}

func TestInferDTypes(t *testing.T) {
	rt := openRuntime(t)
	s := load(t, rt, "multi", "multi.onnx", Config{})
	b := &backends.Batch{Inputs: []backends.Tensor{
		// Not in the model's order, on purpose.
		{Name: "c", DType: backends.INT32, Shape: []int64{3}, Data: []int32{1, -2, 30}},
		{Name: "a", DType: backends.FP64, Shape: []int64{3, 2}, Data: []float64{0.5, -1, 0, 2.25, -0.125, 1e10}},
		{Name: "b", DType: backends.INT64, Shape: []int64{3, 2}, Data: []int64{1, 2, -3, 4, 1 << 20, 6}},
	}}
	res, err := s.Infer(t.Context(), b)
	if err != nil {
		t.Fatal(err)
	}
	want := []backends.Tensor{
		{Name: "sum", DType: backends.FP64, Shape: []int64{3, 2}, Data: []float64{1.5, 1, -3, 6.25, float64(1<<20) - 0.125, 1e10 + 6}},
		{Name: "c2", DType: backends.INT32, Shape: []int64{3}, Data: []int32{2, -4, 60}},
		{Name: "pos", DType: backends.BOOL, Shape: []int64{3, 2}, Data: []bool{true, false, false, true, false, true}},
		{Name: "bsq", DType: backends.INT64, Shape: []int64{3, 2}, Data: []int64{1, 4, 9, 16, 1 << 40, 36}},
	}
	if len(res.Outputs) != len(want) {
		t.Fatalf("got %d outputs, want %d", len(res.Outputs), len(want))
	}
	for i, w := range want {
		g := res.Outputs[i]
		if g.Name != w.Name || g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) || fmt.Sprint(g.Data) != fmt.Sprint(w.Data) {
			t.Errorf("output %d:\n got %s %s %v %v\nwant %s %s %v %v", i, g.Name, g.DType, g.Shape, g.Data, w.Name, w.DType, w.Shape, w.Data)
		}
		if err := g.Check(); err != nil {
			t.Errorf("output %d: %v", i, err)
		}
	}
}

func TestInferConcurrent(t *testing.T) {
	rt := openRuntime(t)
	s := load(t, rt, "affine", "affine.onnx", Config{Sessions: 3})
	const workers, calls = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for c := range calls {
				rows := 1 + (w+c)%9
				// Distinct values per call, exact in float32.
				b := affineBatch(rows, float32(w*1000+c*10))
				res, err := s.Infer(context.Background(), b)
				if err != nil {
					errs <- err
					return
				}
				y := res.Outputs[0].Data.([]float32)
				x := b.Inputs[0].Data.([]float32)
				if len(y) != len(x) || res.Outputs[0].Shape[0] != int64(rows) {
					errs <- fmt.Errorf("worker %d call %d: shape %v for %d rows", w, c, res.Outputs[0].Shape, rows)
					return
				}
				for i := range x {
					if y[i] != 2*x[i]+1 {
						errs <- fmt.Errorf("worker %d call %d row %d: y = %v, want %v", w, c, i/3, y[i], 2*x[i]+1)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestEmptyBatch(t *testing.T) {
	rt := openRuntime(t)
	s := load(t, rt, "multi", "multi.onnx", Config{})
	for _, b := range []*backends.Batch{
		{},
		{Inputs: []backends.Tensor{
			{Name: "a", DType: backends.FP64, Shape: []int64{0, 2}, Data: []float64{}},
			{Name: "b", DType: backends.INT64, Shape: []int64{0, 2}, Data: []int64{}},
			{Name: "c", DType: backends.INT32, Shape: []int64{0}, Data: []int32{}},
		}},
	} {
		res, err := s.Infer(t.Context(), b)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Outputs) != 4 {
			t.Fatalf("got %d outputs, want 4", len(res.Outputs))
		}
		for _, o := range res.Outputs {
			if o.Shape[0] != 0 || o.Len() != 0 || o.Check() != nil {
				t.Errorf("output %s: %s %v %v, want 0 rows", o.Name, o.DType, o.Shape, o.Data)
			}
		}
	}
}

func TestInvalidInput(t *testing.T) {
	rt := openRuntime(t)
	affine := load(t, rt, "affine", "affine.onnx", Config{})
	multi := load(t, rt, "multi", "multi.onnx", Config{})
	a := func(rows int64) backends.Tensor {
		return backends.Tensor{Name: "a", DType: backends.FP64, Shape: []int64{rows, 2}, Data: make([]float64, rows*2)}
	}
	bb := func(rows int64) backends.Tensor {
		return backends.Tensor{Name: "b", DType: backends.INT64, Shape: []int64{rows, 2}, Data: make([]int64, rows*2)}
	}
	c := func(rows int64) backends.Tensor {
		return backends.Tensor{Name: "c", DType: backends.INT32, Shape: []int64{rows}, Data: make([]int32, rows)}
	}
	tests := []struct {
		name string
		s    *Session
		b    backends.Batch
		want []string // substrings of the error
	}{
		{"wrong name", affine,
			backends.Batch{Inputs: []backends.Tensor{backends.F32("input", []int64{1, 3}, make([]float32, 3))}},
			[]string{`model "affine" has no input "input"`, `"x" (FP32 [N 3])`}},
		{"wrong dtype", affine,
			backends.Batch{Inputs: []backends.Tensor{{Name: "x", DType: backends.FP64, Shape: []int64{1, 3}, Data: make([]float64, 3)}}},
			[]string{`input "x" is FP64`, `expects FP32 [N 3]`}},
		{"wrong width", affine,
			backends.Batch{Inputs: []backends.Tensor{backends.F32("x", []int64{2, 4}, make([]float32, 8))}},
			[]string{`input "x" has shape [2 4]`, `expects FP32 [N 3]`}},
		{"wrong rank", affine,
			backends.Batch{Inputs: []backends.Tensor{backends.F32("x", []int64{3}, make([]float32, 3))}},
			[]string{`input "x" has shape [3]`, `expects FP32 [N 3]`}},
		{"short data", affine,
			backends.Batch{Inputs: []backends.Tensor{backends.F32("x", []int64{2, 3}, make([]float32, 5))}},
			[]string{`tensor "x": shape [2 3] needs 6 elements, data has 5`}},
		{"data of another type", affine,
			backends.Batch{Inputs: []backends.Tensor{{Name: "x", DType: backends.FP32, Shape: []int64{1, 3}, Data: []int32{1, 2, 3}}}},
			[]string{`tensor "x": dtype FP32 but data is INT32`}},
		{"wrong model", affine,
			backends.Batch{Model: "bandwidth", Inputs: []backends.Tensor{backends.F32("x", []int64{1, 3}, make([]float32, 3))}},
			[]string{`batch for model "bandwidth"`, `model "affine"`}},
		{"missing input", multi,
			backends.Batch{Inputs: []backends.Tensor{a(2), c(2)}},
			[]string{`input "b" (INT64 [N 2]) is missing`}},
		{"duplicate input", multi,
			backends.Batch{Inputs: []backends.Tensor{a(2), bb(2), a(2)}},
			[]string{`input "a" is given twice`}},
		{"rows differ", multi,
			backends.Batch{Inputs: []backends.Tensor{a(2), bb(3), c(2)}},
			[]string{`input "b" has 3 rows but input "a" has 2`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.s.Infer(t.Context(), &tt.b)
			if !errors.Is(err, backends.ErrInvalidInput) {
				t.Fatalf("err = %v, want ErrInvalidInput", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	rt := openRuntime(t)
	tests := []struct {
		name, file, fingerprint string
		want                    []string // substrings of the error; none: loads
	}{
		{"match", "affine.onnx", affineFingerprint, nil},
		{"not required", "affine.onnx", "", nil},
		{"not required, model has none", "affine_nometa.onnx", "", nil},
		{"mismatch", "affine.onnx", otherFingerprint, []string{
			`model "bandwidth": feature spec fingerprint mismatch`,
			"model has " + affineFingerprint + " (metadata_props novacron.spec_fingerprint)",
			"spec has " + otherFingerprint,
			"retrain the model with this spec or configure the spec it was trained with",
		}},
		{"missing", "affine_nometa.onnx", otherFingerprint, []string{
			`model "bandwidth": feature spec fingerprint missing`,
			"no metadata_props novacron.spec_fingerprint",
			"spec has " + otherFingerprint,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := rt.Load("bandwidth", readModel(t, tt.file), Config{Fingerprint: tt.fingerprint})
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				s.Close()
				return
			}
			if err == nil {
				s.Close()
				t.Fatal("loaded, want a refusal")
			}
			if !errors.Is(err, backends.ErrModelLoad) {
				t.Errorf("err = %v, want ErrModelLoad", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	rt := openRuntime(t)
	tests := []struct {
		name string
		load func() (*Session, error)
		want string
	}{
		{"fixed batch", func() (*Session, error) {
			return rt.Load("m", readModel(t, "affine_fixed_batch.onnx"), Config{})
		}, `input "x" has shape [1 3]; its first (batch) dimension must be dynamic`},
		{"garbage", func() (*Session, error) {
			return rt.Load("m", []byte("not a model"), Config{})
		}, `model "m": reading the model`},
		{"empty", func() (*Session, error) { return rt.Load("m", nil, Config{}) }, `model "m": empty model`},
		{"no file", func() (*Session, error) {
			return rt.LoadFile("m", filepath.Join("testdata", "nope.onnx"), Config{})
		}, "nope.onnx"},
		{"no name", func() (*Session, error) { return rt.Load("", readModel(t, "affine.onnx"), Config{}) }, "needs a name"},
		{"bad config", func() (*Session, error) {
			return rt.Load("m", readModel(t, "affine.onnx"), Config{Sessions: -1})
		}, "Sessions: -1 is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tt.load()
			if err == nil {
				s.Close()
				t.Fatal("loaded, want an error")
			}
			if !errors.Is(err, backends.ErrModelLoad) {
				t.Errorf("err = %v, want ErrModelLoad", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestMetadata(t *testing.T) {
	rt := openRuntime(t)
	tests := []struct {
		file string
		want backends.Metadata
	}{
		{"affine.onnx", backends.Metadata{
			Name: "m", Version: "test-1", Platform: "onnxruntime_onnx",
			Inputs:  []backends.TensorInfo{{Name: "x", DType: backends.FP32, Shape: []int64{-1, 3}}},
			Outputs: []backends.TensorInfo{{Name: "y", DType: backends.FP32, Shape: []int64{-1, 3}}},
			Props: map[string]string{
				MetaFingerprint: affineFingerprint, MetaVersion: "test-1", "novacron.labels": "a,b,c",
			},
		}},
		{"affine_nometa.onnx", backends.Metadata{
			Name: "m", Version: "7", Platform: "onnxruntime_onnx", // the ONNX model_version
			Inputs:  []backends.TensorInfo{{Name: "x", DType: backends.FP32, Shape: []int64{-1, 3}}},
			Outputs: []backends.TensorInfo{{Name: "y", DType: backends.FP32, Shape: []int64{-1, 3}}},
			Props:   map[string]string{},
		}},
		{"multi.onnx", backends.Metadata{
			Name: "m", Version: "multi-1", Platform: "onnxruntime_onnx",
			Inputs: []backends.TensorInfo{
				{Name: "a", DType: backends.FP64, Shape: []int64{-1, 2}},
				{Name: "b", DType: backends.INT64, Shape: []int64{-1, 2}},
				{Name: "c", DType: backends.INT32, Shape: []int64{-1}},
			},
			Outputs: []backends.TensorInfo{
				{Name: "sum", DType: backends.FP64, Shape: []int64{-1, 2}},
				{Name: "c2", DType: backends.INT32, Shape: []int64{-1}},
				{Name: "pos", DType: backends.BOOL, Shape: []int64{-1, 2}},
				{Name: "bsq", DType: backends.INT64, Shape: []int64{-1, 2}},
			},
			Props: map[string]string{MetaVersion: "multi-1"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			s := load(t, rt, "m", tt.file, Config{})
			sum := sha256.Sum256(readModel(t, tt.file))
			tt.want.Digest = "sha256:" + hex.EncodeToString(sum[:]) // the file's bytes identify the model
			for _, model := range []string{"m", ""} {
				got, err := s.Metadata(t.Context(), model)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.want) {
					t.Errorf("Metadata(%q):\n got %+v\nwant %+v", model, got, tt.want)
				}
				// The result is the caller's.
				got.Inputs[0].Shape[0] = 99
				got.Props["x"] = "y"
			}
			if _, err := s.Metadata(t.Context(), "other"); !errors.Is(err, backends.ErrInvalidInput) {
				t.Errorf("Metadata(other): err = %v, want ErrInvalidInput", err)
			}
		})
	}
}

func TestClose(t *testing.T) {
	rt := openRuntime(t)
	s := load(t, rt, "affine", "affine.onnx", Config{Sessions: 2})
	if err := s.Ready(t.Context()); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Infer(t.Context(), affineBatch(1, 0)); !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("Infer after Close: err = %v, want ErrUnavailable", err)
	}
	if err := s.Ready(t.Context()); !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("Ready after Close: err = %v, want ErrUnavailable", err)
	}
	if _, err := s.Metadata(t.Context(), "affine"); !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("Metadata after Close: err = %v, want ErrUnavailable", err)
	}
}

// TestRuntimeClose: closing the Runtime closes its sessions and refuses loads; the environment
// outlives it while another Runtime is open, and can be created again afterwards.
func TestRuntimeClose(t *testing.T) {
	path, err := LibraryPath("")
	if err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		rt1, err := Open(path)
		if err != nil {
			t.Fatalf("round %d: Open: %v", round, err)
		}
		rt2, err := Open("")
		if err != nil {
			t.Fatalf("round %d: second Open: %v", round, err)
		}
		s1, err := rt1.Load("affine", readModel(t, "affine.onnx"), Config{})
		if err != nil {
			t.Fatal(err)
		}
		s2, err := rt2.Load("affine", readModel(t, "affine.onnx"), Config{})
		if err != nil {
			t.Fatal(err)
		}
		if err := rt1.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := s1.Ready(t.Context()); !errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("session of a closed Runtime: Ready = %v, want ErrUnavailable", err)
		}
		if _, err := rt1.Load("affine", readModel(t, "affine.onnx"), Config{}); !errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("Load after Close: err = %v, want ErrUnavailable", err)
		}
		// The other Runtime still works.
		b := affineBatch(4, 1)
		res, err := s2.Infer(t.Context(), b)
		if err != nil {
			t.Fatalf("Infer on the other Runtime: %v", err)
		}
		checkAffine(t, b, res)
		if err := rt2.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := rt2.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
}

func TestOpenOtherLibrary(t *testing.T) {
	rt := openRuntime(t)
	link := filepath.Join(t.TempDir(), "libonnxruntime.so")
	if err := os.Symlink(rt.Path(), link); err != nil {
		t.Fatal(err)
	}
	if rt2, err := Open(link); err == nil {
		rt2.Close()
		t.Fatal("opened a second library")
	} else if !strings.Contains(err.Error(), "already loaded from "+rt.Path()) {
		t.Errorf("error %q does not name the loaded library", err)
	}
	if rt.Version() != Version {
		t.Errorf("Version() = %q, want %q", rt.Version(), Version)
	}
}

// TestWaiting runs in a synctest bubble (with its own Runtime, since a Runtime's WaitGroup may not
// cross bubbles), holding the pool's only session to control who waits.
func TestWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := openRuntime(t)
		s := load(t, rt, "affine", "affine.onnx", Config{Sessions: 1})
		held := <-s.slots

		// A cancelled wait.
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			_, err := s.Infer(ctx, affineBatch(1, 0))
			errc <- err
		}()
		synctest.Wait() // Infer is waiting for the session
		select {
		case err := <-errc:
			t.Fatalf("Infer returned while the session was busy: %v", err)
		default:
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "waiting for a free session") {
			t.Errorf("cancelled wait: err = %v, want context.Canceled while waiting", err)
		}

		// A deadline while waiting.
		ctx, cancel = context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := s.Infer(ctx, affineBatch(1, 0)); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("deadline: err = %v, want context.DeadlineExceeded", err)
		}

		// A waiter is released when the session frees up.
		go func() {
			b := affineBatch(2, 5)
			res, err := s.Infer(context.Background(), b)
			if err == nil {
				checkAffine(t, b, res)
			}
			errc <- err
		}()
		synctest.Wait()
		s.slots <- held
		if err := <-errc; err != nil {
			t.Fatalf("Infer after the session freed up: %v", err)
		}

		// Close waits for a running batch, and fails the waiters.
		held = <-s.slots
		go func() {
			_, err := s.Infer(context.Background(), affineBatch(1, 0))
			errc <- err
		}()
		synctest.Wait()
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		synctest.Wait()
		if err := <-errc; !errors.Is(err, backends.ErrUnavailable) {
			t.Errorf("waiter during Close: err = %v, want ErrUnavailable", err)
		}
		select {
		case err := <-closed:
			t.Fatalf("Close returned while a batch was running: %v", err)
		default:
		}
		s.slots <- held // the running batch ends
		if err := <-closed; err != nil {
			t.Fatalf("Close: %v", err)
		}
	})
}

func TestLibraryPath(t *testing.T) {
	found, err := LibraryPath("")
	if err != nil {
		t.Fatalf("%v\n(run scripts/fetch-onnxruntime.sh)", err)
	}

	t.Run("configured", func(t *testing.T) {
		t.Setenv(EnvLibrary, "/nonexistent/env.so")
		got, err := LibraryPath(found)
		if err != nil || got != found {
			t.Errorf("LibraryPath(%q) = %q, %v", found, got, err)
		}
		if _, err := LibraryPath("/nonexistent/lib.so"); err == nil || !strings.Contains(err.Error(), "configured ONNX Runtime library /nonexistent/lib.so") {
			t.Errorf("missing configured library: err = %v", err)
		}
	})
	t.Run("env", func(t *testing.T) {
		t.Setenv(EnvLibrary, found)
		if got, err := LibraryPath(""); err != nil || got != found {
			t.Errorf("LibraryPath with $%s = %q, %v", EnvLibrary, got, err)
		}
		t.Setenv(EnvLibrary, "/nonexistent/env.so")
		if _, err := LibraryPath(""); err == nil || !strings.Contains(err.Error(), "$ONNXRUNTIME_LIB /nonexistent/env.so") {
			t.Errorf("missing $%s library: err = %v", EnvLibrary, err)
		}
	})
	t.Run("cache upwards", func(t *testing.T) {
		t.Setenv(EnvLibrary, "")
		root := t.TempDir()
		lib := filepath.Join(root, CacheFile)
		if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(lib, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		deep := filepath.Join(root, "a", "b")
		if err := os.MkdirAll(deep, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Chdir(deep)
		if got, err := LibraryPath(""); err != nil || got != lib {
			t.Errorf("LibraryPath from %s = %q, %v; want %s", deep, got, err, lib)
		}
	})
	t.Run("not found", func(t *testing.T) {
		t.Setenv(EnvLibrary, "")
		dir := t.TempDir()
		t.Chdir(dir)
		_, err := LibraryPath("")
		if err == nil {
			t.Skip("a library is cached above the temp dir")
		}
		for _, w := range []string{"scripts/fetch-onnxruntime.sh", EnvLibrary, filepath.Join(dir, CacheFile)} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string // "" for valid
	}{
		{Config{}, ""},
		{Config{Sessions: 4, IntraOpThreads: 2, InterOpThreads: 1, Fingerprint: affineFingerprint}, ""},
		{Config{Sessions: -1}, "Sessions"},
		{Config{IntraOpThreads: -1}, "IntraOpThreads"},
		{Config{InterOpThreads: -2}, "InterOpThreads"},
		{Config{Fingerprint: "abc"}, "want 64"},
		{Config{Fingerprint: strings.ToUpper(affineFingerprint)}, "lowercase hex"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if tt.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tt.cfg, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err = %v, want one that says %q", tt.cfg, err, tt.want)
		}
	}
}

func BenchmarkInfer(b *testing.B) {
	rt := openRuntime(b)
	s := load(b, rt, "affine", "affine.onnx", Config{})
	for _, rows := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", rows), func(b *testing.B) {
			batch := affineBatch(rows, 0)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Infer(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkInferParallel: callers from every P sharing a pool of two sessions.
func BenchmarkInferParallel(b *testing.B) {
	rt := openRuntime(b)
	s := load(b, rt, "affine", "affine.onnx", Config{Sessions: 2})
	for _, rows := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", rows), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				batch := affineBatch(rows, 0)
				for pb.Next() {
					if _, err := s.Infer(context.Background(), batch); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
