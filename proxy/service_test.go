package proxy

import (
	"context"
	"errors"
	"math"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/cache"
	"github.com/novacron/sidecar/features"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// brokenBackend is a fake: it stands for a model that answers with bad outputs, which no model
// trained here does. It returns out for every batch, repeated per row.
type brokenBackend struct{ out []backends.Tensor }

func (b *brokenBackend) Infer(_ context.Context, batch *backends.Batch) (*backends.Result, error) {
	rows := batch.Rows()
	res := &backends.Result{}
	for _, t := range b.out {
		one := t.Data.([]float32)
		data := make([]float32, 0, rows*len(one))
		for r := 0; r < rows; r++ {
			data = append(data, one...)
		}
		res.Outputs = append(res.Outputs, backends.F32(t.Name, []int64{int64(rows), int64(len(one))}, data))
	}
	return res, nil
}
func (b *brokenBackend) Metadata(context.Context, string) (backends.Metadata, error) {
	return backends.Metadata{}, nil
}
func (b *brokenBackend) Ready(context.Context) error { return nil }
func (b *brokenBackend) Close() error                { return nil }

var _ backends.Backend = (*brokenBackend)(nil)

// countingBackend adds up, in rows, the rows of every batch that reaches the backend it wraps.
type countingBackend struct {
	backends.Backend
	rows *atomic.Int64
}

func (b countingBackend) Infer(ctx context.Context, batch *backends.Batch) (*backends.Result, error) {
	b.rows.Add(int64(batch.Rows()))
	return b.Backend.Infer(ctx, batch)
}

var _ backends.Backend = countingBackend{}

func spec(t *testing.T, name string) *features.Spec {
	t.Helper()
	s, err := features.LoadFile("../examples/specs/" + name + ".yaml")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func anomalyMeta(labels string) backends.Metadata {
	return backends.Metadata{Version: "t", Props: map[string]string{PropLabels: labels},
		Inputs:  []backends.TensorInfo{{Name: "features", DType: backends.FP32, Shape: []int64{-1, 6}}},
		Outputs: []backends.TensorInfo{{Name: "probs", DType: backends.FP32, Shape: []int64{-1, int64(len(strings.Split(labels, ",")))}}}}
}

func TestNewModelRefusesMisfits(t *testing.T) {
	th := Thresholds{0.5, 0.7, 0.85, 0.95}
	cases := map[string]struct {
		task, spec string
		meta       backends.Metadata
		want       string
	}{
		"placement spec for an anomaly model": {TaskAnomaly, "placement", anomalyMeta("normal,x"), "FP32[-1 4]"},
		"labels without normal":               {TaskAnomaly, "anomaly", anomalyMeta("a,b"), `one of them "normal"`},
		"forecast on a row spec":              {TaskForecast, "anomaly", anomalyMeta("normal,x"), "forecast models need a sequence spec"},
		"wrong output width": {TaskAnomaly, "anomaly", func() backends.Metadata {
			m := anomalyMeta("normal,x")
			m.Outputs[0].Shape = []int64{-1, 3}
			return m
		}(), `output "probs" is FP32[-1 3], want FP32[N, 2]`},
	}
	for name, c := range cases {
		_, err := NewModel("m", c.task, spec(t, c.spec), &brokenBackend{}, c.meta, th)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}

// TestBadModelOutputIsNeverServed: non-finite or out-of-range outputs become an Internal error,
// not an answer.
func TestBadModelOutputIsNeverServed(t *testing.T) {
	req := &aipb.AnomalyRequest{VmId: "v", CurrentMetrics: &aipb.VMMetrics{Cpu: 1}}
	for name, probs := range map[string][]float32{
		"NaN":    {float32(math.NaN()), 0.5, 0.5},
		"logits": {-3, -5, -1},
	} {
		b := &brokenBackend{out: []backends.Tensor{backends.F32("probs", nil, probs)}}
		m, err := NewModel("anomaly", TaskAnomaly, spec(t, "anomaly"), b, anomalyMeta("normal,a,b"), Thresholds{0.5, 0.7, 0.85, 0.95})
		if err != nil {
			t.Fatal(err)
		}
		svc, _ := New(Config{Routes: Routes{RouteAnomaly: {Target: "anomaly"}}}, []Target{m}, nil)
		resp, err := svc.DetectAnomaly(context.Background(), req)
		if !errors.Is(err, ErrBadOutput) || Code(err) != codes.Internal {
			t.Errorf("%s: got %v, %v; want ErrBadOutput / Internal", name, resp, err)
		}
	}
	// A sane output is served, with the most probable anomaly class.
	b := &brokenBackend{out: []backends.Tensor{backends.F32("probs", nil, []float32{0.1, 0.2, 0.7})}}
	m, _ := NewModel("anomaly", TaskAnomaly, spec(t, "anomaly"), b, anomalyMeta("normal,a,b"), Thresholds{0.5, 0.7, 0.85, 0.95})
	svc, _ := New(Config{Routes: Routes{RouteAnomaly: {Target: "anomaly"}}}, []Target{m}, nil)
	resp, err := svc.DetectAnomaly(context.Background(), req)
	if err != nil || !resp.IsAnomaly || resp.AnomalyType != "b" || resp.Severity != "high" || math.Abs(resp.Score-0.9) > 1e-6 {
		t.Errorf("got %v, %v", resp, err)
	}
}

func TestPanicIsRecovered(t *testing.T) {
	_, err := recovered(func() (int, error) {
		var m map[string]int
		m["x"]++ // a nil map write panics
		return 0, nil
	})
	if Code(err) != codes.Internal || !errors.Is(err, errPanic) {
		t.Fatalf("err = %v", err)
	}
}

func TestSeverity(t *testing.T) {
	th := Thresholds{0.5, 0.7, 0.85, 0.95}
	for score, want := range map[float64]string{0.1: "none", 0.5: "low", 0.69: "low", 0.7: "medium", 0.9: "high", 0.95: "critical", 1: "critical"} {
		if got := th.Severity(score); got != want {
			t.Errorf("Severity(%v) = %s, want %s", score, got, want)
		}
	}
}

// TestReloadNeverServesTheOldModel: two versions of a model share one cache; after the swap every
// answer is the new model's, for an input the old one answered and cached.
func TestReloadNeverServesTheOldModel(t *testing.T) {
	c, err := cache.New[[]float32](cache.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := &aipb.AnomalyRequest{VmId: "v", CurrentMetrics: &aipb.VMMetrics{Cpu: 1}}
	var asked int64          // rows answered, one per ask
	var reached atomic.Int64 // rows that reached a backend
	ask := func(version string, probs []float32, specEdit func(string) string) *aipb.AnomalyResponse {
		t.Helper()
		asked++
		sp := spec(t, "anomaly")
		if specEdit != nil {
			b, err := os.ReadFile("../examples/specs/anomaly.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if sp, err = features.Parse([]byte(specEdit(string(b)))); err != nil {
				t.Fatal(err)
			}
		}
		meta := anomalyMeta("normal,a,b")
		meta.Version = version
		b := countingBackend{&brokenBackend{out: []backends.Tensor{backends.F32("probs", nil, probs)}}, &reached}
		m, err := NewModel("anomaly", TaskAnomaly, sp, b, meta, Thresholds{0.5, 0.7, 0.85, 0.95})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := New(Config{Routes: Routes{RouteAnomaly: {Target: "anomaly"}}, Cache: c}, []Target{m}, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := svc.DetectAnomaly(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		c.Wait()
		return resp
	}
	v1 := ask("v1", []float32{0.9, 0.05, 0.05}, nil)
	if again := ask("v1", []float32{0.1, 0.1, 0.8}, nil); again.Score != v1.Score {
		t.Fatalf("the same model and input were not answered from the cache: %v then %v", v1, again)
	}
	v2 := ask("v2", []float32{0.1, 0.1, 0.8}, nil)
	if math.Abs(v2.Score-0.9) > 1e-6 || v2.AnomalyType != "b" || v2.ModelVersion != "v2" {
		t.Errorf("after the reload to v2: %v (v1 answered %v)", v2, v1)
	}
	// Same version, another spec: the edit (latency's clip) leaves this input's canonical row as it
	// was, so only the fingerprint in the key tells the answers apart.
	respec := ask("v1", []float32{0.2, 0.7, 0.1}, func(y string) string {
		return strings.Replace(y, "clip: {min: 0, max: 5000}", "clip: {min: 0, max: 4000}", 1)
	})
	if math.Abs(respec.Score-0.8) > 1e-6 || respec.AnomalyType != "a" {
		t.Errorf("after a spec change: %v, want the new spec's model's answer", respec)
	}
	// The cache's counts agree with what the backends saw: every miss reached a backend, and every
	// hit was answered without one. Only v1's repeat was a hit.
	s := c.Stats()
	if r := reached.Load(); uint64(r) != s.Misses || uint64(asked-r) != s.Hits || s.Hits != 1 {
		t.Errorf("%d rows answered, %d reached a backend; cache counted %d hits, %d misses (want %d hits, %d misses)",
			asked, r, s.Hits, s.Misses, 1, 3)
	}
}
