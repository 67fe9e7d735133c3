package config_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/batcher"
	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/features/drift"
	"github.com/novacron/sidecar/proxy"
	"github.com/novacron/sidecar/proxy/admin"
	"github.com/novacron/sidecar/proxy/migrate"
)

// short writes a duration as the README does: 5m, not 5m0s.
func short(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func num[T int | int64 | float64](v T) string {
	switch x := any(v).(type) {
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	return fmt.Sprint(v)
}

// stagesCells lists the default stages' percents as the README writes them, in order.
func stagesCells(stages []migrate.Stage) []string {
	var out []string
	for _, st := range stages {
		if st.Split > 0 {
			out = append(out, num(st.Split))
		}
		out = append(out, num(st.Shadow))
	}
	return out
}

// readmeDefaults reads the README's configuration table: the default column of each row, by its
// key cell (as written, e.g. "`limits.max_nodes`").
func readmeDefaults(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) >= 3 {
			rows[strings.TrimSpace(cells[0])] = strings.TrimSpace(cells[1])
		}
	}
	return rows
}

// TestDocumentedDefaults: the README's configuration table quotes the defaults that the code
// applies: the components' own (backends, proxy, features) and those config fills in itself.
// Each listed value must appear, in order, in its row's default column, written as `value`.
func TestDocumentedDefaults(t *testing.T) {
	c, err := config.Parse("min.yaml", []byte("models:\n  - {name: m, task: anomaly, path: m.onnx, spec: s.yaml}\n"))
	if err != nil {
		t.Fatal(err)
	}
	m := c.Models[0]
	want := map[string][]string{
		// Applied by config.
		"`listen.grpc`":                      {c.Listen.GRPC},
		"`listen.http`":                      {c.Listen.HTTP},
		"`limits.request_timeout`":           {short(c.Limits.RequestTimeout)},
		"`models[].pool.sessions`":           {num(m.Pool.Sessions)},
		"`models[].pool.intra_op_threads`":   {num(m.Pool.IntraOpThreads)},
		"`models[].batching.max_batch_size`": {num(batcher.DefaultMaxBatchSize)},
		"`models[].batching.max_queue_size`": {num(batcher.DefaultQueueBatches) + " × max_batch_size"},
		"`models[].cache_ttl`":               {short(m.CacheTTL)},
		"`cache.max_entries`":                {num(c.Cache.MaxEntries)},
		"`shutdown_timeout`":                 {short(c.ShutdownTimeout)},
		// Applied by the components, which config leaves at zero.
		"`limits.max_message_bytes`":    {num(proxy.DefaultMaxMessageBytes)},
		"`limits.max_batch_vms`":        {num(proxy.DefaultMaxBatchVMs)},
		"`limits.max_nodes`":            {num(proxy.DefaultMaxNodes)},
		"`cache.max_stale`":             {short(proxy.DefaultMaxStale)},
		"`limits.max_id_bytes`":         {num(proxy.DefaultMaxIDBytes)},
		"`limits.max_concurrent_calls`": {num(proxy.DefaultMaxConcurrentCalls)},
		"`limits.max_push_samples`":     {num(proxy.DefaultMaxPushSamples)},
		"`limits.max_inflight_bytes`":   {num(int64(proxy.DefaultMaxInflightBytes))},
		"`listen.max_connection_idle`":  {short(proxy.DefaultMaxConnectionIdle)},
		"`windows.max_vms`":             {num(features.DefaultMaxVMs)},
		"`windows.idle_expiry`":         {short(features.DefaultIdleExpiry)},
		"`windows.step`":                {short(features.DefaultStep)},
		"`models[].backend.timeout`":    {short(backends.DefaultAttemptTimeout)},
		"`models[].backend.health.interval` / `timeout` / `unhealthy_threshold` / `healthy_threshold`": {
			short(backends.DefaultHealthInterval), short(backends.DefaultHealthTimeout), num(backends.DefaultHealthThreshold), num(backends.DefaultHealthThreshold)},
		"`models[].backend.breaker.consecutive_failures` / `failure_ratio` / `min_requests` / `interval`": {
			num(backends.DefaultConsecutiveFailures), num(backends.DefaultMinRequests), short(backends.DefaultFailureWindow)},
		"`models[].backend.breaker.open_timeout` / `half_open_requests`": {
			short(backends.DefaultOpenTimeout), num(backends.DefaultHalfOpenRequests)},
		"`models[].backend.retry.max_attempts` / `budget` / `min_per_second`": {
			num(backends.DefaultMaxAttempts), num(backends.DefaultRetryBudget), num(backends.DefaultMinRetriesPerSecond)},
		"`routes.*.key`": {proxy.DefaultKey(proxy.RouteBandwidth), proxy.DefaultKey(proxy.RoutePlacement)},
		"`routes.*.compare.abs` / `rel` / `score` / `min_tau`": {
			num(migrate.DefaultAbs), num(migrate.DefaultRel), num(migrate.DefaultScore), num(migrate.DefaultMinTau)},
		"`shadow.queue` / `workers` / `timeout`":             {num(proxy.DefaultShadowQueue), num(proxy.DefaultShadowWorkers), short(proxy.DefaultShadowTimeout)},
		"`migrations[].stages[]`":                            stagesCells(migrate.DefaultStages),
		"`migrations[].stages[].min_duration` / `min_calls`": {short(migrate.DefaultMinDuration), num(int64(migrate.DefaultMinCalls))},
		"`migrations[].gates.max_disagreement` / `max_shadow_errors` / `max_p99_delta` / `confidence`": {
			num(migrate.DefaultMaxDisagreement), num(migrate.DefaultMaxShadowErrors), short(migrate.DefaultMaxP99Delta), num(migrate.DefaultConfidence)},
		"`admin.listen`": {admin.DefaultListen},
		"`drift.window` / `keep` / `min_samples` / `share`": {short(drift.DefaultWindow), num(drift.DefaultKeep), num(int64(drift.DefaultMinSamples)), num(drift.DefaultShare)},
		"`drift.thresholds.psi` / `js` / `wasserstein`":     {num(drift.DefaultPSIThreshold), num(drift.DefaultJSThreshold), num(drift.DefaultWassersteinThreshold)},
		"`drift.accuracy_floor`":                            {num(drift.DefaultAccuracyFloor)},
		"`drift.webhook.url` / `timeout` / `attempts`":      {short(drift.DefaultAlertTimeout), num(drift.DefaultAlertAttempts)},
	}
	rows := readmeDefaults(t)
	for key, values := range want {
		row, ok := rows[key]
		if !ok {
			t.Errorf("README's configuration table has no row %s", key)
			continue
		}
		rest := row
		for _, v := range values {
			i := strings.Index(rest, "`"+v+"`")
			if i < 0 {
				t.Errorf("README row %s says %q; the code's default is %s", key, row, v)
				break
			}
			rest = rest[i+len(v)+2:]
		}
	}
}
