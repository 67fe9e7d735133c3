package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/batcher"
	"github.com/novacron/sidecar/features"
)

// Sentinel errors of the pipeline. Every error a front end sees wraps one of these, a features or
// backends sentinel, or a context error; Code maps them to one status for both protocols.
var (
	// ErrUnknownModel: the request names a model that is not loaded.
	ErrUnknownModel = errors.New("unknown model")
	// ErrTooLarge: a body or message above limits.max_message_bytes.
	ErrTooLarge = errors.New("request too large")
	// ErrUnsupportedMediaType: an HTTP body that is not application/json, or is compressed.
	ErrUnsupportedMediaType = errors.New("unsupported media type")
	// ErrForbiddenHost: an HTTP request whose Host names neither an address of the sidecar nor
	// an allowed host (listen.allowed_hosts).
	ErrForbiddenHost = errors.New("host not allowed")
	// ErrNotFound and ErrMethodNotAllowed: an HTTP path with no route, or a method the route does
	// not take.
	ErrNotFound         = errors.New("no such route")
	ErrMethodNotAllowed = errors.New("method not allowed")
	// ErrInflight: the request bodies being served already hold limits.max_inflight_bytes.
	ErrInflight = errors.New("too many request bytes in flight")
	// ErrBadOutput: the model answered with outputs of the wrong shape or non-finite values;
	// never served.
	ErrBadOutput = errors.New("model output does not fit its task")
	// errPanic: a request handler panicked; the caller gets Internal / 500.
	errPanic = errors.New("internal error (recovered panic)")
)

// invalid makes a bad-input error naming a request field.
func invalid(field, reason string) error {
	return &features.FieldError{Field: field, Reason: reason}
}

// Code is the one error-to-status mapping of both front ends.
func Code(err error) codes.Code {
	switch {
	case err == nil:
		return codes.OK
	case errors.Is(err, ErrUnknownModel), errors.Is(err, ErrNotFound):
		return codes.NotFound
	case errors.Is(err, ErrForbiddenHost):
		return codes.PermissionDenied
	case errors.Is(err, ErrMethodNotAllowed):
		return codes.Unimplemented
	case errors.Is(err, features.ErrInvalid), errors.Is(err, backends.ErrInvalidInput),
		errors.Is(err, ErrUnsupportedMediaType):
		return codes.InvalidArgument
	case errors.Is(err, features.ErrNotReady):
		return codes.FailedPrecondition
	case errors.Is(err, ErrTooLarge), errors.Is(err, batcher.ErrOverloaded), errors.Is(err, features.ErrTooManyVMs),
		errors.Is(err, ErrInflight):
		return codes.ResourceExhausted
	case errors.Is(err, batcher.ErrClosed):
		return codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, backends.ErrUnavailable), errors.Is(err, backends.ErrBadResponse):
		return codes.Unavailable
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return codes.Internal
}

// grpcError turns a pipeline error into a gRPC status error; an overload carries a RetryInfo
// detail with the batcher's estimate of when to retry.
func grpcError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	msg := err.Error()
	if len(msg) > maxStatusBytes {
		cut := maxStatusBytes
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = fmt.Sprintf("%s... (%d bytes of the message cut)", msg[:cut], len(msg)-cut)
	}
	st := status.New(Code(err), msg)
	if d, ok := retryAfter(err); ok {
		if withInfo, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)}); derr == nil {
			st = withInfo
		}
	}
	return st.Err()
}

// maxStatusBytes bounds a gRPC status message: it travels in a trailer, and a client refuses
// headers above its limit (grpc-go's default is 16 KiB), which would turn the intended status into
// an INTERNAL stream reset.
const maxStatusBytes = 4 << 10

// retryAfter is the retry hint of an overload error.
func retryAfter(err error) (time.Duration, bool) {
	var oe *batcher.OverloadError
	if errors.As(err, &oe) {
		return oe.RetryAfter, true
	}
	if errors.Is(err, ErrInflight) {
		return inflightRetry, true
	}
	return 0, false
}

// httpCodeName is the "code" of an HTTP error body: the gRPC code's name, or for the refusals
// HTTP has and gRPC has not, UNSUPPORTED_MEDIA_TYPE (415) and METHOD_NOT_ALLOWED (405).
func httpCodeName(err error) string {
	switch {
	case errors.Is(err, ErrUnsupportedMediaType):
		return "UNSUPPORTED_MEDIA_TYPE"
	case errors.Is(err, ErrMethodNotAllowed):
		return "METHOD_NOT_ALLOWED"
	}
	return backends.CodeName(Code(err))
}

// httpStatus maps a pipeline error to an HTTP status: the gRPC code's usual HTTP equivalent, with
// 413 for an oversized body and 415 for a wrong content type.
func httpStatus(err error) int {
	switch {
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrUnsupportedMediaType):
		return http.StatusUnsupportedMediaType
	case errors.Is(err, ErrMethodNotAllowed):
		return http.StatusMethodNotAllowed
	case errors.Is(err, backends.ErrBadResponse) && !errors.Is(err, backends.ErrUnavailable):
		return http.StatusBadGateway // an upstream answered something malformed
	}
	switch Code(err) {
	case codes.OK:
		return http.StatusOK
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.NotFound:
		return http.StatusNotFound
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.Canceled:
		return 499 // client closed request, as nginx and Envoy count it
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
