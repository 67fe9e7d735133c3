package kserve_test

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/backends/kserve"
	"github.com/novacron/sidecar/backends/oip"
	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/examples"
	"github.com/novacron/sidecar/internal/app"
	"github.com/novacron/sidecar/proto/inference"
)

// upstream starts a real sidecar (the embedded default models) on a loopback port: the server the
// Endpoint talks to.
func upstream(t *testing.T) *app.App {
	t.Helper()
	cfg, err := config.Load("", examples.FS)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen.GRPC, cfg.Listen.HTTP = "127.0.0.1:0", "off"
	a, err := app.Start(context.Background(), cfg, examples.FS, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, a) })
	return a
}

func shutdown(t *testing.T, a *app.App) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.Shutdown(ctx) // a second call (after a test stopped it early) only reports closed listeners
}

func rows(n int) backends.Tensor {
	d := make([]float32, n*10*6)
	for i := range d {
		d[i] = float32(i%13)/7 - 0.8
	}
	return backends.F32("features", []int64{int64(n), 10, 6}, d)
}

func TestEndpointAnswersAsTheModel(t *testing.T) {
	up := upstream(t)
	local := up.Service.Models()["bandwidth"]
	e, err := kserve.New(kserve.Config{Address: up.GRPCAddr, Model: "bandwidth"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	md, err := e.Check(ctx, local.Meta)
	if err != nil {
		t.Fatal(err)
	}
	if md.Version != local.Version || md.Platform != "onnxruntime_onnx" {
		t.Errorf("metadata %+v", md)
	}
	if err := e.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 7, 64} {
		b := &backends.Batch{Model: "bandwidth", Inputs: []backends.Tensor{rows(n)}}
		got, err := e.Infer(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		want, err := local.Backend.Infer(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"forecast", "sigma"} {
			g, _ := got.Output(name)
			w, _ := want.Output(name)
			if !slices.Equal(g.Shape, w.Shape) || !slices.Equal(g.Data.([]float32), w.Data.([]float32)) {
				t.Errorf("%d rows, %s: remote %v%v, local %v", n, name, g.Shape, g.Data, w.Shape)
			}
		}
	}

	// A model that does not fit what the sidecar expects is refused at Check, naming the input.
	wrong := local.Meta
	wrong.Inputs = []backends.TensorInfo{{Name: "features", DType: backends.FP32, Shape: []int64{-1, 12, 6}}}
	if _, err := e.Check(ctx, wrong); !errors.Is(err, backends.ErrModelLoad) || !strings.Contains(err.Error(), `input "features"`) {
		t.Errorf("Check against a 12-step input: %v", err)
	}
	// A batch the server refuses counts against the endpoint (the sidecar builds batches from
	// checked rows, so a refusal means the server's model changed), and says why.
	bad := &backends.Batch{Inputs: []backends.Tensor{backends.F32("features", []int64{1, 9, 6}, make([]float32, 54))}}
	if _, err := e.Infer(ctx, bad); !errors.Is(err, backends.ErrUnavailable) || !strings.Contains(err.Error(), "inputs[0].shape") {
		t.Errorf("a 9-step batch: %v, want ErrUnavailable with the server's reason", err)
	}
	// A batch that is not even well formed is the caller's fault, caught before any call.
	torn := &backends.Batch{Inputs: []backends.Tensor{backends.F32("features", []int64{2, 10, 6}, make([]float32, 60))}}
	if _, err := e.Infer(ctx, torn); !errors.Is(err, backends.ErrInvalidInput) {
		t.Errorf("a tensor shorter than its shape: %v, want ErrInvalidInput", err)
	}

	// The server goes away: calls fail as unavailable, promptly.
	shutdown(t, up)
	if err := e.Ready(ctx); !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("Ready after the server stopped: %v", err)
	}
	start := time.Now()
	if _, err := e.Infer(ctx, &backends.Batch{Inputs: []backends.Tensor{rows(1)}}); !errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("Infer after the server stopped: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Infer against a stopped server took %v", d)
	}
}

// fakeServer is an Open Inference Protocol server with a fake model that answers what a test
// tells it to: the way to get malformed answers, which no real server gives.
type fakeServer struct {
	inference.UnimplementedGRPCInferenceServiceServer
	infer func(context.Context, *inference.ModelInferRequest) (*inference.ModelInferResponse, error)
}

func (f *fakeServer) ModelInfer(ctx context.Context, r *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
	return f.infer(ctx, r)
}

func startFake(t *testing.T, infer func(context.Context, *inference.ModelInferRequest) (*inference.ModelInferResponse, error)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	inference.RegisterGRPCInferenceServiceServer(srv, &fakeServer{infer: infer})
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return l.Addr().String()
}

func answer(outs ...backends.Tensor) func(context.Context, *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
	return func(context.Context, *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
		r := &inference.ModelInferResponse{}
		oip.SetOutputs(r, outs, true)
		return r, nil
	}
}

func TestEndpointRefusesMalformedAnswers(t *testing.T) {
	f := func(shape []int64, n int) backends.Tensor {
		return backends.F32("forecast", shape, make([]float32, n))
	}
	cases := []struct {
		name  string
		infer func(context.Context, *inference.ModelInferRequest) (*inference.ModelInferResponse, error)
		want  error
		says  string
	}{
		{"one row short", answer(f([]int64{1, 10}, 10)), backends.ErrBadResponse, "for a batch of 2 rows"},
		{"no outputs", answer(), backends.ErrBadResponse, "no outputs"},
		{"contents short of the shape", func(context.Context, *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
			return &inference.ModelInferResponse{Outputs: []*inference.ModelInferResponse_InferOutputTensor{{Name: "forecast", Datatype: "FP32", Shape: []int64{2, 10}}},
				RawOutputContents: [][]byte{make([]byte, 12)}}, nil
		}, backends.ErrBadResponse, "raw_output_contents[0]"},
		{"unknown datatype", func(context.Context, *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
			return &inference.ModelInferResponse{Outputs: []*inference.ModelInferResponse_InferOutputTensor{{Name: "forecast", Datatype: "FP16", Shape: []int64{2, 10}}},
				RawOutputContents: [][]byte{make([]byte, 40)}}, nil
		}, backends.ErrBadResponse, "FP16"},
		{"server refuses the input", func(context.Context, *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
			return nil, status.Error(codes.InvalidArgument, "inputs[0]: no")
		}, backends.ErrUnavailable, "refused the batch"},
		{"server overloaded", func(context.Context, *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
			return nil, status.Error(codes.ResourceExhausted, "queue full")
		}, backends.ErrUnavailable, "queue full"},
		{"server too slow for the attempt timeout", func(ctx context.Context, _ *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}, backends.ErrUnavailable, "no answer within"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := kserve.New(kserve.Config{Address: startFake(t, c.infer), Model: "m", Timeout: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			res, err := e.Infer(context.Background(), &backends.Batch{Inputs: []backends.Tensor{rows(2)}})
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) || res != nil {
				t.Errorf("got %v, %v; want %v saying %q", res, err, c.want, c.says)
			}
		})
	}
}

// TestEndpointHonoursTheCallerDeadline: a caller's deadline shorter than the attempt timeout ends
// the call at the deadline with the context's error (not counted against the endpoint).
func TestEndpointHonoursTheCallerDeadline(t *testing.T) {
	addr := startFake(t, func(ctx context.Context, _ *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	e, err := kserve.New(kserve.Config{Address: addr, Model: "m", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = e.Infer(ctx, &backends.Batch{Inputs: []backends.Tensor{rows(1)}})
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, backends.ErrUnavailable) {
		t.Errorf("got %v, want the caller's DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned after %v", d)
	}
}
