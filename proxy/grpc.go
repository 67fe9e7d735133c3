package proxy

import (
	"context"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/tap"

	"github.com/novacron/sidecar/proto/inference"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// HealthServiceModel is the gRPC health service name of one model: "model/NAME".
func HealthServiceModel(name string) string { return "model/" + name }

// NewGRPCServer builds the gRPC front end: novacron.ai.AIService and inference.GRPCInferenceService
// (the Open Inference Protocol) over svc, grpc.health.v1 (the
// returned health server; the caller sets statuses), and server reflection.
func NewGRPCServer(svc *Service, opts ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	base := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(svc.cfg.MaxMessageBytes),
		grpc.ChainUnaryInterceptor(svc.unaryInterceptor),
		grpc.ChainStreamInterceptor(svc.streamInterceptor),
		grpc.WaitForHandlers(true),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.ForceServerCodecV2(newBoundedCodec(svc)),
		grpc.InTapHandle(svc.tap),
	}
	if idle := svc.cfg.MaxConnectionIdle; idle > 0 {
		base = append(base, grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: idle}))
	}
	opts = append(base, opts...)
	srv := grpc.NewServer(opts...)
	aipb.RegisterAIServiceServer(srv, &aiServer{svc: svc})
	inference.RegisterGRPCInferenceServiceServer(srv, &oipServer{svc: svc})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	return srv, hs
}

// unaryInterceptor records metrics and maps pipeline errors to status codes.
func (s *Service) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if p := md.Get("x-priority"); len(p) > 0 {
			ctx = withPriority(ctx, p[0])
		}
		if t := md.Get(TargetHeader); len(t) > 0 {
			ctx = withForced(ctx, t[0])
		}
	}
	if s.state.Load().anyStale {
		ctx = withStaleNote(ctx)
	}
	if err = s.refusal(req); err == nil {
		resp, err = recovered(func() (any, error) { return handler(ctx, req) })
	}
	if age, ok := StaleAge(ctx); ok && err == nil {
		grpc.SetHeader(ctx, metadata.Pairs(strings.ToLower(StaleHeader), staleValue(age)))
	}
	err = grpcError(err)
	if s.metrics != nil {
		s.metrics.observeRequest("grpc", path.Base(info.FullMethod), Code(err).String(), time.Since(start))
	}
	return resp, err
}

// streamInterceptor records the metrics of streaming calls (StreamMetrics) as the unary one does.
func (s *Service) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	// Every stream's context ends when the sidecar drains (StreamMetrics answers its count then).
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	defer context.AfterFunc(s.draining, cancel)()
	ss = ctxStream{ss, ctx}
	_, err := recovered(func() (struct{}, error) { return struct{}{}, handler(srv, checkedStream{ss, s}) })
	err = grpcError(err)
	if s.metrics != nil {
		s.metrics.observeRequest("grpc", path.Base(info.FullMethod), Code(err).String(), time.Since(start))
	}
	return err
}

// ctxStream is a stream whose context also ends when the sidecar drains.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c ctxStream) Context() context.Context { return c.ctx }

// checkedStream answers a received message that boundedCodec refused with its refusal.
type checkedStream struct {
	grpc.ServerStream
	svc *Service
}

func (c checkedStream) RecvMsg(m any) error {
	if err := c.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return c.svc.refusal(m)
}

// DefaultMaxConcurrentCalls is the default bound of the gRPC calls in flight
// (Config.MaxConcurrentCalls): far above what a node's agents send, and with the default message
// bound (4 MiB) it keeps the requests' memory within 4 GiB whatever the clients do.
const DefaultMaxConcurrentCalls = 1024

// tap admits a new gRPC call, before its message is read, when fewer than MaxConcurrentCalls are
// in flight (health checks are always admitted, so that probes see an overloaded sidecar as
// alive); the call counts until its stream ends. Beyond the bound it refuses at once with
// RESOURCE_EXHAUSTED and a RetryInfo hint, as a full batcher queue does. grpc-go calls it on the
// connection's reader goroutine: it does not block.
func (s *Service) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if strings.HasPrefix(info.FullMethodName, "/grpc.health.v1.Health/") {
		return ctx, nil
	}
	if n := s.grpcCalls.Add(1); n > int64(s.cfg.MaxConcurrentCalls) {
		s.grpcCalls.Add(-1)
		err := grpcError(fmt.Errorf("%d gRPC calls in flight, limit %d (limits.max_concurrent_calls); retry after %v: %w",
			n-1, s.cfg.MaxConcurrentCalls, inflightRetry, ErrInflight))
		if s.metrics != nil {
			s.metrics.observeRequest("grpc", path.Base(info.FullMethodName), Code(err).String(), 0)
		}
		return ctx, err
	}
	// The stream's context ends with the stream, whatever ends it.
	context.AfterFunc(ctx, func() { s.grpcCalls.Add(-1) })
	return ctx, nil
}

// maxConcurrentStreams bounds the calls one client connection may have open at once (grpc-go's
// own default has no bound): each may hold a message of limits.max_message_bytes.
const maxConcurrentStreams = 256

// DefaultMaxConnectionIdle is how long a client connection (gRPC, or HTTP keep-alive) may carry
// no call before the sidecar closes it (Config.MaxConnectionIdle).
const DefaultMaxConnectionIdle = 5 * time.Minute

// recovered runs f, turning a panic into an Internal error so that one bad request can never take
// the process, and every other caller, down with it.
func recovered[T any](f func() (T, error)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errPanic, r)
		}
	}()
	return f()
}

// aiServer adapts Service to the generated AIServiceServer.
type aiServer struct {
	aipb.UnimplementedAIServiceServer
	svc *Service
}

func (a *aiServer) PredictBandwidth(ctx context.Context, r *aipb.BandwidthRequest) (*aipb.BandwidthResponse, error) {
	return a.svc.PredictBandwidth(ctx, r)
}

func (a *aiServer) PredictBandwidthBatch(ctx context.Context, r *aipb.BandwidthBatchRequest) (*aipb.BandwidthBatchResponse, error) {
	return a.svc.PredictBandwidthBatch(ctx, r)
}

func (a *aiServer) PushMetrics(ctx context.Context, r *aipb.PushMetricsRequest) (*aipb.PushMetricsResponse, error) {
	return a.svc.PushMetrics(ctx, r)
}

// StreamMetrics stores each message's samples as it arrives and answers the total when the client
// closes the stream; the first bad sample ends the stream with its error. When the sidecar drains
// (Service.Drain, at shutdown) an open stream is answered at once with the count stored so far:
// the client's later sends see the stream ended (io.EOF), its CloseAndRecv gets that count, and it
// sends the rest to the next instance.
func (a *aiServer) StreamMetrics(stream grpc.ClientStreamingServer[aipb.PushMetricsRequest, aipb.PushMetricsResponse]) error {
	type received struct {
		req *aipb.PushMetricsRequest
		err error
	}
	// One receiver for the stream, owned by this handler: it stops after a failed Recv (at the
	// latest when the handler returns and the stream ends) or once the handler stops listening.
	next := make(chan received)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			req, err := stream.Recv()
			select {
			case next <- received{req, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var total int64
	for {
		var r received
		select {
		case r = <-next:
		case <-a.svc.draining.Done():
			return stream.SendAndClose(&aipb.PushMetricsResponse{Accepted: total})
		}
		if r.err == io.EOF {
			return stream.SendAndClose(&aipb.PushMetricsResponse{Accepted: total})
		}
		if r.err != nil {
			return fmt.Errorf("%d samples of this stream stored before: %w", total, r.err)
		}
		resp, err := recovered(func() (*aipb.PushMetricsResponse, error) { return a.svc.PushMetrics(stream.Context(), r.req) })
		total += resp.GetAccepted()
		if err != nil {
			return grpcError(fmt.Errorf("%d samples of this stream stored before: %w", total, err))
		}
	}
}

func (a *aiServer) DetectAnomaly(ctx context.Context, r *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error) {
	return a.svc.DetectAnomaly(ctx, r)
}

func (a *aiServer) OptimizePlacement(ctx context.Context, r *aipb.PlacementRequest) (*aipb.PlacementResponse, error) {
	return a.svc.OptimizePlacement(ctx, r)
}
