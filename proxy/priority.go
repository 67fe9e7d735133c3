package proxy

import (
	"context"
	"strings"
)

// Priorities of queued calls: a caller may set one with the x-priority header (gRPC metadata or
// HTTP), "high" or "low"; otherwise unary calls are high and batch calls low.
const (
	PriorityLow  = 0
	PriorityHigh = 1
)

type priorityKey struct{}

// withPriority records a caller's requested priority (from its header) in ctx.
func withPriority(ctx context.Context, header string) context.Context {
	switch strings.ToLower(header) {
	case "high":
		return context.WithValue(ctx, priorityKey{}, PriorityHigh)
	case "low":
		return context.WithValue(ctx, priorityKey{}, PriorityLow)
	}
	return ctx
}

func priority(ctx context.Context, def int) int {
	if p, ok := ctx.Value(priorityKey{}).(int); ok {
		return p
	}
	return def
}
