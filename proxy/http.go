package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/novacron/sidecar/backends"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// Readiness reports whether the sidecar can answer: nil when ready, else the reason per component.
type Readiness func(ctx context.Context) map[string]error

// HTTPOptions are the HTTP front end's collaborators.
type HTTPOptions struct {
	// Gatherer serves /metrics; nil serves no /metrics route.
	Gatherer prometheus.Gatherer
	// Ready backs /readyz; nil means always ready.
	Ready Readiness
}

// NewHTTPHandler builds the HTTP/JSON front end:
//
//	POST /api/v1/predict        BandwidthRequest  -> BandwidthResponse
//	POST /api/v1/predict/batch  {"vms": [BandwidthRequest...]} -> {"results": [...]}
//	POST /api/v1/anomaly        AnomalyRequest    -> AnomalyResponse
//	POST /api/v1/placement      PlacementRequest  -> PlacementResponse
//	GET  /healthz, /readyz, /metrics
//
// Bodies are the proto messages in JSON under their proto field names; unknown fields are errors.
func NewHTTPHandler(svc *Service, opt HTTPOptions) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /api/v1/predict", route(svc, "PredictBandwidth", svc.PredictBandwidth))
	mux.Handle("POST /api/v1/predict/batch", route(svc, "PredictBandwidthBatch", svc.PredictBandwidthBatch))
	mux.Handle("POST /api/v1/anomaly", route(svc, "DetectAnomaly", svc.DetectAnomaly))
	mux.Handle("POST /api/v1/metrics", route(svc, "PushMetrics", svc.PushMetrics))
	mux.Handle("POST /api/v1/placement", route(svc, "OptimizePlacement", svc.OptimizePlacement))
	registerOIP(mux, svc)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		status := map[string]string{}
		code := http.StatusOK
		if opt.Ready != nil {
			for k, err := range opt.Ready(r.Context()) {
				status[k] = "ready"
				if err != nil {
					status[k] = err.Error()
					code = http.StatusServiceUnavailable
				}
			}
		}
		writeJSON(w, code, map[string]any{"ready": code == http.StatusOK, "components": status})
	})
	if opt.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(opt.Gatherer, promhttp.HandlerOpts{}))
	}
	return mux
}

var (
	jsonIn  = protojson.UnmarshalOptions{}
	jsonOut = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
)

// route adapts one pipeline method to HTTP/JSON: content type, size limit, strict decoding,
// error mapping, metrics.
func route[Req, Resp proto.Message](svc *Service, method string, call func(context.Context, Req) (Resp, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		resp, err := recovered(func() (Resp, error) { return serveJSON(svc, w, r, call) })
		if err != nil {
			writeError(w, err)
		} else {
			b, merr := jsonOut.Marshal(resp)
			if merr != nil {
				err = fmt.Errorf("encoding response: %w", merr)
				writeError(w, err)
			} else {
				w.Header().Set("Content-Type", "application/json")
				w.Write(b)
			}
		}
		if svc.metrics != nil {
			svc.metrics.observeRequest("http", method, Code(err).String(), time.Since(start))
		}
	})
}

func serveJSON[Req, Resp proto.Message](svc *Service, w http.ResponseWriter, r *http.Request, call func(context.Context, Req) (Resp, error)) (Resp, error) {
	var zero Resp
	ctx, body, cancel, err := readRequest(svc, w, r, false)
	defer cancel()
	if err != nil {
		return zero, err
	}
	defer staleHeader(ctx, w)
	req := newMessage[Req]()
	if len(body) == 0 {
		return zero, invalid("body", "empty; want a JSON object")
	}
	if br, ok := any(req).(*aipb.BandwidthRequest); ok && decodeBandwidthFast(body, br) {
		return call(ctx, req)
	}
	proto.Reset(req) // the fast path may have filled part of it
	if err := jsonIn.Unmarshal(body, req); err != nil {
		return zero, invalid("body", fmt.Sprintf("not a valid %s JSON object: %v", req.ProtoReflect().Descriptor().Name(), trimProto(err)))
	}
	return call(ctx, req)
}

// readRequest checks an HTTP request's content type (application/json; a missing one only when
// allowMissing), reads its body within limits.max_message_bytes, and applies the X-Priority and
// X-Request-Timeout headers to its context. Call cancel when done, also on error.
func readRequest(svc *Service, w http.ResponseWriter, r *http.Request, allowMissing bool) (ctx context.Context, body []byte, cancel context.CancelFunc, err error) {
	ctx, cancel = r.Context(), func() {}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return ctx, nil, cancel, fmt.Errorf("Content-Type: %q, want application/json: %w", ct, ErrUnsupportedMediaType)
		}
	} else if !allowMissing {
		return ctx, nil, cancel, fmt.Errorf("Content-Type: missing, want application/json: %w", ErrUnsupportedMediaType)
	}
	limit := int64(svc.cfg.MaxMessageBytes)
	body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return ctx, nil, cancel, fmt.Errorf("body: larger than %d bytes (limits.max_message_bytes): %w", limit, ErrTooLarge)
		}
		return ctx, nil, cancel, invalid("body", "reading: "+err.Error())
	}
	if p := r.Header.Get("X-Priority"); p != "" {
		ctx = withPriority(ctx, p)
	}
	if t := r.Header.Get("X-Request-Timeout"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d <= 0 {
			return ctx, nil, cancel, invalid("X-Request-Timeout", fmt.Sprintf("%q is not a positive duration such as 250ms", t))
		}
		ctx, cancel = context.WithTimeout(ctx, d)
	}
	if svc.state.Load().anyStale {
		ctx = withStaleNote(ctx)
	}
	return ctx, body, cancel, nil
}

// StaleHeader is the response header (HTTP) and metadata key (gRPC) that marks an answer served,
// at least in part, from a stale cached answer: its value is the oldest one's age, such as 72.5s.
const StaleHeader = "X-Sidecar-Stale"

// staleHeader sets StaleHeader when the call made with ctx was answered from stale answers. Call
// it before the body is written.
func staleHeader(ctx context.Context, w http.ResponseWriter) {
	if age, ok := StaleAge(ctx); ok {
		w.Header().Set(StaleHeader, staleValue(age))
	}
}

func staleValue(age time.Duration) string {
	return strconv.FormatFloat(age.Seconds(), 'f', 1, 64) + "s"
}

// newMessage makes a new message of a pointer type such as *aipb.BandwidthRequest.
func newMessage[M proto.Message]() M {
	var m M
	return m.ProtoReflect().Type().New().Interface().(M)
}

func trimProto(err error) string {
	s := err.Error()
	for _, p := range []string{"proto: ", "proto:\u00a0"} {
		if len(s) > len(p) && s[:len(p)] == p {
			return s[len(p):]
		}
	}
	return s
}

// errorBody is the JSON error shape of every route: the gRPC code name and the message.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, err error) {
	if d, ok := retryAfter(err); ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.Seconds()))))
	}
	var b errorBody
	b.Error.Code = backends.CodeName(Code(err))
	b.Error.Message = err.Error()
	writeJSON(w, httpStatus(err), b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
