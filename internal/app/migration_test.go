package app_test

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/examples"
	"github.com/novacron/sidecar/internal/app"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
	"github.com/novacron/sidecar/proxy"
	"github.com/novacron/sidecar/proxy/migrate"
)

// startYAML starts a sidecar from a YAML config; it shuts down at the test's end.
func startYAML(t *testing.T, name, yaml string) (*app.App, aipb.AIServiceClient) {
	t.Helper()
	cfg, err := config.Parse(name, []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.Start(context.Background(), cfg, examples.FS, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(a.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return a, aipb.NewAIServiceClient(conn)
}

// shadowCalls sums sidecar_shadow_calls_total by result.
func shadowCalls(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "sidecar_shadow_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// TestMigrationHTTPToGRPC: the seed's migration, over real transports. A route served by the
// legacy service's HTTP/JSON arm moves to its gRPC arm (here both are a second sidecar, which
// serves the seed's routes over both protocols) through every stage to done: every answer a
// caller gets is the service's own, the arms agree on every compared call, and a restarted
// sidecar resumes the migration where it was (done: the gRPC arm alone).
func TestMigrationHTTPToGRPC(t *testing.T) {
	up := start(t, nil)
	state := filepath.Join(t.TempDir(), "state.json")
	yaml := fmt.Sprintf(`listen: {grpc: 127.0.0.1:0, http: "off"}
cache: {disabled: true}
models:
  - {name: bandwidth-http, task: forecast, spec: embedded:specs/bandwidth.yaml, backend: {kind: legacy_http, endpoints: ["http://%s"]}}
  - {name: bandwidth-grpc, task: forecast, spec: embedded:specs/bandwidth.yaml, backend: {kind: legacy_grpc, endpoints: [%s]}}
routes:
  predict_bandwidth: bandwidth-http
migrations:
  - name: http-to-grpc
    route: predict_bandwidth
    to: bandwidth-grpc
    stages:
      - {shadow: 100, min_duration: 1ms, min_calls: 40}
      - {split: 50, shadow: 100, min_duration: 1ms, min_calls: 40}
      - {split: 100, shadow: 100, min_duration: 1ms, min_calls: 40}
    gates: {max_disagreement: 0.1, max_p99_delta: 1s}
state_file: %s
`, up.app.HTTPAddr, up.app.GRPCAddr, state)
	a, client := startYAML(t, "migration.yaml", yaml)
	ctx := context.Background()
	ctrl := a.Migrations()
	seen := map[int]bool{}
	for round := 0; round < 200; round++ {
		st, err := ctrl.StatusOf("http-to-grpc")
		if err != nil {
			t.Fatal(err)
		}
		if st.State == migrate.StateDone {
			break
		}
		if st.State != migrate.StateRunning {
			t.Fatalf("round %d: %s: %s", round, st.State, st.Verdict)
		}
		seen[st.Stage] = true
		for i := range 10 {
			req := bandwidthReq(round*10 + i)
			got, err := client.PredictBandwidth(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			want, err := up.client.PredictBandwidth(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("vm %s: answered %v, the service says %v", req.VmId, got, want)
			}
		}
		ctrl.Tick()
	}
	st, _ := ctrl.StatusOf("http-to-grpc")
	if st.State != migrate.StateDone || len(seen) != 3 {
		t.Fatalf("after the rounds: %s at stage %d, stages seen %v: %s", st.State, st.Stage, seen, st.Verdict)
	}
	if r := a.Service.Routes()[proxy.RouteBandwidth]; r.Target != "bandwidth-grpc" || len(r.Split)+len(r.Shadow) != 0 {
		t.Errorf("done: route %+v, want bandwidth-grpc alone", r)
	}
	calls := shadowCalls(t, a.Registry)
	if calls["agree"] < 120 || calls["disagree"]+calls["error"]+calls["timeout"] != 0 {
		t.Errorf("shadowed calls by result: %v; want every one agreeing", calls)
	}

	// A restart resumes where the migration was.
	b, _ := startYAML(t, "migration.yaml", yaml)
	if st, _ := b.Migrations().StatusOf("http-to-grpc"); st.State != migrate.StateDone {
		t.Errorf("restarted: %s at stage %d, want done", st.State, st.Stage)
	}
	if r := b.Service.Routes()[proxy.RouteBandwidth]; r.Target != "bandwidth-grpc" {
		t.Errorf("restarted: route %+v, want bandwidth-grpc", r)
	}
}

// TestMigrationRollsBackADifferentCandidate: a candidate anomaly model that answers differently
// (the same network with lower thresholds: other verdicts for the same scores) is rolled back to
// the baseline alone within its stage's minimum calls, and the report says why, with an example.
func TestMigrationRollsBackADifferentCandidate(t *testing.T) {
	yaml := fmt.Sprintf(`listen: {grpc: 127.0.0.1:0, http: "off"}
cache: {disabled: true}
models:
  - {name: anomaly, task: anomaly, path: embedded:models/anomaly.onnx, spec: embedded:specs/anomaly.yaml}
  - name: anomaly-strict
    task: anomaly
    path: embedded:models/anomaly.onnx
    spec: embedded:specs/anomaly.yaml
    anomaly: {threshold: 0.05, medium: 0.1, high: 0.15, critical: 0.2}
routes:
  detect_anomaly: anomaly
migrations:
  - name: strict
    route: detect_anomaly
    to: anomaly-strict
    stages: [{shadow: 100, min_duration: 1ms, min_calls: 300}]
state_file: %s
`, filepath.Join(t.TempDir(), "state.json"))
	a, client := startYAML(t, "strict.yaml", yaml)
	ctx := context.Background()
	// The comparisons run on the shadow workers, after each call: the loop calls on (bounded)
	// until one of them has rolled the migration back.
	calls := 0
	for ; calls < 3000; calls++ {
		st, _ := a.Migrations().StatusOf("strict")
		if st.State != migrate.StateRunning {
			break
		}
		if _, err := client.DetectAnomaly(ctx, anomalyReq(60+float64(calls%40))); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := a.Migrations().StatusOf("strict")
	if st.State != migrate.StateRolledBack || st.Stage != -1 {
		t.Fatalf("after %d calls: %s at stage %d: %s", calls, st.State, st.Stage, st.Verdict)
	}
	var disagreed, compared int
	if _, err := fmt.Sscanf(st.Last.Reason, "disagreement: %d of %d compared calls", &disagreed, &compared); err != nil || compared >= 300 || !strings.Contains(st.Last.Reason, "e.g.") {
		t.Errorf("reason %q; want the disagreement, found within the stage's 300 calls, with an example", st.Last.Reason)
	}
	if r := a.Service.Routes()[proxy.RouteAnomaly]; r.Target != "anomaly" || len(r.Split)+len(r.Shadow) != 0 {
		t.Errorf("rolled back: route %+v, want the baseline alone", r)
	}
	t.Logf("rolled back after %d calls: %s", calls, st.Last.Reason)
}
