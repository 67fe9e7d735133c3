package legacy

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/novacron/sidecar/backends"
)

// Defaults of the zero values.
const (
	// DefaultTimeout bounds one upstream call when Timeout is 0: the attempt bound of every remote
	// kind.
	DefaultTimeout = backends.DefaultAttemptTimeout
	// DefaultMaxConcurrent bounds the calls of one PredictBandwidth fan-out when MaxConcurrent is 0.
	DefaultMaxConcurrent = 8
	// DefaultMaxIdleConns is HTTPConfig.MaxIdleConns when 0.
	DefaultMaxIdleConns = 32
	// DefaultHealthPath is HTTPConfig.HealthPath when "".
	DefaultHealthPath = "/healthz"
	// DefaultMaxResponseBytes is HTTPConfig.MaxResponseBytes when 0.
	DefaultMaxResponseBytes = 16 << 20
)

// BatchMode says when HTTP's PredictBandwidth uses the batch route.
type BatchMode string

const (
	// BatchAuto (or "") uses POST /api/v1/predict/batch for two or more requests and
	// POST /api/v1/predict for one.
	BatchAuto BatchMode = "auto"
	// BatchAlways uses the batch route for any number of requests, even one.
	BatchAlways BatchMode = "always"
	// BatchNever sends one POST /api/v1/predict per request, at most MaxConcurrent at once, for
	// upstreams without the batch route.
	BatchNever BatchMode = "never"
)

// HTTPConfig configures an HTTP client. It is plain data; the zero value of each field but BaseURL
// is valid and documented.
type HTTPConfig struct {
	// BaseURL is the upstream's scheme, host, port and optional path prefix, to which the routes
	// are appended: "http://127.0.0.1:8080" gives "http://127.0.0.1:8080/api/v1/predict". Required;
	// http or https; no query or fragment. Environment proxy settings (HTTP_PROXY) are not used.
	BaseURL string
	// Timeout bounds each HTTP request, from connecting to reading the whole answer; the batch
	// route is one request. A shorter deadline of the caller's ctx wins. 0 means DefaultTimeout
	// (2s). The time left is also sent as the X-Request-Timeout header (which the sidecar's own
	// HTTP front end honours and legacy services ignore).
	Timeout time.Duration
	// MaxIdleConns is the number of idle keep-alive connections kept open to the upstream. 0 means
	// DefaultMaxIdleConns (32).
	MaxIdleConns int
	// Batch says when PredictBandwidth uses the batch route. "" means BatchAuto.
	Batch BatchMode
	// MaxConcurrent bounds the requests in flight for one PredictBandwidth call that does not use
	// the batch route (BatchNever with several requests). 0 means DefaultMaxConcurrent (8).
	MaxConcurrent int
	// HealthPath is the path that Ready GETs; only 200 is ready. "" means DefaultHealthPath
	// ("/healthz").
	HealthPath string
	// MaxResponseBytes bounds a response body; a larger one is ErrBadResponse. 0 means
	// DefaultMaxResponseBytes (16 MiB).
	MaxResponseBytes int
	// AllowUnknownFields accepts, and drops, response fields that the proto does not have. false
	// (the zero value) rejects such a response with ErrBadResponse: the upstream speaks another
	// contract than the one the checks assume.
	AllowUnknownFields bool
}

// Validate reports the first problem with c.
func (c HTTPConfig) Validate() error {
	if c.BaseURL == "" {
		return fmt.Errorf("BaseURL: required, such as http://127.0.0.1:8080")
	}
	u, err := url.Parse(c.BaseURL)
	switch {
	case err != nil:
		return fmt.Errorf("BaseURL: %v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("BaseURL: %q: scheme %q, want http or https", c.BaseURL, u.Scheme)
	case u.Host == "":
		return fmt.Errorf("BaseURL: %q: no host", c.BaseURL)
	case u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(c.BaseURL, "?"):
		return fmt.Errorf("BaseURL: %q: a query or fragment is not allowed", c.BaseURL)
	}
	if err := checkCommon(c.Timeout, c.MaxConcurrent); err != nil {
		return err
	}
	switch {
	case c.MaxIdleConns < 0:
		return fmt.Errorf("MaxIdleConns: %d is negative (0 means %d)", c.MaxIdleConns, DefaultMaxIdleConns)
	case c.MaxResponseBytes < 0:
		return fmt.Errorf("MaxResponseBytes: %d is negative (0 means %d)", c.MaxResponseBytes, DefaultMaxResponseBytes)
	case c.HealthPath != "" && !strings.HasPrefix(c.HealthPath, "/"):
		return fmt.Errorf("HealthPath: %q does not start with /", c.HealthPath)
	}
	switch c.Batch {
	case "", BatchAuto, BatchAlways, BatchNever:
	default:
		return fmt.Errorf("Batch: %q, want %q (or empty), %q or %q", c.Batch, BatchAuto, BatchAlways, BatchNever)
	}
	return nil
}

// GRPCConfig configures a gRPC client. It is plain data; the zero value of each field but Address
// is valid and documented.
type GRPCConfig struct {
	// Address is the gRPC target: "host:port", or any grpc-go target such as
	// "dns:///ai.internal:50051" or "unix:///run/ai.sock". Required. The connection is plaintext
	// (no TLS): loopback or a trusted network only. One HTTP/2 connection carries every call, so
	// there is no idle-connection setting.
	Address string
	// Timeout bounds each RPC; a PredictBandwidth with several requests makes one RPC per request,
	// each with its own Timeout from when it starts. A shorter deadline of the caller's ctx wins.
	// 0 means DefaultTimeout (2s).
	Timeout time.Duration
	// MaxConcurrent bounds the RPCs in flight for one PredictBandwidth call with several requests
	// (the seed's AIService has no batch RPC). 0 means DefaultMaxConcurrent (8).
	MaxConcurrent int
	// HealthService is the service name that Ready asks grpc.health.v1 about. "" (the zero value)
	// asks about the server as a whole.
	HealthService string
}

// Validate reports the first problem with c.
func (c GRPCConfig) Validate() error {
	switch {
	case c.Address == "":
		return fmt.Errorf("Address: required, such as 127.0.0.1:50051")
	case strings.ContainsFunc(c.Address, func(r rune) bool { return r <= ' ' }):
		return fmt.Errorf("Address: %q contains spaces or control characters", c.Address)
	}
	return checkCommon(c.Timeout, c.MaxConcurrent)
}

func checkCommon(timeout time.Duration, maxConcurrent int) error {
	switch {
	case timeout < 0:
		return fmt.Errorf("Timeout: %v is negative (0 means %v)", timeout, DefaultTimeout)
	case maxConcurrent < 0:
		return fmt.Errorf("MaxConcurrent: %d is negative (0 means %d)", maxConcurrent, DefaultMaxConcurrent)
	}
	return nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
