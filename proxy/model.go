package proxy

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/batcher"
	"github.com/novacron/sidecar/features"
)

// Tasks a model can serve; each NovaCron RPC needs a model of its task (config names them so).
const (
	TaskForecast  = "forecast"  // PredictBandwidth, PredictBandwidthBatch, /api/v1/predict[/batch]
	TaskAnomaly   = "anomaly"   // DetectAnomaly, /api/v1/anomaly
	TaskPlacement = "placement" // OptimizePlacement, /api/v1/placement
)

// Names of model inputs, outputs and metadata_props the example models follow (see
// examples/training/README.md).
const (
	inputFeatures = "features"
	outForecast   = "forecast" // [N, H] natural units
	outSigma      = "sigma"    // [N, H] predicted std-dev, natural units
	outProbs      = "probs"    // [N, K] softmax, labels in PropLabels
	outScore      = "score"    // [N, 1] in [0, 1]

	PropFingerprint     = backends.PropFingerprint
	PropVersion         = backends.PropVersion
	PropLabels          = "novacron.labels"
	PropConfidenceScale = "novacron.confidence_scale"
	PropHorizon         = "novacron.horizon_minutes"
)

// maxHorizon bounds a forecast model's horizon (steps).
const maxHorizon = 1 << 12

// Thresholds turn an anomaly score into a verdict; see config.Anomaly.
type Thresholds struct {
	Threshold, Medium, High, Critical float64
}

// Severity names the severity of a score: none below Threshold, then low, medium, high, critical.
func (t Thresholds) Severity(score float64) string {
	switch {
	case score >= t.Critical:
		return "critical"
	case score >= t.High:
		return "high"
	case score >= t.Medium:
		return "medium"
	case score >= t.Threshold:
		return "low"
	}
	return "none"
}

// OutputsRead are the model outputs the pipeline reads, of any task: what a drift profile of a
// model's answers profiles (sidecar profile build -model). A model's other outputs are never
// read, so never answered.
func OutputsRead() []string { return []string{outForecast, outSigma, outProbs, outScore} }

// Model is one loaded model as the pipeline uses it. NewModel builds it; its caller may set
// Batching before handing it to New, which starts its batcher; after that it is immutable.
//
// A Model is the Target of a tensor model: its requests are canonicalized by its Spec and its
// rows answered through the row pipeline (cache, batcher, Backend); see Service.rows.
type Model struct {
	base
	Backend backends.Backend
	Meta    backends.Metadata

	// forecast
	confidenceScale float64
	// anomaly
	labels      []string
	normalIndex int
	thresholds  Thresholds

	// CacheTTL is how long the prediction cache serves this model's answers; negative: not cached.
	// Zero takes the cache's default.
	CacheTTL time.Duration
	// StaleFallback serves the last cached answer of a row, up to Config.MaxStale past CacheTTL and
	// marked stale, when the backend is unavailable (every endpoint of a remote backend down).
	StaleFallback bool
	batch         *batcher.Batcher[[]float32, rowOut]
	// keyPrefix is the name, the version with the digest of the model's bytes (when the backend
	// knows them) and the spec fingerprint: the cache key's fixed parts. A model file replaced by
	// another that declares the same version still gets keys of its own.
	keyPrefix [3][]byte
}

// NewModel checks that a backend's model fits its task and its feature spec (input "features" of
// shape [N, window, features] or [N, features]; the task's outputs present with the right width)
// and returns the pipeline's view of it.
func NewModel(name, task string, spec *features.Spec, b backends.Backend, meta backends.Metadata, th Thresholds) (*Model, error) {
	m := &Model{base: base{TargetInfo: TargetInfo{Name: name, Task: task, Spec: spec, Version: meta.Version, Platform: meta.Platform, Digest: meta.Digest}},
		Backend: b, Meta: meta, thresholds: th}
	defer func() {
		m.keyPrefix = [3][]byte{[]byte(m.Name), []byte(m.Version + "@" + meta.Digest), []byte(spec.Fingerprint())}
	}()
	fail := func(format string, args ...any) (*Model, error) {
		return nil, fmt.Errorf("model %q (%s): %s", name, task, fmt.Sprintf(format, args...))
	}
	if m.Version == "" {
		m.Version = "unknown"
	}
	in, ok := findInfo(meta.Inputs, inputFeatures)
	if !ok || len(meta.Inputs) != 1 {
		return fail("want exactly one input named %q, model has %v", inputFeatures, infoNames(meta.Inputs))
	}
	want := spec.InputShape(-1)
	if in.DType != backends.FP32 || !slices.Equal(in.Shape, want) {
		return fail("input %q is %s%v, the spec %q needs FP32%v", inputFeatures, in.DType, in.Shape, spec.Name, want)
	}
	if (task == TaskForecast) != spec.Sequence() {
		return fail("spec %q has window %d; forecast models need a sequence spec and others a row spec", spec.Name, spec.Window)
	}
	wantInput := features.InputVMMetrics
	if task == TaskPlacement {
		wantInput = features.InputPlacement
	}
	if spec.Input != wantInput {
		return fail("spec %q reads input %s; a %s model needs input %s", spec.Name, spec.Input, task, wantInput)
	}
	out := func(name string, width int64) (backends.TensorInfo, error) {
		o, ok := findInfo(meta.Outputs, name)
		if !ok {
			return o, fmt.Errorf("model %q (%s): no output %q (outputs: %v)", m.Name, task, name, infoNames(meta.Outputs))
		}
		if len(o.Shape) != 2 || (width > 0 && o.Shape[1] != width) || o.DType != backends.FP32 {
			return o, fmt.Errorf("model %q (%s): output %q is %s%v, want FP32[N, %d]", m.Name, task, name, o.DType, o.Shape, width)
		}
		return o, nil
	}
	switch task {
	case TaskForecast:
		f, err := out(outForecast, -1)
		if err != nil {
			return nil, err
		}
		if f.Shape[1] < 1 || f.Shape[1] > maxHorizon {
			return fail("output %q has shape %v; its horizon must be fixed, 1..%d", outForecast, f.Shape, maxHorizon)
		}
		m.horizon = int(f.Shape[1])
		if _, err := out(outSigma, int64(m.horizon)); err != nil {
			return nil, err
		}
		m.Outputs = []Output{{outForecast, m.horizon}, {outSigma, m.horizon}}
		s, err := strconv.ParseFloat(meta.Props[PropConfidenceScale], 64)
		if err != nil || !(s > 0) {
			return fail("metadata_props %s = %q must be a positive number (the held-out median of the target)", PropConfidenceScale, meta.Props[PropConfidenceScale])
		}
		m.confidenceScale = s
	case TaskAnomaly:
		labels := strings.Split(meta.Props[PropLabels], ",")
		m.normalIndex = slices.Index(labels, "normal")
		if len(labels) < 2 || m.normalIndex < 0 {
			return fail("metadata_props %s = %q must list the classes in output order, one of them \"normal\"", PropLabels, meta.Props[PropLabels])
		}
		m.labels = labels
		if _, err := out(outProbs, int64(len(labels))); err != nil {
			return nil, err
		}
		m.Outputs = []Output{{outProbs, len(labels)}}
	case TaskPlacement:
		if _, err := out(outScore, 1); err != nil {
			return nil, err
		}
		m.Outputs = []Output{{outScore, 1}}
	default:
		return fail("unknown task")
	}
	return m, nil
}

// Runner is the model's Backend.
func (m *Model) Runner() Runner { return m.Backend }

// start starts the model's batcher when Batching is set.
func (m *Model) start(opts []batcher.Option) error {
	if m.Batching == nil || m.batch != nil {
		return nil
	}
	size := m.Spec.Size()
	b, err := batcher.New(*m.Batching, func(ctx context.Context, rows [][]float32) ([]rowOut, error) {
		buf := make([]float32, len(rows)*size)
		for i, r := range rows {
			copy(buf[i*size:], r)
		}
		return m.runBatch(ctx, buf, len(rows))
	}, opts...)
	if err != nil {
		return err
	}
	m.batch = b
	return nil
}

// stop stops the model's batcher once the calls it holds have run.
func (m *Model) stop() {
	if m.batch != nil {
		m.batch.Close()
	}
}

// Horizon is the forecast length of a forecast model, in steps (minutes).
func (m *Model) Horizon() int { return m.horizon }

func findInfo(infos []backends.TensorInfo, name string) (backends.TensorInfo, bool) {
	for _, i := range infos {
		if i.Name == name {
			return i, true
		}
	}
	return backends.TensorInfo{}, false
}

func infoNames(infos []backends.TensorInfo) []string {
	var n []string
	for _, i := range infos {
		n = append(n, i.Name)
	}
	return n
}
