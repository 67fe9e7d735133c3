package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/examples"
	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/internal/app"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// sidecar is a sidecar started for a test on loopback ports with the embedded default models.
type sidecar struct {
	app    *app.App
	client aipb.AIServiceClient
	conn   *grpc.ClientConn
	base   string
}

func start(t testing.TB, edit func(*config.Config)) *sidecar {
	t.Helper()
	return startWith(t, edit)
}

// startWith is start with options for app.Start.
func startWith(t testing.TB, edit func(*config.Config), opts ...app.Option) *sidecar {
	t.Helper()
	cfg, err := config.Load("", examples.FS)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen.GRPC, cfg.Listen.HTTP = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Limits.MaxMessageBytes = 64 << 10
	if edit != nil {
		edit(cfg)
	}
	a, err := app.Start(context.Background(), cfg, examples.FS, io.Discard, opts...)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(a.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	s := &sidecar{app: a, conn: conn, client: aipb.NewAIServiceClient(conn), base: "http://" + a.HTTPAddr}
	t.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s
}

// post sends a JSON body and returns the status and body.
func (s *sidecar) post(t *testing.T, path, contentType string, body []byte) (int, []byte) {
	t.Helper()
	return s.postWith(t, path, contentType, "", body)
}

// postWith is post with a Content-Encoding header (none when empty).
func (s *sidecar) postWith(t *testing.T, path, contentType, encoding string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", s.base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// window makes a realistic 10-minute window of the six VMMetrics, oldest first.
func window(seed int) []float64 {
	var w []float64
	for step := 0; step < 10; step++ {
		x := float64(step+seed) / 10
		w = append(w,
			40+20*math.Sin(x),      // cpu %
			55+5*math.Cos(x),       // memory %
			30+10*math.Sin(2*x),    // disk MB/s
			300+120*math.Sin(x+.5), // network Mbit/s
			8+3*math.Sin(x),        // latency ms
			0.002,                  // error rate
		)
	}
	return w
}

func bandwidthReq(seed int) *aipb.BandwidthRequest {
	return &aipb.BandwidthRequest{VmId: fmt.Sprintf("vm-%d", seed), HistoricalMetrics: window(seed), HorizonMinutes: 5}
}

func anomalyReq(cpu float64) *aipb.AnomalyRequest {
	return &aipb.AnomalyRequest{VmId: "vm-1", CurrentMetrics: &aipb.VMMetrics{Cpu: cpu, Memory: 50, DiskIo: 30, NetworkIo: 250, Latency: 9, ErrorRate: 0.002}}
}

func placementReq() *aipb.PlacementRequest {
	return &aipb.PlacementRequest{
		WorkloadId:   "wl-1",
		Requirements: map[string]float64{"cpu": 4, "memory": 16},
		AvailableNodes: []*aipb.NodeInfo{
			{NodeId: "node-small", CpuAvailable: 2, MemoryAvailable: 8},
			{NodeId: "node-big", CpuAvailable: 32, MemoryAvailable: 128},
			{NodeId: "node-mid", CpuAvailable: 8, MemoryAvailable: 32},
		},
	}
}

func TestAnswers(t *testing.T) {
	s := start(t, nil)
	ctx := context.Background()

	bw, err := s.client.PredictBandwidth(ctx, bandwidthReq(1))
	if err != nil {
		t.Fatal(err)
	}
	if len(bw.Predictions) != 5 || bw.ModelVersion == "" || bw.ModelVersion == "unknown" || !(bw.Confidence > 0 && bw.Confidence < 1) {
		t.Errorf("PredictBandwidth: %v", bw)
	}
	for _, p := range bw.Predictions {
		if !(p > 0 && p < 10000) {
			t.Errorf("prediction %v is not a plausible Mbit/s", p)
		}
	}
	full, err := s.client.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "vm-1", HistoricalMetrics: window(1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Predictions) != 10 || !slicesPrefix(full.Predictions, bw.Predictions) {
		t.Errorf("horizon 0 gives %d predictions %v; the first 5 should equal the horizon-5 answer %v", len(full.Predictions), full.Predictions, bw.Predictions)
	}

	calm, err := s.client.DetectAnomaly(ctx, anomalyReq(35))
	if err != nil {
		t.Fatal(err)
	}
	if calm.IsAnomaly || calm.Severity != "none" || calm.AnomalyType != "none" {
		t.Errorf("calm metrics: %v", calm)
	}
	spike := &aipb.AnomalyRequest{VmId: "vm-1", CurrentMetrics: &aipb.VMMetrics{Cpu: 99, Memory: 50, DiskIo: 30, NetworkIo: 250, Latency: 9, ErrorRate: 0.002}}
	hot, err := s.client.DetectAnomaly(ctx, spike)
	if err != nil {
		t.Fatal(err)
	}
	if !hot.IsAnomaly || hot.Score <= calm.Score || hot.AnomalyType == "none" || hot.Severity == "none" {
		t.Errorf("cpu 99%%: %v (calm: %v)", hot, calm)
	}

	pl, err := s.client.OptimizePlacement(ctx, placementReq())
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.Candidates) != 3 {
		t.Fatalf("placement: %v", pl)
	}
	for i, c := range pl.Candidates {
		if i > 0 && c.Score > pl.Candidates[i-1].Score {
			t.Errorf("candidates not sorted by score: %v", pl.Candidates)
		}
		if !strings.Contains(c.Reasoning, "driven by") {
			t.Errorf("reasoning %q names no feature", c.Reasoning)
		}
	}
	if last := pl.Candidates[2]; last.NodeId != "node-small" {
		t.Errorf("the node that cannot fit the workload (2 cores for 4) should rank last: %v", pl.Candidates)
	}
	if !(pl.OverallConfidence > 0 && pl.OverallConfidence <= 1) {
		t.Errorf("overall_confidence %v", pl.OverallConfidence)
	}

	// Batch rows against single calls to a sidecar without a cache: with one, the single calls
	// would read the batch's own rows back and confirm a mix-up. The batch's inputs are new to s,
	// so all three rows run in one batch.
	ref := start(t, func(c *config.Config) { c.Cache.Disabled = true })
	seeds := []int{2, 3, 4}
	var vms []*aipb.BandwidthRequest
	for _, seed := range seeds {
		vms = append(vms, bandwidthReq(seed))
	}
	batch, err := s.client.PredictBandwidthBatch(ctx, &aipb.BandwidthBatchRequest{Vms: vms})
	if err != nil {
		t.Fatal(err)
	}
	if len(batch.Results) != len(seeds) {
		t.Fatalf("batch of %d VMs answered %d results", len(seeds), len(batch.Results))
	}
	singles := make([]*aipb.BandwidthResponse, len(seeds))
	for i, seed := range seeds {
		if singles[i], err = ref.client.PredictBandwidth(ctx, bandwidthReq(seed)); err != nil {
			t.Fatal(err)
		}
		if i > 0 && near(singles[i].Predictions, singles[i-1].Predictions, 1e-5) {
			t.Fatalf("inputs %d and %d have the same answer: the comparison could not tell their rows apart", seeds[i-1], seeds[i])
		}
	}
	for i, r := range batch.Results {
		if one := singles[i]; r.VmId != one.VmId || !near(r.Predictions, one.Predictions, 1e-5) {
			t.Errorf("batch row %d %v differs from the single call %v", i, r, one)
		}
	}
}

func slicesPrefix(a, prefix []float64) bool {
	return len(a) >= len(prefix) && near(a[:len(prefix)], prefix, 1e-9)
}

func near(a, b []float64, tol float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > tol*math.Max(1, math.Abs(b[i])) {
			return false
		}
	}
	return true
}

// TestSameAnswerOverBothProtocols: the HTTP routes answer the same requests with the same numbers.
func TestSameAnswerOverBothProtocols(t *testing.T) {
	s := start(t, nil)
	ctx := context.Background()
	cases := []struct {
		path string
		req  proto.Message
		call func() (proto.Message, error)
		resp proto.Message
	}{
		{"/api/v1/predict", bandwidthReq(7), func() (proto.Message, error) { return s.client.PredictBandwidth(ctx, bandwidthReq(7)) }, &aipb.BandwidthResponse{}},
		{"/api/v1/anomaly", anomalyReq(97), func() (proto.Message, error) { return s.client.DetectAnomaly(ctx, anomalyReq(97)) }, &aipb.AnomalyResponse{}},
		{"/api/v1/placement", placementReq(), func() (proto.Message, error) { return s.client.OptimizePlacement(ctx, placementReq()) }, &aipb.PlacementResponse{}},
		{"/api/v1/predict/batch", &aipb.BandwidthBatchRequest{Vms: []*aipb.BandwidthRequest{bandwidthReq(1), bandwidthReq(9)}},
			func() (proto.Message, error) {
				return s.client.PredictBandwidthBatch(ctx, &aipb.BandwidthBatchRequest{Vms: []*aipb.BandwidthRequest{bandwidthReq(1), bandwidthReq(9)}})
			}, &aipb.BandwidthBatchResponse{}},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			want, err := c.call()
			if err != nil {
				t.Fatal(err)
			}
			body, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(c.req)
			if err != nil {
				t.Fatal(err)
			}
			code, out := s.post(t, c.path, "application/json", body)
			if code != 200 {
				t.Fatalf("status %d: %s", code, out)
			}
			if err := protojson.Unmarshal(out, c.resp); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if d := cmp.Diff(want, c.resp, protocmp.Transform()); d != "" {
				t.Errorf("HTTP differs from gRPC (-grpc +http):\n%s", d)
			}
		})
	}
	// The seed's section 4 shape: results carry vm_id, predictions, confidence.
	code, out := s.post(t, "/api/v1/predict/batch", "application/json",
		[]byte(fmt.Sprintf(`{"vms":[{"vm_id":"a","historical_metrics":%s,"horizon_minutes":3}]}`, jsonFloats(window(2)))))
	var shape struct {
		Results []struct {
			VMID        string    `json:"vm_id"`
			Predictions []float64 `json:"predictions"`
			Confidence  float64   `json:"confidence"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out, &shape); err != nil || code != 200 || len(shape.Results) != 1 || shape.Results[0].VMID != "a" || len(shape.Results[0].Predictions) != 3 || shape.Results[0].Confidence == 0 {
		t.Errorf("batch shape: %d %s (%v)", code, out, err)
	}
}

func jsonFloats(v []float64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// badCase is one bad input, sent over gRPC (when grpc is set) and HTTP (when path is set).
type badCase struct {
	name     string
	grpc     func(ctx context.Context, c aipb.AIServiceClient) error
	path     string
	ctype    string
	encoding string // Content-Encoding
	body     string
	code     codes.Code
	httpCode int
	want     string // in both messages
}

func badCases() []badCase {
	short := window(1)[:59]
	withNaN := window(1)
	withNaN[7] = math.NaN()
	inf := anomalyReq(50)
	inf.CurrentMetrics.Latency = math.Inf(1)
	huge := make([]float64, 20000) // 160 kB as proto, 180 kB as JSON: above the test's 64 KiB limit
	for i := range huge {
		huge[i] = 123.456
	}
	noID := placementReq()
	noID.AvailableNodes[1].NodeId = ""
	tooMany := &aipb.BandwidthBatchRequest{}
	for i := 0; i < 1025; i++ {
		tooMany.Vms = append(tooMany.Vms, &aipb.BandwidthRequest{VmId: "x"})
	}
	wrongKeys := placementReq()
	wrongKeys.Requirements = map[string]float64{"CPU": 64, "memory": 16}
	negCap := placementReq()
	negCap.AvailableNodes[1].MemoryAvailable = -8
	longID := strings.Repeat("v", 20000)
	longBatch := &aipb.BandwidthBatchRequest{Vms: []*aipb.BandwidthRequest{bandwidthReq(1), {VmId: longID, HistoricalMetrics: window(2)}}}
	longNode := placementReq()
	longNode.AvailableNodes[2].NodeId = longID
	longWorkload := placementReq()
	longWorkload.WorkloadId = longID
	longModel := anomalyReq(50)
	longModel.Model = longID
	longPush := &aipb.PushMetricsRequest{Samples: []*aipb.MetricsSample{
		{VmId: "ok", Metrics: anomalyReq(50).CurrentMetrics}, {VmId: longID, Metrics: anomalyReq(50).CurrentMetrics}}}
	manyNodes := &aipb.PlacementRequest{WorkloadId: "w"}
	for i := 0; i < 1101; i++ {
		manyNodes.AvailableNodes = append(manyNodes.AvailableNodes, &aipb.NodeInfo{NodeId: "n"})
	}
	longWindowBatch := &aipb.BandwidthBatchRequest{Vms: []*aipb.BandwidthRequest{bandwidthReq(1), {VmId: "w", HistoricalMetrics: make([]float64, 1500)}}}
	js := func(m proto.Message) string {
		b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		return string(b)
	}
	return []badCase{
		{name: "wrong window length",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: short})
				return err
			},
			path: "/api/v1/predict", body: js(&aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: short}),
			code: codes.InvalidArgument, httpCode: 400, want: "historical_metrics: got 59 values, want 60: 10 steps x 6 features"},
		{name: "NaN in the window",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: withNaN})
				return err
			},
			path: "/api/v1/predict", body: strings.Replace(js(&aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: window(1)}), fmt.Sprint(window(1)[7]), `"NaN"`, 1),
			code: codes.InvalidArgument, httpCode: 400, want: "historical_metrics[7]: NaN is not a finite number (step 1, feature memory)"},
		{name: "infinite metric",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.DetectAnomaly(ctx, inf)
				return err
			},
			path: "/api/v1/anomaly", body: `{"vm_id":"v","current_metrics":{"cpu":1,"latency":"Infinity"}}`,
			code: codes.InvalidArgument, httpCode: 400, want: "current_metrics.latency: +Inf is not a finite number"},
		{name: "missing vm_id",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.PredictBandwidth(ctx, &aipb.BandwidthRequest{HistoricalMetrics: window(1)})
				return err
			},
			path: "/api/v1/predict", body: js(&aipb.BandwidthRequest{HistoricalMetrics: window(1)}),
			code: codes.InvalidArgument, httpCode: 400, want: "vm_id: required"},
		{name: "missing current_metrics",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.DetectAnomaly(ctx, &aipb.AnomalyRequest{VmId: "v"})
				return err
			},
			path: "/api/v1/anomaly", body: `{"vm_id":"v"}`,
			code: codes.InvalidArgument, httpCode: 400, want: "current_metrics: required"},
		{name: "negative horizon",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: window(1), HorizonMinutes: -3})
				return err
			},
			path: "/api/v1/predict", body: js(&aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: window(1), HorizonMinutes: -3}),
			code: codes.InvalidArgument, httpCode: 400, want: "horizon_minutes: -3 is not in 0..10"},
		{name: "horizon beyond the model's",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: window(1), HorizonMinutes: 11})
				return err
			},
			path: "/api/v1/predict", body: js(&aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: window(1), HorizonMinutes: 11}),
			code: codes.InvalidArgument, httpCode: 400, want: "horizon_minutes: 11 is not in 0..10"},
		{name: "unknown requirement key",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.OptimizePlacement(ctx, wrongKeys)
				return err
			},
			path: "/api/v1/placement", body: js(wrongKeys),
			code: codes.InvalidArgument, httpCode: 400, want: `requirements: unknown key "CPU"; model "placement" reads cpu, memory`},
		{name: "negative capacity",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.OptimizePlacement(ctx, negCap)
				return err
			},
			path: "/api/v1/placement", body: js(negCap),
			code: codes.InvalidArgument, httpCode: 400, want: "available_nodes[1].memory_available: -8 is negative"},
		{name: "long vm_id",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: longID, HistoricalMetrics: window(1)})
				return err
			},
			path: "/api/v1/predict", body: js(&aipb.BandwidthRequest{VmId: longID, HistoricalMetrics: window(1)}),
			code: codes.InvalidArgument, httpCode: 400, want: `vm_id: 20000 bytes ("vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"... (20000 bytes)), at most 256 (limits.max_id_bytes)`},
		{name: "long vm_id in a batch",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.PredictBandwidthBatch(ctx, longBatch)
				return err
			},
			path: "/api/v1/predict/batch", body: js(longBatch),
			code: codes.InvalidArgument, httpCode: 400, want: "vms[1].vm_id: 20000 bytes"},
		{name: "long node_id",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.OptimizePlacement(ctx, longNode)
				return err
			},
			path: "/api/v1/placement", body: js(longNode),
			code: codes.InvalidArgument, httpCode: 400, want: "available_nodes[2].node_id: 20000 bytes"},
		{name: "long workload_id",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.OptimizePlacement(ctx, longWorkload)
				return err
			},
			path: "/api/v1/placement", body: js(longWorkload),
			code: codes.InvalidArgument, httpCode: 400, want: "workload_id: 20000 bytes"},
		{name: "long model name",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.DetectAnomaly(ctx, longModel)
				return err
			},
			path: "/api/v1/anomaly", body: js(longModel),
			code: codes.InvalidArgument, httpCode: 400, want: "model: 20000 bytes"},
		{name: "long vm_id pushed",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.PushMetrics(ctx, longPush)
				return err
			},
			path: "/api/v1/metrics", body: js(longPush),
			code: codes.InvalidArgument, httpCode: 400, want: "samples[1].vm_id: 20000 bytes"},
		{name: "values beyond the window, refused while scanning",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: make([]float64, 5001)})
				return err
			},
			path: "/api/v1/predict", body: `{"vm_id":"v","historical_metrics":[` + strings.Repeat("1,", 5000) + `1]}`,
			code: codes.InvalidArgument, httpCode: 400, want: "historical_metrics: more than 60 values, the most this call takes (the window of the loaded forecast models)"},
		{name: "too many nodes, refused while scanning",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.OptimizePlacement(ctx, manyNodes)
				return err
			},
			path: "/api/v1/placement", body: `{"workload_id":"w","available_nodes":[` + strings.Repeat(`{"node_id":"n"},`, 1100) + `{"node_id":"n"}]}`,
			code: codes.InvalidArgument, httpCode: 400, want: "available_nodes: more than 1024 values"},
		{name: "a batch VM's window beyond 1024 values, refused while scanning",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.PredictBandwidthBatch(ctx, longWindowBatch)
				return err
			},
			path: "/api/v1/predict/batch", body: js(longWindowBatch),
			code: codes.InvalidArgument, httpCode: 400, want: "historical_metrics: more than 1024 values"},
		{name: "compressed body", path: "/api/v1/predict", encoding: "gzip", body: js(bandwidthReq(1)),
			httpCode: 415, want: `Content-Encoding: "gzip" is not supported; send the body uncompressed`},
		{name: "unknown model",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: window(1), Model: "nope"})
				return err
			},
			path: "/api/v1/predict", body: js(&aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: window(1), Model: "nope"}),
			code: codes.NotFound, httpCode: 404, want: `model: "nope" is not loaded (loaded: anomaly, bandwidth, placement)`},
		{name: "model of another task",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				r := anomalyReq(3)
				r.Model = "placement"
				_, err := c.DetectAnomaly(ctx, r)
				return err
			},
			path: "/api/v1/anomaly", body: `{"vm_id":"v","model":"placement","current_metrics":{"cpu":3}}`,
			code: codes.InvalidArgument, httpCode: 400, want: `model: "placement" is a placement model; DetectAnomaly needs a anomaly model`},
		{name: "empty node list",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.OptimizePlacement(ctx, &aipb.PlacementRequest{WorkloadId: "w"})
				return err
			},
			path: "/api/v1/placement", body: `{"workload_id":"w","available_nodes":[]}`,
			code: codes.InvalidArgument, httpCode: 400, want: "available_nodes: empty"},
		{name: "node without id",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.OptimizePlacement(ctx, noID)
				return err
			},
			path: "/api/v1/placement", body: js(noID),
			code: codes.InvalidArgument, httpCode: 400, want: "available_nodes[1].node_id: required"},
		{name: "NaN requirement",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				r := placementReq()
				r.Requirements["cpu"] = math.NaN()
				_, err := c.OptimizePlacement(ctx, r)
				return err
			},
			path: "/api/v1/placement", body: `{"requirements":{"cpu":"NaN"},"available_nodes":[{"node_id":"n","cpu_available":1}]}`,
			code: codes.InvalidArgument, httpCode: 400, want: `requirements["cpu"]: NaN is not a finite number`},
		{name: "empty batch",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.PredictBandwidthBatch(ctx, &aipb.BandwidthBatchRequest{})
				return err
			},
			path: "/api/v1/predict/batch", body: `{"vms":[]}`,
			code: codes.InvalidArgument, httpCode: 400, want: "vms: empty"},
		{name: "bad VM inside a batch",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.PredictBandwidthBatch(ctx, &aipb.BandwidthBatchRequest{Vms: []*aipb.BandwidthRequest{bandwidthReq(1), {VmId: "b", HistoricalMetrics: short}}})
				return err
			},
			path: "/api/v1/predict/batch", body: js(&aipb.BandwidthBatchRequest{Vms: []*aipb.BandwidthRequest{bandwidthReq(1), {VmId: "b", HistoricalMetrics: short}}}),
			code: codes.InvalidArgument, httpCode: 400, want: "vms[1].historical_metrics: got 59 values"},
		{name: "oversized message",
			grpc: func(ctx context.Context, c aipb.AIServiceClient) error {
				_, err := c.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: huge})
				return err
			},
			path: "/api/v1/predict", body: js(&aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: huge}),
			code: codes.ResourceExhausted, httpCode: 413, want: "larger than"},
		{name: "malformed JSON", path: "/api/v1/predict", body: `{"vm_id": "v", `,
			httpCode: 400, want: "body: not a valid BandwidthRequest JSON object"},
		{name: "unknown JSON field", path: "/api/v1/anomaly", body: `{"vm_id":"v","current_metrics":{"cpu_load":1}}`,
			httpCode: 400, want: `unknown field "cpu_load"`},
		{name: "wrong JSON type", path: "/api/v1/predict", body: `{"vm_id":"v","historical_metrics":"lots"}`,
			httpCode: 400, want: "body: not a valid BandwidthRequest JSON object"},
		{name: "wrong content type", path: "/api/v1/predict", ctype: "text/plain", body: js(bandwidthReq(1)),
			httpCode: 415, want: `Content-Type: "text/plain", want application/json`},
		{name: "empty body", path: "/api/v1/placement", body: "",
			httpCode: 400, want: "body: empty"},
	}
}

// TestBadInput: every bad input gets its code and a message naming the field, over both protocols,
// while good calls from other goroutines keep getting their own correct answers.
func TestBadInput(t *testing.T) {
	s := start(t, nil)
	ctx := context.Background()
	want, err := s.client.PredictBandwidth(ctx, bandwidthReq(3))
	if err != nil {
		t.Fatal(err)
	}
	// Good traffic alongside the bad, over both protocols, until the bad cases are done (bounded
	// by a count as well).
	goodBody, _ := protojson.Marshal(bandwidthReq(3))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var goodErrs sync.Map
	goodCalls := make([]int, 4)
	for g := range goodCalls {
		wg.Go(func() {
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				goodCalls[g]++
				if g%2 == 0 {
					got, err := s.client.PredictBandwidth(ctx, bandwidthReq(3))
					if err != nil || !near(got.Predictions, want.Predictions, 1e-6) {
						goodErrs.Store(fmt.Sprintf("grpc: %v %v", got, err), true)
					}
					continue
				}
				resp, err := http.Post(s.base+"/api/v1/predict", "application/json", bytes.NewReader(goodBody))
				if err != nil {
					goodErrs.Store(fmt.Sprintf("http: %v", err), true)
					continue
				}
				var got aipb.BandwidthResponse
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err := protojson.Unmarshal(b, &got); err != nil || resp.StatusCode != 200 || !near(got.Predictions, want.Predictions, 1e-6) {
					goodErrs.Store(fmt.Sprintf("http: %d %s", resp.StatusCode, b), true)
				}
			}
		})
	}
	for _, c := range badCases() {
		t.Run(c.name, func(t *testing.T) {
			if c.grpc != nil {
				err := c.grpc(ctx, s.client)
				st := status.Convert(err)
				if st.Code() != c.code || !strings.Contains(st.Message(), c.want) {
					t.Errorf("gRPC: got %v %q, want %v containing %q", st.Code(), st.Message(), c.code, c.want)
				}
			}
			if c.path != "" {
				ct := c.ctype
				if ct == "" {
					ct = "application/json"
				}
				code, body := s.postWith(t, c.path, ct, c.encoding, []byte(c.body))
				var eb struct {
					Error struct{ Code, Message string }
				}
				if err := json.Unmarshal(body, &eb); err != nil {
					t.Fatalf("HTTP error body %q: %v", body, err)
				}
				if code != c.httpCode || !strings.Contains(eb.Error.Message, c.want) {
					t.Errorf("HTTP: got %d %q, want %d containing %q", code, eb.Error.Message, c.httpCode, c.want)
				}
			}
		})
	}
	close(stop)
	wg.Wait()
	t.Logf("good calls alongside the bad ones: %v", goodCalls)
	goodErrs.Range(func(k, _ any) bool {
		t.Errorf("a good call was harmed: %v", k)
		return true
	})
	// And the sidecar still answers.
	if _, err := s.client.PredictBandwidth(ctx, bandwidthReq(3)); err != nil {
		t.Fatal(err)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	s := start(t, nil)
	hc := healthpb.NewHealthClient(s.conn)
	for _, svc := range []string{"", "novacron.ai.AIService", "model/bandwidth", "model/anomaly", "model/placement"} {
		r, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v %v", svc, r, err)
		}
	}
	if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "model/nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("health of an unknown service: %v, want NotFound", err)
	}
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": `"ready":true`, "/metrics": "sidecar_model_info{"} {
		resp, err := http.Get(s.base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d %.200s", path, resp.StatusCode, b)
		}
	}
}

// TestFingerprintMismatchRefused: a model trained with another spec does not load, and the error
// shows both fingerprints.
func TestFingerprintMismatchRefused(t *testing.T) {
	cfg, err := config.Load("", examples.FS)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen.GRPC, cfg.Listen.HTTP = "127.0.0.1:0", "127.0.0.1:0"
	dir := t.TempDir()
	spec, err := examples.FS.ReadFile("specs/anomaly.yaml")
	if err != nil {
		t.Fatal(err)
	}
	edited := bytes.Replace(spec, []byte("mean: 45, std: 25"), []byte("mean: 46, std: 25"), 1)
	if bytes.Equal(edited, spec) {
		t.Fatal("the test's edit did not apply to specs/anomaly.yaml")
	}
	path := dir + "/anomaly.yaml"
	if err := os.WriteFile(path, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Models[1].Spec = path
	_, err = app.Start(context.Background(), cfg, examples.FS, io.Discard)
	if err == nil {
		t.Fatal("a model with another spec's fingerprint loaded")
	}
	msg := err.Error()
	trained, _ := features.Parse(spec)
	configured, _ := features.Parse(edited)
	for _, want := range []string{"fingerprint mismatch", trained.Fingerprint(), configured.Fingerprint(), "models[1] anomaly"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not show %q", msg, want)
		}
	}
}

// TestCachedAnswerEqualsFresh: the second identical call is a cache hit and equals, exactly, the
// answer of a sidecar without a cache.
func TestCachedAnswerEqualsFresh(t *testing.T) {
	cached := start(t, nil)
	fresh := start(t, func(c *config.Config) { c.Cache.Disabled = true })
	ctx := context.Background()
	want, err := fresh.client.PredictBandwidth(ctx, bandwidthReq(9))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		got, err := cached.client.PredictBandwidth(ctx, bandwidthReq(9))
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
			t.Fatalf("call %d differs from the uncached answer:\n%s", i, d)
		}
	}
	m := scrape(t, cached.base)
	for _, want := range []string{"sidecar_cache_hits_total 2", "sidecar_cache_misses_total 1", "sidecar_cache_lookups_total 3", "sidecar_cache_fills_total 1"} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(scrape(t, fresh.base), "sidecar_cache_") {
		t.Error("a sidecar with the cache disabled exports cache metrics")
	}
}

// pushWindow sends window(seed)'s ten steps as samples one minute apart, the newest at end.
func pushSamples(vm string, seed int, end time.Time) []*aipb.MetricsSample {
	w := window(seed)
	var out []*aipb.MetricsSample
	for s := 0; s < 10; s++ {
		v := w[s*6 : s*6+6]
		out = append(out, &aipb.MetricsSample{VmId: vm, TimestampMs: end.Add(time.Duration(s-9) * time.Minute).UnixMilli(),
			Metrics: &aipb.VMMetrics{Cpu: v[0], Memory: v[1], DiskIo: v[2], NetworkIo: v[3], Latency: v[4], ErrorRate: v[5]}})
	}
	return out
}

// TestPushThenPredict: metrics pushed one by one (unary, streaming, HTTP) make the window a
// PredictBandwidth with no historical_metrics uses; its answer equals the call that sends the same
// window explicitly. A stale or unknown VM is refused with FAILED_PRECONDITION / 400.
func TestPushThenPredict(t *testing.T) {
	s := start(t, nil)
	ctx := context.Background()
	now := time.Now()
	want, err := s.client.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "vm-a", HistoricalMetrics: window(4), HorizonMinutes: 5})
	if err != nil {
		t.Fatal(err)
	}
	// Unary pushes, one sample per call.
	for _, smp := range pushSamples("vm-a", 4, now) {
		if r, err := s.client.PushMetrics(ctx, &aipb.PushMetricsRequest{Samples: []*aipb.MetricsSample{smp}}); err != nil || r.Accepted != 1 {
			t.Fatalf("push: %v %v", r, err)
		}
	}
	// A client stream for another VM.
	st, err := s.client.StreamMetrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, smp := range pushSamples("vm-b", 4, now) {
		if err := st.Send(&aipb.PushMetricsRequest{Samples: []*aipb.MetricsSample{smp}}); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := st.CloseAndRecv(); err != nil || r.Accepted != 10 {
		t.Fatalf("stream: %v %v", r, err)
	}
	// HTTP for a third.
	body, _ := protojson.Marshal(&aipb.PushMetricsRequest{Samples: pushSamples("vm-c", 4, now)})
	if code, out := s.post(t, "/api/v1/metrics", "application/json", body); code != 200 || !strings.Contains(string(out), `"accepted":"10"`) && !strings.Contains(string(out), `"accepted": "10"`) {
		t.Fatalf("HTTP push: %d %s", code, out)
	}
	for _, vm := range []string{"vm-a", "vm-b", "vm-c"} {
		got, err := s.client.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: vm, HorizonMinutes: 5})
		if err != nil {
			t.Fatalf("%s: %v", vm, err)
		}
		if !near(got.Predictions, want.Predictions, 1e-6) || got.Confidence != want.Confidence {
			t.Errorf("%s from pushed metrics: %v, want the explicit window's %v", vm, got, want)
		}
	}
	code, out := s.post(t, "/api/v1/predict", "application/json", []byte(`{"vm_id":"vm-c","horizon_minutes":5}`))
	var viaHTTP aipb.BandwidthResponse
	if err := protojson.Unmarshal(out, &viaHTTP); code != 200 || err != nil || !near(viaHTTP.Predictions, want.Predictions, 1e-6) {
		t.Errorf("HTTP predict from pushed metrics: %d %s", code, out)
	}
	// Stale and unknown.
	if _, err := s.client.PushMetrics(ctx, &aipb.PushMetricsRequest{Samples: pushSamples("vm-old", 4, now.Add(-10*time.Minute))}); err != nil {
		t.Fatal(err)
	}
	_, err = s.client.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "vm-old"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `vm "vm-old": newest metrics are 10m`) {
		t.Errorf("stale window: %v", err)
	}
	if code, out := s.post(t, "/api/v1/predict", "application/json", []byte(`{"vm_id":"vm-none"}`)); code != 400 || !strings.Contains(string(out), "FAILED_PRECONDITION") {
		t.Errorf("unknown VM over HTTP: %d %s", code, out)
	}
	// A bad sample is named.
	_, err = s.client.PushMetrics(ctx, &aipb.PushMetricsRequest{Samples: []*aipb.MetricsSample{{VmId: "v"}}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "samples[0].metrics: required") {
		t.Errorf("bad sample: %v", err)
	}
}
