package app_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/examples"
	"github.com/novacron/sidecar/internal/app"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// bigPlacement is a placement call with n distinct nodes; seed varies their capacities.
func bigPlacement(n, seed int) *aipb.PlacementRequest {
	req := &aipb.PlacementRequest{WorkloadId: fmt.Sprintf("wl-%d", seed), Requirements: map[string]float64{"cpu": 4, "memory": 16}}
	for i := 0; i < n; i++ {
		req.AvailableNodes = append(req.AvailableNodes, &aipb.NodeInfo{NodeId: fmt.Sprintf("n-%d", i),
			CpuAvailable: 1 + float64((i*7+seed)%64) + float64(i)/1024, MemoryAvailable: float64(2 + (i*13+seed*3)%256)})
	}
	return req
}

// TestLargePlacementCallsUnderDefaultConfig: placement calls of limits.max_nodes (1024) nodes, five
// model rows each (5120 rows, more than the default queue of 4096), are all answered over both
// protocols, whether none, some or all of their rows are cached.
func TestLargePlacementCallsUnderDefaultConfig(t *testing.T) {
	s := start(t, func(c *config.Config) { c.Limits.MaxMessageBytes = 4 << 20 })
	ctx := context.Background()
	// Some nodes of seed 1 cached first, as in the report (205 of 1024).
	if _, err := s.client.OptimizePlacement(ctx, bigPlacement(205, 1)); err != nil {
		t.Fatal(err)
	}
	for round, seed := range []int{1, 2, 1, 3, 2} {
		req := bigPlacement(1024, seed)
		got, err := s.client.OptimizePlacement(ctx, req)
		if err != nil {
			t.Fatalf("round %d (seed %d) over gRPC: %v", round, seed, err)
		}
		if len(got.Candidates) != 1024 {
			t.Fatalf("round %d: %d candidates, want 1024", round, len(got.Candidates))
		}
		body, _ := protojson.Marshal(bigPlacement(1024, seed+10))
		if code, b := s.post(t, "/api/v1/placement", "application/json", body); code != 200 {
			t.Fatalf("round %d over HTTP: %d %s", round, code, b)
		}
	}
}

// patchWeights changes an ONNX model's weights without touching its metadata: every value of its
// smallest float initializer (a bias, in the example models) moves by delta. The file keeps its
// length; the model's declared version and fingerprint stay as they were.
func patchWeights(t *testing.T, model []byte, delta float32) []byte {
	t.Helper()
	out := append([]byte(nil), model...)
	// ModelProto.graph is field 7; GraphProto.initializer field 5; TensorProto.raw_data field 9.
	graph, goff := field(t, out, 0, len(out), 7)
	var best, bestLen = -1, math.MaxInt
	for off := graph; off < goff; {
		num, typ, n := protowire.ConsumeTag(out[off:goff])
		if n < 0 {
			t.Fatal("bad graph")
		}
		off += n
		if typ != protowire.BytesType {
			off += protowire.ConsumeFieldValue(num, typ, out[off:goff])
			continue
		}
		v, m := protowire.ConsumeBytes(out[off:goff])
		start := off + m - len(v)
		if num == 5 {
			if raw, end := fieldOpt(out, start, start+len(v), 9); raw >= 0 && end-raw < bestLen && end-raw >= 4 {
				best, bestLen = raw, end-raw
			}
		}
		off += m
	}
	if best < 0 {
		t.Fatal("no initializer with raw_data")
	}
	for i := best; i+4 <= best+bestLen; i += 4 {
		f := math.Float32frombits(binary.LittleEndian.Uint32(out[i:]))
		binary.LittleEndian.PutUint32(out[i:], math.Float32bits(f+delta))
	}
	return out
}

// field finds the bytes of the first length-delimited field num in b[from:to].
func field(t *testing.T, b []byte, from, to int, num protowire.Number) (int, int) {
	t.Helper()
	s, e := fieldOpt(b, from, to, num)
	if s < 0 {
		t.Fatalf("field %d not found", num)
	}
	return s, e
}

func fieldOpt(b []byte, from, to int, num protowire.Number) (int, int) {
	for off := from; off < to; {
		n, typ, k := protowire.ConsumeTag(b[off:to])
		if k < 0 {
			return -1, -1
		}
		off += k
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b[off:to])
			if m < 0 {
				return -1, -1
			}
			if n == num {
				return off + m - len(v), off + m
			}
			off += m
			continue
		}
		m := protowire.ConsumeFieldValue(n, typ, b[off:to])
		if m < 0 {
			return -1, -1
		}
		off += m
	}
	return -1, -1
}

// TestReloadServesTheNewWeights: a model file replaced by a retrained one that declares the same
// version (as a retrain with the same spec and release did before versions carried the weights'
// digest) is reloaded; an input answered and cached before gets the new model's answer at once.
func TestReloadServesTheNewWeights(t *testing.T) {
	dir := t.TempDir()
	orig, err := fs.ReadFile(examples.FS, "models/placement.onnx")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "placement.onnx")
	if err := os.WriteFile(path, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	s := start(t, func(c *config.Config) { c.Models[2].Path = path })
	ctx := context.Background()
	req := placementReq()
	before, err := s.client.OptimizePlacement(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.OptimizePlacement(ctx, req); err != nil { // now cached
		t.Fatal(err)
	}
	patched := patchWeights(t, orig, -0.75)
	if err := os.WriteFile(path, patched, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := reloadConfig(t, s, func(c *config.Config) { c.Models[2].Path = path })
	if err := s.app.Reload(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	after, err := s.client.OptimizePlacement(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if after.ModelVersion != before.ModelVersion {
		t.Fatalf("the patched model declares %q, the original %q: the test needs the same version", after.ModelVersion, before.ModelVersion)
	}
	// The new model's own answer, uncached, from a sidecar started on it.
	fresh := start(t, func(c *config.Config) { c.Models[2].Path = path; c.Cache.Disabled = true })
	want, err := fresh.client.OptimizePlacement(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if want.Candidates[0].Score == before.Candidates[0].Score {
		t.Fatalf("patching the weights did not change the score (%v): the test proves nothing", want.Candidates[0].Score)
	}
	if after.Candidates[0].Score != want.Candidates[0].Score || after.Candidates[0].NodeId != want.Candidates[0].NodeId {
		t.Errorf("after the reload: best %s %.6f, the new model answers %s %.6f (the old one answered %s %.6f)",
			after.Candidates[0].NodeId, after.Candidates[0].Score, want.Candidates[0].NodeId, want.Candidates[0].Score,
			before.Candidates[0].NodeId, before.Candidates[0].Score)
	}
}

// heapSampler records the peak of the heap's object bytes until stopped.
type heapSampler struct {
	stop chan struct{}
	done chan uint64
}

func sampleHeap() *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan uint64, 1)}
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	go func() {
		// A measurement, not a wait: the heap is read every 100µs until stopped (runtime/metrics
		// keeps no peak of its own).
		tick := time.NewTicker(100 * time.Microsecond)
		defer tick.Stop()
		var peak uint64
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-h.stop:
				h.done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) peak() uint64 { close(h.stop); return <-h.done }

func heapNow() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestOversizedBodiesMemory: 40 concurrent 4 MB /api/v1/predict bodies of 2 million values each
// (within limits.max_message_bytes) are each refused, 400 naming the field or 429 with a retry
// hint when the bodies in flight hold limits.max_inflight_bytes, and the sidecar's heap stays
// within a bound: a body is scanned, not decoded, past the window's 60 values.
func TestOversizedBodiesMemory(t *testing.T) {
	s := start(t, func(c *config.Config) { c.Limits.MaxMessageBytes = 4 << 20 })
	body := []byte(`{"vm_id":"v","historical_metrics":[` + strings.Repeat("1,", 2_000_000-1) + `1]}`)
	if len(body) > 4<<20 {
		t.Fatalf("body of %d bytes is above the limit", len(body))
	}
	base := heapNow()
	h := sampleHeap()
	codes := make([]int, 40)
	msgs := make([]string, 40)
	var wg sync.WaitGroup
	for i := range codes {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", s.base+"/api/v1/predict", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				msgs[i] = err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			codes[i], msgs[i] = resp.StatusCode, string(b)
			if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
				msgs[i] += " (no Retry-After)"
			}
		})
	}
	wg.Wait()
	peak := h.peak()
	counts := map[int]int{}
	for i, c := range codes {
		counts[c]++
		switch {
		case c == 400 && strings.Contains(msgs[i], "historical_metrics: more than 60 values"):
		case c == 429 && strings.Contains(msgs[i], "limits.max_inflight_bytes") && !strings.Contains(msgs[i], "no Retry-After"):
		default:
			t.Errorf("call %d: %d %.300s", i, c, msgs[i])
		}
	}
	growth := int64(peak) - int64(base)
	t.Logf("40 bodies of %d bytes: %v; heap %d MB before, peak %d MB (+%d MB)", len(body), counts, base>>20, peak>>20, growth>>20)
	// 64 MiB of bodies in flight at most, with the garbage of the ones done before the next GC.
	if growth > 256<<20 {
		t.Errorf("the heap grew by %d MB serving 40 refused bodies; want under 256 MB", growth>>20)
	}
	if counts[400] == 0 {
		t.Errorf("no body was refused for its length: %v", counts)
	}
}

// TestOversizedMessagesMemoryGRPC is the gRPC side of TestOversizedBodiesMemory: 40 concurrent
// PredictBandwidth messages of 4 MB (500000 values) are refused, naming the field, without being
// decoded: the heap holds the messages as grpc-go read them (each whole, limits.max_message_bytes
// at most) and little more. Decoding them took about 11 MB each.
func TestOversizedMessagesMemoryGRPC(t *testing.T) {
	s := start(t, func(c *config.Config) { c.Limits.MaxMessageBytes = 4 << 20 })
	// One encoded message, sent as is by every call (a client codec that does not copy it), so
	// that the heap measured is the server's, as with the one HTTP body above.
	wire, err := proto.Marshal(&aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: make([]float64, 500_000)})
	if err != nil {
		t.Fatal(err)
	}
	base := heapNow()
	h := sampleHeap()
	errs := make([]error, 40)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			errs[i] = s.conn.Invoke(context.Background(), "/novacron.ai.AIService/PredictBandwidth", wire, &aipb.BandwidthResponse{},
				grpc.ForceCodecV2(encodedCodec{}))
		})
	}
	wg.Wait()
	peak := h.peak()
	for i, err := range errs {
		if st := status.Convert(err); st.Code() != grpccodes.InvalidArgument || !strings.Contains(st.Message(), "historical_metrics: more than 60 values") {
			t.Errorf("call %d: %v", i, err)
		}
	}
	growth := int64(peak) - int64(base)
	t.Logf("40 messages of %d bytes: heap %d MB before, peak %d MB (+%d MB)", len(wire), base>>20, peak>>20, growth>>20)
	// The 160 MB of messages as grpc-go read them, and garbage: decoding them too took about
	// 460 MB with the client's copies (about 300 MB the server's own).
	if growth > 256<<20 {
		t.Errorf("the heap grew by %d MB serving 40 refused messages; want under 256 MB", growth>>20)
	}
}

// encodedCodec sends a request already encoded ([]byte) as it is, and decodes answers as protobuf.
type encodedCodec struct{}

func (encodedCodec) Name() string { return "proto" }
func (encodedCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (encodedCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

// TestHTTPGuard: the Host header must name an IP address, localhost or an allowed host; unknown
// paths and methods get the JSON error body; a POST needs a JSON content type on every route.
func TestHTTPGuard(t *testing.T) {
	s := start(t, func(c *config.Config) { c.Listen.AllowedHosts = []string{"sidecar.node.internal"} })
	body, _ := protojson.Marshal(bandwidthReq(1))
	do := func(method, path, host, ctype string, body []byte) (int, http.Header, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(method, s.base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, &m); err != nil {
			t.Errorf("%s %s: body %q is not JSON", method, path, b)
		}
		return resp.StatusCode, resp.Header, m
	}
	errOf := func(m map[string]any) (string, string) {
		e, _ := m["error"].(map[string]any)
		c, _ := e["code"].(string)
		msg, _ := e["message"].(string)
		return c, msg
	}
	for _, c := range []struct {
		host string
		ok   bool
	}{{"localhost:8080", true}, {"127.0.0.1", true}, {"[::1]:8080", true}, {"10.1.2.3:8080", true},
		{"sidecar.node.internal:8080", true}, {"evil.example:8080", false}, {"localhost.evil.example", false}} {
		code, _, m := do("POST", "/api/v1/predict", c.host, "application/json", body)
		if c.ok && code != 200 {
			t.Errorf("Host %q: %d %v, want 200", c.host, code, m)
		}
		if !c.ok {
			if cd, msg := errOf(m); code != 403 || cd != "PERMISSION_DENIED" || !strings.Contains(msg, "listen.allowed_hosts") {
				t.Errorf("Host %q: %d %s %q, want 403 PERMISSION_DENIED naming listen.allowed_hosts", c.host, code, cd, msg)
			}
		}
	}
	// A browser's simple request: text/plain, or no type at all, on every POST route.
	for _, path := range []string{"/api/v1/predict", "/api/v1/metrics", "/v2/models/placement/infer"} {
		for _, ct := range []string{"text/plain", ""} {
			code, _, m := do("POST", path, "", ct, body)
			if code != 415 {
				t.Errorf("POST %s with Content-Type %q: %d %v, want 415", path, ct, code, m)
			}
		}
	}
	code, _, m := do("POST", "/api/v1/predict", "", "text/plain", body)
	if cd, _ := errOf(m); code != 415 || cd != "UNSUPPORTED_MEDIA_TYPE" {
		t.Errorf("415 body code %q, want UNSUPPORTED_MEDIA_TYPE", cd)
	}
	code, _, m = do("GET", "/api/v1/nothing", "", "", nil)
	if cd, msg := errOf(m); code != 404 || cd != "NOT_FOUND" || !strings.Contains(msg, "/api/v1/nothing") {
		t.Errorf("unknown path: %d %s %q, want 404 NOT_FOUND naming the path", code, cd, msg)
	}
	code, h, m := do("GET", "/api/v1/predict", "", "", nil)
	if cd, msg := errOf(m); code != 405 || cd != "METHOD_NOT_ALLOWED" || h.Get("Allow") == "" || !strings.Contains(msg, "POST") {
		t.Errorf("GET on a POST route: %d %s %q Allow %q, want 405 METHOD_NOT_ALLOWED naming POST", code, cd, msg, h.Get("Allow"))
	}
}

// TestStreamMetricsCountedAndDrained: StreamMetrics is counted in sidecar_requests_total, and an
// open stream at shutdown is answered at once with the count it stored instead of being cut.
func TestStreamMetricsCountedAndDrained(t *testing.T) {
	s := start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	end := time.Now().Truncate(time.Minute)
	st, err := s.client.StreamMetrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&aipb.PushMetricsRequest{Samples: pushSamples("vm-s", 1, end)}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	if m := scrape(t, s.base); !strings.Contains(m, `sidecar_requests_total{code="OK",method="StreamMetrics",protocol="grpc"} 1`) {
		t.Errorf("StreamMetrics is not counted in sidecar_requests_total:\n%s", grepLines(m, "sidecar_requests_total"))
	}

	// A stream left open through a shutdown.
	open, err := s.client.StreamMetrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	samples := pushSamples("vm-d", 2, end)
	if err := open.Send(&aipb.PushMetricsRequest{Samples: samples[len(samples)-4:]}); err != nil {
		t.Fatal(err)
	}
	// The samples are stored once the window shows them (the server reads them in its own time);
	// bounded by ctx.
	for {
		_, err := s.client.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "vm-d"})
		if err != nil && strings.Contains(err.Error(), "4 of the last") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the 4 samples sent on the stream were never stored: %v", err)
		}
	}
	// The stream stays open (no CloseSend) through the shutdown: the drain must end it. Without
	// the drain, GracefulStop waits for it until the deadline and Shutdown reports calls cut.
	sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	if err := s.app.Shutdown(sctx); err != nil {
		t.Errorf("shutdown with a StreamMetrics stream open: %v", err)
	}
	resp, err := open.CloseAndRecv()
	if err != nil {
		t.Fatalf("the open stream at shutdown: %v, want its count", err)
	}
	if resp.Accepted != 4 {
		t.Errorf("the open stream at shutdown answered %d stored, want 4", resp.Accepted)
	}
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestIdleConnectionsClosed: a client connection that carries no call for
// listen.max_connection_idle is closed by the sidecar, over both protocols.
func TestIdleConnectionsClosed(t *testing.T) {
	s := start(t, func(c *config.Config) { c.Listen.MaxConnectionIdle = 300 * time.Millisecond })
	// gRPC: a client's connection goes from READY to another state when the server sends its
	// GOAWAY; bounded by a 10 s wait that only a connection never closed reaches.
	cc, err := grpc.NewClient(s.app.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc.Connect()
	for st := cc.GetState(); st != connectivity.Ready; st = cc.GetState() {
		if !cc.WaitForStateChange(ctx, st) {
			t.Fatalf("gRPC connection never ready: %v", st)
		}
	}
	if !cc.WaitForStateChange(ctx, connectivity.Ready) {
		t.Errorf("gRPC: an idle connection was still open after 10s (max_connection_idle 300ms)")
	}
	// HTTP: a keep-alive connection after one call.
	conn, err := net.Dial("tcp", s.app.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(io.Discard, conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("HTTP: an idle keep-alive connection was still open after 10s (max_connection_idle 300ms)")
	}
}

// TestWarnsBeyondLoopback: a data port bound beyond loopback is warned about at start; a
// loopback one is not. (Nothing is sent to the wider address.)
func TestWarnsBeyondLoopback(t *testing.T) {
	for _, c := range []struct {
		http string
		warn bool
	}{{"127.0.0.1:0", false}, {"0.0.0.0:0", true}} {
		cfg, err := config.Load("", examples.FS)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Listen.GRPC, cfg.Listen.HTTP = "127.0.0.1:0", c.http
		var log strings.Builder
		a, err := app.Start(context.Background(), cfg, examples.FS, &log)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := a.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		cancel()
		if got := strings.Contains(log.String(), "WARNING: listen.http"); got != c.warn {
			t.Errorf("listen.http %s: warned %v, want %v; log:\n%s", c.http, got, c.warn, log.String())
		}
	}
}

// TestPushSampleBound: a push of more samples than limits.max_push_samples is refused whole,
// naming the bound, over both protocols and on a StreamMetrics stream; one at the bound is stored.
func TestPushSampleBound(t *testing.T) {
	s := start(t, func(c *config.Config) { c.Limits.MaxPushSamples = 100 })
	ctx := context.Background()
	samples := func(n int) *aipb.PushMetricsRequest {
		r := &aipb.PushMetricsRequest{}
		for i := range n {
			r.Samples = append(r.Samples, &aipb.MetricsSample{VmId: fmt.Sprintf("vm-%d", i), Metrics: anomalyReq(50).CurrentMetrics})
		}
		return r
	}
	// Over 4 KiB, the message is refused by its wire form, before it is decoded.
	const want = "samples: more than 100 values, the most this call takes (limits.max_push_samples)"
	if resp, err := s.client.PushMetrics(ctx, samples(100)); err != nil || resp.Accepted != 100 {
		t.Fatalf("100 samples: %v %v", resp, err)
	}
	_, err := s.client.PushMetrics(ctx, samples(101))
	if st := status.Convert(err); st.Code() != grpccodes.InvalidArgument || !strings.Contains(st.Message(), want) {
		t.Errorf("gRPC: %v, want InvalidArgument %q", err, want)
	}
	body, _ := protojson.Marshal(samples(101))
	if code, b := s.post(t, "/api/v1/metrics", "application/json", body); code != 400 || !strings.Contains(string(b), "samples: more than 100 values") {
		t.Errorf("HTTP: %d %s, want 400 naming samples", code, b)
	}
	st, err := s.client.StreamMetrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(samples(101))
	if _, err := st.CloseAndRecv(); !strings.Contains(status.Convert(err).Message(), "samples: ") || status.Code(err) != grpccodes.InvalidArgument {
		t.Errorf("StreamMetrics: %v, want InvalidArgument naming samples", err)
	}
}

// TestHealthWatchEndsAtDrain: an open grpc.health.v1 Watch stream (client-side health checking)
// ends when the sidecar drains, so that the shutdown does not wait for it until its deadline.
func TestHealthWatchEndsAtDrain(t *testing.T) {
	s := start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := healthpb.NewHealthClient(s.conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: "novacron.ai.AIService"})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := w.Recv(); err != nil || first.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first Watch answer: %v %v", first, err)
	}
	sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	if err := s.app.Shutdown(sctx); err != nil {
		t.Errorf("shutdown with a health Watch open: %v", err)
	}
	for {
		if _, err := w.Recv(); err != nil {
			break // the stream ended
		}
	}
}

// TestConcurrentCallBound: beyond limits.max_concurrent_calls gRPC calls in flight, a new call is
// refused at once with RESOURCE_EXHAUSTED and a RetryInfo hint, before its message is read; health
// checks still answer; a call that ends frees its place.
func TestConcurrentCallBound(t *testing.T) {
	s := start(t, func(c *config.Config) { c.Limits.MaxConcurrentCalls = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var open []aipb.AIService_StreamMetricsClient
	for range 2 {
		st, err := s.client.StreamMetrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&aipb.PushMetricsRequest{}); err != nil {
			t.Fatal(err)
		}
		open = append(open, st)
	}
	// The two streams are in flight once the server has seen them: wait for the refusal (bounded).
	var err error
	for ctx.Err() == nil {
		if _, err = s.client.PredictBandwidth(ctx, bandwidthReq(1)); status.Code(err) == grpccodes.ResourceExhausted {
			break
		}
	}
	st := status.Convert(err)
	if st.Code() != grpccodes.ResourceExhausted || !strings.Contains(st.Message(), "limits.max_concurrent_calls") {
		t.Fatalf("a third call: %v, want RESOURCE_EXHAUSTED naming limits.max_concurrent_calls", err)
	}
	hasRetry := false
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			hasRetry = true
		}
	}
	if !hasRetry {
		t.Errorf("the refusal carries no RetryInfo: %v", st.Details())
	}
	if h, err := healthpb.NewHealthClient(s.conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health check at the bound: %v %v", h, err)
	}
	if _, err := open[0].CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	for ctx.Err() == nil {
		if _, err = s.client.PredictBandwidth(ctx, bandwidthReq(1)); err == nil {
			break
		}
	}
	if err != nil {
		t.Errorf("after a call ended, a new one: %v", err)
	}
	open[1].CloseAndRecv()
}
