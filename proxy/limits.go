package proxy

import (
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Defaults of the request bounds (Config): the most VMs of a batch call, nodes of a placement
// call, and bytes of a gRPC message or HTTP body; and how long past its TTL an answer is kept for a
// stale fallback.
const (
	DefaultMaxBatchVMs     = 1024
	DefaultMaxNodes        = 1024
	DefaultMaxMessageBytes = 4 << 20
	DefaultMaxStale        = 10 * time.Minute
)

// DefaultMaxIDBytes is the default bound of an identifier in a request (Config.MaxIDBytes): VM,
// workload, node and model names are short; a longer one is refused before it is stored or echoed.
const DefaultMaxIDBytes = 256

// DefaultMaxPushSamples is the default bound of the samples of one push (Config.MaxPushSamples):
// ten steps of a thousand VMs.
const DefaultMaxPushSamples = 10000

// checkID refuses an identifier longer than Config.MaxIDBytes, echoing only its start.
func (s *Service) checkID(field, v string) error {
	if len(v) > s.cfg.MaxIDBytes {
		return invalid(field, fmt.Sprintf("%d bytes (%s), at most %d (limits.max_id_bytes)", len(v), clip(v), s.cfg.MaxIDBytes))
	}
	return nil
}

// clipBytes is how much of a caller's value an error message echoes.
const clipBytes = 40

// clip quotes v for an error message, cut to its first clipBytes bytes (on a rune boundary) with
// the rest counted, so that an error never carries a caller's huge value back (a gRPC status
// travels in a header, which clients bound).
func clip(v string) string {
	if len(v) <= clipBytes {
		return strconv.Quote(v)
	}
	cut := clipBytes
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(v[:cut]), len(v))
}

// checkFinite refuses NaN and infinite request values, naming the field.
func checkFinite(field string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return invalid(field, strconv.FormatFloat(v, 'g', -1, 64)+" is not a finite number")
	}
	return nil
}
