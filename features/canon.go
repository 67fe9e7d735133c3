package features

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// ErrInvalid is the sentinel every input error of this package wraps (errors.Is).
var ErrInvalid = errors.New("invalid input")

// ValueError says which raw value was refused and why. Index is the value's position in the raw
// slice given to Canonicalize (step*features + feature).
type ValueError struct {
	Index   int
	Step    int
	Feature string
	Reason  string
}

func (e *ValueError) Error() string {
	return fmt.Sprintf("step %d feature %s: %s", e.Step, e.Feature, e.Reason)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValueError) Is(target error) bool { return target == ErrInvalid }

// FieldError names a request field and what was expected of it; front ends turn it into
// INVALID_ARGUMENT / 400.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// op is one feature compiled for the hot path.
type op struct {
	name           string
	boolean        bool
	scale, offset  float64
	lo, hi         float64 // clip bounds, ±Inf when absent
	missing        string
	fill           float64 // constant policy: raw fill value; mean policy: converted-units mean
	norm           string
	normA, normInv float64 // zscore: mean, 1/std; minmax: min, 1/(max-min)
}

func (s *Spec) compile() {
	s.ops = make([]op, len(s.Features))
	for i, f := range s.Features {
		o := op{name: f.Name, boolean: f.Type == TypeBool, scale: f.Convert.Scale, offset: f.Convert.Offset,
			lo: math.Inf(-1), hi: math.Inf(1), missing: f.Missing.Policy, fill: f.Missing.Value, norm: f.Normalize.Method}
		if f.Clip.Min != nil {
			o.lo = *f.Clip.Min
		}
		if f.Clip.Max != nil {
			o.hi = *f.Clip.Max
		}
		switch f.Normalize.Method {
		case NormZScore:
			o.normA, o.normInv = f.Normalize.Mean, 1/f.Normalize.Std
			if o.missing == MissingMean {
				o.fill = f.Normalize.Mean
			}
		case NormMinMax:
			o.normA, o.normInv = f.Normalize.Min, 1/(f.Normalize.Max-f.Normalize.Min)
			if o.missing == MissingMean {
				o.fill = (f.Normalize.Min + f.Normalize.Max) / 2
			}
		}
		s.ops[i] = o
	}
}

// convert applies unit conversion, the bool rule and clipping to a present raw value.
func (o *op) convert(x float64) float64 {
	v := x*o.scale + o.offset
	if o.boolean {
		if v != 0 {
			v = 1
		}
	}
	if v < o.lo {
		v = o.lo
	} else if v > o.hi {
		v = o.hi
	}
	return v
}

// normalize maps a converted value to the model's scale.
func (o *op) normalize(v float64) float64 {
	switch o.norm {
	case NormZScore, NormMinMax:
		return (v - o.normA) * o.normInv
	}
	return v
}

// Width is the number of values of one step: the number of features.
func (s *Spec) Width() int { return len(s.Features) }

// Size is the number of values of one model input row: Steps() * Width().
func (s *Spec) Size() int { return s.Steps() * len(s.Features) }

// Canonicalize turns raw values into one model input row. raw holds Steps() steps of Width()
// values, step-major, oldest step first, features in spec order, in the sources' natural units; a
// NaN raw value is missing and handled by the feature's policy; an infinite one is refused. dst
// must have len(raw) elements. Canonicalize does not allocate unless it returns an error (a
// *ValueError wrapping ErrInvalid). It is safe for concurrent use.
func (s *Spec) Canonicalize(dst []float32, raw []float64) error {
	w := len(s.ops)
	if w == 0 || w != len(s.Features) {
		return &ValueError{Index: -1, Feature: "*", Reason: "the spec was not compiled: make specs with Parse or LoadFile"}
	}
	if len(raw) != s.Size() || len(dst) != len(raw) {
		return &ValueError{Index: -1, Feature: "*", Reason: fmt.Sprintf("got %d values (dst %d), want %d (%d steps x %d features)",
			len(raw), len(dst), s.Size(), s.Steps(), w)}
	}
	for i, x := range raw {
		j := i % w
		o := &s.ops[j]
		var v float64
		switch {
		case math.IsNaN(x):
			switch o.missing {
			case MissingConstant:
				v = o.normalize(o.convert(o.fill))
			case MissingMean:
				v = o.normalize(o.fill)
			case MissingPrevious:
				if i < w {
					return s.valueError(i, "missing at the first step, where policy previous has nothing to carry")
				}
				dst[i] = dst[i-w]
				continue
			default:
				return s.valueError(i, "missing, and the feature is required (policy error)")
			}
		case math.IsInf(x, 0):
			return s.valueError(i, "value "+strconv.FormatFloat(x, 'g', -1, 64)+" is not finite")
		default:
			v = o.normalize(o.convert(x))
			if math.IsInf(v, 0) || math.IsNaN(v) {
				return s.valueError(i, "value "+strconv.FormatFloat(x, 'g', -1, 64)+" is out of range")
			}
		}
		dst[i] = float32(v)
		if f := dst[i]; math.IsInf(float64(f), 0) {
			return s.valueError(i, "value "+strconv.FormatFloat(x, 'g', -1, 64)+" overflows float32 after normalization")
		}
	}
	return nil
}

func (s *Spec) valueError(i int, reason string) error {
	w := len(s.ops)
	return &ValueError{Index: i, Step: i / w, Feature: s.ops[i%w].name, Reason: reason}
}
