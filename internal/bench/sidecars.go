package bench

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// writeConfig writes the sidecar config of a variant: the embedded default with the variant's keys
// set in every model's batching section, loopback listeners, and limits that admit the batch calls.
func (r *runner) writeConfig(s *scenario) (string, error) {
	b, err := sidecarConfig(r.base, s.batching, r.cfg.BatchVMs)
	if err != nil {
		return "", err
	}
	path := filepath.Join(r.dir, s.name+".yaml")
	return path, os.WriteFile(path, b, 0o600)
}

// sidecarConfig derives a variant's config from base (the default config's YAML): batching's keys
// are set in each model's batching section (nil: left as it is).
func sidecarConfig(base []byte, batching map[string]any, batchVMs int) ([]byte, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(base, &doc); err != nil {
		return nil, fmt.Errorf("default config: %w", err)
	}
	doc["listen"] = map[string]any{"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"}
	limits, _ := doc["limits"].(map[string]any)
	if limits == nil {
		limits = map[string]any{}
		doc["limits"] = limits
	}
	raise := func(key string, v int) {
		if cur, ok := limits[key].(int); !ok || cur < v {
			limits[key] = v
		}
	}
	raise("max_batch_vms", batchVMs)
	raise("max_message_bytes", max(4<<20, batchVMs*2048))
	models, _ := doc["models"].([]any)
	if len(models) == 0 {
		return nil, errors.New("default config: no models")
	}
	for i, m := range models {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("default config: models[%d] is not a mapping", i)
		}
		if len(batching) == 0 {
			continue
		}
		b, _ := mm["batching"].(map[string]any)
		merged := make(map[string]any, len(b)+len(batching))
		maps.Copy(merged, b)
		maps.Copy(merged, batching)
		mm["batching"] = merged
	}
	return yaml.Marshal(doc)
}

// remoteCommand writes the config of the sidecar under load in a kserve row: variant s, with the
// bandwidth model's backend on the upstream's gRPC address (its local copy describes it), and
// returns the command that serves it.
func (r *runner) remoteCommand(s *scenario, upstream string) ([]string, error) {
	return r.derivedCommand(s, "remote", func(doc map[string]any) error {
		for _, m := range doc["models"].([]any) {
			if mm, _ := m.(map[string]any); mm["name"] == "bandwidth" {
				mm["backend"] = map[string]any{"kind": "kserve", "endpoints": []string{upstream}}
				return nil
			}
		}
		return errors.New("default config has no model bandwidth")
	})
}

// shadowCommand writes the config of the sidecar under load in the shadow rows: variant s, with
// a model bandwidth-shadow served by the legacy service at target (the no-op server), and every
// PredictBandwidth shadowed onto it; it returns the command that serves it.
func (r *runner) shadowCommand(s *scenario, target string) ([]string, error) {
	return r.derivedCommand(s, "shadow", func(doc map[string]any) error {
		doc["models"] = append(doc["models"].([]any), map[string]any{"name": "bandwidth-shadow", "task": "forecast", "spec": "embedded:specs/bandwidth.yaml",
			"backend": map[string]any{"kind": "legacy_grpc", "endpoints": []string{target}}})
		routes, _ := doc["routes"].(map[string]any)
		if routes == nil {
			routes = map[string]any{}
			doc["routes"] = routes
		}
		routes["predict_bandwidth"] = map[string]any{"target": "bandwidth", "shadow": []any{map[string]any{"target": "bandwidth-shadow", "percent": 100}}}
		return nil
	})
}

// derivedCommand writes variant s's config changed by edit (named after s and suffix), and
// returns the command that serves it.
func (r *runner) derivedCommand(s *scenario, suffix string, edit func(doc map[string]any) error) ([]string, error) {
	b, err := sidecarConfig(r.base, s.batching, r.cfg.BatchVMs)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	if err := edit(doc); err != nil {
		return nil, err
	}
	if b, err = yaml.Marshal(doc); err != nil {
		return nil, err
	}
	path := filepath.Join(r.dir, s.name+"-"+suffix+".yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, err
	}
	return append(slices.Clone(r.cfg.Command), "serve", "-config", path, "-grpc", "127.0.0.1:0", "-http", "127.0.0.1:0", "-onnxruntime", r.lib), nil
}

// pool returns the sessions and intra-op threads of the named model in the default config (the
// config's defaults, 2 and 1, where it says nothing).
func pool(base []byte, model string) (sessions, threads int, err error) {
	var doc struct {
		Models []struct {
			Name string `yaml:"name"`
			Pool struct {
				Sessions       int `yaml:"sessions"`
				IntraOpThreads int `yaml:"intra_op_threads"`
			} `yaml:"pool"`
		} `yaml:"models"`
	}
	if err := yaml.Unmarshal(base, &doc); err != nil {
		return 0, 0, err
	}
	for _, m := range doc.Models {
		if m.Name == model {
			sessions, threads = m.Pool.Sessions, m.Pool.IntraOpThreads
			if sessions == 0 {
				sessions = 2
			}
			return sessions, max(threads, 1), nil
		}
	}
	return 0, 0, fmt.Errorf("default config has no model %q", model)
}

// machine describes the host for the report.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kb int64
				fmt.Sscanf(strings.TrimSpace(rest), "%d", &kb)
				mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
			}
		}
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			load = ", load average " + f[0] + " at start"
		}
	}
	return fmt.Sprintf("%s, %d CPUs%s, %s %s/%s, %s%s", model, runtime.NumCPU(), mem, runtime.Version(), runtime.GOOS, runtime.GOARCH,
		time.Now().Format("2006-01-02 15:04 MST"), load)
}
