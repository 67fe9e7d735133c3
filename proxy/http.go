package proxy

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/novacron/sidecar/features/drift"
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
	// AllowedHosts are the Host header values answered besides IP addresses and "localhost" (with
	// or without a port); "*" allows any. A request naming another host is refused with 403: a
	// web page that reaches the sidecar through a DNS name it controls (DNS rebinding) names its
	// own host.
	AllowedHosts []string
	// DriftMonitors returns the models' drift monitors by name, as of the call (read, never
	// changed), and serves GET /v1/drift/sketches?model=M (DriftSketchesPath) from them; nil
	// serves no such route. It is called once per request, from concurrent requests.
	DriftMonitors func() map[string]*drift.Monitor
}

// NewHTTPHandler builds the HTTP/JSON front end:
//
//	POST /api/v1/predict        BandwidthRequest  -> BandwidthResponse
//	POST /api/v1/predict/batch  {"vms": [BandwidthRequest...]} -> {"results": [...]}
//	POST /api/v1/anomaly        AnomalyRequest    -> AnomalyResponse
//	POST /api/v1/placement      PlacementRequest  -> PlacementResponse
//	POST /api/v1/metrics        PushMetricsRequest -> PushMetricsResponse
//	POST /api/v1/labels         PushLabelsRequest  -> PushLabelsResponse
//	GET  /healthz, /readyz, /metrics
//	GET  /v1/drift/sketches?model=M  drift.Snapshot, when HTTPOptions.DriftMonitors is set
//
// Bodies are the proto messages in JSON under their proto field names; unknown fields are errors.
func NewHTTPHandler(svc *Service, opt HTTPOptions) http.Handler {
	mux := http.NewServeMux()

	mux.Handle("POST /api/v1/predict", jsonRoute(svc, "PredictBandwidth", svc.PredictBandwidth))
	mux.Handle("POST /api/v1/predict/batch", jsonRoute(svc, "PredictBandwidthBatch", svc.PredictBandwidthBatch))
	mux.Handle("POST /api/v1/anomaly", jsonRoute(svc, "DetectAnomaly", svc.DetectAnomaly))
	mux.Handle("POST /api/v1/metrics", jsonRoute(svc, "PushMetrics", svc.PushMetrics))
	mux.Handle("POST /api/v1/labels", jsonRoute(svc, "PushLabels", svc.PushLabels))
	mux.Handle("POST /api/v1/placement", jsonRoute(svc, "OptimizePlacement", svc.OptimizePlacement))
	registerOIP(mux, svc)
	registerDrift(mux, opt.DriftMonitors)
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
	return &guard{svc: svc, mux: mux, hosts: opt.AllowedHosts}
}

// guard checks what every request must satisfy before its route runs: a Host this sidecar
// answers to, and for a POST a body within the in-flight byte bound (its content type and
// encoding are readRequest's to check). It answers unknown paths and methods with the JSON error
// body of the /api/v1 routes.
type guard struct {
	svc   *Service
	mux   *http.ServeMux
	hosts []string
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := g.checkHost(r.Host); err != nil {
		writeError(w, err)
		return
	}
	h, pattern := g.mux.Handler(r)
	if pattern == "" {
		// Not found, or a method the path does not take: the mux's own answer, as JSON.
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		code := cmp.Or(rec.code, http.StatusNotFound)
		var err error
		if code == http.StatusMethodNotAllowed {
			err = fmt.Errorf("method %s: %s takes %s: %w", clip(r.Method), clip(r.URL.Path), cmp.Or(allow(rec), "none"), ErrMethodNotAllowed)
		} else {
			err = fmt.Errorf("path %s: no such route (routes: /api/v1/..., /v2/..., /v1/drift/sketches, /healthz, /readyz, /metrics): %w", clip(r.URL.Path), ErrNotFound)
		}
		writeError(w, err)
		return
	}
	if r.Method == http.MethodPost {
		n := int64(g.svc.cfg.MaxMessageBytes)
		if r.ContentLength > n {
			writeError(w, fmt.Errorf("body: %d bytes, larger than %d (limits.max_message_bytes): %w", r.ContentLength, n, ErrTooLarge))
			return
		}
		if r.ContentLength >= 0 {
			n = r.ContentLength
		}
		if err := g.svc.inflight.acquire(n); err != nil {
			// Read the body away (held nowhere) before answering: a client still writing it would
			// otherwise see its connection reset instead of the 429 and its Retry-After.
			io.CopyN(io.Discard, r.Body, n)
			writeError(w, err)
			return
		}
		defer g.svc.inflight.release(n)
	}
	g.mux.ServeHTTP(w, r) // sets the request's pattern and path values
}

func allow(rec *statusRecorder) string { return rec.header.Get("Allow") }

// statusRecorder keeps the status and headers of the mux's not-found and method answers.
type statusRecorder struct {
	header http.Header
	code   int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(code int)        { s.code = code }

// checkHost refuses a Host header that names neither an IP address, localhost, nor an allowed
// host.
func (g *guard) checkHost(hostport string) error {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" || strings.EqualFold(host, "localhost") || net.ParseIP(host) != nil {
		return nil
	}
	for _, a := range g.hosts {
		if a == "*" || strings.EqualFold(a, host) || strings.EqualFold(a, hostport) {
			return nil
		}
	}
	return fmt.Errorf("Host: %s is not an address of this sidecar; a name other than localhost must be listed in listen.allowed_hosts: %w", clip(hostport), ErrForbiddenHost)
}

// checkBodyHeaders requires a JSON body (application/json, so that a browser must ask before it
// sends one: a "simple" cross-site request cannot carry that type) without a content encoding.
func checkBodyHeaders(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return fmt.Errorf("Content-Type: missing, want application/json: %w", ErrUnsupportedMediaType)
	}
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return fmt.Errorf("Content-Type: %s, want application/json: %w", clip(ct), ErrUnsupportedMediaType)
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return fmt.Errorf("Content-Encoding: %s is not supported; send the body uncompressed: %w", clip(ce), ErrUnsupportedMediaType)
	}
	return nil
}

var (
	jsonIn  = protojson.UnmarshalOptions{}
	jsonOut = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
)

// jsonRoute adapts one pipeline method to HTTP/JSON: content type, size limit, strict decoding,
// error mapping, metrics.
func jsonRoute[Req, Resp proto.Message](svc *Service, method string, call func(context.Context, Req) (Resp, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		resp, err := recovered(func() (Resp, error) { return serveJSON(svc, method, w, r, call) })
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

func serveJSON[Req, Resp proto.Message](svc *Service, method string, w http.ResponseWriter, r *http.Request, call func(context.Context, Req) (Resp, error)) (Resp, error) {
	var zero Resp
	ctx, body, cancel, err := readRequest(svc, w, r)
	defer cancel()
	if err != nil {
		return zero, err
	}
	defer staleHeader(ctx, w)
	req := newMessage[Req]()
	if len(body) == 0 {
		return zero, invalid("body", "empty; want a JSON object")
	}
	if limit := svc.arrayBound(method); limit > 0 {
		if field, ok := arraysWithin(body, limit); !ok && field == "" {
			return zero, invalid("body", fmt.Sprintf("nested more than %d levels deep", maxScanDepth))
		} else if !ok {
			return zero, invalid(field, fmt.Sprintf("more than %d values, the most this call takes (%s); the body was not decoded further", limit, svc.arrayWhy(method)))
		}
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

// readRequest checks an HTTP request's content type (application/json) and encoding (none), reads
// its body within limits.max_message_bytes, and applies the X-Priority and X-Request-Timeout
// headers to its context. Call cancel when done, also on error.
func readRequest(svc *Service, w http.ResponseWriter, r *http.Request) (ctx context.Context, body []byte, cancel context.CancelFunc, err error) {
	ctx, cancel = r.Context(), func() {}
	if err := checkBodyHeaders(r); err != nil {
		return ctx, nil, cancel, err
	}
	limit := int64(svc.cfg.MaxMessageBytes)
	rd := http.MaxBytesReader(w, r.Body, limit)
	if n := r.ContentLength; n >= 0 && n <= limit {
		// The length is known: one buffer of that size, not ReadAll's doublings.
		body = make([]byte, n)
		_, err = io.ReadFull(rd, body)
		if err == nil {
			var one [1]byte
			if k, _ := rd.Read(one[:]); k > 0 {
				err = errors.New("more bytes than Content-Length")
			}
		}
	} else {
		body, err = io.ReadAll(rd)
	}
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
	if t := r.Header.Get(TargetHeader); t != "" {
		ctx = withForced(ctx, t)
	}
	if t := r.Header.Get("X-Request-Timeout"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d <= 0 {
			return ctx, nil, cancel, invalid("X-Request-Timeout", fmt.Sprintf("%s is not a positive duration such as 250ms", clip(t)))
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
	b.Error.Code = httpCodeName(err)
	b.Error.Message = err.Error()
	writeJSON(w, httpStatus(err), b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
