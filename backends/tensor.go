package backends

import (
	"fmt"
)

// DType is the element type of a tensor, named as the Open Inference Protocol names them.
type DType int

// Element types.
const (
	Invalid DType = iota
	FP32
	FP64
	INT32
	INT64
	BOOL
	BYTES
)

var dtypeNames = [...]string{"INVALID", "FP32", "FP64", "INT32", "INT64", "BOOL", "BYTES"}

func (d DType) String() string {
	if int(d) < len(dtypeNames) {
		return dtypeNames[d]
	}
	return fmt.Sprintf("DType(%d)", int(d))
}

// Tensor is a named, shaped array. Data holds the elements in row-major order as one of
// []float32, []float64, []int32, []int64, []bool or [][]byte, matching DType.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	Data  any
}

// F32 makes a float32 tensor.
func F32(name string, shape []int64, data []float32) Tensor {
	return Tensor{Name: name, DType: FP32, Shape: shape, Data: data}
}

// Float32s returns the data as []float32, or an error naming the tensor.
func (t Tensor) Float32s() ([]float32, error) {
	d, ok := t.Data.([]float32)
	if !ok {
		return nil, fmt.Errorf("tensor %q: holds %s, want FP32: %w", t.Name, t.DType, ErrInvalidInput)
	}
	return d, nil
}

// Elements is the product of the shape's dimensions.
func (t Tensor) Elements() int {
	n := 1
	for _, d := range t.Shape {
		n *= int(d)
	}
	return n
}

// Len is the number of elements Data holds.
func (t Tensor) Len() int {
	switch d := t.Data.(type) {
	case []float32:
		return len(d)
	case []float64:
		return len(d)
	case []int32:
		return len(d)
	case []int64:
		return len(d)
	case []bool:
		return len(d)
	case [][]byte:
		return len(d)
	}
	return 0
}

// Check reports whether Data matches DType and Shape.
func (t Tensor) Check() error {
	var want DType
	switch t.Data.(type) {
	case []float32:
		want = FP32
	case []float64:
		want = FP64
	case []int32:
		want = INT32
	case []int64:
		want = INT64
	case []bool:
		want = BOOL
	case [][]byte:
		want = BYTES
	default:
		return fmt.Errorf("tensor %q: unsupported data type %T: %w", t.Name, t.Data, ErrInvalidInput)
	}
	if want != t.DType {
		return fmt.Errorf("tensor %q: dtype %s but data is %s: %w", t.Name, t.DType, want, ErrInvalidInput)
	}
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("tensor %q: negative dimension in shape %v: %w", t.Name, t.Shape, ErrInvalidInput)
		}
	}
	if n := t.Elements(); n != t.Len() {
		return fmt.Errorf("tensor %q: shape %v needs %d elements, data has %d: %w", t.Name, t.Shape, n, t.Len(), ErrInvalidInput)
	}
	return nil
}

// ParseDType returns the element type the Open Inference Protocol names s ("FP32", "INT64", ...),
// or false for a name the sidecar does not carry (INT8, UINT16, FP16, BF16, ...).
func ParseDType(s string) (DType, bool) {
	for i, n := range dtypeNames {
		if i > 0 && n == s {
			return DType(i), true
		}
	}
	return Invalid, false
}

// DTypeNames lists the element types the sidecar carries, as the protocol names them.
func DTypeNames() []string { return append([]string(nil), dtypeNames[1:]...) }

// Size is the size in bytes of one element in the protocol's raw form, or 0 for BYTES (whose
// elements carry their own length) and Invalid.
func (d DType) Size() int {
	switch d {
	case FP32, INT32:
		return 4
	case FP64, INT64:
		return 8
	case BOOL:
		return 1
	}
	return 0
}
