package onnx

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/novacron/sidecar/backends"
)

// BenchmarkExampleBandwidthModel: the committed bandwidth LSTM's batch-latency curve on one
// session with one thread: what micro-batching has to work with.
func BenchmarkExampleBandwidthModel(b *testing.B) {
	model, err := os.ReadFile("../../examples/models/bandwidth.onnx")
	if err != nil {
		b.Fatal(err)
	}
	rt, err := Open("")
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	s, err := rt.Load("bandwidth", model, Config{})
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 4, 16, 32, 64, 256} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			data := make([]float32, n*60)
			for i := range data {
				data[i] = float32(i%13) / 13
			}
			batch := &backends.Batch{Inputs: []backends.Tensor{backends.F32("features", []int64{int64(n), 10, 6}, data)}}
			for b.Loop() {
				if _, err := s.Infer(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
