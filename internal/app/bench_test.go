package app_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/internal/bench"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// The benchmarks of the pipeline measure the path they name: every call's rows differ from every
// other call's (bench.Stamp writes a per-call number into each window), with the prediction cache
// on as in the default config, so every call misses it and runs the model, as production's new
// inputs do. Only the cache-hit variant repeats its input. After each run the sidecar's own
// counters are read: a hit fails the benchmark, except the cache-hit variant's, which must hit on
// nearly every call. (cache-hits/op reports them.)

// BenchmarkPredictBandwidthGRPC: one unary call end to end over loopback, real model; run with
// -cpu to vary client parallelism (b.RunParallel uses GOMAXPROCS goroutines).
func BenchmarkPredictBandwidthGRPC(b *testing.B) {
	for _, v := range []struct {
		name     string
		edit     func(*config.Config)
		cacheHit bool
	}{
		{"batching=off", func(c *config.Config) { c.Models[0].Batching.Disabled = true }, false},
		{"inflight=1", func(c *config.Config) { c.Models[0].Batching.MaxInflightBatches = 1 }, false},
		{"inflight=2", nil, false},
		{"cache-hit", nil, true}, // the same input every call: answered from the prediction cache
	} {
		b.Run(v.name, func(b *testing.B) { benchUnary(b, v.edit, v.cacheHit) })
	}
}

// parallelism is RunParallel's goroutines per GOMAXPROCS in the unary benchmarks.
const parallelism = 16

func benchUnary(b *testing.B, edit func(*config.Config), cacheHit bool) {
	s := start(b, edit)
	var ids atomic.Uint64
	b.ReportAllocs()
	b.SetParallelism(parallelism) // 32 callers on 2 cores
	b.RunParallel(func(pb *testing.PB) {
		req := bandwidthReq(1)
		for pb.Next() {
			if !cacheHit {
				bench.Stamp(req.HistoricalMetrics, ids.Add(1))
			}
			if _, err := s.client.PredictBandwidth(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	// The cache-hit variant's concurrent first calls miss together (one runs the model), and a few
	// more may miss before the cache has applied its answer (ristretto's sets are asynchronous).
	checkCacheHits(b, s, int64(b.N), cacheHit, 2*int64(parallelism*runtime.GOMAXPROCS(0)))
}

// checkCacheHits reads the sidecar's cache counters after a benchmark whose calls sent rows rows,
// and fails it if the cache answered any row of a benchmark that is not the cache's, or missed
// more than the first calls' (firstMisses) and 1% of the rest of the cache's own.
func checkCacheHits(b *testing.B, s *sidecar, rows int64, cacheHit bool, firstMisses int64) {
	b.Helper()
	var hits, lookups float64
	found := 0
	mfs, err := s.app.Registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "sidecar_cache_hits_total":
			hits, found = mf.GetMetric()[0].GetCounter().GetValue(), found+1
		case "sidecar_cache_lookups_total":
			lookups, found = mf.GetMetric()[0].GetCounter().GetValue(), found+1
		}
	}
	if found != 2 || lookups < float64(rows) {
		b.Fatalf("cache counters: %d found, %v lookups for %d rows sent", found, lookups, rows)
	}
	b.ReportMetric(hits/float64(b.N), "cache-hits/op")
	switch {
	case !cacheHit && hits > 0:
		b.Fatalf("the prediction cache answered %v of %v lookups: the inputs repeated, and the benchmark measured the cache", hits, lookups)
	case cacheHit && lookups-hits > float64(firstMisses+rows/100):
		b.Fatalf("the prediction cache answered only %v of %v lookups: the cache-hit benchmark did not measure the hit path", hits, lookups)
	}
}

// BenchmarkPredictBandwidthHTTP: the same call over HTTP/JSON.
func BenchmarkPredictBandwidthHTTP(b *testing.B) {
	s := start(b, nil)
	var ids atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := bandwidthReq(1)
		for pb.Next() {
			bench.Stamp(req.HistoricalMetrics, ids.Add(1))
			body, err := protojson.Marshal(req)
			if err != nil {
				b.Error(err)
				return
			}
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
	b.StopTimer()
	checkCacheHits(b, s, int64(b.N), false, 0)
}

// BenchmarkPredictBandwidthBatch256: the batch RPC with 256 VMs per call.
func BenchmarkPredictBandwidthBatch256(b *testing.B) {
	s := start(b, func(c *config.Config) { c.Limits.MaxMessageBytes = 4 << 20 })
	req := &aipb.BandwidthBatchRequest{}
	for i := 0; i < 256; i++ {
		req.Vms = append(req.Vms, bandwidthReq(i))
	}
	var n uint64 // rows sent: every VM of every call gets its own
	b.ReportAllocs()
	for b.Loop() {
		for _, vm := range req.Vms {
			n++
			bench.Stamp(vm.HistoricalMetrics, n)
		}
		if _, err := s.client.PredictBandwidthBatch(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(256*b.N)/b.Elapsed().Seconds(), "predictions/s")
	checkCacheHits(b, s, int64(n), false, 0)
}

// BenchmarkStreamMetrics: metric rows per second into the per-VM windows over one client stream,
// 100 samples per message, over 1000 VMs.
func BenchmarkStreamMetrics(b *testing.B) {
	s := start(b, func(c *config.Config) { c.Limits.MaxMessageBytes = 4 << 20 })
	st, err := s.client.StreamMetrics(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	// Each VM's samples are 1ms apart on a clock that starts 20 minutes back: within the windows'
	// idle expiry (30m) and never ahead of the sidecar's clock, for 1.2 billion rows. Nearly every
	// sample replaces its step's newest, as agents pushing more often than the step do.
	t0 := time.Now().Add(-20 * time.Minute)
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
			smp.TimestampMs = t0.Add(time.Duration(k/1000) * time.Millisecond).UnixMilli()
		}
		if err := st.Send(msg); err != nil {
			if err == io.EOF { // the server ended the stream: its status says why
				_, err = st.CloseAndRecv()
			}
			b.Fatalf("after %d rows: %v", rows, err)
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
