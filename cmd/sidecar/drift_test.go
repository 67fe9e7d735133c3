package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/examples"
	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/features/drift"
	"github.com/novacron/sidecar/internal/app"
	"github.com/novacron/sidecar/proxy"
)

// driftStart is the start of the tests' newest window.
var driftStart = time.Date(2026, 5, 1, 10, 5, 0, 0, time.UTC)

// driftRows draws n canonical rows of w features, feature shift moved by delta standard
// deviations.
func driftRows(r *rand.Rand, n, w, shift int, delta float64) []float32 {
	out := make([]float32, n*w)
	for i := range out {
		v := r.NormFloat64()
		if i%w == shift {
			v += delta
		}
		out[i] = float32(v)
	}
	return out
}

// driftFleet is the anomaly spec's profile, monitors of three nodes and one of all their rows:
// in the older window 300 rows on node 0 alone; in the newer 1200, 800 and 500 rows, feature 1
// shifted by one standard deviation, a fifth of node 2's values of feature 4 not finite. The
// model's one output, "score", answers a row's feature 0 (unshifted).
func driftFleet(t *testing.T) (spec *features.Spec, p *drift.Profile, nodes []*drift.Monitor, all *drift.Monitor) {
	t.Helper()
	spec, err := features.LoadFile(anomalySpec)
	if err != nil {
		t.Fatal(err)
	}
	w := spec.Width()
	b, err := drift.NewBuilder(spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(8, 8))
	if err := b.SetOutputs([]string{"score"}); err != nil {
		t.Fatal(err)
	}
	ref := driftRows(r, 5000, w, -1, 0)
	if err := b.Add(ref); err != nil {
		t.Fatal(err)
	}
	if err := b.AddOutputs(driftScores(ref, w, nil)); err != nil {
		t.Fatal(err)
	}
	if p, err = b.Profile(); err != nil {
		t.Fatal(err)
	}
	monitor := func(now *time.Time) *drift.Monitor {
		m, err := drift.NewMonitor(p, drift.Config{Now: func() time.Time { return *now }, Outputs: []string{"score"}})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	now := driftStart.Add(-drift.DefaultWindow)
	all = monitor(&now)
	for range 3 {
		nodes = append(nodes, monitor(&now))
	}
	old := driftRows(r, 300, w, -1, 0)
	var outs [][]float32
	driftScores(old, w, &outs)
	nodes[0].Observe(old, w, outs)
	all.Observe(old, w, outs)
	now = driftStart.Add(time.Minute)
	for i, n := range []int{1200, 800, 500} {
		rows := driftRows(r, n, w, 1, 1)
		if i == 2 { // a fifth of node 2's latency values are not finite
			for k := 4; k < len(rows); k += 5 * w {
				rows[k] = float32(math.NaN())
			}
		}
		driftScores(rows, w, &outs)
		nodes[i].Observe(rows, w, outs)
		all.Observe(rows, w, outs)
	}
	return spec, p, nodes, all
}

// driftScores is the "score" output of each row of w features (its feature 0): the values, and
// when rows is not nil, each as a row of one value in *rows.
func driftScores(data []float32, w int, rows *[][]float32) []float32 {
	out := make([]float32, len(data)/w)
	if rows != nil {
		*rows = (*rows)[:0]
	}
	for i := range out {
		out[i] = data[i*w]
		if rows != nil {
			*rows = append(*rows, out[i:i+1])
		}
	}
	return out
}

// serveDrift serves monitors by model over the proxy's HTTP front end on a loopback port.
func serveDrift(t *testing.T, monitors map[string]*drift.Monitor) string {
	t.Helper()
	svc, err := proxy.New(proxy.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	srv := httptest.NewServer(proxy.NewHTTPHandler(svc, proxy.HTTPOptions{DriftMonitors: func() map[string]*drift.Monitor { return monitors }}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func writeSnapshot(t *testing.T, path string, s *drift.Snapshot) {
	t.Helper()
	var b []byte
	var err error
	if strings.HasSuffix(path, ".pb") {
		b, err = s.MarshalProto()
	} else {
		b, err = json.Marshal(s)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// windowsPart is a drift table without its header line (which counts the sources).
func windowsPart(table string) string {
	_, rest, _ := strings.Cut(table, "\n")
	return rest
}

// TestDriftMerge: two nodes over real HTTP and one file merge into the table of one node that
// saw every row; -json prints the same reports.
func TestDriftMerge(t *testing.T) {
	spec, _, nodes, all := driftFleet(t)
	a := serveDrift(t, map[string]*drift.Monitor{"anomaly": nodes[0]})
	b := serveDrift(t, map[string]*drift.Monitor{"anomaly": nodes[1], "other": nodes[2]})
	dir := t.TempDir()
	file := filepath.Join(dir, "node-c.json")
	writeSnapshot(t, file, nodes[2].Snapshot("anomaly"))
	allFile := filepath.Join(dir, "all.pb")
	writeSnapshot(t, allFile, all.Snapshot("anomaly"))

	code, out, errs := runArgs("drift", "merge", a+proxy.DriftSketchesPath+"?model=anomaly", b+"?model=anomaly", file)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	t.Logf("\n%s", out)
	for _, want := range []string{
		"model anomaly: spec " + spec.Name, "3 sources merged, 2 windows",
		"scoring: min_samples 500, share 0.5, thresholds js 0.1 psi 0.2 wasserstein 0.1",
		"2 windows\n", "2500      4.0%    0.0055",
		"window 2026-05-01T10:05:00Z +5m: 2500 rows, model not drifted: 1 of 6 features drifted (17%, not over the share 50%)",
		"window 2026-05-01T10:00:00Z +5m: 300 rows, no verdict (fewer than min_samples 500 rows)",
		"\n  output          rows   missing", "\n  score           2500", // prediction drift
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks %q", want)
		}
	}
	// The output answers cpu: its line is cpu's, name aside (and, reported apart, not counted).
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "  score  "); ok && !strings.Contains(out, "  cpu    "+rest+"\n") {
			t.Errorf("the output's line %q is not cpu's", line)
		}
	}
	if lines := strings.Count(out, "\n"); lines > 28 {
		t.Errorf("%d lines for 2 windows of 6 features and an output", lines)
	}
	// One node of every row prints the same windows, to the digit.
	code, one, errs := runArgs("drift", "merge", allFile)
	if code != 0 {
		t.Fatalf("all rows: exit %d: %s", code, errs)
	}
	if windowsPart(one) != windowsPart(out) {
		t.Errorf("the merged table differs from one of all rows:\n%s\nvs\n%s", out, one)
	}

	// -json, and a URL without the route's path given -model; flags after the sources.
	code, js, errs := runArgs("drift", "merge", "-model", "anomaly", a, b, file, "-json", "-timeout", "5s")
	if code != 0 {
		t.Fatalf("-json: exit %d: %s", code, errs)
	}
	var rep struct {
		Model   string   `json:"model"`
		Sources []string `json:"sources"`
		Windows []struct {
			Rows     int64 `json:"rows"`
			Verdict  bool  `json:"verdict"`
			Features []struct {
				Name    string   `json:"name"`
				PSI     *float64 `json:"psi"`
				Drifted bool     `json:"drifted"`
			} `json:"features"`
		} `json:"windows"`
	}
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	if rep.Model != "anomaly" || len(rep.Sources) != 3 || len(rep.Windows) != 2 || rep.Windows[0].Rows != 2500 || !rep.Windows[0].Features[1].Drifted ||
		rep.Windows[0].Features[1].PSI == nil || rep.Windows[1].Rows != 300 || rep.Windows[1].Verdict {
		t.Errorf("-json: %s", js)
	}
}

// TestDriftMergeErrors: what cannot be merged, or read, fails with 1 and says what to do; usage
// errors are 2.
func TestDriftMergeErrors(t *testing.T) {
	_, _, nodes, _ := driftFleet(t)
	a := serveDrift(t, map[string]*drift.Monitor{"anomaly": nodes[0], "bandwidth": nodes[1]})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := closed.Addr().String()
	closed.Close()
	notSidecar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "nope", http.StatusNotFound) }))
	t.Cleanup(notSidecar.Close)
	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(hang); slow.Close() })
	noRoute := httptest.NewServer(func() http.Handler {
		svc, err := proxy.New(proxy.Config{}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(svc.Close)
		return proxy.NewHTTPHandler(svc, proxy.HTTPOptions{})
	}())
	t.Cleanup(noRoute.Close)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "x.pb")
	os.WriteFile(garbage, []byte("not a snapshot"), 0o644)

	for _, c := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"mixed models", []string{a + "?model=anomaly", a + "?model=bandwidth"}, 1, []string{`model "bandwidth"`, `model "anomaly"`, "one model at a time", "?model=bandwidth"}},
		{"unknown model", []string{a + "?model=placement"}, 1, []string{`model "placement" has no drift monitor`, "anomaly, bandwidth", "ask for one of those models"}},
		{"unreachable", []string{a + "?model=anomaly", "http://" + dead + "?model=anomaly"}, 1, []string{"nothing listens on " + dead, "1 of 2 sources failed"}},
		{"not a sidecar", []string{notSidecar.URL + "?model=anomaly"}, 1, []string{"not as a sidecar does"}},
		{"no route", []string{noRoute.URL + "?model=anomaly"}, 1, []string{"serves no /v1/drift/sketches"}},
		{"timeout", []string{"-timeout", "200ms", slow.URL + "?model=anomaly"}, 1, []string{"did not answer within 200ms", "-timeout waits longer"}},
		{"no file", []string{filepath.Join(dir, "none.json")}, 1, []string{"does not exist"}},
		{"not a snapshot", []string{garbage}, 1, []string{"x.pb", "is it saved from a node's /v1/drift/sketches"}},
		{"no sources", nil, 2, []string{"give one SOURCE or more"}},
		{"no model", []string{a}, 2, []string{"names no model: add ?model=NAME, or give -model NAME"}},
		{"two models", []string{"-model", "x", a + "?model=anomaly"}, 2, []string{"give one"}},
		{"bad timeout", []string{"-timeout", "0s", a + "?model=anomaly"}, 2, []string{"-timeout"}},
	} {
		code, _, errs := runArgs(append([]string{"drift", "merge"}, c.args...)...)
		if code != c.code {
			t.Errorf("%s: exit %d, want %d: %s", c.name, code, c.code, errs)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(errs, w) {
				t.Errorf("%s: %q lacks %q", c.name, errs, w)
			}
		}
	}
	if code, _, errs := runArgs("drift", "frob"); code != 2 || !strings.Contains(errs, `unknown command "frob"`) {
		t.Errorf("drift frob: %d %s", code, errs)
	}
	if code, out, _ := runArgs("drift", "help"); code != 0 || !strings.Contains(out, "sidecar drift merge") {
		t.Errorf("drift help: %d %s", code, out)
	}
}

// TestDriftMergeFromSidecar: a running sidecar (the embedded default config: ONNX Runtime, the
// example models and their profiles) serves its sketches on its HTTP port; drift merge reads
// them twice, as two nodes that saw the same calls, and counts every call's row twice.
func TestDriftMergeFromSidecar(t *testing.T) {
	cfg, err := config.Load("", examples.FS)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen.GRPC, cfg.Listen.HTTP = "off", "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := app.Start(context.Background(), cfg, examples.FS, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	const calls = 40
	r := rand.New(rand.NewPCG(3, 4))
	for i := range calls {
		body := fmt.Sprintf(`{"vm_id":"vm-%d","current_metrics":{"cpu":%.2f,"memory":%.2f,"disk_io":%.2f,"network_io":%.2f,"latency":%.2f,"error_rate":0.002}}`,
			i, 40+10*r.NormFloat64(), 55+8*r.NormFloat64(), 30+5*r.NormFloat64(), 250+30*r.NormFloat64(), 9+2*r.NormFloat64())
		resp, err := http.Post("http://"+a.HTTPAddr+"/api/v1/anomaly", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("anomaly call: %s %s", resp.Status, b)
		}
	}
	node := "http://" + a.HTTPAddr
	code, out, errs := runArgs("drift", "merge", "-model", "anomaly", node, node+proxy.DriftSketchesPath)
	if code != 0 || !strings.Contains(out, "model anomaly: spec anomaly") {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}
	t.Logf("\n%s", out)
	// The calls may straddle two windows: count the rows of all.
	code, js, errs := runArgs("drift", "merge", "-json", node+"?model=anomaly", node+"?model=anomaly")
	var rep struct {
		Windows []struct {
			Rows int64 `json:"rows"`
		} `json:"windows"`
	}
	if err := json.Unmarshal([]byte(js), &rep); code != 0 || err != nil {
		t.Fatalf("-json: exit %d, %v: %s", code, err, errs)
	}
	var rows int64
	for _, w := range rep.Windows {
		rows += w.Rows
	}
	if rows != 2*calls {
		t.Errorf("%d rows in %d windows, want %d: every call's row, on two nodes", rows, len(rep.Windows), 2*calls)
	}
	code, _, errs = runArgs("drift", "merge", node+"?model=nope")
	if code != 1 || !strings.Contains(errs, "the models with one: anomaly, bandwidth, placement") {
		t.Errorf("an unknown model: %d %s", code, errs)
	}
}
