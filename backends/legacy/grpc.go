package legacy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/novacron/sidecar/backends"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// GRPC is a client of the seed's novacron.ai.AIService over gRPC (plaintext). The seed has no
// batch RPC, so a PredictBandwidth with several requests makes one PredictBandwidth RPC per
// request, at most MaxConcurrent at once. Safe for concurrent use.
type GRPC struct {
	cfg    GRPCConfig // with defaults applied
	conn   *grpc.ClientConn
	ai     aipb.AIServiceClient
	health healthpb.HealthClient
	life   lifecycle
}

// The RPCs as errors name them.
const (
	rpcPredict   = "AIService/PredictBandwidth"
	rpcAnomaly   = "AIService/DetectAnomaly"
	rpcPlacement = "AIService/OptimizePlacement"
	rpcHealth    = "Health/Check"
)

// NewGRPC makes a client of the upstream at cfg.Address. It does not connect: the first call or
// Ready does, and a lost connection is re-established by grpc-go in the background.
func NewGRPC(cfg GRPCConfig) (*GRPC, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("legacy: GRPCConfig.%w", err)
	}
	cfg.Timeout = orDefault(cfg.Timeout, DefaultTimeout)
	cfg.MaxConcurrent = orDefault(cfg.MaxConcurrent, DefaultMaxConcurrent)
	conn, err := grpc.NewClient(cfg.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("legacy: GRPCConfig.Address: %q: %w", cfg.Address, err)
	}
	return &GRPC{
		cfg:    cfg,
		conn:   conn,
		ai:     aipb.NewAIServiceClient(conn),
		health: healthpb.NewHealthClient(conn),
	}, nil
}

// PredictBandwidth implements Client: one RPC per request, at most MaxConcurrent at once; the
// first failure cancels the others and fails the call.
func (g *GRPC) PredictBandwidth(ctx context.Context, reqs []*aipb.BandwidthRequest) ([]*aipb.BandwidthResponse, error) {
	if !g.life.enter() {
		return nil, g.errorf(rpcPredict, backends.ErrUnavailable, "%v", errClosed)
	}
	defer g.life.exit()
	if err := checkRequests(reqs); err != nil {
		return nil, g.errorf(rpcPredict, backends.ErrInvalidInput, "%v", err)
	}
	out := make([]*aipb.BandwidthResponse, len(reqs))
	if len(reqs) == 0 {
		return out, nil
	}
	err := forEach(ctx, len(reqs), g.cfg.MaxConcurrent, func(ctx context.Context, i int) error {
		route := rpcPredict + rowName(reqs, i)
		var resp *aipb.BandwidthResponse
		err := g.invoke(ctx, route, func(ctx context.Context) (err error) {
			resp, err = g.ai.PredictBandwidth(ctx, reqs[i])
			return err
		})
		if err != nil {
			return err
		}
		if err := checkBandwidth(reqs[i], resp); err != nil {
			return g.bad(route, err)
		}
		out[i] = resp
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DetectAnomaly implements Client.
func (g *GRPC) DetectAnomaly(ctx context.Context, req *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error) {
	if err := g.begin(rpcAnomaly, req == nil); err != nil {
		return nil, err
	}
	defer g.life.exit()
	var resp *aipb.AnomalyResponse
	err := g.invoke(ctx, rpcAnomaly, func(ctx context.Context) (err error) {
		resp, err = g.ai.DetectAnomaly(ctx, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := checkAnomaly(resp); err != nil {
		return nil, g.bad(rpcAnomaly, err)
	}
	return resp, nil
}

// OptimizePlacement implements Client.
func (g *GRPC) OptimizePlacement(ctx context.Context, req *aipb.PlacementRequest) (*aipb.PlacementResponse, error) {
	if err := g.begin(rpcPlacement, req == nil); err != nil {
		return nil, err
	}
	defer g.life.exit()
	var resp *aipb.PlacementResponse
	err := g.invoke(ctx, rpcPlacement, func(ctx context.Context) (err error) {
		resp, err = g.ai.OptimizePlacement(ctx, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := checkPlacement(req, resp); err != nil {
		return nil, g.bad(rpcPlacement, err)
	}
	return resp, nil
}

// Ready implements Client: grpc.health.v1 Check of HealthService must answer SERVING. When the
// server does not implement the health service (UNIMPLEMENTED), Ready falls back to a connectivity
// check: the connection must be (or become, within Timeout) READY. Every failure but ctx's own
// wraps backends.ErrUnavailable.
func (g *GRPC) Ready(ctx context.Context) error {
	if !g.life.enter() {
		return g.errorf(rpcHealth, backends.ErrUnavailable, "%v", errClosed)
	}
	defer g.life.exit()
	cctx, cancel := context.WithTimeoutCause(ctx, g.cfg.Timeout, errCallTimeout)
	defer cancel()
	resp, err := g.health.Check(cctx, &healthpb.HealthCheckRequest{Service: g.cfg.HealthService})
	if status.Code(err) == codes.Unimplemented {
		resp, err = nil, g.connected(cctx)
	}
	switch {
	case err == nil && resp != nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
		return g.errorf(rpcHealth, backends.ErrUnavailable, "service %q is %v", g.cfg.HealthService, resp.GetStatus())
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return g.errorf(rpcHealth, ctx.Err(), "no answer before the caller's context ended")
	case errors.Is(context.Cause(cctx), errCallTimeout):
		return g.errorf(rpcHealth, backends.ErrUnavailable, "no answer within %v (Timeout)", g.cfg.Timeout)
	}
	st := status.Convert(err)
	return g.errorf(rpcHealth, backends.ErrUnavailable, "%s: %s", backends.CodeName(st.Code()), st.Message())
}

// connected waits, until ctx ends, for the connection to be READY; it fails at once in
// TRANSIENT_FAILURE or SHUTDOWN.
func (g *GRPC) connected(ctx context.Context) error {
	for {
		switch st := g.conn.GetState(); st {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			return status.Errorf(codes.Unavailable, "no health service, and the connection is %v", st)
		case connectivity.Idle:
			g.conn.Connect()
			fallthrough
		default:
			if !g.conn.WaitForStateChange(ctx, st) {
				return status.FromContextError(ctx.Err()).Err()
			}
		}
	}
}

// Close implements Client.
func (g *GRPC) Close() error {
	if g.life.close() {
		return g.conn.Close()
	}
	return nil
}

// begin registers a call of a single-request RPC; the caller must defer g.life.exit() when it
// returns nil.
func (g *GRPC) begin(rpc string, nilReq bool) error {
	if nilReq {
		return g.errorf(rpc, backends.ErrInvalidInput, "nil request")
	}
	if !g.life.enter() {
		return g.errorf(rpc, backends.ErrUnavailable, "%v", errClosed)
	}
	return nil
}

// invoke runs one RPC under the call's Timeout and maps its error (see the package doc).
func (g *GRPC) invoke(ctx context.Context, rpc string, call func(context.Context) error) error {
	own := time.Now().Add(g.cfg.Timeout)
	cctx, cancel := context.WithDeadlineCause(ctx, own, errCallTimeout)
	defer cancel()
	err := call(cctx)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return g.errorf(rpc, ctx.Err(), "no answer before the caller's context ended")
	case errors.Is(context.Cause(cctx), errCallTimeout):
		return g.errorf(rpc, backends.ErrUnavailable, "no answer within %v (Timeout)", g.cfg.Timeout)
	}
	st := status.Convert(err)
	msg := backends.CodeName(st.Code()) + ": " + st.Message()
	switch st.Code() {
	case codes.DeadlineExceeded:
		if kind, reason := deadlineError(ctx, own, g.cfg.Timeout, msg); kind != nil {
			return g.errorf(rpc, kind, "%s", reason)
		}
	case codes.InvalidArgument, codes.OutOfRange:
		// The service's own checks of the data. Other refusals (NOT_FOUND, PERMISSION_DENIED, ...)
		// say the endpoint is misconfigured, not the caller's input: they fail over below.
		return g.errorf(rpc, backends.ErrInvalidInput, "upstream rejected the request: %s", msg)
	case codes.Internal:
		if strings.HasPrefix(st.Message(), "grpc: failed to unmarshal the received message") {
			return g.bad(rpc, badField("message", "does not decode: %s", st.Message()))
		}
	}
	return g.errorf(rpc, backends.ErrUnavailable, "%s", msg)
}

func (g *GRPC) errorf(rpc string, kind error, format string, args ...any) error {
	return fmt.Errorf("legacy grpc %s %s: %s: %w", g.cfg.Address, rpc, fmt.Sprintf(format, args...), kind)
}

func (g *GRPC) bad(rpc string, err error) error {
	return fmt.Errorf("legacy grpc %s %s: response %v: %w", g.cfg.Address, rpc, err, ErrBadResponse)
}

var _ Client = (*GRPC)(nil)
