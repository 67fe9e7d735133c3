package main

import (
	"context"
	"fmt"
	"slices"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/backends/onnx"
	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/features/drift"
	"github.com/novacron/sidecar/proxy"
)

// profileBatch is how many canonical rows profile build gives the model at once.
const profileBatch = 1024

// profileModel runs a model on the training rows so that profile build can profile its outputs:
// the reference of prediction drift. It is the model the sidecar serves, run in the process by
// ONNX Runtime as serving runs it, checked against the spec by its fingerprint.
type profileModel struct {
	rt      *onnx.Runtime
	sess    *onnx.Session
	spec    *features.Spec
	input   string
	outputs []backends.TensorInfo
	// columns name each value of an answered row (drift.OutputColumn), the outputs in the
	// model's order.
	columns []string
	// digest identifies the model's bytes (its Metadata.Digest); skipped names the model's
	// outputs serving never reads (proxy.OutputsRead), which are not profiled.
	digest  string
	skipped []string
}

// openProfileModel loads the ONNX model at path for spec.
func openProfileModel(path string, spec *features.Spec) (*profileModel, error) {
	lib, err := onnx.LibraryPath("")
	if err != nil {
		return nil, fmt.Errorf("-model needs ONNX Runtime: %w", err)
	}
	rt, err := onnx.Open(lib)
	if err != nil {
		return nil, fmt.Errorf("-model: %w", err)
	}
	pm := &profileModel{rt: rt, spec: spec}
	if pm.sess, err = rt.LoadFile(spec.Name, path, onnx.Config{Fingerprint: spec.Fingerprint()}); err != nil {
		rt.Close()
		return nil, fmt.Errorf("-model %s: %w", path, err)
	}
	meta, err := pm.sess.Metadata(context.Background(), spec.Name)
	if err == nil && len(meta.Inputs) != 1 {
		err = fmt.Errorf("it has %d inputs; a model of a feature spec reads one", len(meta.Inputs))
	}
	var read []backends.TensorInfo
	for _, o := range meta.Outputs {
		if err != nil {
			break
		}
		if !slices.Contains(proxy.OutputsRead(), o.Name) {
			pm.skipped = append(pm.skipped, o.Name)
			continue
		}
		read = append(read, o)
		if o.DType != backends.FP32 || len(o.Shape) != 2 || o.Shape[1] < 1 {
			err = fmt.Errorf("output %q is %s%v; profile build profiles FP32 outputs of shape [N, k] with k fixed", o.Name, o.DType, o.Shape)
			break
		}
		for i := range int(o.Shape[1]) {
			pm.columns = append(pm.columns, drift.OutputColumn(o.Name, i, int(o.Shape[1])))
		}
	}
	if err == nil && len(read) == 0 {
		err = fmt.Errorf("it has none of the outputs the sidecar reads (%v): its outputs are %v", proxy.OutputsRead(), pm.skipped)
	}
	if err != nil {
		pm.close()
		return nil, fmt.Errorf("-model %s: %w", path, err)
	}
	pm.input, pm.outputs, pm.digest = meta.Inputs[0].Name, read, meta.Digest
	return pm, nil
}

// answer runs the model on canonical rows (a whole number of the spec's rows) and returns each
// row's output values, one per column, row after row.
func (pm *profileModel) answer(ctx context.Context, rows []float32) ([]float32, error) {
	size := pm.spec.Size()
	n := len(rows) / size
	out := make([]float32, 0, n*len(pm.columns))
	for lo := 0; lo < n; lo += profileBatch {
		hi := min(lo+profileBatch, n)
		in := backends.F32(pm.input, pm.spec.InputShape(int64(hi-lo)), rows[lo*size:hi*size])
		res, err := pm.sess.Infer(ctx, &backends.Batch{Model: pm.spec.Name, Inputs: []backends.Tensor{in}})
		if err != nil {
			return nil, fmt.Errorf("running the model: %w", err)
		}
		vals := make([][]float32, len(pm.outputs))
		for k, o := range pm.outputs {
			t, ok := res.Output(o.Name)
			if !ok {
				return nil, fmt.Errorf("running the model: no output %q in its answer", o.Name)
			}
			if vals[k], err = t.Float32s(); err != nil {
				return nil, err
			}
			if len(vals[k]) != (hi-lo)*int(o.Shape[1]) {
				return nil, fmt.Errorf("running the model: output %q has %d values for %d rows of %d", o.Name, len(vals[k]), hi-lo, o.Shape[1])
			}
		}
		for r := range hi - lo {
			for k, o := range pm.outputs {
				w := int(o.Shape[1])
				out = append(out, vals[k][r*w:(r+1)*w]...)
			}
		}
	}
	return out, nil
}

func (pm *profileModel) close() {
	if pm.sess != nil {
		pm.sess.Close()
	}
	pm.rt.Close()
}
