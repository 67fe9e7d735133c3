package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/novacron/sidecar/features/drift"
)

// sidecarClient reads the sidecar's drift state over its HTTP port: GET /metrics (the gauges),
// GET /v1/drift/sketches (the raw sketches) and, through the real CLI, sidecar drift merge (the
// table). Its methods may be called concurrently.
type sidecarClient struct {
	addr    string // the HTTP port, host:port
	sidecar string // the binary, for its drift subcommand
	http    *http.Client
}

// sketchesURL is the model's sketch route.
func (c *sidecarClient) sketchesURL() string {
	return "http://" + c.addr + "/v1/drift/sketches?model=" + url.QueryEscape(model)
}

func (c *sidecarClient) get(ctx context.Context, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, drift.MaxSnapshotBytes))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// snapshot returns the model's sketches, with the reference profile and the scoring settings
// the sidecar uses.
func (c *sidecarClient) snapshot(ctx context.Context) (*drift.Snapshot, error) {
	b, err := c.get(ctx, c.sketchesURL())
	if err != nil {
		return nil, err
	}
	s, err := drift.UnmarshalSnapshotJSON(b)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", c.sketchesURL(), err)
	}
	return s, nil
}

// gauges are the model's drift gauges in one scrape of GET /metrics.
type gauges struct {
	at time.Time
	// scores holds model_data_drift_score by feature, then method.
	scores map[string]map[string]float64
	// drifted is model_features_drifted; rows model_drift_window_rows (0: no window with a
	// verdict yet).
	drifted, rows float64
}

// score is feature's score by method, and whether the scrape had it.
func (g gauges) score(feature, method string) (float64, bool) {
	v, ok := g.scores[feature][method]
	return v, ok
}

var (
	sampleRE = regexp.MustCompile(`^(\w+)\{([^}]*)\} (\S+)$`)
	labelRE  = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)
)

// gauges scrapes GET /metrics for the model's drift gauges.
func (c *sidecarClient) gauges(ctx context.Context) (gauges, error) {
	b, err := c.get(ctx, "http://"+c.addr+"/metrics")
	if err != nil {
		return gauges{}, err
	}
	g := gauges{at: time.Now(), scores: map[string]map[string]float64{}}
	for _, ln := range strings.Split(string(b), "\n") {
		m := sampleRE.FindStringSubmatch(ln)
		if m == nil {
			continue
		}
		name := m[1]
		if name != "model_data_drift_score" && name != "model_features_drifted" && name != "model_drift_window_rows" {
			continue
		}
		labels := map[string]string{}
		for _, l := range labelRE.FindAllStringSubmatch(m[2], -1) {
			labels[l[1]] = l[2]
		}
		if labels["model"] != model {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return gauges{}, fmt.Errorf("GET /metrics: %q: %w", ln, err)
		}
		switch name {
		case "model_data_drift_score":
			f := labels["feature"]
			if g.scores[f] == nil {
				g.scores[f] = map[string]float64{}
			}
			g.scores[f][labels["method"]] = v
		case "model_features_drifted":
			g.drifted = v
		case "model_drift_window_rows":
			g.rows = v
		}
	}
	return g, nil
}

// table runs sidecar drift merge on the sidecar's sketch route and returns what it printed: the
// drift table of every kept window.
func (c *sidecarClient) table(ctx context.Context) (cmdline, out string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.sidecar, "drift", "merge", c.sketchesURL())
	cmdline = "sidecar drift merge " + c.sketchesURL()
	b, err := cmd.CombinedOutput()
	if err != nil {
		return cmdline, string(b), fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	return cmdline, string(b), nil
}
