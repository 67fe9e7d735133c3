package bench

import (
	"context"
	"fmt"
	"io/fs"
	"time"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/backends/onnx"
	"github.com/novacron/sidecar/features"
)

// ceiling runs the bandwidth model in this process with ONNX Runtime, with the sessions and
// intra-op threads the default config gives it, one goroutine per session each running batches of
// BatchVMs canonical rows in a loop: the most predictions/s any server could get out of the model
// here. Its CPU is this process's own over the window (nothing else runs then).
func (r *runner) ceiling(ctx context.Context, row Row, p phase) (Row, error) {
	sessions, threads, err := pool(r.base, "bandwidth")
	if err != nil {
		return row, err
	}
	row.Batching = ""
	row.Load = fmt.Sprintf("%d sessions x %d thread(s), %d rows/batch", sessions, threads, r.cfg.BatchVMs)
	modelBytes, err := fs.ReadFile(r.cfg.Embedded, "models/bandwidth.onnx")
	if err != nil {
		return row, err
	}
	specBytes, err := fs.ReadFile(r.cfg.Embedded, "specs/bandwidth.yaml")
	if err != nil {
		return row, err
	}
	spec, err := features.Parse(specBytes)
	if err != nil {
		return row, fmt.Errorf("specs/bandwidth.yaml: %w", err)
	}
	rt, err := onnx.Open(r.lib)
	if err != nil {
		return row, err
	}
	defer rt.Close()
	started := time.Now()
	sess, err := rt.Load("bandwidth", modelBytes, onnx.Config{Sessions: sessions, IntraOpThreads: threads, Fingerprint: spec.Fingerprint()})
	if err != nil {
		return row, err
	}
	defer sess.Close()
	meta, err := sess.Metadata(ctx, "bandwidth")
	if err != nil {
		return row, err
	}
	if len(meta.Inputs) != 1 || len(meta.Inputs[0].Shape) != 3 {
		return row, fmt.Errorf("bandwidth model: inputs %+v, want one [N, steps, features]", meta.Inputs)
	}
	in := meta.Inputs[0]
	rows := r.cfg.BatchVMs
	size := spec.Size()
	batches := make([]*backends.Batch, sessions)
	for g := range batches {
		data := make([]float32, rows*size)
		for j := range rows {
			if err := spec.Canonicalize(data[j*size:(j+1)*size], window(g*rows+j)); err != nil {
				return row, err
			}
		}
		shape := []int64{int64(rows), int64(spec.Steps()), int64(spec.Width())}
		batches[g] = &backends.Batch{Model: "bandwidth", Inputs: []backends.Tensor{backends.F32(in.Name, shape, data)}}
	}
	fmt.Fprintf(r.progress, "bench:   loaded in %v; %s, warmup %v, window %v\n", time.Since(started).Round(time.Millisecond), row.Load, p.Warmup, p.Duration)

	call := func(ctx context.Context, w int) error {
		res, err := sess.Infer(ctx, batches[w])
		if err != nil {
			return err
		}
		if len(res.Outputs) == 0 || len(res.Outputs[0].Shape) == 0 || res.Outputs[0].Shape[0] != int64(rows) {
			return fmt.Errorf("ceiling: unexpected outputs %d", len(res.Outputs))
		}
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, p.Warmup+p.Duration+30*time.Second)
	defer cancel()
	if err := call(cctx, 0); err != nil {
		return row, err
	}
	var cpu0 time.Duration
	res := closedLoop(cctx, sessions, p, call, r.rec, func() { cpu0, _ = procCPU(0) })
	cpu1, err := procCPU(0)
	row.CPU = cpu1 - cpu0
	if err != nil {
		row.CPU = -1
	}
	r.fill(&row, res, rows)
	if res.OK == 0 {
		return row, fmt.Errorf("no batch completed: %v", res.FirstErr)
	}
	return row, nil
}
