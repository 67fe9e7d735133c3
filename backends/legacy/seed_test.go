package legacy

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// The seed server's heuristic (examples/legacy/seed_server.py, its module doc), computed again in
// Go, so that every answer of the real upstream can be checked row by row.

var seedFeatures = []string{"cpu", "memory", "disk_io", "network_io", "latency", "error_rate"}

const seedModelVersion = "legacy-heuristic-1"

// seedForecast is PredictBandwidth's answer to req.
func seedForecast(req *aipb.BandwidthRequest) *aipb.BandwidthResponse {
	var s []float64
	for i := 3; i < len(req.HistoricalMetrics); i += len(seedFeatures) {
		s = append(s, req.HistoricalMetrics[i])
	}
	n := len(s)
	level := s[0]
	for _, x := range s[1:] {
		level = float64(0.5*x) + float64(0.5*level)
	}
	trend := 0.0
	if n > 1 {
		trend = (s[n-1] - s[0]) / float64(n-1)
	}
	h := int(req.HorizonMinutes)
	if h == 0 {
		h = 10
	}
	p := make([]float64, h)
	for k := range p {
		p[k] = max(0, level+float64(trend*float64(k+1)))
	}
	mean, variance := 0.0, 0.0
	for _, x := range s {
		mean += x
	}
	mean /= float64(n)
	for _, x := range s {
		variance += float64((x - mean) * (x - mean))
	}
	variance /= float64(n)
	return &aipb.BandwidthResponse{
		Predictions:  p,
		Confidence:   1 / (1 + math.Sqrt(variance)/(math.Abs(mean)+1)),
		ModelVersion: seedModelVersion,
	}
}

// seedAnomaly is DetectAnomaly's answer to req.
func seedAnomaly(req *aipb.AnomalyRequest) *aipb.AnomalyResponse {
	m := req.CurrentMetrics
	type base struct{ mu, sigma float64 }
	values := []float64{m.Cpu, m.Memory, m.DiskIo, m.NetworkIo, m.Latency, m.ErrorRate}
	baseline := []base{{0.5, 0.2}, {0.6, 0.2}, {100, 50}, {100, 50}, {20, 10}, {0.01, 0.01}}
	best, bestZ := 0, 0.0
	for i, v := range values {
		z := (v - baseline[i].mu) / baseline[i].sigma
		if i == 0 || math.Abs(z) > math.Abs(bestZ) {
			best, bestZ = i, z
		}
	}
	z := math.Abs(bestZ)
	r := &aipb.AnomalyResponse{Score: z / (z + 3), IsAnomaly: z >= 3, AnomalyType: "none"}
	if r.IsAnomaly {
		r.AnomalyType = seedFeatures[best] + map[bool]string{true: "_high", false: "_low"}[bestZ > 0]
	}
	switch {
	case z < 2:
		r.Severity = "none"
	case z < 3:
		r.Severity = "low"
	case z < 4.5:
		r.Severity = "medium"
	case z < 6:
		r.Severity = "high"
	default:
		r.Severity = "critical"
	}
	return r
}

// seedPlacement is OptimizePlacement's answer to req (reasoning left empty: not compared).
func seedPlacement(req *aipb.PlacementRequest) *aipb.PlacementResponse {
	needCPU, needMem := req.Requirements["cpu"], req.Requirements["memory"]
	r := &aipb.PlacementResponse{}
	for _, n := range req.AvailableNodes {
		cpu, mem := n.CpuAvailable, n.MemoryAvailable
		if cpu <= 0 || mem <= 0 || cpu < needCPU || mem < needMem {
			continue
		}
		score := float64(0.5*(1-needCPU/cpu)) + float64(0.5*(1-needMem/mem))
		r.Candidates = append(r.Candidates, &aipb.PlacementCandidate{NodeId: n.NodeId, Score: score})
	}
	slices.SortStableFunc(r.Candidates, func(a, b *aipb.PlacementCandidate) int {
		if c := cmp.Compare(b.Score, a.Score); c != 0 {
			return c
		}
		return strings.Compare(a.NodeId, b.NodeId)
	})
	if len(r.Candidates) > 0 {
		r.OverallConfidence = r.Candidates[0].Score
	}
	return r
}

// Requests whose answers all differ, so that a row given to the wrong request is seen.

// bandwidthRequests makes n requests for distinct VMs with distinct windows (1 to 6 steps) and
// horizons (1 to 7 minutes).
func bandwidthRequests(n int) []*aipb.BandwidthRequest {
	reqs := make([]*aipb.BandwidthRequest, n)
	for k := range reqs {
		steps := 1 + k%6
		var w []float64
		for s := range steps {
			f := float64(k)
			w = append(w, 0.1+0.01*f, 0.5, 10*f, 100+7*f+float64(s*(k%5))-float64(s*s), 5, 0.001)
		}
		reqs[k] = &aipb.BandwidthRequest{VmId: fmt.Sprintf("vm-%03d", k), HistoricalMetrics: w, HorizonMinutes: int32(1 + k%7)}
	}
	return reqs
}

func anomalyRequests() []*aipb.AnomalyRequest {
	ms := []*aipb.VMMetrics{
		{Cpu: 0.5, Memory: 0.6, DiskIo: 100, NetworkIo: 100, Latency: 20, ErrorRate: 0.01}, // all at baseline
		{Cpu: 0.95, Memory: 0.6, DiskIo: 100, NetworkIo: 100, Latency: 20, ErrorRate: 0.01},
		{Cpu: 0.5, Memory: 0.6, DiskIo: 100, NetworkIo: 100, Latency: 90, ErrorRate: 0.01},
		{Cpu: 0.5, Memory: 0.6, DiskIo: 100, NetworkIo: -200, Latency: 20, ErrorRate: 0.01},
		{Cpu: 0.6, Memory: 0.7, DiskIo: 160, NetworkIo: 40, Latency: 35, ErrorRate: 0.04},
		{Cpu: 0.1, Memory: 0.1, DiskIo: 1000, NetworkIo: 100, Latency: 20, ErrorRate: 0.5},
	}
	reqs := make([]*aipb.AnomalyRequest, len(ms))
	for i, m := range ms {
		reqs[i] = &aipb.AnomalyRequest{VmId: fmt.Sprintf("vm-%d", i), CurrentMetrics: m}
	}
	return reqs
}

func placementRequest() *aipb.PlacementRequest {
	return &aipb.PlacementRequest{
		WorkloadId:   "wl-1",
		Requirements: map[string]float64{"cpu": 2, "memory": 4},
		AvailableNodes: []*aipb.NodeInfo{
			{NodeId: "node-a", CpuAvailable: 8, MemoryAvailable: 16},
			{NodeId: "node-b", CpuAvailable: 1, MemoryAvailable: 64}, // too little cpu
			{NodeId: "node-c", CpuAvailable: 4, MemoryAvailable: 32},
			{NodeId: "node-d", CpuAvailable: 16, MemoryAvailable: 8},
			{NodeId: "node-e", CpuAvailable: 4, MemoryAvailable: 32}, // ties node-c
		},
	}
}

// Comparisons.

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*max(1, math.Abs(b)) }

func diffForecast(got, want *aipb.BandwidthResponse) string {
	if len(got.Predictions) != len(want.Predictions) {
		return fmt.Sprintf("%d predictions, want %d", len(got.Predictions), len(want.Predictions))
	}
	for i := range got.Predictions {
		if !near(got.Predictions[i], want.Predictions[i]) {
			return fmt.Sprintf("predictions %v, want %v", got.Predictions, want.Predictions)
		}
	}
	if !near(got.Confidence, want.Confidence) {
		return fmt.Sprintf("confidence %v, want %v", got.Confidence, want.Confidence)
	}
	if got.ModelVersion != want.ModelVersion {
		return fmt.Sprintf("model_version %q, want %q", got.ModelVersion, want.ModelVersion)
	}
	return ""
}

func diffAnomaly(got, want *aipb.AnomalyResponse) string {
	if !near(got.Score, want.Score) || got.IsAnomaly != want.IsAnomaly || got.AnomalyType != want.AnomalyType || got.Severity != want.Severity {
		return fmt.Sprintf("got {%v %v %q %q}, want {%v %v %q %q}", got.Score, got.IsAnomaly, got.AnomalyType, got.Severity,
			want.Score, want.IsAnomaly, want.AnomalyType, want.Severity)
	}
	return ""
}

func diffPlacement(got, want *aipb.PlacementResponse) string {
	s := func(r *aipb.PlacementResponse) string {
		var b strings.Builder
		for _, c := range r.Candidates {
			fmt.Fprintf(&b, "%s=%.12g ", c.NodeId, c.Score)
		}
		return fmt.Sprintf("%sconfidence=%.12g", b.String(), r.OverallConfidence)
	}
	if s(got) != s(want) {
		return fmt.Sprintf("got %s, want %s", s(got), s(want))
	}
	return ""
}

// The seed server as a subprocess.

// seedPython is Debian's interpreter, which has python3-grpcio; the python3 first on PATH may not.
const seedPython = "/usr/bin/python3"

// startSeedServer runs examples/legacy/seed_server.py with args on a free loopback port and returns
// its address. The server stops when the test ends (its stdin closes; killed after 5s), and also
// if the test binary dies.
func startSeedServer(t *testing.T, args ...string) string {
	t.Helper()
	return runSeedServer(t, []string{"listening on "}, args...)[0]
}

// runSeedServer runs examples/legacy/seed_server.py with --port 0 and args, as startSeedServer
// does, and returns what follows prefixes[i] on its stdout line i, for each of the first
// len(prefixes) lines (the addresses it listens on).
func runSeedServer(t *testing.T, prefixes []string, args ...string) []string {
	t.Helper()
	if out, err := exec.Command(seedPython, "-c", "import grpc, google.protobuf").CombinedOutput(); err != nil {
		t.Fatalf("%s cannot import grpc and google.protobuf (%v: %s)\nrun scripts/ensure-python-grpc.sh (as root it installs Debian's python3-grpcio)",
			seedPython, err, bytes.TrimSpace(out))
	}
	cmd := exec.Command(seedPython, append([]string{"../../examples/legacy/seed_server.py", "--port", "0"}, args...)...)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1") // no __pycache__ in the source tree
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = stdoutW
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the seed server: %v", err)
	}
	stdoutW.Close() // the child holds its own copy; EOF comes when it exits
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		stdin.Close() // seed_server.py stops when its stdin closes
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			t.Errorf("seed server %v did not stop within 5s of its stdin closing; killing it", args)
			cmd.Process.Kill()
			<-exited
		}
		stdoutR.Close()
		if t.Failed() {
			t.Logf("seed server %v stderr:\n%s", args, stderr.String())
		}
	})

	lines := make(chan string, len(prefixes))
	go func() {
		sc := bufio.NewScanner(stdoutR)
		for range prefixes {
			if !sc.Scan() {
				break
			}
			lines <- sc.Text()
		}
		close(lines)
		for sc.Scan() {
		}
	}()
	addrs := make([]string, len(prefixes))
	timeout := time.After(20 * time.Second)
	for i, prefix := range prefixes {
		select {
		case line, ok := <-lines:
			addr, found := strings.CutPrefix(line, prefix)
			if !ok || !found {
				<-exited
				t.Fatalf("seed server %v: line %d %q, want \"%sHOST:PORT\"; stderr:\n%s", args, i+1, line, prefix, stderr.String())
			}
			addrs[i] = addr
		case <-timeout:
			t.Fatalf("seed server %v printed no %q line within 20s; stderr:\n%s", args, prefix, stderr.String())
		}
	}
	return addrs
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader on different goroutines.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestSeedHeuristicIsNotConstant guards the tests' power: the requests they send must get answers
// that differ from each other, or a mixed-up row would go unseen.
func TestSeedHeuristicIsNotConstant(t *testing.T) {
	seen := map[string]string{}
	for _, r := range bandwidthRequests(40) {
		w := seedForecast(r)
		key := fmt.Sprintf("%.9g %.9g", w.Predictions, w.Confidence)
		if other, dup := seen[key]; dup {
			t.Errorf("%s and %s get the same forecast %s", other, r.VmId, key)
		}
		seen[key] = r.VmId
	}
	kinds := map[string]bool{}
	for _, r := range anomalyRequests() {
		kinds[seedAnomaly(r).AnomalyType+"/"+seedAnomaly(r).Severity] = true
	}
	if len(kinds) < 4 {
		t.Errorf("anomaly requests cover only %v", kinds)
	}
}
