package legacy

import (
	"context"

	"github.com/novacron/sidecar/backends"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// Pooled is a Client over a pool of Clients: several instances of one legacy service, each call
// on one the pool picks, with its failover, retries and hedging. Safe for concurrent use.
type Pooled struct {
	pool *backends.Pool[Client]
}

// NewPooled makes a Client of pool. Close closes the pool.
func NewPooled(pool *backends.Pool[Client]) *Pooled { return &Pooled{pool: pool} }

// Pool returns the pool (for status pages and tests).
func (p *Pooled) Pool() *backends.Pool[Client] { return p.pool }

func (p *Pooled) PredictBandwidth(ctx context.Context, reqs []*aipb.BandwidthRequest) ([]*aipb.BandwidthResponse, error) {
	return backends.Call(ctx, p.pool, func(ctx context.Context, c Client) ([]*aipb.BandwidthResponse, error) {
		return c.PredictBandwidth(ctx, reqs)
	})
}

func (p *Pooled) DetectAnomaly(ctx context.Context, req *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error) {
	return backends.Call(ctx, p.pool, func(ctx context.Context, c Client) (*aipb.AnomalyResponse, error) {
		return c.DetectAnomaly(ctx, req)
	})
}

func (p *Pooled) OptimizePlacement(ctx context.Context, req *aipb.PlacementRequest) (*aipb.PlacementResponse, error) {
	return backends.Call(ctx, p.pool, func(ctx context.Context, c Client) (*aipb.PlacementResponse, error) {
		return c.OptimizePlacement(ctx, req)
	})
}

// Ready is nil while some instance is usable.
func (p *Pooled) Ready(ctx context.Context) error { return p.pool.Ready(ctx) }

// Close closes the pool and its clients.
func (p *Pooled) Close() error { return p.pool.Close() }

var _ Client = (*Pooled)(nil)
