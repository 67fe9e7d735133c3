package onnx

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/novacron/sidecar/backends"
)

// Session serves one model from a pool of ONNX Runtime sessions. It implements [backends.Backend];
// all its methods may be called concurrently. Infer waits for a free pool member, so at most
// [Config.Sessions] batches run at once.
type Session struct {
	name string
	rt   *Runtime
	// meta, inputs and outputs are immutable after Load.
	meta    backends.Metadata
	inputs  []port
	outputs []port

	// slots holds the idle pool members; all holds every member, for Close.
	slots chan *slot
	all   []*slot
	// closed is set when Close begins; done is closed at the same time, to wake waiting Infers.
	closed    atomic.Bool
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error // set once, by closeOnce
}

// port is one input or output of the model, as the session checks and reports it.
type port struct {
	name  string
	dtype backends.DType
	// shape has -1 for each dynamic dimension; shape[0] is always -1 (the batch).
	shape []int64
	// want shows the shape in errors, such as "[N 3]".
	want string
}

// slot is one pool member. Whoever took it from Session.slots owns it and its scratch space.
type slot struct {
	sess *ort.DynamicAdvancedSession
	in   []ort.Value // inputs in model order, for one Run
	out  []ort.Value // outputs in model order, allocated by ONNX Runtime in Run
	// pin keeps the Go input data, which the ORT input values point to, in place while they live
	// (the cgo rule for Go memory that C keeps after a call returns).
	pin runtime.Pinner
}

// loadError is a failure of Load. Its text is the reason alone (it does not end in the sentinel's
// text), and it matches backends.ErrModelLoad and the underlying cause, if any.
type loadError struct {
	msg   string
	cause error
}

func (e *loadError) Error() string { return e.msg }

func (e *loadError) Unwrap() []error {
	if e.cause == nil {
		return []error{backends.ErrModelLoad}
	}
	return []error{backends.ErrModelLoad, e.cause}
}

func loadErr(name string, cause error, format string, args ...any) error {
	msg := fmt.Sprintf("model %q: ", name) + fmt.Sprintf(format, args...)
	if cause != nil {
		msg += ": " + cause.Error()
	}
	return &loadError{msg: msg, cause: cause}
}

// Load loads a model from its ONNX bytes (model is not retained) and starts cfg.Sessions ONNX
// Runtime sessions for it. name is the model's name in errors and Metadata. Errors match
// [backends.ErrModelLoad], or [backends.ErrUnavailable] once rt is closing.
func (rt *Runtime) Load(name string, model []byte, cfg Config) (*Session, error) {
	if len(model) == 0 {
		return nil, loadErr(name, nil, "empty model")
	}
	sum := sha256.Sum256(model)
	return rt.load(name, cfg, "sha256:"+hex.EncodeToString(sum[:]), func(opts *ort.SessionOptions) ([]ort.InputOutputInfo, []ort.InputOutputInfo, error) {
		// onnxruntime_go has no variant that takes options for bytes: this temporary session uses
		// ONNX Runtime's default threads.
		return ort.GetInputOutputInfoWithONNXData(model)
	}, func(in, out []string, opts *ort.SessionOptions) (*ort.DynamicAdvancedSession, error) {
		return ort.NewDynamicAdvancedSessionWithONNXData(model, in, out, opts)
	})
}

// LoadFile is Load for a model file; ONNX Runtime reads the file itself, so models with external
// data files beside them work.
func (rt *Runtime) LoadFile(name, path string, cfg Config) (*Session, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, loadErr(name, err, "model file")
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return nil, loadErr(name, err, "model file")
	}
	return rt.load(name, cfg, "sha256:"+hex.EncodeToString(h.Sum(nil)), func(opts *ort.SessionOptions) ([]ort.InputOutputInfo, []ort.InputOutputInfo, error) {
		return ort.GetInputOutputInfoWithOptions(path, opts)
	}, func(in, out []string, opts *ort.SessionOptions) (*ort.DynamicAdvancedSession, error) {
		return ort.NewDynamicAdvancedSession(path, in, out, opts)
	})
}

func (rt *Runtime) load(name string, cfg Config, digest string,
	info func(*ort.SessionOptions) ([]ort.InputOutputInfo, []ort.InputOutputInfo, error),
	create func(in, out []string, opts *ort.SessionOptions) (*ort.DynamicAdvancedSession, error),
) (_ *Session, err error) {
	if name == "" {
		return nil, loadErr(name, nil, "the model needs a name")
	}
	if err := cfg.Validate(); err != nil {
		return nil, loadErr(name, err, "config")
	}
	if !rt.beginLoad() {
		return nil, fmt.Errorf("model %q: ONNX Runtime is closed: %w", name, backends.ErrUnavailable)
	}
	defer rt.loads.Done()

	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, loadErr(name, err, "creating session options")
	}
	defer opts.Destroy()
	if err := opts.SetIntraOpNumThreads(cfg.intraOp()); err != nil {
		return nil, loadErr(name, err, "setting intra-op threads")
	}
	if err := opts.SetInterOpNumThreads(cfg.interOp()); err != nil {
		return nil, loadErr(name, err, "setting inter-op threads")
	}

	ins, outs, err := info(opts)
	if err != nil {
		return nil, loadErr(name, err, "reading the model")
	}
	s := &Session{name: name, rt: rt, done: make(chan struct{})}
	if s.inputs, err = ports(name, "input", ins); err != nil {
		return nil, err
	}
	if s.outputs, err = ports(name, "output", outs); err != nil {
		return nil, err
	}
	inNames, outNames := portNames(s.inputs), portNames(s.outputs)

	n := cfg.sessions()
	s.all = make([]*slot, 0, n)
	defer func() {
		if err != nil {
			for _, sl := range s.all {
				sl.sess.Destroy()
			}
		}
	}()
	for i := range n {
		sess, err := create(inNames, outNames, opts)
		if err != nil {
			return nil, loadErr(name, err, "creating session %d of %d", i+1, n)
		}
		s.all = append(s.all, &slot{
			sess: sess,
			in:   make([]ort.Value, len(s.inputs)),
			out:  make([]ort.Value, len(s.outputs)),
		})
		if i == 0 {
			// Check the metadata before starting the other sessions.
			if s.meta, err = readMetadata(name, sess, cfg.Fingerprint); err != nil {
				return nil, err
			}
		}
	}
	s.meta.Inputs = tensorInfos(s.inputs)
	s.meta.Outputs = tensorInfos(s.outputs)
	s.meta.Digest = digest
	s.slots = make(chan *slot, n)
	for _, sl := range s.all {
		s.slots <- sl
	}
	rt.track(s)
	return s, nil
}

// ports converts and checks the model's inputs or outputs.
func ports(model, kind string, infos []ort.InputOutputInfo) ([]port, error) {
	if len(infos) == 0 {
		return nil, loadErr(model, nil, "the model has no %ss", kind)
	}
	ps := make([]port, len(infos))
	for i, info := range infos {
		if info.OrtValueType != ort.ONNXTypeTensor {
			return nil, loadErr(model, nil, "%s %q is a %s, not a tensor; only tensor %ss are supported (for a scikit-learn classifier, export without ZipMap)",
				kind, info.Name, info.OrtValueType, kind)
		}
		dt := dtypeOf(info.DataType)
		if dt == backends.Invalid {
			return nil, loadErr(model, nil, "%s %q has element type %s; supported are float, double, int32, int64 and bool",
				kind, info.Name, strings.TrimPrefix(info.DataType.String(), "ONNX_TENSOR_ELEMENT_DATA_TYPE_"))
		}
		shape := slices.Clone([]int64(info.Dimensions))
		if len(shape) == 0 || shape[0] != -1 {
			return nil, loadErr(model, nil, "%s %q has shape %v; its first (batch) dimension must be dynamic (a symbolic dimension such as \"N\"), re-export the model with a dynamic batch axis",
				kind, info.Name, shape)
		}
		ps[i] = port{name: info.Name, dtype: dt, shape: shape, want: showShape(shape)}
	}
	return ps, nil
}

func dtypeOf(t ort.TensorElementDataType) backends.DType {
	switch t {
	case ort.TensorElementDataTypeFloat:
		return backends.FP32
	case ort.TensorElementDataTypeDouble:
		return backends.FP64
	case ort.TensorElementDataTypeInt32:
		return backends.INT32
	case ort.TensorElementDataTypeInt64:
		return backends.INT64
	case ort.TensorElementDataTypeBool:
		return backends.BOOL
	}
	return backends.Invalid
}

// showShape writes a model shape for people: N for the batch, ? for other dynamic dimensions.
func showShape(shape []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range shape {
		if i > 0 {
			b.WriteByte(' ')
		}
		switch {
		case i == 0:
			b.WriteByte('N')
		case d < 0:
			b.WriteByte('?')
		default:
			b.WriteString(strconv.FormatInt(d, 10))
		}
	}
	b.WriteByte(']')
	return b.String()
}

func portNames(ps []port) []string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.name
	}
	return names
}

func tensorInfos(ps []port) []backends.TensorInfo {
	infos := make([]backends.TensorInfo, len(ps))
	for i, p := range ps {
		infos[i] = backends.TensorInfo{Name: p.name, DType: p.dtype, Shape: slices.Clone(p.shape)}
	}
	return infos
}

// readMetadata reads the model's custom metadata, checks the spec fingerprint when one is
// required, and finds the version.
func readMetadata(name string, sess *ort.DynamicAdvancedSession, fingerprint string) (backends.Metadata, error) {
	md, err := sess.GetModelMetadata()
	if err != nil {
		return backends.Metadata{}, loadErr(name, err, "reading metadata")
	}
	defer md.Destroy()
	keys, err := md.GetCustomMetadataMapKeys()
	if err != nil {
		return backends.Metadata{}, loadErr(name, err, "reading metadata_props")
	}
	props := make(map[string]string, len(keys))
	for _, k := range keys {
		v, _, err := md.LookupCustomMetadataMap(k)
		if err != nil {
			return backends.Metadata{}, loadErr(name, err, "reading metadata_props %s", k)
		}
		props[k] = v
	}

	if fingerprint != "" {
		got, ok := props[MetaFingerprint]
		switch {
		case !ok:
			return backends.Metadata{}, loadErr(name, nil,
				"feature spec fingerprint missing: the model has no metadata_props %s, spec has %s; export the model with the fingerprint of the spec it was trained with, or configure no fingerprint to skip the check",
				MetaFingerprint, fingerprint)
		case got != fingerprint:
			return backends.Metadata{}, loadErr(name, nil,
				"feature spec fingerprint mismatch: model has %s (metadata_props %s), spec has %s; retrain the model with this spec or configure the spec it was trained with",
				got, MetaFingerprint, fingerprint)
		}
	}

	version, ok := props[MetaVersion]
	if !ok || version == "" {
		version = "unknown"
		if v, err := md.GetVersion(); err == nil && v != 0 {
			version = strconv.FormatInt(v, 10)
		}
	}
	return backends.Metadata{Name: name, Version: version, Platform: "onnxruntime_onnx", Props: props}, nil
}

// Name is the model's name, as given to Load.
func (s *Session) Name() string { return s.name }

// Infer runs one batch: one tensor per model input, each named as the input, of its dtype, and of
// its shape with the same leading (batch) dimension. It waits for a free pool member until ctx is
// done. ONNX Runtime reads the inputs' data in place, so the caller must not change it until Infer
// returns. The result has every model output, in the model's order, with data that belongs to the
// caller. An empty batch (0 rows) returns outputs with 0 rows without running the model.
//
// Errors match [backends.ErrInvalidInput] (naming the input and what the model expects),
// [backends.ErrUnavailable] after Close, or ctx's error while waiting.
func (s *Session) Infer(ctx context.Context, b *backends.Batch) (*backends.Result, error) {
	if s.closed.Load() {
		return nil, s.unavailable()
	}
	rows, err := s.check(b)
	if err != nil {
		return nil, err
	}
	if rows == 0 {
		return s.empty(), nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("model %q: %w", s.name, err)
	}
	var sl *slot
	select {
	case sl = <-s.slots:
	default:
		select {
		case sl = <-s.slots:
		case <-ctx.Done():
			return nil, fmt.Errorf("model %q: waiting for a free session: %w", s.name, ctx.Err())
		case <-s.done:
			return nil, s.unavailable()
		}
	}
	defer func() { s.slots <- sl }()
	if s.closed.Load() {
		return nil, s.unavailable()
	}
	return s.run(sl, b, rows)
}

func (s *Session) unavailable() error {
	return fmt.Errorf("model %q: session closed: %w", s.name, backends.ErrUnavailable)
}

// check validates b against the model and returns its rows.
func (s *Session) check(b *backends.Batch) (int, error) {
	if b.Model != "" && b.Model != s.name {
		return 0, fmt.Errorf("batch for model %q sent to the session of model %q: %w", b.Model, s.name, backends.ErrInvalidInput)
	}
	if len(b.Inputs) == 0 {
		return 0, nil
	}
	rows := b.Inputs[0].Shape
	for i := range b.Inputs {
		t := &b.Inputs[i]
		p := s.port(t.Name)
		if p == nil {
			return 0, fmt.Errorf("model %q has no input %q; its inputs are %s: %w", s.name, t.Name, s.showInputs(), backends.ErrInvalidInput)
		}
		for j := range i {
			if b.Inputs[j].Name == t.Name {
				return 0, fmt.Errorf("model %q: input %q is given twice: %w", s.name, t.Name, backends.ErrInvalidInput)
			}
		}
		if t.DType != p.dtype {
			return 0, fmt.Errorf("model %q: input %q is %s, the model expects %s %s: %w", s.name, t.Name, t.DType, p.dtype, p.want, backends.ErrInvalidInput)
		}
		if err := t.Check(); err != nil {
			return 0, fmt.Errorf("model %q: %w", s.name, err)
		}
		if !fits(t.Shape, p.shape) {
			return 0, fmt.Errorf("model %q: input %q has shape %v, the model expects %s %s: %w", s.name, t.Name, t.Shape, p.dtype, p.want, backends.ErrInvalidInput)
		}
		if i > 0 && t.Shape[0] != rows[0] {
			return 0, fmt.Errorf("model %q: input %q has %d rows but input %q has %d; all inputs need the same batch dimension: %w",
				s.name, t.Name, t.Shape[0], b.Inputs[0].Name, rows[0], backends.ErrInvalidInput)
		}
	}
	if len(b.Inputs) != len(s.inputs) {
		for i := range s.inputs {
			if !hasInput(b, s.inputs[i].name) {
				p := &s.inputs[i]
				return 0, fmt.Errorf("model %q: input %q (%s %s) is missing: %w", s.name, p.name, p.dtype, p.want, backends.ErrInvalidInput)
			}
		}
	}
	return int(rows[0]), nil
}

func (s *Session) port(name string) *port {
	for i := range s.inputs {
		if s.inputs[i].name == name {
			return &s.inputs[i]
		}
	}
	return nil
}

func (s *Session) showInputs() string {
	parts := make([]string, len(s.inputs))
	for i, p := range s.inputs {
		parts[i] = fmt.Sprintf("%q (%s %s)", p.name, p.dtype, p.want)
	}
	return strings.Join(parts, ", ")
}

func hasInput(b *backends.Batch, name string) bool {
	for i := range b.Inputs {
		if b.Inputs[i].Name == name {
			return true
		}
	}
	return false
}

// fits reports whether a tensor's shape matches a model's, -1 matching any size.
func fits(shape, model []int64) bool {
	if len(shape) != len(model) {
		return false
	}
	for i, d := range model {
		if d >= 0 && shape[i] != d {
			return false
		}
	}
	return true
}

// empty is the result of a batch with no rows.
func (s *Session) empty() *backends.Result {
	res := &backends.Result{Outputs: make([]backends.Tensor, len(s.outputs))}
	for i, p := range s.outputs {
		shape := make([]int64, len(p.shape))
		for j, d := range p.shape[1:] {
			shape[j+1] = max(d, 0)
		}
		res.Outputs[i] = backends.Tensor{Name: p.name, DType: p.dtype, Shape: shape, Data: emptyData(p.dtype)}
	}
	return res
}

func emptyData(dt backends.DType) any {
	switch dt {
	case backends.FP32:
		return []float32{}
	case backends.FP64:
		return []float64{}
	case backends.INT32:
		return []int32{}
	case backends.INT64:
		return []int64{}
	case backends.BOOL:
		return []bool{}
	}
	return nil
}

// run runs a checked batch on sl, which the caller owns.
func (s *Session) run(sl *slot, b *backends.Batch, rows int) (res *backends.Result, err error) {
	defer func() {
		for i, v := range sl.in {
			if v != nil {
				v.Destroy()
				sl.in[i] = nil
			}
		}
		sl.pin.Unpin()
		for i, v := range sl.out {
			if v != nil {
				v.Destroy()
				sl.out[i] = nil
			}
		}
	}()
	for i := range s.inputs {
		t := &b.Inputs[i]
		if t.Name != s.inputs[i].name {
			t = s.find(b, s.inputs[i].name)
		}
		if sl.in[i], err = value(t, &sl.pin); err != nil {
			return nil, fmt.Errorf("model %q: input %q: %w", s.name, t.Name, err)
		}
	}
	if err := sl.sess.Run(sl.in, sl.out); err != nil {
		return nil, fmt.Errorf("model %q: %w", s.name, err)
	}
	res = &backends.Result{Outputs: make([]backends.Tensor, len(s.outputs))}
	for i, v := range sl.out {
		t, err := tensor(s.outputs[i].name, v)
		if err != nil {
			return nil, fmt.Errorf("model %q: %w", s.name, err)
		}
		if len(t.Shape) == 0 || t.Shape[0] != int64(rows) {
			return nil, fmt.Errorf("model %q: output %q has shape %v for a batch of %d rows; its first dimension must be the batch", s.name, t.Name, t.Shape, rows)
		}
		res.Outputs[i] = t
	}
	return res, nil
}

func (s *Session) find(b *backends.Batch, name string) *backends.Tensor {
	for i := range b.Inputs {
		if b.Inputs[i].Name == name {
			return &b.Inputs[i]
		}
	}
	return nil // unreachable after check
}

// value makes an ONNX Runtime tensor over t's data, without copying it; pin keeps the data in place
// until the caller unpins it after destroying the value.
func value(t *backends.Tensor, pin *runtime.Pinner) (ort.Value, error) {
	switch d := t.Data.(type) {
	case []float32:
		return newValue(t.Shape, d, pin)
	case []float64:
		return newValue(t.Shape, d, pin)
	case []int32:
		return newValue(t.Shape, d, pin)
	case []int64:
		return newValue(t.Shape, d, pin)
	case []bool:
		return newValue(t.Shape, d, pin)
	}
	return nil, fmt.Errorf("unsupported data %T: %w", t.Data, backends.ErrInvalidInput)
}

func newValue[T ort.TensorData](shape []int64, data []T, pin *runtime.Pinner) (ort.Value, error) {
	if len(data) > 0 {
		pin.Pin(&data[0])
	}
	v, err := ort.NewTensor(ort.Shape(shape), data)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// tensor turns an output that ONNX Runtime allocated into a backends.Tensor. onnxruntime_go has
// already copied the output into a Go slice (the ORT-owned buffer is gone), so the slice is kept as
// it is; the caller destroys v.
func tensor(name string, v ort.Value) (backends.Tensor, error) {
	t := backends.Tensor{Name: name, Shape: []int64(v.GetShape())}
	switch o := v.(type) {
	case *ort.Tensor[float32]:
		t.DType, t.Data = backends.FP32, o.GetData()
	case *ort.Tensor[float64]:
		t.DType, t.Data = backends.FP64, o.GetData()
	case *ort.Tensor[int32]:
		t.DType, t.Data = backends.INT32, o.GetData()
	case *ort.Tensor[int64]:
		t.DType, t.Data = backends.INT64, o.GetData()
	case *ort.Tensor[bool]:
		t.DType, t.Data = backends.BOOL, o.GetData()
	default:
		return backends.Tensor{}, fmt.Errorf("output %q: unsupported value %T", name, v)
	}
	return t, nil
}

// Metadata describes the model: name, version, inputs and outputs (the batch dimension is -1) and
// all its metadata_props. model must be the session's name or empty. The result is the caller's.
func (s *Session) Metadata(_ context.Context, model string) (backends.Metadata, error) {
	if s.closed.Load() {
		return backends.Metadata{}, s.unavailable()
	}
	if model != "" && model != s.name {
		return backends.Metadata{}, fmt.Errorf("session of model %q has no model %q: %w", s.name, model, backends.ErrInvalidInput)
	}
	m := s.meta
	m.Inputs = cloneInfos(m.Inputs)
	m.Outputs = cloneInfos(m.Outputs)
	m.Props = maps.Clone(m.Props)
	return m, nil
}

func cloneInfos(in []backends.TensorInfo) []backends.TensorInfo {
	out := slices.Clone(in)
	for i := range out {
		out[i].Shape = slices.Clone(out[i].Shape)
	}
	return out
}

// Ready returns nil until Close, then an error matching [backends.ErrUnavailable].
func (s *Session) Ready(context.Context) error {
	if s.closed.Load() {
		return s.unavailable()
	}
	return nil
}

// Close stops new calls (they fail with [backends.ErrUnavailable], and so do calls waiting for a
// session), waits for the running batches, and destroys the ONNX Runtime sessions. It is
// idempotent; concurrent calls return once the sessions are gone.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.done)
		var errs []error
		for range s.all {
			sl := <-s.slots
			errs = append(errs, sl.sess.Destroy())
		}
		s.rt.forget(s)
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

var _ backends.Backend = (*Session)(nil)
