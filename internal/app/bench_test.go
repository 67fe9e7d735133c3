package app_test

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/novacron/sidecar/config"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// BenchmarkPredictBandwidthGRPC: one unary call end to end over loopback, real model; run with
// -cpu to vary client parallelism (b.RunParallel uses GOMAXPROCS goroutines).
func BenchmarkPredictBandwidthGRPC(b *testing.B) {
	for _, v := range []struct {
		name string
		edit func(*config.Config)
	}{
		{"batching=off", func(c *config.Config) { c.Models[0].Batching.Disabled = true; c.Cache.Disabled = true }},
		{"inflight=1", func(c *config.Config) { c.Models[0].Batching.MaxInflightBatches = 1; c.Cache.Disabled = true }},
		{"inflight=2", func(c *config.Config) { c.Cache.Disabled = true }},
		{"cache-hit", nil}, // the same input every call: answered from the prediction cache
	} {
		b.Run(v.name, func(b *testing.B) { benchUnary(b, v.edit) })
	}
}

func benchUnary(b *testing.B, edit func(*config.Config)) {
	s := start(b, edit)
	req := bandwidthReq(1)
	b.ReportAllocs()
	b.SetParallelism(16) // 32 callers on 2 cores
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.client.PredictBandwidth(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPredictBandwidthHTTP: the same call over HTTP/JSON.
func BenchmarkPredictBandwidthHTTP(b *testing.B) {
	s := start(b, nil)
	body, err := protojson.Marshal(bandwidthReq(1))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := http.Post(s.base+"/api/v1/predict", "application/json", bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			var out bytes.Buffer
			out.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("%d %s", resp.StatusCode, out.String())
				return
			}
		}
	})
}

// BenchmarkPredictBandwidthBatch256: the batch RPC with 256 VMs per call.
func BenchmarkPredictBandwidthBatch256(b *testing.B) {
	s := start(b, func(c *config.Config) { c.Limits.MaxMessageBytes = 4 << 20 })
	req := &aipb.BandwidthBatchRequest{}
	for i := 0; i < 256; i++ {
		req.Vms = append(req.Vms, bandwidthReq(i))
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.client.PredictBandwidthBatch(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(256*b.N)/b.Elapsed().Seconds(), "predictions/s")
}

// BenchmarkStreamMetrics: metric rows per second into the per-VM windows over one client stream,
// 100 samples per message, over 1000 VMs.
func BenchmarkStreamMetrics(b *testing.B) {
	s := start(b, func(c *config.Config) { c.Limits.MaxMessageBytes = 4 << 20 })
	st, err := s.client.StreamMetrics(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour)
	msg := &aipb.PushMetricsRequest{}
	for i := 0; i < 100; i++ {
		msg.Samples = append(msg.Samples, &aipb.MetricsSample{Metrics: &aipb.VMMetrics{Cpu: 40, Memory: 50, DiskIo: 20, NetworkIo: 300, Latency: 8, ErrorRate: 0.001}})
	}
	rows := 0
	b.ReportAllocs()
	for n := 0; b.Loop(); n++ {
		for i, smp := range msg.Samples {
			k := n*len(msg.Samples) + i
			smp.VmId = "vm-" + strconv.Itoa(k%1000)
			smp.TimestampMs = t0.Add(time.Duration(k/1000) * time.Second).UnixMilli()
		}
		if err := st.Send(msg); err != nil {
			b.Fatal(err)
		}
		rows += len(msg.Samples)
	}
	resp, err := st.CloseAndRecv()
	if err != nil {
		b.Fatal(err)
	}
	if int(resp.Accepted) != rows {
		b.Fatalf("accepted %d of %d", resp.Accepted, rows)
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}
