package proxy

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/novacron/sidecar/backends"
)

// tensorData is one input's data being decoded: p is positioned at its value, which the first
// pass checked to be well-formed JSON.
type tensorData struct {
	p     oipScan
	shape []int64
	n     int // elements the shape holds
	elemCtx
	idx []int  // the index of each enclosing array while nested
	why string // a structural error's reason, set by walk
}

// elemCtx is what converting an element needs to know of its tensor.
type elemCtx struct {
	dt     backends.DType
	nullOK bool // null reads as NaN (FP32 and FP64 raw features)
}

// An elem function converts one scalar of tensor data; on error it returns the reason, which
// names the element as "element %d".
type elemFunc[T any] func(d elemCtx, k int, tok jsonTok, b []byte) (T, error)

// decodeElems decodes d's data into a []T of d.n elements.
func decodeElems[T any](d *tensorData, conv elemFunc[T]) ([]T, error) {
	// The shape may claim far more elements than the data holds: allocate for what the data
	// can hold (a scalar and a comma take at least two bytes).
	out := make([]T, 0, min(d.n, (len(d.p.b)-d.p.i)/2+1))
	var cerr error
	put := func(k int) bool {
		if d.p.peek() == '{' {
			cerr = fmt.Errorf("element %d is an object; tensor data holds numbers, booleans or strings (datatype %s)", k, d.dt)
			return false
		}
		tok, b, err := d.p.scalar()
		if err != nil {
			cerr = err
			return false
		}
		if k >= d.n {
			return true // counted, not kept: the count is reported at the end
		}
		v, err := conv(d.elemCtx, k, tok, b)
		if err != nil {
			cerr = err
			return false
		}
		out = append(out, v)
		return true
	}
	if !d.walk(put) {
		if cerr != nil {
			return nil, cerr
		}
		return nil, errors.New(d.why)
	}
	return out, nil
}

// walk reads the data array, flat or nested, calling put for each scalar in row-major order with
// its index. It returns false when put does, or with d.why set when the data's structure does
// not fit the shape.
func (d *tensorData) walk(put func(k int) bool) bool {
	p := &d.p
	if p.peek() != '[' {
		d.why = fmt.Sprintf("%s, not an array; give the elements flat or nested as shape %v", p.kind(), d.shape)
		return false
	}
	// Nested when the first element is an array.
	at := p.i
	p.i++
	nested := p.peek() == '['
	p.i = at
	if !nested {
		return d.flat(put)
	}
	if len(d.shape) == 0 {
		d.why = "nesting does not match shape []: data[0] is an array, and a scalar tensor has no dimensions"
		return false
	}
	d.idx = make([]int, len(d.shape))
	k := 0
	return d.nested(0, &k, put)
}

func (d *tensorData) flat(put func(k int) bool) bool {
	p := &d.p
	p.i++ // [
	k := 0
	if p.peek() == ']' {
		p.i++
	} else {
		for {
			if p.peek() == '[' {
				d.why = fmt.Sprintf("element %d is an array; give the data flat, or nested exactly as shape %v", k, d.shape)
				return false
			}
			if !put(k) {
				return false
			}
			k++
			if p.byte(']') {
				break
			}
			p.byte(',')
		}
	}
	if k != d.n {
		d.why = fmt.Sprintf("%d elements, shape %v needs %d", k, d.shape, d.n)
		return false
	}
	return true
}

// nested reads the array at depth dim, whose length must be shape[dim].
func (d *tensorData) nested(dim int, k *int, put func(k int) bool) bool {
	p := &d.p
	want := d.shape[dim]
	leaf := dim == len(d.shape)-1
	p.i++ // [
	c := 0
	if p.peek() == ']' {
		p.i++
	} else {
		for {
			if int64(c) == want {
				d.why = fmt.Sprintf("nesting does not match shape %v: %s has more than %d elements, the size of dimension %d", d.shape, d.path(dim), want, dim)
				return false
			}
			d.idx[dim] = c
			isArray := p.peek() == '['
			switch {
			case leaf && isArray:
				d.why = fmt.Sprintf("nesting does not match shape %v: %s is an array, a level deeper than the shape", d.shape, d.path(dim+1))
				return false
			case !leaf && !isArray:
				d.why = fmt.Sprintf("nesting does not match shape %v: %s is %s where the shape needs an array of %d", d.shape, d.path(dim+1), p.kind(), d.shape[dim+1])
				return false
			case leaf:
				if !put(*k) {
					return false
				}
				*k++
			default:
				if !d.nested(dim+1, k, put) {
					return false
				}
			}
			c++
			if p.byte(']') {
				break
			}
			p.byte(',')
		}
	}
	if int64(c) != want {
		d.why = fmt.Sprintf("nesting does not match shape %v: %s has %d elements, dimension %d is %d", d.shape, d.path(dim), c, dim, want)
		return false
	}
	return true
}

// path names the array or element at depth dim, such as data[1][0].
func (d *tensorData) path(dim int) string {
	var b strings.Builder
	b.WriteString("data")
	for _, i := range d.idx[:dim] {
		fmt.Fprintf(&b, "[%d]", i)
	}
	return b.String()
}

// null reads a null element: NaN where allowed, else the reason it is not.
func nullElem(d elemCtx, k int) (float64, error) {
	switch {
	case d.nullOK:
		return math.NaN(), nil
	case d.dt == backends.FP32 || d.dt == backends.FP64:
		return 0, fmt.Errorf("element %d is null: null (missing) is accepted only in the spec's raw features; canonical %q rows hold finite numbers", k, inputFeatures)
	}
	return 0, fmt.Errorf("element %d is null: null (missing) is accepted only in FP32 or FP64 raw features, not %s", k, d.dt)
}

func wrongKind(d elemCtx, k int, tok jsonTok, b []byte, want string) error {
	if tok == tokString && (d.dt == backends.FP32 || d.dt == backends.FP64) && strings.EqualFold(string(b), "nan") {
		return fmt.Errorf("element %d is the string %q: the protocol's JSON has no NaN; send null for a missing value", k, b)
	}
	return fmt.Errorf("element %d is %s, want %s (datatype %s)", k, tok, want, d.dt)
}

func elemFloat(d elemCtx, k int, tok jsonTok, b []byte, bits int) (float64, error) {
	switch tok {
	case tokNull:
		return nullElem(d, k)
	case tokNumber:
		v, err := strconv.ParseFloat(string(b), bits)
		if err != nil {
			return 0, fmt.Errorf("element %d (%s): out of range (datatype %s)", k, clipToken(b), d.dt)
		}
		return v, nil
	}
	return 0, wrongKind(d, k, tok, b, "a number")
}

func elemFloat32(d elemCtx, k int, tok jsonTok, b []byte) (float32, error) {
	v, err := elemFloat(d, k, tok, b, 32)
	return float32(v), err
}

func elemFloat64(d elemCtx, k int, tok jsonTok, b []byte) (float64, error) {
	return elemFloat(d, k, tok, b, 64)
}

func elemInt(d elemCtx, k int, tok jsonTok, b []byte, bits int) (int64, error) {
	switch tok {
	case tokNull:
		_, err := nullElem(d, k)
		return 0, err
	case tokNumber:
		v, err := strconv.ParseInt(string(b), 10, bits)
		if err != nil {
			return 0, fmt.Errorf("element %d (%s): not an integer of %d bits (datatype %s)", k, clipToken(b), bits, d.dt)
		}
		return v, nil
	}
	return 0, wrongKind(d, k, tok, b, "an integer")
}

func elemInt32(d elemCtx, k int, tok jsonTok, b []byte) (int32, error) {
	v, err := elemInt(d, k, tok, b, 32)
	return int32(v), err
}

func elemInt64(d elemCtx, k int, tok jsonTok, b []byte) (int64, error) {
	return elemInt(d, k, tok, b, 64)
}

func elemBool(d elemCtx, k int, tok jsonTok, b []byte) (bool, error) {
	switch tok {
	case tokTrue, tokFalse:
		return tok == tokTrue, nil
	case tokNull:
		_, err := nullElem(d, k)
		return false, err
	}
	return false, wrongKind(d, k, tok, b, "true or false")
}

func elemBytes(d elemCtx, k int, tok jsonTok, b []byte) ([]byte, error) {
	switch tok {
	case tokString:
		return append([]byte(nil), b...), nil
	case tokNull:
		_, err := nullElem(d, k)
		return nil, err
	}
	return nil, wrongKind(d, k, tok, b, "a string")
}

// ---- scanner ----
