package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// horizon is the number of predictions of a bandwidth forecast: the no-op servers answer with
// this many, like the example model.
const horizon = 10

// noopPredictions is the constant forecast of the no-op servers. Read-only.
var noopPredictions = func() []float64 {
	p := make([]float64, horizon)
	for i := range p {
		p[i] = 300 + float64(i)
	}
	return p
}()

// noopAI answers novacron.ai.AIService's bandwidth RPCs with constants of the sidecar's shape: the
// floor, the cost of a gRPC call that does no work.
type noopAI struct {
	aipb.UnimplementedAIServiceServer
}

func (noopAI) PredictBandwidth(_ context.Context, req *aipb.BandwidthRequest) (*aipb.BandwidthResponse, error) {
	return &aipb.BandwidthResponse{Predictions: noopPredictions, Confidence: 0.9, ModelVersion: "noop", VmId: req.VmId}, nil
}

func (noopAI) PredictBandwidthBatch(_ context.Context, req *aipb.BandwidthBatchRequest) (*aipb.BandwidthBatchResponse, error) {
	out := &aipb.BandwidthBatchResponse{Results: make([]*aipb.BandwidthResponse, len(req.Vms))}
	for i, vm := range req.Vms {
		out.Results[i] = &aipb.BandwidthResponse{Predictions: noopPredictions, Confidence: 0.9, ModelVersion: "noop", VmId: vm.VmId}
	}
	return out, nil
}

// NoopHTTPHandler serves POST /api/v1/predict the cheapest way that is still HTTP/JSON: it reads
// the body and writes a constant JSON response of the sidecar's shape (ten predictions).
func NoopHTTPHandler() http.Handler {
	body, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(
		&aipb.BandwidthResponse{Predictions: noopPredictions, Confidence: 0.9, ModelVersion: "noop", VmId: "vm"})
	if err != nil {
		panic(err) // a constant message always marshals
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/predict", func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 4<<20)); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	return mux
}

// ServeNoop runs the floor: a gRPC server answering novacron.ai.AIService's PredictBandwidth and
// PredictBandwidthBatch with constants, and NoopHTTPHandler, on the given loopback addresses (port
// 0 picks one). It calls ready with the bound addresses, serves until ctx is done, then stops
// within a few seconds.
func ServeNoop(ctx context.Context, grpcAddr, httpAddr string, ready func(grpcAddr, httpAddr string)) error {
	gl, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		return fmt.Errorf("grpc: %w", err)
	}
	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("http: %w", err)
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	aipb.RegisterAIServiceServer(gs, noopAI{})
	hs := &http.Server{Handler: NoopHTTPHandler(), ReadHeaderTimeout: 5 * time.Second}

	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(gl) }()
	go func() { errc <- hs.Serve(hl) }()
	ready(gl.Addr().String(), hl.Addr().String())

	pending := 2 // Serve calls still running
	var failure error
	select {
	case <-ctx.Done():
	case failure = <-errc:
		pending--
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	select {
	case <-stopped:
	case <-sctx.Done():
		gs.Stop()
		<-stopped
	}
	for ; pending > 0; pending-- { // both have returned now
		// ErrServerClosed and ErrServerStopped: the normal end after Shutdown / GracefulStop, also
		// when the stop came before Serve started.
		if err := <-errc; failure == nil && err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
			failure = err
		}
	}
	return failure
}
