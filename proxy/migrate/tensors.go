package migrate

import (
	"fmt"
	"math"
	"slices"

	"github.com/novacron/sidecar/proto/inference"
)

// Tensors compares two Open Inference Protocol answers (a route of the protocol's model names):
// the same outputs by name (else FieldOutputSet, and the common ones are still compared), each of
// the same datatype and shape (else FieldOutputShape), and every FP32 or FP64 value within
// tolerance of the baseline's, |a-b| <= t.Abs + t.Rel*|a| (else FieldOutputs); other datatypes'
// values must be equal. Typed contents are compared (the sidecar's shadows answer in them);
// model_name, model_version and id are not.
func Tensors(base, cand *inference.ModelInferResponse, t Tolerances) Diff {
	if base == nil || cand == nil {
		if base == cand {
			return Diff{}
		}
		return Diff{Fields: bitMissing.list(), Detail: fmt.Sprintf("answer: baseline %v, candidate %v", base != nil, cand != nil)}
	}
	t = t.WithDefaults()
	var set fieldSet
	var detail string
	note := func(bit fieldSet, format string, args ...any) {
		set |= bit
		if detail == "" {
			detail = fmt.Sprintf(format, args...)
		}
	}
	byName := make(map[string]*inference.ModelInferResponse_InferOutputTensor, len(cand.GetOutputs()))
	for _, o := range cand.GetOutputs() {
		byName[o.GetName()] = o
	}
	for _, a := range base.GetOutputs() {
		b, ok := byName[a.GetName()]
		if !ok {
			note(bitOutputSet, "outputs.set: %q only in the baseline", clipName(a.GetName()))
			continue
		}
		delete(byName, a.GetName())
		if a.GetDatatype() != b.GetDatatype() || !slices.Equal(a.GetShape(), b.GetShape()) {
			note(bitOutputShape, "outputs[%q].shape: %s%v vs %s%v", clipName(a.GetName()), a.GetDatatype(), a.GetShape(), b.GetDatatype(), b.GetShape())
			continue
		}
		if i, x, y, ok := firstApart(a.GetContents(), b.GetContents(), t); !ok {
			note(bitOutputs, "outputs[%q][%d]: %v vs %v (allowed %.3g)", clipName(a.GetName()), i, x, y, t.Abs+t.Rel*math.Abs(x))
		}
	}
	for name := range byName {
		note(bitOutputSet, "outputs.set: %q only in the candidate", clipName(name))
		break
	}
	return Diff{Fields: set.list(), Detail: detail}
}

// firstApart finds the first element of two tensors' contents that disagrees: floats beyond
// tolerance, other values unequal (as float64 for the report), or a different count.
func firstApart(a, b *inference.InferTensorContents, t Tolerances) (int, float64, float64, bool) {
	floats := func(x, y []float64) (int, float64, float64, bool) {
		for i := range min(len(x), len(y)) {
			if !within(x[i], y[i], t.Abs, t.Rel) {
				return i, x[i], y[i], false
			}
		}
		if len(x) != len(y) {
			return min(len(x), len(y)), float64(len(x)), float64(len(y)), false
		}
		return 0, 0, 0, true
	}
	exact := func(x, y []float64) (int, float64, float64, bool) {
		for i := range min(len(x), len(y)) {
			if x[i] != y[i] {
				return i, x[i], y[i], false
			}
		}
		if len(x) != len(y) {
			return min(len(x), len(y)), float64(len(x)), float64(len(y)), false
		}
		return 0, 0, 0, true
	}
	switch {
	case len(a.GetFp32Contents())+len(b.GetFp32Contents()) > 0:
		return floats(widen(a.GetFp32Contents()), widen(b.GetFp32Contents()))
	case len(a.GetFp64Contents())+len(b.GetFp64Contents()) > 0:
		return floats(a.GetFp64Contents(), b.GetFp64Contents())
	case len(a.GetIntContents())+len(b.GetIntContents()) > 0:
		return exact(widen(a.GetIntContents()), widen(b.GetIntContents()))
	case len(a.GetInt64Contents())+len(b.GetInt64Contents()) > 0:
		return exact(widen(a.GetInt64Contents()), widen(b.GetInt64Contents()))
	case len(a.GetBoolContents())+len(b.GetBoolContents()) > 0:
		x, y := a.GetBoolContents(), b.GetBoolContents()
		for i := range min(len(x), len(y)) {
			if x[i] != y[i] {
				return i, b2f(x[i]), b2f(y[i]), false
			}
		}
		if len(x) != len(y) {
			return min(len(x), len(y)), float64(len(x)), float64(len(y)), false
		}
	}
	return 0, 0, 0, true
}

func widen[T float32 | int32 | int64](v []T) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// clipName bounds a name quoted in a Detail.
func clipName(s string) string {
	if len(s) > maxQuoted {
		return s[:maxQuoted] + "..."
	}
	return s
}
