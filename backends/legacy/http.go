package legacy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/novacron/sidecar/backends"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// The seed's HTTP/JSON routes, as the sidecar's own front end (package proxy) serves them too.
const (
	routePredict      = "/api/v1/predict"
	routePredictBatch = "/api/v1/predict/batch"
	routeAnomaly      = "/api/v1/anomaly"
	routePlacement    = "/api/v1/placement"
)

// HTTP is a client of the seed's HTTP/JSON routes. Bodies are the proto messages in JSON under
// their proto field names, every field written (protojson with UseProtoNames and EmitUnpopulated,
// as the sidecar's front end writes them); the batch route takes {"vms": [request...]} and answers
// {"results": [response...]} in the same order. Non-200 answers carry their message in the
// sidecar's {"error": {"code", "message"}} shape, FastAPI's {"detail": ...} or plain text; the
// message is kept in the error. Safe for concurrent use.
type HTTP struct {
	cfg    HTTPConfig // with defaults applied
	base   string     // BaseURL without a trailing slash
	client *http.Client
	jsonIn protojson.UnmarshalOptions
	life   lifecycle
}

var jsonOut = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// NewHTTP makes a client of the upstream at cfg.BaseURL. It does not connect: Ready does.
func NewHTTP(cfg HTTPConfig) (*HTTP, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("legacy: HTTPConfig.%w", err)
	}
	cfg.Timeout = orDefault(cfg.Timeout, DefaultTimeout)
	cfg.MaxIdleConns = orDefault(cfg.MaxIdleConns, DefaultMaxIdleConns)
	cfg.Batch = orDefault(cfg.Batch, BatchAuto)
	cfg.MaxConcurrent = orDefault(cfg.MaxConcurrent, DefaultMaxConcurrent)
	cfg.HealthPath = orDefault(cfg.HealthPath, DefaultHealthPath)
	cfg.MaxResponseBytes = orDefault(cfg.MaxResponseBytes, DefaultMaxResponseBytes)
	transport := &http.Transport{
		Proxy:                 nil, // a sidecar talks to its upstream directly
		DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          cfg.MaxIdleConns,
		MaxIdleConnsPerHost:   cfg.MaxIdleConns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.Timeout,
		ExpectContinueTimeout: time.Second,
	}
	return &HTTP{
		cfg:  cfg,
		base: strings.TrimSuffix(cfg.BaseURL, "/"),
		client: &http.Client{
			Transport: transport,
			// A redirect is not part of the contract: report it rather than re-POST elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		jsonIn: protojson.UnmarshalOptions{DiscardUnknown: cfg.AllowUnknownFields},
	}, nil
}

// PredictBandwidth implements Client. Several requests go in one POST /api/v1/predict/batch, or,
// with BatchNever, as one POST /api/v1/predict each, at most MaxConcurrent at once.
func (h *HTTP) PredictBandwidth(ctx context.Context, reqs []*aipb.BandwidthRequest) ([]*aipb.BandwidthResponse, error) {
	if !h.life.enter() {
		return nil, h.errorf("POST "+routePredict, backends.ErrUnavailable, "%v", errClosed)
	}
	defer h.life.exit()
	if err := checkRequests(reqs); err != nil {
		return nil, h.errorf("POST "+routePredict, backends.ErrInvalidInput, "%v", err)
	}
	switch {
	case len(reqs) == 0:
		return []*aipb.BandwidthResponse{}, nil
	case h.cfg.Batch == BatchAlways || h.cfg.Batch == BatchAuto && len(reqs) > 1:
		return h.predictBatch(ctx, reqs)
	}
	out := make([]*aipb.BandwidthResponse, len(reqs))
	err := forEach(ctx, len(reqs), h.cfg.MaxConcurrent, func(ctx context.Context, i int) error {
		route := "POST " + routePredict + rowName(reqs, i)
		resp := &aipb.BandwidthResponse{}
		if err := h.post(ctx, route, routePredict, reqs[i], resp); err != nil {
			return err
		}
		if err := checkBandwidth(reqs[i], resp); err != nil {
			return h.bad(route, err)
		}
		out[i] = resp
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (h *HTTP) predictBatch(ctx context.Context, reqs []*aipb.BandwidthRequest) ([]*aipb.BandwidthResponse, error) {
	route := "POST " + routePredictBatch
	resp := &aipb.BandwidthBatchResponse{}
	if err := h.post(ctx, route, routePredictBatch, &aipb.BandwidthBatchRequest{Vms: reqs}, resp); err != nil {
		return nil, err
	}
	return h.batchResults(route, reqs, resp)
}

// batchResults checks a decoded batch answer against its requests and returns its rows.
func (h *HTTP) batchResults(route string, reqs []*aipb.BandwidthRequest, resp *aipb.BandwidthBatchResponse) ([]*aipb.BandwidthResponse, error) {
	if len(resp.Results) != len(reqs) {
		return nil, h.bad(route, badField("results", "%d rows, want %d (one per request, in order)", len(resp.Results), len(reqs)))
	}
	for i, r := range resp.Results {
		if err := checkBandwidth(reqs[i], r); err != nil {
			return nil, h.bad(route, prefixed(fmt.Sprintf("results[%d]", i), err))
		}
	}
	return resp.Results, nil
}

// DetectAnomaly implements Client with POST /api/v1/anomaly.
func (h *HTTP) DetectAnomaly(ctx context.Context, req *aipb.AnomalyRequest) (*aipb.AnomalyResponse, error) {
	route := "POST " + routeAnomaly
	if err := h.begin(route, req == nil); err != nil {
		return nil, err
	}
	defer h.life.exit()
	resp := &aipb.AnomalyResponse{}
	if err := h.post(ctx, route, routeAnomaly, req, resp); err != nil {
		return nil, err
	}
	if err := checkAnomaly(resp); err != nil {
		return nil, h.bad(route, err)
	}
	return resp, nil
}

// OptimizePlacement implements Client with POST /api/v1/placement.
func (h *HTTP) OptimizePlacement(ctx context.Context, req *aipb.PlacementRequest) (*aipb.PlacementResponse, error) {
	route := "POST " + routePlacement
	if err := h.begin(route, req == nil); err != nil {
		return nil, err
	}
	defer h.life.exit()
	resp := &aipb.PlacementResponse{}
	if err := h.post(ctx, route, routePlacement, req, resp); err != nil {
		return nil, err
	}
	if err := checkPlacement(req, resp); err != nil {
		return nil, h.bad(route, err)
	}
	return resp, nil
}

// Ready implements Client: GET HealthPath must answer 200 within Timeout.
func (h *HTTP) Ready(ctx context.Context) error {
	route := "GET " + h.cfg.HealthPath
	if !h.life.enter() {
		return h.errorf(route, backends.ErrUnavailable, "%v", errClosed)
	}
	defer h.life.exit()
	cctx, cancel := context.WithTimeoutCause(ctx, h.cfg.Timeout, errCallTimeout)
	defer cancel()
	r, err := http.NewRequestWithContext(cctx, http.MethodGet, h.base+h.cfg.HealthPath, nil)
	if err != nil {
		return h.errorf(route, backends.ErrUnavailable, "%v", err)
	}
	resp, err := h.client.Do(r)
	if err != nil {
		return h.transportError(ctx, cctx, route, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return h.errorf(route, backends.ErrUnavailable, "HTTP %s: %s", resp.Status, upstreamMessage(body))
	}
	return nil
}

// Close implements Client.
func (h *HTTP) Close() error {
	if h.life.close() {
		h.client.CloseIdleConnections()
	}
	return nil
}

// begin registers a call of a single-request route; the caller must defer h.life.exit() when it
// returns nil.
func (h *HTTP) begin(route string, nilReq bool) error {
	if nilReq {
		return h.errorf(route, backends.ErrInvalidInput, "nil request")
	}
	if !h.life.enter() {
		return h.errorf(route, backends.ErrUnavailable, "%v", errClosed)
	}
	return nil
}

// post sends req as JSON to path and decodes a 200 answer into resp; route names the call in
// errors.
func (h *HTTP) post(ctx context.Context, route, path string, req, resp proto.Message) error {
	body, err := jsonOut.Marshal(req)
	if err != nil {
		return h.errorf(route, backends.ErrInvalidInput, "encoding the request: %v", err)
	}
	own := time.Now().Add(h.cfg.Timeout)
	cctx, cancel := context.WithDeadlineCause(ctx, own, errCallTimeout)
	defer cancel()
	r, err := http.NewRequestWithContext(cctx, http.MethodPost, h.base+path, bytes.NewReader(body))
	if err != nil {
		return h.errorf(route, backends.ErrUnavailable, "%v", err)
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json")
	if d, ok := cctx.Deadline(); ok {
		if left := time.Until(d).Round(time.Millisecond); left > 0 {
			r.Header.Set("X-Request-Timeout", left.String())
		}
	}
	hr, err := h.client.Do(r)
	if err != nil {
		return h.transportError(ctx, cctx, route, err)
	}
	defer hr.Body.Close()
	limit := h.cfg.MaxResponseBytes
	data, err := io.ReadAll(io.LimitReader(hr.Body, int64(limit)+1))
	if err != nil {
		return h.transportError(ctx, cctx, route, fmt.Errorf("reading the answer: %w", err))
	}
	if hr.StatusCode != http.StatusOK {
		return h.statusError(ctx, own, route, hr, data)
	}
	if len(data) > limit {
		return h.bad(route, badField("body", "larger than %d bytes (MaxResponseBytes)", limit))
	}
	if err := h.jsonIn.Unmarshal(data, resp); err != nil {
		return h.bad(route, badField("body", "not a valid %s JSON object: %v", resp.ProtoReflect().Descriptor().Name(), err))
	}
	return nil
}

// transportError maps a failed exchange: the caller's ctx ending, the call's own timeout, or the
// upstream being unreachable.
func (h *HTTP) transportError(ctx, cctx context.Context, route string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return h.errorf(route, cerr, "no answer before the caller's context ended")
	}
	if errors.Is(context.Cause(cctx), errCallTimeout) {
		return h.errorf(route, backends.ErrUnavailable, "no answer within %v (Timeout)", h.cfg.Timeout)
	}
	return h.errorf(route, backends.ErrUnavailable, "%v", err)
}

// statusError maps a non-200 answer; own is the deadline of the call's own Timeout.
func (h *HTTP) statusError(ctx context.Context, own time.Time, route string, hr *http.Response, body []byte) error {
	msg := upstreamMessage(body)
	if hr.StatusCode == http.StatusGatewayTimeout {
		if kind, reason := deadlineError(ctx, own, h.cfg.Timeout, "HTTP "+hr.Status+": "+msg); kind != nil {
			return h.errorf(route, kind, "%s", reason)
		}
	}
	switch c := hr.StatusCode; {
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500 && c <= 599:
		return h.errorf(route, backends.ErrUnavailable, "HTTP %s: %s", hr.Status, msg)
	case c == http.StatusBadRequest || c == http.StatusUnprocessableEntity || c == http.StatusRequestEntityTooLarge:
		// The service's own checks of the data. Other 4xx (404, 405, 401, ...) say the endpoint is
		// misconfigured, not the caller's input: they fail over like a 5xx.
		return h.errorf(route, backends.ErrInvalidInput, "upstream rejected the request: HTTP %s: %s", hr.Status, msg)
	case c >= 400 && c <= 499:
		return h.errorf(route, backends.ErrUnavailable, "HTTP %s: %s", hr.Status, msg)
	}
	return h.bad(route, badField("status", "HTTP %s, want 200 OK: %s", hr.Status, msg))
}

func (h *HTTP) errorf(route string, kind error, format string, args ...any) error {
	return fmt.Errorf("legacy %s %s: %s: %w", h.base, route, fmt.Sprintf(format, args...), kind)
}

func (h *HTTP) bad(route string, err error) error {
	return fmt.Errorf("legacy %s %s: response %v: %w", h.base, route, err, ErrBadResponse)
}

// upstreamMessage extracts the message of an error body: the sidecar's {"error": {"code",
// "message"}}, {"error": "..."}, FastAPI's {"detail": ...}, {"message": "..."}, or else the text
// itself, on one line and at most 300 bytes.
func upstreamMessage(body []byte) string {
	var v struct {
		Error   json.RawMessage `json:"error"`
		Detail  json.RawMessage `json:"detail"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(body, &v) == nil {
		var st struct{ Code, Message string }
		var s string
		switch {
		case json.Unmarshal(v.Error, &st) == nil && (st.Code != "" || st.Message != ""):
			return clip(strings.TrimPrefix(st.Code+": "+st.Message, ": "))
		case json.Unmarshal(v.Error, &s) == nil && s != "":
			return clip(s)
		case json.Unmarshal(v.Detail, &s) == nil && s != "":
			return clip(s)
		case len(v.Detail) > 0:
			return clip(string(v.Detail))
		case v.Message != "":
			return clip(v.Message)
		}
	}
	if s := clip(string(body)); s != "" {
		return s
	}
	return "(empty body)"
}

// clip makes s one line of at most 300 bytes of valid UTF-8 (303 with the "..." of a cut).
func clip(s string) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "?")), " ")
	if len(s) <= 300 {
		return s
	}
	cut := 300
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

var _ Client = (*HTTP)(nil)
