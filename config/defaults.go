package config

import (
	"time"

	"github.com/novacron/sidecar/batcher"
)

// SetDefaults fills every zero value that has a default.
func (c *Config) SetDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.Listen.GRPC, "127.0.0.1:50051")
	def(&c.Listen.HTTP, "127.0.0.1:8080")
	if c.Limits.RequestTimeout == 0 {
		c.Limits.RequestTimeout = 5 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Cache.MaxEntries == 0 {
		c.Cache.MaxEntries = 100000
	}
	has := func(name string) string {
		for _, m := range c.Models {
			if m.Name == name {
				return name
			}
		}
		return ""
	}
	def(&c.Routes.PredictBandwidth.Target, has("bandwidth"))
	def(&c.Routes.DetectAnomaly.Target, has("anomaly"))
	def(&c.Routes.OptimizePlacement.Target, has("placement"))
	for i := range c.Models {
		m := &c.Models[i]
		if m.Pool.Sessions == 0 {
			m.Pool.Sessions = 2
		}
		if m.Pool.IntraOpThreads == 0 {
			m.Pool.IntraOpThreads = 1
		}
		if m.CacheTTL == 0 {
			m.CacheTTL = time.Minute
		}
		be := &m.Backend
		def(&be.Kind, BackendONNX)
		def(&be.Model, m.Name)
		def(&m.Fallback, FallbackNone)
		b := &m.Batching
		// The batcher's own defaults, filled in here because the checks below compare them.
		if b.MaxBatchSize == 0 {
			b.MaxBatchSize = batcher.DefaultMaxBatchSize
		}
		if b.MaxQueueSize == 0 {
			b.MaxQueueSize = batcher.DefaultQueueBatches * b.MaxBatchSize
		}
		if b.MaxInflightBatches == 0 {
			b.MaxInflightBatches = m.Pool.Sessions
			if m.Backend.Kind != BackendONNX && m.Backend.Kind != "" {
				b.MaxInflightBatches = min(4*max(len(m.Backend.Endpoints), 1), 1024)
			}
		}
		if b.Overlap == nil {
			on := m.Backend.Kind != BackendONNX && m.Backend.Kind != ""
			b.Overlap = &on
		}
		if b.Adaptive && b.MaxQueueDelay == 0 {
			b.MaxQueueDelay = 2 * time.Millisecond
		}
		if m.Task == TaskAnomaly {
			a := &m.Anomaly
			for _, p := range []struct {
				f *float64
				v float64
			}{{&a.Threshold, 0.5}, {&a.Medium, 0.7}, {&a.High, 0.85}, {&a.Critical, 0.95}} {
				if *p.f == 0 {
					*p.f = p.v
				}
			}
		}
	}
}
