package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/novacron/sidecar/backends/onnx"
	"github.com/novacron/sidecar/features"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// exampleModel is the example model of task (anomaly, placement) in ONNX Runtime, named name.
func exampleModel(t *testing.T, name, task string) *Model {
	t.Helper()
	rt, err := onnx.Open("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	sp := spec(t, task)
	sess, err := rt.LoadFile(name, "../examples/models/"+task+".onnx", onnx.Config{Fingerprint: sp.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	meta, err := sess.Metadata(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewModel(name, task, sp, sess, meta, Thresholds{0.5, 0.7, 0.85, 0.95})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// labelledService is a Service over the example anomaly and placement models (and more targets)
// whose clock reads *now (unix ns), served on loopback: gRPC (the returned client) and HTTP (the
// returned base URL).
func labelledService(t *testing.T, now *atomic.Int64, routes Routes, more ...Target) (*Service, aipb.AIServiceClient, string) {
	t.Helper()
	return labelledServiceConfig(t, Config{}, now, routes, more...)
}

// labelledServiceConfig is labelledService with cfg's Windows.
func labelledServiceConfig(t *testing.T, cfg Config, now *atomic.Int64, routes Routes, more ...Target) (*Service, aipb.AIServiceClient, string) {
	t.Helper()
	targets := append([]Target{exampleModel(t, "anomaly", TaskAnomaly), exampleModel(t, "placement", TaskPlacement)}, more...)
	if routes == nil {
		routes = Routes{RouteAnomaly: {Target: "anomaly"}, RoutePlacement: {Target: "placement"}}
	}
	svc, err := New(Config{Routes: routes, MaxPushSamples: 50, Windows: cfg.Windows, Now: func() time.Time { return time.Unix(0, now.Load()) }}, targets, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := NewGRPCServer(svc)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hs := httptest.NewServer(NewHTTPHandler(svc, HTTPOptions{}))
	t.Cleanup(hs.Close)
	return svc, aipb.NewAIServiceClient(conn), hs.URL
}

// postLabels sends req to POST /api/v1/labels and returns the status and the decoded answer (or
// the error body).
func postLabels(t *testing.T, base string, req *aipb.PushLabelsRequest) (int, *aipb.PushLabelsResponse, string) {
	t.Helper()
	body, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return postBody(t, base+"/api/v1/labels", body)
}

func postBody(t *testing.T, url string, body []byte) (int, *aipb.PushLabelsResponse, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := &aipb.PushLabelsResponse{}
	if resp.StatusCode == http.StatusOK {
		if err := protojson.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
	}
	return resp.StatusCode, out, string(b)
}

// anomalous are metrics the example anomaly model flags for even i (a CPU spike with errors and
// latency), and plausible ones for odd i.
func anomalous(i int) *aipb.VMMetrics {
	m := metricsAt(i)
	if i%2 == 0 {
		m.Cpu, m.Latency, m.ErrorRate = 99, 900+float64(i), 0.4
	}
	return m
}

// TestPushLabelsJoin: anomaly verdicts and placements answered over gRPC and HTTP, then labels
// pushed over gRPC and HTTP: the live accuracy the Service reports (what the exporter and the
// alerter read) equals the share of correct answers computed here from the same answers and
// labels. A label an hour (the window) before the answer, a second label of an answer, and a label
// of a VM never answered are accepted but not joined.
func TestPushLabelsJoin(t *testing.T) {
	var now atomic.Int64
	t0 := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	now.Store(t0.UnixNano())
	svc, client, base := labelledService(t, &now, nil)
	ctx := context.Background()

	const vms = 24
	verdict := map[string]bool{}
	flagged := 0
	for i := range vms {
		vm := fmt.Sprintf("vm-%d", i)
		resp, err := client.DetectAnomaly(ctx, &aipb.AnomalyRequest{VmId: vm, CurrentMetrics: anomalous(i)})
		if err != nil {
			t.Fatal(err)
		}
		verdict[vm] = resp.GetIsAnomaly()
		if resp.GetIsAnomaly() {
			flagged++
		}
	}
	if flagged == 0 || flagged == vms {
		t.Fatalf("%d of %d verdicts anomalous: the labels would test one class only", flagged, vms)
	}
	const workloads = 6
	best := map[string]string{}
	for w := range workloads {
		req := &aipb.PlacementRequest{WorkloadId: fmt.Sprintf("wl-%d", w), Requirements: map[string]float64{"cpu": float64(2 + w), "memory": 8},
			AvailableNodes: []*aipb.NodeInfo{{NodeId: "n-a", CpuAvailable: 4, MemoryAvailable: 16}, {NodeId: "n-b", CpuAvailable: 32, MemoryAvailable: 128}, {NodeId: "n-c", CpuAvailable: float64(4 * w), MemoryAvailable: 64}}}
		resp, err := client.OptimizePlacement(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		best[req.WorkloadId] = resp.GetCandidates()[0].GetNodeId()
	}

	now.Store(t0.Add(10 * time.Minute).UnixNano())
	// Anomaly labels: the truth is "anomalous" for every fourth VM; the first half over gRPC, the
	// rest over HTTP; a label timestamped a window before the answers joins nothing.
	correct := 0
	var overGRPC, overHTTP []*aipb.Label
	for i := range vms {
		vm := fmt.Sprintf("vm-%d", i)
		truth := i%4 == 0
		if truth == verdict[vm] {
			correct++
		}
		lb := &aipb.Label{VmId: vm, IsAnomaly: proto.Bool(truth)}
		if i%4 == 1 {
			lb.TimestampMs = t0.Add(time.Minute).UnixMilli()
		}
		if i < vms/2 {
			overGRPC = append(overGRPC, lb)
		} else {
			overHTTP = append(overHTTP, lb)
		}
	}
	if 2*correct == vms {
		t.Fatalf("%d of %d verdicts right: a tracker scoring every verdict the wrong way round would agree", correct, vms)
	}
	early := &aipb.Label{VmId: "vm-0", IsAnomaly: proto.Bool(true), TimestampMs: t0.Add(-time.Hour).UnixMilli()}
	never := &aipb.Label{VmId: "vm-never", IsAnomaly: proto.Bool(true)}
	r, err := client.PushLabels(ctx, &aipb.PushLabelsRequest{Labels: append([]*aipb.Label{early, never}, overGRPC...)})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetAccepted() != int64(len(overGRPC)+2) || r.GetJoined() != int64(len(overGRPC)) {
		t.Errorf("gRPC: %v; want %d accepted, %d joined", r, len(overGRPC)+2, len(overGRPC))
	}
	code, hr, body := postLabels(t, base, &aipb.PushLabelsRequest{Labels: overHTTP})
	if code != http.StatusOK || hr.GetAccepted() != int64(len(overHTTP)) || hr.GetJoined() != int64(len(overHTTP)) {
		t.Errorf("HTTP: %d %s; want %d accepted and joined", code, body, len(overHTTP))
	}
	// The same labels again: each answer is scored once.
	if r, err := client.PushLabels(ctx, &aipb.PushLabelsRequest{Labels: overGRPC}); err != nil || r.GetJoined() != 0 {
		t.Errorf("labels pushed again: %v, %v; want none joined", r, err)
	}

	// Placement labels: the model's best node for even workloads, another for odd ones.
	var pl []*aipb.Label
	pcorrect := 0
	for w := range workloads {
		id := fmt.Sprintf("wl-%d", w)
		node := best[id]
		if w%2 == 1 {
			node = map[string]string{"n-a": "n-b", "n-b": "n-c", "n-c": "n-a"}[node]
		}
		if node == best[id] {
			pcorrect++
		}
		lb := &aipb.Label{WorkloadId: id, NodeId: node}
		if w < workloads/2 {
			lb.Model = "placement" // the others go to every placement target: the one
		}
		pl = append(pl, lb)
	}
	code, hr, body = postLabels(t, base, &aipb.PushLabelsRequest{Labels: pl})
	if code != http.StatusOK || hr.GetJoined() != workloads {
		t.Errorf("placement labels: %d %s; want %d joined", code, body, workloads)
	}

	acc := svc.Accuracy()
	for _, c := range []struct {
		model          string
		correct, total int
	}{{"anomaly", correct, vms}, {"placement", pcorrect, workloads}} {
		src, ok := acc[c.model]
		if !ok {
			t.Fatalf("Accuracy() has no %s: %v", c.model, acc)
		}
		rep := src.Report()
		want := float64(c.correct) / float64(c.total)
		if rep.Points != int64(c.total) || rep.Forecasts != int64(c.total) || rep.Accuracy != want || !math.IsNaN(rep.MAE) {
			t.Errorf("%s: report %+v; want accuracy %d/%d = %v over %d labels, MAE NaN", c.model, rep, c.correct, c.total, want, c.total)
		}
	}
}

// TestPushLabelsRefusals: a bad label fails the whole call with INVALID_ARGUMENT (HTTP 400) naming
// its field, and scores nothing; an unknown model is NOT_FOUND (404); a model of the other task is
// INVALID_ARGUMENT; more labels than a push takes are refused.
func TestPushLabelsRefusals(t *testing.T) {
	var now atomic.Int64
	now0 := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	now.Store(now0.UnixNano())
	svc, client, base := labelledService(t, &now, nil)
	ctx := context.Background()
	if _, err := client.DetectAnomaly(ctx, &aipb.AnomalyRequest{VmId: "vm-1", CurrentMetrics: anomalous(1)}); err != nil {
		t.Fatal(err)
	}
	good := &aipb.Label{VmId: "vm-1", IsAnomaly: proto.Bool(false)}
	many := make([]*aipb.Label, 51)
	for i := range many {
		many[i] = good
	}
	for _, c := range []struct {
		name   string
		labels []*aipb.Label
		code   codes.Code
		want   string
	}{
		{"placement without node", []*aipb.Label{good, {WorkloadId: "wl-1"}}, codes.InvalidArgument, "labels[1].node_id: required with workload_id"},
		{"placement without workload", []*aipb.Label{{NodeId: "n-1"}}, codes.InvalidArgument, "labels[0].workload_id: required with node_id"},
		{"both kinds", []*aipb.Label{good, good, {VmId: "vm-1", WorkloadId: "wl-1", NodeId: "n"}}, codes.InvalidArgument, "labels[2].workload_id: not with vm_id"},
		{"vm and node", []*aipb.Label{{VmId: "vm-1", NodeId: "n"}}, codes.InvalidArgument, "labels[0].node_id: not with vm_id"},
		{"empty", []*aipb.Label{good, {}}, codes.InvalidArgument, "labels[1].vm_id: required"},
		{"is_anomaly alone", []*aipb.Label{{IsAnomaly: proto.Bool(true)}}, codes.InvalidArgument, "labels[0].vm_id: required"},
		{"vm without is_anomaly", []*aipb.Label{good, {VmId: "vm-1"}}, codes.InvalidArgument, "labels[1].is_anomaly: required with vm_id"},
		{"is_anomaly on a placement", []*aipb.Label{{WorkloadId: "w", NodeId: "n", IsAnomaly: proto.Bool(true)}}, codes.InvalidArgument, "labels[0].is_anomaly: not with workload_id"},
		{"is_anomaly false on a placement", []*aipb.Label{{WorkloadId: "w", NodeId: "n", IsAnomaly: proto.Bool(false)}}, codes.InvalidArgument, "labels[0].is_anomaly: not with workload_id"},
		{"negative time", []*aipb.Label{{VmId: "vm-1", IsAnomaly: proto.Bool(false), TimestampMs: -1}}, codes.InvalidArgument, "labels[0].timestamp_ms"},
		{"time past a step ahead", []*aipb.Label{good, {VmId: "vm-1", IsAnomaly: proto.Bool(false), TimestampMs: now0.Add(time.Minute + time.Millisecond).UnixMilli()}}, codes.InvalidArgument,
			"labels[1].timestamp_ms: " + fmt.Sprint(now0.Add(time.Minute+time.Millisecond).UnixMilli()) + " (2026-12-05T09:01:00.001Z) is more than a step (1m0s) ahead of the sidecar's clock 2026-12-05T09:00:00Z"},
		{"time in the year 18979", []*aipb.Label{{VmId: "vm-1", IsAnomaly: proto.Bool(false), TimestampMs: time.Date(18979, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()}}, codes.InvalidArgument, "(18979-01-01T00:00:00Z) is more than a step"},
		{"time past 2262", []*aipb.Label{{WorkloadId: "w", NodeId: "n", TimestampMs: time.Date(2263, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()}}, codes.InvalidArgument, "labels[0].timestamp_ms"},
		{"largest time", []*aipb.Label{{VmId: "vm-1", IsAnomaly: proto.Bool(true), TimestampMs: math.MaxInt64}}, codes.InvalidArgument, "is more than a step (1m0s) ahead"},
		{"long id", []*aipb.Label{{VmId: strings.Repeat("v", 300), IsAnomaly: proto.Bool(false)}}, codes.InvalidArgument, "labels[0].vm_id: 300 bytes"},
		{"unknown model", []*aipb.Label{good, {VmId: "vm-1", IsAnomaly: proto.Bool(false), Model: "nope"}}, codes.NotFound, `labels[1].model: "nope" is not loaded`},
		{"model of the other task", []*aipb.Label{{VmId: "vm-1", IsAnomaly: proto.Bool(false), Model: "placement"}}, codes.InvalidArgument, `labels[0].model: "placement" is a placement model; a label with vm_id scores anomaly models`},
		// Over the limit: refused by the handler, or (a bounded codec) before decoding the rest.
		{"too many", many, codes.InvalidArgument, "(limits.max_push_samples)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := &aipb.PushLabelsRequest{Labels: c.labels}
			_, err := client.PushLabels(ctx, req)
			if status.Code(err) != c.code || !strings.Contains(status.Convert(err).Message(), c.want) {
				t.Errorf("gRPC: %v; want %v naming %q", err, c.code, c.want)
			}
			wantHTTP := http.StatusBadRequest
			if c.code == codes.NotFound {
				wantHTTP = http.StatusNotFound
			}
			code, _, body := postLabels(t, base, req)
			var eb errorBody
			if err := json.Unmarshal([]byte(body), &eb); err != nil || code != wantHTTP || !strings.Contains(eb.Error.Message, c.want) {
				t.Errorf("HTTP: %d %s; want %d naming %q", code, body, wantHTTP, c.want)
			}
		})
	}
	if r := svc.Accuracy()["anomaly"].Report(); r.Points != 0 {
		t.Errorf("a refused call scored %d labels", r.Points)
	}
	if code, r, body := postLabels(t, base, &aipb.PushLabelsRequest{Labels: []*aipb.Label{good}}); code != http.StatusOK || r.GetJoined() != 1 {
		t.Errorf("the good label after the refusals: %d %s; want it joined", code, body)
	}
	// The HTTP route decodes strictly, as the other /api/v1 routes do.
	if code, _, body := postBody(t, base+"/api/v1/labels", []byte(`{"labels":[{"vm_id":"vm-1","truth":1}]}`)); code != http.StatusBadRequest || !strings.Contains(body, "truth") {
		t.Errorf("an unknown field: %d %s; want 400 naming it", code, body)
	}
	// Over HTTP, is_anomaly given as false is a "normal" label; absent, it is refused.
	if code, _, body := postBody(t, base+"/api/v1/labels", []byte(`{"labels":[{"vm_id":"vm-1"}]}`)); code != http.StatusBadRequest || !strings.Contains(body, "labels[0].is_anomaly: required with vm_id") {
		t.Errorf("no is_anomaly over HTTP: %d %s; want 400 naming it", code, body)
	}
	if code, r, body := postBody(t, base+"/api/v1/labels", []byte(`{"labels":[{"vm_id":"vm-1","is_anomaly":false}]}`)); code != http.StatusOK || r.GetAccepted() != 1 {
		t.Errorf("is_anomaly false over HTTP: %d %s; want it accepted", code, body)
	}
	// A step ahead of the clock, not more, is taken (a client's clock a little ahead).
	if r, err := client.PushLabels(ctx, &aipb.PushLabelsRequest{Labels: []*aipb.Label{{VmId: "vm-1", IsAnomaly: proto.Bool(false), TimestampMs: now0.Add(time.Minute).UnixMilli()}}}); err != nil || r.GetAccepted() != 1 {
		t.Errorf("a label a step ahead: %v, %v; want it accepted", r, err)
	}
}

// verdictForwarder is a legacy service whose every anomaly verdict is "anomalous" and whose
// placements rank the nodes last first.
type verdictForwarder struct{ fakeForwarder }

func (verdictForwarder) DetectAnomaly(context.Context, *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error) {
	return &aipb.AnomalyResponse{IsAnomaly: true, Score: 0.9, AnomalyType: "spike", Severity: "high"}, nil
}

func (verdictForwarder) OptimizePlacement(_ context.Context, req *aipb.PlacementRequest) (*aipb.PlacementResponse, error) {
	nodes := req.GetAvailableNodes()
	out := &aipb.PlacementResponse{OverallConfidence: 0.5}
	for i := range nodes {
		out.Candidates = append(out.Candidates, &aipb.PlacementCandidate{NodeId: nodes[len(nodes)-1-i].GetNodeId(), Score: 1 / float64(i+1)})
	}
	return out, nil
}

// shadowSeen is a RouteObserver that reports each shadowed call's outcome.
type shadowSeen struct{ ch chan *ShadowOutcome }

func (shadowSeen) Served(string, string, time.Duration, error) {}
func (s shadowSeen) Shadowed(o *ShadowOutcome)                 { s.ch <- o }
func (shadowSeen) ShadowDropped(string, string, string)        {}

// TestLabelsScoreEveryTarget: a label without a model scores the answers of every anomaly target
// that answered for the VM (the primary and its legacy shadow, against the same truth); one that
// names a model scores that model's only; a legacy placement's best node is its answer's first;
// a reload that keeps the spec keeps the scores.
func TestLabelsScoreEveryTarget(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC).UnixNano())
	legacy, err := NewLegacy("legacy", TaskAnomaly, spec(t, "anomaly"), verdictForwarder{})
	if err != nil {
		t.Fatal(err)
	}
	seen := shadowSeen{make(chan *ShadowOutcome, 8)}
	routes := Routes{RouteAnomaly: {Target: "anomaly", Shadow: []Arm{{Target: "legacy", Percent: 100}}}}
	var svc *Service
	{
		targets := []Target{exampleModel(t, "anomaly", TaskAnomaly), exampleModel(t, "placement", TaskPlacement), legacy}
		svc, err = New(Config{Routes: routes, Routing: seen, Now: func() time.Time { return time.Unix(0, now.Load()) }}, targets, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(svc.Close)
	}
	ctx := context.Background()
	for _, vm := range []string{"vm-0", "vm-1"} { // vm-0 anomalous, vm-1 not, for the model
		resp, err := svc.DetectAnomaly(ctx, &aipb.AnomalyRequest{VmId: vm, CurrentMetrics: anomalous(map[string]int{"vm-0": 0, "vm-1": 1}[vm])})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetIsAnomaly() != (vm == "vm-0") {
			t.Fatalf("%s: the model answered %v", vm, resp)
		}
		if o := <-seen.ch; o.Shadow != "legacy" || o.Err != nil {
			t.Fatalf("shadow outcome %+v", o)
		}
	}
	// The truth: both normal. The model is right for vm-1, the legacy shadow for neither.
	normal := proto.Bool(false)
	r, err := svc.PushLabels(ctx, &aipb.PushLabelsRequest{Labels: []*aipb.Label{{VmId: "vm-0", IsAnomaly: normal}, {VmId: "vm-1", IsAnomaly: normal, Model: "legacy"}}})
	if err != nil || r.GetJoined() != 2 {
		t.Fatalf("%v, %v; want 2 joined", r, err)
	}
	check := func(when string) {
		t.Helper()
		acc := svc.Accuracy()
		if a := acc["anomaly"].Report(); a.Points != 1 || a.Accuracy != 0 {
			t.Errorf("%s: model: %+v; want the one label of vm-0, wrong", when, a)
		}
		if l := acc["legacy"].Report(); l.Points != 2 || l.Accuracy != 0 {
			t.Errorf("%s: legacy: %+v; want both labels, both wrong", when, l)
		}
	}
	check("pushed")

	// A legacy placement target, named by the call: its first candidate is what it answered.
	legacyPlace, err := NewLegacy("legacy-place", TaskPlacement, spec(t, "placement"), verdictForwarder{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Swap([]Target{exampleModel(t, "anomaly", TaskAnomaly), exampleModel(t, "placement", TaskPlacement), legacy, legacyPlace}, routes); err != nil {
		t.Fatal(err)
	}
	nodes := []*aipb.NodeInfo{{NodeId: "n-1", CpuAvailable: 8, MemoryAvailable: 32}, {NodeId: "n-2", CpuAvailable: 8, MemoryAvailable: 32}}
	for _, w := range []string{"wl-1", "wl-2"} {
		if _, err := svc.OptimizePlacement(ctx, &aipb.PlacementRequest{WorkloadId: w, AvailableNodes: nodes, Model: "legacy-place"}); err != nil {
			t.Fatal(err)
		}
	}
	r, err = svc.PushLabels(ctx, &aipb.PushLabelsRequest{Labels: []*aipb.Label{{WorkloadId: "wl-1", NodeId: "n-2"}, {WorkloadId: "wl-2", NodeId: "n-1"}}})
	if err != nil || r.GetJoined() != 2 {
		t.Fatalf("placement labels: %v, %v; want 2 joined", r, err)
	}
	if p := svc.Accuracy()["legacy-place"].Report(); p.Points != 2 || p.Accuracy != 0.5 {
		t.Errorf("legacy placement: %+v; want n-2 (its first candidate) right for wl-1 only", p)
	}
	if p := svc.Accuracy()["placement"].Report(); p.Points != 0 {
		t.Errorf("the placement model, never asked, scored %+v", p)
	}
	// A reload with new targets of the same names and specs keeps the trackers and what they hold:
	// vm-1's answer of the model is still there to score.
	legacy2, err := NewLegacy("legacy", TaskAnomaly, spec(t, "anomaly"), verdictForwarder{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Swap([]Target{exampleModel(t, "anomaly", TaskAnomaly), exampleModel(t, "placement", TaskPlacement), legacy2, legacyPlace}, routes); err != nil {
		t.Fatal(err)
	}
	check("after a reload")
	if r, err := svc.PushLabels(ctx, &aipb.PushLabelsRequest{Labels: []*aipb.Label{{VmId: "vm-1", IsAnomaly: normal, Model: "anomaly"}}}); err != nil || r.GetJoined() != 1 {
		t.Fatalf("after a reload: %v, %v; want vm-1's answer joined", r, err)
	}
	if a := svc.Accuracy()["anomaly"].Report(); a.Points != 2 || a.Accuracy != 0.5 {
		t.Errorf("model after a reload: %+v; want 1 of 2 right", a)
	}
}

// TestPushLabelsNearestAnswer: a label scores the answer nearest to its time. The operator labels
// an incident at noon, the time of the spike's metrics: it scores the verdict on the spike,
// answered at 12:00:05, not the one on the metrics before it, answered at 11:59:05. A label
// stamped in milliseconds right after an answer (T+0.9 ms, sent as T) scores that answer (made at
// T+0.4 ms), not the one before it.
func TestPushLabelsNearestAnswer(t *testing.T) {
	var now atomic.Int64
	noon := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	now.Store(noon.UnixNano())
	svc, client, base := labelledService(t, &now, nil)
	ctx := context.Background()
	detect := func(at time.Time, vm string, i int, want bool) {
		t.Helper()
		now.Store(at.UnixNano())
		resp, err := client.DetectAnomaly(ctx, &aipb.AnomalyRequest{VmId: vm, CurrentMetrics: anomalous(i)})
		if err != nil || resp.GetIsAnomaly() != want {
			t.Fatalf("%s at %v: %v, %v; want is_anomaly %v", vm, at, resp, err, want)
		}
	}
	detect(noon.Add(-55*time.Second), "vm-1", 1, false) // before the spike
	detect(noon.Add(5*time.Second), "vm-1", 0, true)    // the spike
	now.Store(noon.Add(10 * time.Minute).UnixNano())
	r, err := client.PushLabels(ctx, &aipb.PushLabelsRequest{Labels: []*aipb.Label{{VmId: "vm-1", IsAnomaly: proto.Bool(true), TimestampMs: noon.UnixMilli()}}})
	if err != nil || r.GetJoined() != 1 {
		t.Fatalf("the incident's label: %v, %v; want it joined", r, err)
	}
	if a := svc.Accuracy()["anomaly"].Report(); a.Points != 1 || a.Accuracy != 1 {
		t.Errorf("report %+v; want the one label right (it scored the 11:59:05 verdict?)", a)
	}

	T := noon.Add(20 * time.Minute)
	detect(T.Add(-10*time.Second), "vm-2", 3, false)
	detect(T.Add(400*time.Microsecond), "vm-2", 2, true)
	now.Store(T.Add(time.Millisecond).UnixNano())
	ms := T.Add(900 * time.Microsecond).UnixMilli() // the client's stamp, truncated to T
	code, hr, body := postLabels(t, base, &aipb.PushLabelsRequest{Labels: []*aipb.Label{{VmId: "vm-2", IsAnomaly: proto.Bool(true), TimestampMs: ms}}})
	if code != http.StatusOK || hr.GetJoined() != 1 {
		t.Fatalf("the label right after the answer: %d %s; want it joined", code, body)
	}
	if a := svc.Accuracy()["anomaly"].Report(); a.Points != 2 || a.Accuracy != 1 {
		t.Errorf("report %+v; want both labels right (it scored the verdict 10 s before?)", a)
	}
	// A label with no time, right after: the newest answer, scored already: a duplicate.
	if r, err := client.PushLabels(ctx, &aipb.PushLabelsRequest{Labels: []*aipb.Label{{VmId: "vm-2", IsAnomaly: proto.Bool(false)}}}); err != nil || r.GetJoined() != 0 {
		t.Errorf("a second label of the newest answer: %v, %v; want none joined", r, err)
	}
}

// TestPushLabelsWindowsStep: the label trackers count the rolling window in steps of
// windows.step, as the forecast trackers do, and a label may be up to that step ahead of the
// clock.
func TestPushLabelsWindowsStep(t *testing.T) {
	var now atomic.Int64
	t0 := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	now.Store(t0.UnixNano())
	cfg := Config{Windows: features.WindowConfig{Step: 10 * time.Minute}}
	svc, client, _ := labelledServiceConfig(t, cfg, &now, nil)
	ctx := context.Background()
	now.Store(t0.Add(9 * time.Minute).UnixNano())
	if _, err := client.DetectAnomaly(ctx, &aipb.AnomalyRequest{VmId: "vm-1", CurrentMetrics: anomalous(1)}); err != nil {
		t.Fatal(err)
	}
	// 5 minutes ahead: within a step of 10.
	ahead := t0.Add(14 * time.Minute).UnixMilli()
	if r, err := client.PushLabels(ctx, &aipb.PushLabelsRequest{Labels: []*aipb.Label{{VmId: "vm-1", IsAnomaly: proto.Bool(false), TimestampMs: ahead}}}); err != nil || r.GetJoined() != 1 {
		t.Fatalf("a label 5 min ahead with 10 min steps: %v, %v; want it joined", r, err)
	}
	_, err := client.PushLabels(ctx, &aipb.PushLabelsRequest{Labels: []*aipb.Label{{VmId: "vm-1", IsAnomaly: proto.Bool(false), TimestampMs: t0.Add(19*time.Minute + time.Millisecond).UnixMilli()}}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "is more than a step (10m0s) ahead") {
		t.Errorf("a label past a step of 10 min ahead: %v; want INVALID_ARGUMENT", err)
	}
	// Scored in the first step, [0, 10m): it leaves the hour's window at 60m, a whole step at once
	// (with steps of a minute it would stay until 69m).
	now.Store(t0.Add(59*time.Minute + 59*time.Second).UnixNano())
	if a := svc.Accuracy()["anomaly"].Report(); a.Points != 1 {
		t.Errorf("at 59m59s: %+v; want the label", a)
	}
	now.Store(t0.Add(60 * time.Minute).UnixNano())
	if a := svc.Accuracy()["anomaly"].Report(); a.Points != 0 || a.Forecasts != 0 {
		t.Errorf("at 60m: %+v; want the first 10 min step out of the window", a)
	}
}
