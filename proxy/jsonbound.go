package proxy

import (
	"fmt"
	"strconv"
)

// arrayBound is the most elements any JSON array of an RPC's HTTP body (or list of its gRPC
// message) may hold; 0: no bound beyond the body's size. The body is scanned against it before it
// is decoded, so that a body of millions of numbers (within limits.max_message_bytes) is refused
// at the first value too many, not after each one became a float64. arrayWhy says why, for the
// refusal only.
func (s *Service) arrayBound(method string) int {
	switch method {
	case "PredictBandwidth":
		return s.state.Load().window
	case "PredictBandwidthBatch":
		return max(s.state.Load().window, s.cfg.MaxBatchVMs)
	case "OptimizePlacement":
		return s.cfg.MaxNodes
	case "DetectAnomaly":
		return 1
	case "PushMetrics", "PushLabels":
		return s.cfg.MaxPushSamples
	}
	return 0
}

// arrayWhy says where arrayBound's bound of method comes from.
func (s *Service) arrayWhy(method string) string {
	switch method {
	case "PredictBandwidth":
		return "the window of the loaded forecast models"
	case "PredictBandwidthBatch":
		return fmt.Sprintf("limits.max_batch_vms %d, or a window of %d", s.cfg.MaxBatchVMs, s.state.Load().window)
	case "OptimizePlacement":
		return "limits.max_nodes"
	case "DetectAnomaly":
		return "DetectAnomaly takes no list"
	case "PushMetrics", "PushLabels":
		return "limits.max_push_samples"
	}
	return ""
}

// maxScanDepth bounds the nesting arraysWithin follows; a deeper body is refused (no call of the
// sidecar nests that deep).
const maxScanDepth = 64

// arraysWithin reports whether every array in the JSON text b holds at most limit elements (and b
// nests at most maxScanDepth deep: else it returns "" and false); when one holds more, it names the
// field (the object key the array belongs to, such as
// "historical_metrics" or "vms[].historical_metrics"). It reads b once and allocates nothing
// unless it fails; it does not validate the JSON, which the decoder does after it.
func arraysWithin(b []byte, limit int) (string, bool) {
	type level struct {
		array bool
		count int
		key   [2]int // the key's position in b, for an object's member array
		index bool   // an array inside an array: its field is the parent's, with []
	}
	var stack [maxScanDepth]level
	depth := 0
	lastStr := [2]int{-1, -1} // the last string read at object level: the key of what follows
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch c {
		case '"':
			start := i + 1
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			lastStr = [2]int{start, i}
			if depth > 0 && stack[depth-1].array && stack[depth-1].count == 0 {
				stack[depth-1].count = 1
			}
			continue
		case ' ', '\t', '\n', '\r', ':':
			continue
		case '[', '{':
			if depth > 0 && stack[depth-1].array && stack[depth-1].count == 0 {
				stack[depth-1].count = 1
			}
			if depth == maxScanDepth {
				return "", false // too deep: no field to name
			}
			l := level{array: c == '['}
			if depth > 0 && stack[depth-1].array {
				l.key, l.index = stack[depth-1].key, true
			} else {
				l.key = lastStr
			}
			stack[depth] = l
			depth++
			continue
		case ']', '}':
			if depth > 0 {
				depth--
			}
			continue
		case ',':
			if depth > 0 && stack[depth-1].array {
				stack[depth-1].count++
				if stack[depth-1].count > limit {
					return fieldName(b, stack[depth-1].key, stack[depth-1].index), false
				}
			}
			continue
		}
		// A number or literal starts an element.
		if depth > 0 && stack[depth-1].array && stack[depth-1].count == 0 {
			stack[depth-1].count = 1
		}
	}
	return "", true
}

func fieldName(b []byte, key [2]int, index bool) string {
	name := "body"
	if key[0] >= 0 && key[1] <= len(b) {
		name = string(b[key[0]:key[1]])
		if len(name) > clipBytes || strconv.Quote(name) != `"`+name+`"` {
			name = clip(name)
		}
	}
	if index {
		name += "[]"
	}
	return name
}
