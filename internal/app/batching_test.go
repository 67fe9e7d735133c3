package app_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/novacron/sidecar/config"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// randomWindow is a distinct, plausible window: each input differs from every other.
func randomWindow(rng *rand.Rand) []float64 {
	w := make([]float64, 60)
	base := 50 + rng.Float64()*700
	for s := 0; s < 10; s++ {
		w[s*6+0] = rng.Float64() * 100
		w[s*6+1] = 20 + rng.Float64()*70
		w[s*6+2] = rng.Float64() * 150
		w[s*6+3] = base * (0.8 + 0.4*rng.Float64())
		w[s*6+4] = 1 + rng.Float64()*40
		w[s*6+5] = rng.Float64() * 0.05
	}
	return w
}

// mismatches compares answers with the single-row reference answers, input by input.
func mismatches(got, want []*aipb.BandwidthResponse, tol float64) []string {
	var bad []string
	for i := range want {
		if got[i] == nil || got[i].VmId != want[i].VmId || !near(got[i].Predictions, want[i].Predictions, tol) ||
			math.Abs(got[i].Confidence-want[i].Confidence) > tol {
			bad = append(bad, fmt.Sprintf("input %d: got %v, want %v", i, got[i], want[i]))
		}
	}
	return bad
}

// TestBatchedAnswersMatchSingleRowRuns: thousands of distinct random inputs from many goroutines
// at once, over gRPC and HTTP, through a sidecar whose batcher waits to fill batches; every answer
// must equal (1e-5) the answer of a sidecar that runs each input alone.
func TestBatchedAnswersMatchSingleRowRuns(t *testing.T) {
	batched := start(t, func(c *config.Config) {
		c.Models[0].Batching.MaxQueueDelay = 500 * time.Microsecond
		c.Models[0].Batching.MaxBatchSize = 32
	})
	single := start(t, func(c *config.Config) { c.Models[0].Batching.Disabled = true })

	const n, callers = 3000, 48
	rng := rand.New(rand.NewPCG(7, 11))
	reqs := make([]*aipb.BandwidthRequest, n)
	for i := range reqs {
		reqs[i] = &aipb.BandwidthRequest{VmId: fmt.Sprintf("vm-%d", i), HistoricalMetrics: randomWindow(rng), HorizonMinutes: int32(1 + i%10)}
	}
	want := make([]*aipb.BandwidthResponse, n)
	for i, r := range reqs {
		var err error
		if want[i], err = single.client.PredictBandwidth(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]*aipb.BandwidthResponse, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for c := 0; c < callers; c++ {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if i%2 == 0 {
					resp, err := batched.client.PredictBandwidth(context.Background(), reqs[i])
					if err != nil {
						errs <- err
						return
					}
					got[i] = resp
					continue
				}
				body, _ := protojson.Marshal(reqs[i])
				resp, err := http.Post(batched.base+"/api/v1/predict", "application/json", bytes.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var out aipb.BandwidthResponse
				if err := protojson.Unmarshal(b, &out); err != nil || resp.StatusCode != 200 {
					errs <- fmt.Errorf("http %d %s", resp.StatusCode, b)
					return
				}
				got[i] = &out
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, m := range mismatches(got, want, 1e-5) {
		t.Error(m)
	}
	// Batches really formed: the histogram of rows per batch has batches above one row.
	metrics := scrape(t, batched.base)
	if !strings.Contains(metrics, `sidecar_backend_batch_rows_bucket{model="bandwidth",le="1"}`) {
		t.Fatal("no batch size histogram")
	}
	if count, ones := histCount(metrics, "bandwidth", "+Inf"), histCount(metrics, "bandwidth", "1"); count >= float64(n) || ones == count {
		t.Errorf("%v batches for %d calls (%v of one row): the batcher did not batch", count, n, ones)
	}

	// The check catches a mix-up: swap two answers and it must report both.
	mixed := append([]*aipb.BandwidthResponse(nil), got...)
	mixed[10], mixed[11] = &aipb.BandwidthResponse{VmId: got[10].VmId, Predictions: got[11].Predictions, Confidence: got[11].Confidence}, got[10]
	if bad := mismatches(mixed, want, 1e-5); len(bad) != 2 {
		t.Errorf("a deliberate mix-up of two answers gave %d mismatches, want 2", len(bad))
	}
}

func scrape(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// histCount reads sidecar_backend_batch_rows_bucket{model, le} from a scrape.
func histCount(metrics, model, le string) float64 {
	prefix := fmt.Sprintf(`sidecar_backend_batch_rows_bucket{model="%s",le="%s"} `, model, le)
	for _, line := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return -1
}

// TestOverload: far more concurrent callers than a small queue holds. The excess is refused at
// once with RESOURCE_EXHAUSTED and a retry hint (429 and Retry-After over HTTP), the queue never
// holds more than its bound, and every accepted call is answered correctly.
func TestOverload(t *testing.T) {
	s := start(t, func(c *config.Config) {
		c.Models[0].Batching.MaxBatchSize = 8
		c.Models[0].Batching.MaxQueueSize = 16
		c.Cache.Disabled = true // every call the same input: the cache would answer them all
	})
	ref, err := s.client.PredictBandwidth(context.Background(), bandwidthReq(5))
	if err != nil {
		t.Fatal(err)
	}
	var ok, refused, httpRefused atomic.Int64
	var wg sync.WaitGroup
	var bad sync.Map
	body, _ := protojson.Marshal(bandwidthReq(5))
	for c := 0; c < 160; c++ { // ten times the queue
		wg.Go(func() {
			for i := 0; i < 15; i++ {
				if c%4 == 3 {
					resp, err := http.Post(s.base+"/api/v1/predict", "application/json", bytes.NewReader(body))
					if err != nil {
						bad.Store(err.Error(), true)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					switch resp.StatusCode {
					case 200:
						ok.Add(1)
					case 429:
						if resp.Header.Get("Retry-After") == "" {
							bad.Store("429 without Retry-After", true)
						}
						httpRefused.Add(1)
					default:
						bad.Store(fmt.Sprint("http status ", resp.StatusCode), true)
					}
					continue
				}
				resp, err := s.client.PredictBandwidth(context.Background(), bandwidthReq(5))
				switch {
				case err == nil:
					if !near(resp.Predictions, ref.Predictions, 1e-5) {
						bad.Store(fmt.Sprint("wrong answer ", resp), true)
					}
					ok.Add(1)
				case status.Code(err) == codes.ResourceExhausted:
					hint := false
					for _, d := range status.Convert(err).Details() {
						if ri, isRI := d.(*errdetails.RetryInfo); isRI && ri.RetryDelay.AsDuration() > 0 {
							hint = true
						}
					}
					if !hint {
						bad.Store("RESOURCE_EXHAUSTED without RetryInfo: "+err.Error(), true)
					}
					refused.Add(1)
				default:
					bad.Store(err.Error(), true)
				}
			}
		})
	}
	done := make(chan struct{})
	maxQueued := 0
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			m := scrape(t, s.base)
			for _, line := range strings.Split(m, "\n") {
				if v, found := strings.CutPrefix(line, `sidecar_batch_queue_rows{model="bandwidth"} `); found {
					var q float64
					fmt.Sscan(v, &q)
					maxQueued = max(maxQueued, int(q))
				}
			}
		}
	})
	wg.Wait()
	close(done)
	sampler.Wait()
	bad.Range(func(k, _ any) bool { t.Error(k); return true })
	t.Logf("answered %d, refused %d over gRPC and %d over HTTP, deepest queue seen %d rows", ok.Load(), refused.Load(), httpRefused.Load(), maxQueued)
	if refused.Load() == 0 || ok.Load() == 0 {
		t.Errorf("answered %d, refused %d: overload was not shed, or nothing was served", ok.Load(), refused.Load())
	}
	if maxQueued > 16 {
		t.Errorf("the queue held %d rows, above its bound of 16", maxQueued)
	}
	if !strings.Contains(scrape(t, s.base), `sidecar_batch_rejections_total{model="bandwidth",reason="queue_full"}`) {
		t.Error("no rejection metric")
	}
}

// TestLargePlacementCallIsSplitAndReassembled: 40 nodes are 200 rows (each node and its 4
// reasoning rows), more than a batch of 64: the call spans batches and comes back whole, equal to
// the answer without batching.
func TestLargePlacementCallIsSplitAndReassembled(t *testing.T) {
	batched := start(t, nil)
	single := start(t, func(c *config.Config) { c.Models[2].Batching.Disabled = true })
	req := &aipb.PlacementRequest{WorkloadId: "big", Requirements: map[string]float64{"cpu": 6, "memory": 24}}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 40; i++ {
		req.AvailableNodes = append(req.AvailableNodes, &aipb.NodeInfo{NodeId: fmt.Sprintf("n%02d", i), CpuAvailable: rng.Float64() * 64, MemoryAvailable: rng.Float64() * 256})
	}
	got, err := batched.client.OptimizePlacement(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	want, err := single.client.OptimizePlacement(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Candidates) != 40 {
		t.Fatalf("%d candidates", len(got.Candidates))
	}
	for i := range want.Candidates {
		g, w := got.Candidates[i], want.Candidates[i]
		if g.NodeId != w.NodeId || math.Abs(g.Score-w.Score) > 1e-5 {
			t.Errorf("candidate %d: got %v, want %v", i, g, w)
		}
	}
	if c := histCount(scrape(t, batched.base), "placement", "64"); c < 3 {
		t.Errorf("%v placement batches of at most 64 rows: the 200 rows were not split", c)
	}
}
