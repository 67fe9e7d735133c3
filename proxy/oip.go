package proxy

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/backends/oip"
	"github.com/novacron/sidecar/proto/inference"
)

// The Open Inference Protocol (KServe v2) front end: inference.GRPCInferenceService here, its REST
// form in oiphttp.go. Both decode into an InferCall and call Service.Infer, so one input gives one
// answer over either protocol.
//
// A model takes one of two input forms:
//   - its own input tensor, "features", FP32 [N, window, width] (or [N, width] for row models):
//     canonical rows, which go straight to the model's batcher;
//   - its feature spec's raw features, one tensor per feature named as the spec names it, each
//     [N, window] (sequence specs) or [N] / [N, 1] (row specs), of FP32, FP64, INT32 or INT64 in
//     the feature's natural units (NaN: missing): canonicalized by the spec like the NovaCron RPCs'
//     inputs, then answered from the prediction cache or the batcher.
//
// The outputs are the ones the model's task reads (forecast and sigma, probs, or score), FP32
// [N, width].

// InferCall is one v2 inference request, decoded from either protocol.
type InferCall struct {
	Model, Version, ID string
	Inputs             []backends.Tensor
	// Outputs names the outputs wanted, in order; empty: every output.
	Outputs []string
}

// InferAnswer is the answer to an InferCall.
type InferAnswer struct {
	Model, Version, ID string
	Outputs            []backends.Tensor
}

// ServerName is the name ServerMetadata reports.
const ServerName = "novacron-sidecar"

// ServerVersion is the module version of the running binary, or "devel".
func ServerVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// lookup resolves the model a v2 call names, and, when given, its version: the primary target of
// the name's Open Inference Protocol route (see ModelRoute) when it has one, else the tensor model
// of that name. The protocol serves the Models, not the legacy services (which take NovaCron calls
// only).
func (s *Service) lookup(name, version string) (*Model, error) {
	st := s.state.Load()
	if name == "" {
		return nil, invalid("model_name", "empty; name one of "+strings.Join(tensorNames(st), ", "))
	}
	if err := s.checkID("model_name", name); err != nil {
		return nil, err
	}
	if err := s.checkID("model_version", version); err != nil {
		return nil, err
	}
	target := name
	if r := st.routes[ModelRoute(name)]; r != nil {
		target = r.Target
	}
	m, ok := st.tensors[target]
	if !ok {
		if _, isTarget := st.targets[target]; isTarget {
			return nil, fmt.Errorf("model: %q is served by a legacy AI service, which takes NovaCron calls (novacron.ai.AIService, /api/v1/...), not tensors; tensor models: %s: %w",
				target, strings.Join(tensorNames(st), ", "), ErrUnknownModel)
		}
		return nil, fmt.Errorf("model: %q is not loaded (loaded: %s): %w", name, strings.Join(tensorNames(st), ", "), ErrUnknownModel)
	}
	if version != "" && version != m.Version {
		return nil, fmt.Errorf("model: %q serves version %q, not %q: %w", name, m.Version, version, ErrUnknownModel)
	}
	return m, nil
}

// ModelReady reports whether the named model (and version, when given) can take requests.
func (s *Service) ModelReady(ctx context.Context, name, version string) (bool, error) {
	m, err := s.lookup(name, version)
	if err != nil {
		return false, err
	}
	return m.Backend.Ready(ctx) == nil, nil
}

// ServerReady reports whether every loaded target can take requests.
func (s *Service) ServerReady(ctx context.Context) bool {
	targets := s.state.Load().targets
	for _, t := range targets {
		if t.Runner().Ready(ctx) != nil {
			return false
		}
	}
	return len(targets) > 0
}

// tensorNames lists the tensor models' names in order.
func tensorNames(st *snapshot) []string {
	var n []string
	for _, name := range st.names {
		if _, ok := st.tensors[name]; ok {
			n = append(n, name)
		}
	}
	return n
}

// ModelMetadata describes a model as the protocol does: its input tensor and its task's outputs.
func (s *Service) ModelMetadata(name, version string) (*inference.ModelMetadataResponse, error) {
	m, err := s.lookup(name, version)
	if err != nil {
		return nil, err
	}
	in := m.Spec.InputShape(-1)
	r := &inference.ModelMetadataResponse{
		Name:     name,
		Versions: []string{m.Version},
		Platform: cmp.Or(m.Meta.Platform, "unknown"),
		Inputs:   []*inference.ModelMetadataResponse_TensorMetadata{{Name: inputFeatures, Datatype: "FP32", Shape: in}},
	}
	for _, o := range m.Outputs {
		r.Outputs = append(r.Outputs, &inference.ModelMetadataResponse_TensorMetadata{Name: o.Name, Datatype: "FP32", Shape: []int64{-1, int64(o.Width)}})
	}
	return r, nil
}

// Infer answers one v2 inference request.
func (s *Service) Infer(ctx context.Context, c *InferCall) (*InferAnswer, error) {
	return acrossSwap(s, func() (*InferAnswer, error) { return s.inferV2(ctx, c) })
}

func (s *Service) inferV2(ctx context.Context, c *InferCall) (*InferAnswer, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if err := s.checkID("id", c.ID); err != nil {
		return nil, err
	}
	st := s.state.Load()
	forced, isForced := ctx.Value(forcedKey{}).(string)
	r := st.routes[ModelRoute(c.Model)]
	if r != nil && c.Version == "" && !isForced {
		return s.inferRouted(ctx, st, r, c)
	}
	m, err := s.lookup(c.Model, c.Version)
	if err != nil {
		return nil, err
	}
	if isForced && r != nil { // a routed name's call forced to one of the models it may reach
		if err := s.checkID(TargetHeader, forced); err != nil {
			return nil, err
		}
		fm, ok := st.tensors[forced]
		if !ok || fm.Task != m.Task {
			return nil, fmt.Errorf("%s: %q is not a loaded %s model that takes tensors (loaded: %s): %w", TargetHeader, clip(forced), m.Task, strings.Join(tensorNames(st), ", "), ErrUnknownModel)
		}
		r.noteForced(s, forced)
		m = fm
	}
	a, err := s.inferOn(ctx, m, c)
	if a != nil {
		a.Model = c.Model
	}
	return a, err
}

// inferRouted answers a v2 call by its model name's route: the arm its key picks serves it (the
// answer keeps the name asked for and gives the serving model's version), and the shadows the
// route draws get a copy of the call, their answers compared as inference.ModelInferResponse
// messages of typed contents.
func (s *Service) inferRouted(ctx context.Context, st *snapshot, r *route, c *InferCall) (*InferAnswer, error) {
	key := ""
	if r.key == KeyID {
		key = c.ID
	}
	name := r.arm(key)
	m, ok := st.tensors[name]
	if !ok {
		return nil, fmt.Errorf("model: the target %q of route %s is not loaded: %w", name, r.name, ErrUnknownModel)
	}
	d := decision{serve: m, route: r}
	d.count(1)
	start := time.Now()
	a, err := s.inferOn(ctx, m, c)
	elapsed := time.Since(start)
	if s.cfg.Routing != nil && !notTheTargets(err) {
		s.cfg.Routing.Served(r.name, name, elapsed, err)
	}
	if err != nil {
		return nil, err
	}
	a.Model = c.Model
	if targets := r.shadows(st, name); len(targets) > 0 {
		req := &inference.ModelInferRequest{ModelName: c.Model, Id: c.ID}
		oip.SetInputs(req, c.Inputs, false)
		for _, o := range c.Outputs {
			req.Outputs = append(req.Outputs, &inference.ModelInferRequest_InferRequestedOutputTensor{Name: o})
		}
		o := ShadowOutcome{Route: r.name, Task: m.Task, Primary: name, Request: req, PrimaryAnswer: inferMsg(a), PrimaryLatency: elapsed}
		s.shadows.enqueue(ctx, o, targets, func(ctx context.Context, t Target) (proto.Message, error) {
			sm, ok := s.state.Load().tensors[t.Info().Name]
			if !ok {
				return nil, fmt.Errorf("model %q takes no tensors: %w", t.Info().Name, ErrUnknownModel)
			}
			in, err := oip.Inputs(req)
			if err != nil {
				return nil, err
			}
			sa, err := s.inferOn(ctx, sm, &InferCall{Model: c.Model, ID: c.ID, Inputs: in, Outputs: c.Outputs})
			if err != nil {
				return nil, err
			}
			return inferMsg(sa), nil
		})
	}
	return a, nil
}

// inferMsg is an answer as the protocol's message, with typed contents.
func inferMsg(a *InferAnswer) *inference.ModelInferResponse {
	resp := &inference.ModelInferResponse{ModelName: a.Model, ModelVersion: a.Version, Id: a.ID}
	oip.SetOutputs(resp, a.Outputs, false)
	return resp
}

// inferOn answers a v2 call on model m.
func (s *Service) inferOn(ctx context.Context, m *Model, c *InferCall) (*InferAnswer, error) {
	var err error
	// The outputs first: a bad name costs no model run.
	outs := m.Outputs
	if len(c.Outputs) > 0 {
		outs = make([]Output, len(c.Outputs))
		for i, name := range c.Outputs {
			j := slices.IndexFunc(m.Outputs, func(o Output) bool { return o.Name == name })
			if j < 0 {
				return nil, invalid(fmt.Sprintf("outputs[%d].name", i), fmt.Sprintf("model %q has no output %s (outputs: %s)", m.Name, clip(name), outputNames(m)))
			}
			if slices.ContainsFunc(outs[:i], func(o Output) bool { return o.Name == name }) {
				return nil, invalid(fmt.Sprintf("outputs[%d].name", i), fmt.Sprintf("%q is asked for twice", name))
			}
			outs[i] = m.Outputs[j]
		}
	}
	if len(c.Inputs) == 0 {
		return nil, invalid("inputs", "empty; "+inputHelp(m))
	}
	var rows []rowOut
	var n int
	if c.Inputs[0].Name == inputFeatures {
		if len(c.Inputs) != 1 {
			return nil, invalid("inputs", fmt.Sprintf("%d tensors; with %q give no other input", len(c.Inputs), inputFeatures))
		}
		var data []float32
		if n, data, err = s.canonicalInput(m, c.Inputs[0]); err != nil {
			return nil, err
		}
		rows, err = s.rows(ctx, m, n, data, priority(ctx, PriorityHigh), false, 1)
	} else {
		var data []float32
		if n, data, err = s.rawFeatureInputs(m, c.Inputs); err != nil {
			return nil, err
		}
		rows, err = s.rows(ctx, m, n, data, priority(ctx, PriorityHigh), true, 1)
	}
	if err != nil {
		return nil, err
	}
	a := &InferAnswer{Model: m.Name, Version: m.Version, ID: c.ID, Outputs: make([]backends.Tensor, len(outs))}
	for i, o := range outs {
		d := make([]float32, 0, n*o.Width)
		for _, r := range rows {
			d = append(d, m.out(r, o.Name)...)
		}
		a.Outputs[i] = backends.F32(o.Name, []int64{int64(n), int64(o.Width)}, d)
	}
	return a, nil
}

func outputNames(m *Model) string {
	var n []string
	for _, o := range m.Outputs {
		n = append(n, o.Name)
	}
	return strings.Join(n, ", ")
}

// inputHelp says which inputs a model takes.
func inputHelp(m *Model) string {
	shape, raw := fmt.Sprintf("[N, %d]", m.Spec.Width()), "[N]"
	if m.Spec.Sequence() {
		shape, raw = fmt.Sprintf("[N, %d, %d]", m.Spec.Window, m.Spec.Width()), fmt.Sprintf("[N, %d]", m.Spec.Window)
	}
	return fmt.Sprintf("model %q takes %q FP32%s (canonical rows) or its spec's raw features %s, each %s", m.Name, inputFeatures, shape,
		strings.Join(m.Spec.FeatureNames(), ", "), raw)
}

// maxRows bounds the rows of one v2 call (limits.max_batch_vms).
func (s *Service) maxRows() int { return s.cfg.MaxBatchVMs }

// canonicalInput checks the model's own input tensor: FP32, the spec's shape with at least one
// row, every value finite.
func (s *Service) canonicalInput(m *Model, t backends.Tensor) (int, []float32, error) {
	want := m.Spec.InputShape(-1)
	if t.DType != backends.FP32 {
		return 0, nil, invalid("inputs[0].datatype", fmt.Sprintf("%s; %s", t.DType, inputHelp(m)))
	}
	if len(t.Shape) != len(want) || !slices.Equal(t.Shape[1:], want[1:]) {
		return 0, nil, invalid("inputs[0].shape", fmt.Sprintf("%v; %s", t.Shape, inputHelp(m)))
	}
	n := int(t.Shape[0])
	if n < 1 || n > s.maxRows() {
		return 0, nil, invalid("inputs[0].shape", fmt.Sprintf("%d rows; give 1 to %d (limits.max_batch_vms)", n, s.maxRows()))
	}
	data := t.Data.([]float32)
	for i, v := range data {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return 0, nil, invalid("inputs[0]", fmt.Sprintf("element %d (row %d) is %v; canonical rows hold finite numbers (send the raw features for missing values)", i, i/m.Spec.Size(), v))
		}
	}
	return n, data, nil
}

// rawFeatureInputs assembles and canonicalizes the spec's raw features, one tensor per feature.
func (s *Service) rawFeatureInputs(m *Model, in []backends.Tensor) (int, []float32, error) {
	names := m.Spec.FeatureNames()
	w, steps := len(names), m.Spec.Steps()
	if len(in) != w {
		return 0, nil, invalid("inputs", fmt.Sprintf("%d tensors; %s", len(in), inputHelp(m)))
	}
	n := -1
	var raw []float64
	for k, t := range in {
		field := fmt.Sprintf("inputs[%d]", k)
		j := slices.Index(names, t.Name)
		if j < 0 {
			return 0, nil, invalid(field+".name", fmt.Sprintf("%s is not an input; %s", clip(t.Name), inputHelp(m)))
		}
		if slices.ContainsFunc(in[:k], func(o backends.Tensor) bool { return o.Name == t.Name }) {
			return 0, nil, invalid(field+".name", fmt.Sprintf("%q is given twice", t.Name))
		}
		rows, ok := rawShape(t.Shape, m.Spec.Sequence(), steps)
		if !ok {
			want := "[N] or [N, 1]"
			if m.Spec.Sequence() {
				want = fmt.Sprintf("[N, %d]", steps)
			}
			return 0, nil, invalid(field+".shape", fmt.Sprintf("%v; feature %q needs %s", t.Shape, t.Name, want))
		}
		if n < 0 {
			n = rows
			if n < 1 || n > s.maxRows() {
				return 0, nil, invalid(field+".shape", fmt.Sprintf("%d rows; give 1 to %d (limits.max_batch_vms)", n, s.maxRows()))
			}
			raw = make([]float64, n*steps*w)
		} else if rows != n {
			return 0, nil, invalid(field+".shape", fmt.Sprintf("%d rows, inputs[0] has %d", rows, n))
		}
		vals, err := float64s(t)
		if err != nil {
			return 0, nil, invalid(field+".datatype", fmt.Sprintf("%s; raw features are FP32, FP64, INT32 or INT64", t.DType))
		}
		// vals is [n, steps] row-major; raw is [n, steps, w].
		for i, v := range vals {
			raw[i*w+j] = v
		}
	}
	size := m.Spec.Size()
	data := make([]float32, len(raw))
	for r := 0; r < n; r++ {
		if err := m.Spec.Canonicalize(data[r*size:(r+1)*size], raw[r*size:(r+1)*size]); err != nil {
			return 0, nil, fmt.Errorf("inputs: row %d: %w", r, err)
		}
	}
	return n, data, nil
}

// rawShape returns the rows of a raw feature tensor of a sequence spec ([N, steps]) or a row spec
// ([N] or [N, 1]).
func rawShape(shape []int64, seq bool, steps int) (int, bool) {
	switch {
	case seq && len(shape) == 2 && shape[1] == int64(steps):
		return int(shape[0]), true
	case !seq && len(shape) == 1:
		return int(shape[0]), true
	case !seq && len(shape) == 2 && shape[1] == 1:
		return int(shape[0]), true
	}
	return 0, false
}

// float64s widens a numeric tensor's elements.
func float64s(t backends.Tensor) ([]float64, error) {
	switch d := t.Data.(type) {
	case []float64:
		return d, nil
	case []float32:
		return convert(d), nil
	case []int32:
		return convert(d), nil
	case []int64:
		return convert(d), nil
	}
	return nil, fmt.Errorf("%s: %w", t.DType, backends.ErrInvalidInput)
}

func convert[T float32 | int32 | int64](d []T) []float64 {
	out := make([]float64, len(d))
	for i, v := range d {
		out[i] = float64(v)
	}
	return out
}

// ---- gRPC ----

// oipServer adapts Service to inference.GRPCInferenceServiceServer.
type oipServer struct {
	inference.UnimplementedGRPCInferenceServiceServer
	svc *Service
}

func (o *oipServer) ServerLive(context.Context, *inference.ServerLiveRequest) (*inference.ServerLiveResponse, error) {
	return &inference.ServerLiveResponse{Live: true}, nil
}

func (o *oipServer) ServerReady(ctx context.Context, _ *inference.ServerReadyRequest) (*inference.ServerReadyResponse, error) {
	return &inference.ServerReadyResponse{Ready: o.svc.ServerReady(ctx)}, nil
}

func (o *oipServer) ModelReady(ctx context.Context, r *inference.ModelReadyRequest) (*inference.ModelReadyResponse, error) {
	ok, err := o.svc.ModelReady(ctx, r.GetName(), r.GetVersion())
	if err != nil {
		return nil, err
	}
	return &inference.ModelReadyResponse{Ready: ok}, nil
}

func (o *oipServer) ServerMetadata(context.Context, *inference.ServerMetadataRequest) (*inference.ServerMetadataResponse, error) {
	return &inference.ServerMetadataResponse{Name: ServerName, Version: ServerVersion(), Extensions: []string{}}, nil
}

func (o *oipServer) ModelMetadata(_ context.Context, r *inference.ModelMetadataRequest) (*inference.ModelMetadataResponse, error) {
	return o.svc.ModelMetadata(r.GetName(), r.GetVersion())
}

// ModelInfer answers in the form it was asked: raw_output_contents when the request sent
// raw_input_contents, typed contents otherwise.
func (o *oipServer) ModelInfer(ctx context.Context, r *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
	in, err := oip.Inputs(r)
	if err != nil {
		return nil, err
	}
	c := &InferCall{Model: r.GetModelName(), Version: r.GetModelVersion(), ID: r.GetId(), Inputs: in}
	for _, out := range r.GetOutputs() {
		c.Outputs = append(c.Outputs, out.GetName())
	}
	a, err := o.svc.Infer(ctx, c)
	if err != nil {
		return nil, err
	}
	resp := &inference.ModelInferResponse{ModelName: a.Model, ModelVersion: a.Version, Id: a.ID}
	oip.SetOutputs(resp, a.Outputs, len(r.GetRawInputContents()) > 0)
	return resp, nil
}
