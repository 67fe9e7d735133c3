package proxy

import (
	"context"
	"errors"
	"net/http"
	"time"

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
	// ErrUnsupportedMediaType: an HTTP body that is not application/json.
	ErrUnsupportedMediaType = errors.New("unsupported media type")
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
	case errors.Is(err, ErrUnknownModel):
		return codes.NotFound
	case errors.Is(err, features.ErrInvalid), errors.Is(err, backends.ErrInvalidInput),
		errors.Is(err, ErrUnsupportedMediaType):
		return codes.InvalidArgument
	case errors.Is(err, features.ErrNotReady):
		return codes.FailedPrecondition
	case errors.Is(err, ErrTooLarge), errors.Is(err, batcher.ErrOverloaded), errors.Is(err, features.ErrTooManyVMs):
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
	st := status.New(Code(err), err.Error())
	if d, ok := retryAfter(err); ok {
		if withInfo, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)}); derr == nil {
			st = withInfo
		}
	}
	return st.Err()
}

// retryAfter is the retry hint of an overload error.
func retryAfter(err error) (time.Duration, bool) {
	var oe *batcher.OverloadError
	if errors.As(err, &oe) {
		return oe.RetryAfter, true
	}
	return 0, false
}

// httpStatus maps a pipeline error to an HTTP status: the gRPC code's usual HTTP equivalent, with
// 413 for an oversized body and 415 for a wrong content type.
func httpStatus(err error) int {
	switch {
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrUnsupportedMediaType):
		return http.StatusUnsupportedMediaType
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
