package oip

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/proto/inference"
)

// MaxElements bounds the elements one tensor's shape may claim (before any data is read).
const MaxElements = 1 << 28

// tensorHeader is what both an input of a request and an output of a response carry.
type tensorHeader interface {
	GetName() string
	GetDatatype() string
	GetShape() []int64
	GetContents() *inference.InferTensorContents
}

// Inputs decodes the input tensors of a request, from typed contents or raw_input_contents. Every
// error wraps backends.ErrInvalidInput and names the field and the reason, e.g.
// "inputs[1].contents.fp32_contents: 5 values, shape [2 3] needs 6".
func Inputs(req *inference.ModelInferRequest) ([]backends.Tensor, error) {
	in := req.GetInputs()
	hs := make([]tensorHeader, len(in))
	for i, t := range in {
		hs[i] = t
	}
	return decode(hs, req.GetRawInputContents(), "inputs", "raw_input_contents", backends.ErrInvalidInput)
}

// Outputs decodes the output tensors of a response. Every error wraps bad (the caller's sentinel
// for a malformed answer) and names the field.
func Outputs(resp *inference.ModelInferResponse, bad error) ([]backends.Tensor, error) {
	out := resp.GetOutputs()
	hs := make([]tensorHeader, len(out))
	for i, t := range out {
		hs[i] = t
	}
	return decode(hs, resp.GetRawOutputContents(), "outputs", "raw_output_contents", bad)
}

func decode(hs []tensorHeader, raw [][]byte, field, rawField string, sentinel error) ([]backends.Tensor, error) {
	fail := func(f string, format string, args ...any) ([]backends.Tensor, error) {
		return nil, fmt.Errorf("%s: %s: %w", f, fmt.Sprintf(format, args...), sentinel)
	}
	if len(raw) > 0 && len(raw) != len(hs) {
		return fail(rawField, "%d entries for %d tensors; give one per tensor, in order", len(raw), len(hs))
	}
	out := make([]backends.Tensor, len(hs))
	seen := make(map[string]int, len(hs))
	for i, h := range hs {
		at := fmt.Sprintf("%s[%d]", field, i)
		name := h.GetName()
		if name == "" {
			return fail(at+".name", "empty")
		}
		if j, dup := seen[name]; dup {
			return fail(at+".name", "%q repeats %s[%d]", name, field, j)
		}
		seen[name] = i
		dt, ok := backends.ParseDType(h.GetDatatype())
		if !ok {
			return fail(at+".datatype", "%q is not carried by the sidecar; use one of %v", h.GetDatatype(), backends.DTypeNames())
		}
		shape := h.GetShape()
		n := 1
		for _, d := range shape {
			if d < 0 {
				return fail(at+".shape", "%v has a negative dimension", shape)
			}
			if d > MaxElements || d > 0 && n > MaxElements/int(d) {
				return fail(at+".shape", "%v has more than %d elements", shape, MaxElements)
			}
			n *= int(d)
		}
		t := backends.Tensor{Name: name, DType: dt, Shape: append([]int64(nil), shape...)}
		var err error
		if len(raw) > 0 {
			if h.GetContents() != nil {
				return fail(at+".contents", "set together with %s; use one or the other", rawField)
			}
			t.Data, err = fromRaw(dt, n, raw[i])
			at = fmt.Sprintf("%s[%d]", rawField, i)
		} else {
			var sub string
			t.Data, sub, err = fromContents(dt, n, h.GetContents())
			at += ".contents." + sub
		}
		if err != nil {
			return fail(at, "%s (tensor %q, %s%v)", err.Error(), name, dt, shape)
		}
		out[i] = t
	}
	return out, nil
}

// fromContents takes the typed contents of one tensor: only the field of its dtype may be set,
// with exactly n values. On error it also returns the name of the offending field.
func fromContents(dt backends.DType, n int, c *inference.InferTensorContents) (any, string, error) {
	type field struct {
		name string
		len  int
		dt   backends.DType
	}
	fields := []field{
		{"bool_contents", len(c.GetBoolContents()), backends.BOOL},
		{"int_contents", len(c.GetIntContents()), backends.INT32},
		{"int64_contents", len(c.GetInt64Contents()), backends.INT64},
		{"uint_contents", len(c.GetUintContents()), backends.Invalid},
		{"uint64_contents", len(c.GetUint64Contents()), backends.Invalid},
		{"fp32_contents", len(c.GetFp32Contents()), backends.FP32},
		{"fp64_contents", len(c.GetFp64Contents()), backends.FP64},
		{"bytes_contents", len(c.GetBytesContents()), backends.BYTES},
	}
	for _, f := range fields {
		if f.len > 0 && f.dt != dt {
			return nil, f.name, fmt.Errorf("set for a %s tensor", dt)
		}
		if f.dt == dt && f.len != n {
			return nil, f.name, fmt.Errorf("%d values, the shape needs %d", f.len, n)
		}
	}
	switch dt {
	case backends.FP32:
		return c.GetFp32Contents(), "", nil
	case backends.FP64:
		return c.GetFp64Contents(), "", nil
	case backends.INT32:
		return c.GetIntContents(), "", nil
	case backends.INT64:
		return c.GetInt64Contents(), "", nil
	case backends.BOOL:
		return c.GetBoolContents(), "", nil
	case backends.BYTES:
		return c.GetBytesContents(), "", nil
	}
	return nil, "", fmt.Errorf("datatype %s", dt)
}

// fromRaw decodes one raw entry: n little-endian elements without padding; BYTES as a 4-byte
// little-endian length before each element.
func fromRaw(dt backends.DType, n int, b []byte) (any, error) {
	if dt == backends.BYTES {
		out := make([][]byte, 0, min(n, len(b)/4))
		for i := 0; i < n; i++ {
			if len(b) < 4 {
				return nil, fmt.Errorf("%d of %d BYTES elements, then %d bytes left (each element needs a 4-byte length)", i, n, len(b))
			}
			l := binary.LittleEndian.Uint32(b)
			b = b[4:]
			if uint64(l) > uint64(len(b)) {
				return nil, fmt.Errorf("BYTES element %d claims %d bytes, %d are left", i, l, len(b))
			}
			out = append(out, b[:l:l])
			b = b[l:]
		}
		if len(b) != 0 {
			return nil, fmt.Errorf("%d bytes left after the %d BYTES elements of the shape", len(b), n)
		}
		return out, nil
	}
	if want := n * dt.Size(); len(b) != want {
		return nil, fmt.Errorf("%d bytes, the shape needs %d (%d elements of %d bytes)", len(b), want, n, dt.Size())
	}
	le := binary.LittleEndian
	switch dt {
	case backends.FP32:
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
		return out, nil
	case backends.FP64:
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(b[8*i:]))
		}
		return out, nil
	case backends.INT32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(le.Uint32(b[4*i:]))
		}
		return out, nil
	case backends.INT64:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(le.Uint64(b[8*i:]))
		}
		return out, nil
	case backends.BOOL:
		out := make([]bool, n)
		for i, v := range b {
			switch v {
			case 0:
			case 1:
				out[i] = true
			default:
				return nil, fmt.Errorf("BOOL element %d is byte %d, want 0 or 1", i, v)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("datatype %s", dt)
}

// AppendRaw appends t's elements in the protocol's raw form to dst.
func AppendRaw(dst []byte, t backends.Tensor) []byte {
	le := binary.LittleEndian
	switch d := t.Data.(type) {
	case []float32:
		for _, v := range d {
			dst = le.AppendUint32(dst, math.Float32bits(v))
		}
	case []float64:
		for _, v := range d {
			dst = le.AppendUint64(dst, math.Float64bits(v))
		}
	case []int32:
		for _, v := range d {
			dst = le.AppendUint32(dst, uint32(v))
		}
	case []int64:
		for _, v := range d {
			dst = le.AppendUint64(dst, uint64(v))
		}
	case []bool:
		for _, v := range d {
			b := byte(0)
			if v {
				b = 1
			}
			dst = append(dst, b)
		}
	case [][]byte:
		for _, v := range d {
			dst = le.AppendUint32(dst, uint32(len(v)))
			dst = append(dst, v...)
		}
	}
	return dst
}

// Contents returns t's elements as typed contents.
func Contents(t backends.Tensor) *inference.InferTensorContents {
	c := &inference.InferTensorContents{}
	switch d := t.Data.(type) {
	case []float32:
		c.Fp32Contents = d
	case []float64:
		c.Fp64Contents = d
	case []int32:
		c.IntContents = d
	case []int64:
		c.Int64Contents = d
	case []bool:
		c.BoolContents = d
	case [][]byte:
		c.BytesContents = d
	}
	return c
}

// SetInputs fills req's inputs (and raw_input_contents when raw) from tensors, which must pass
// Tensor.Check.
func SetInputs(req *inference.ModelInferRequest, tensors []backends.Tensor, raw bool) {
	req.Inputs = make([]*inference.ModelInferRequest_InferInputTensor, len(tensors))
	req.RawInputContents = nil
	for i, t := range tensors {
		in := &inference.ModelInferRequest_InferInputTensor{Name: t.Name, Datatype: t.DType.String(), Shape: t.Shape}
		if raw {
			req.RawInputContents = append(req.RawInputContents, AppendRaw(make([]byte, 0, rawSize(t)), t))
		} else {
			in.Contents = Contents(t)
		}
		req.Inputs[i] = in
	}
}

// SetOutputs fills resp's outputs (and raw_output_contents when raw) from tensors, which must pass
// Tensor.Check.
func SetOutputs(resp *inference.ModelInferResponse, tensors []backends.Tensor, raw bool) {
	resp.Outputs = make([]*inference.ModelInferResponse_InferOutputTensor, len(tensors))
	resp.RawOutputContents = nil
	for i, t := range tensors {
		out := &inference.ModelInferResponse_InferOutputTensor{Name: t.Name, Datatype: t.DType.String(), Shape: t.Shape}
		if raw {
			resp.RawOutputContents = append(resp.RawOutputContents, AppendRaw(make([]byte, 0, rawSize(t)), t))
		} else {
			out.Contents = Contents(t)
		}
		resp.Outputs[i] = out
	}
}

func rawSize(t backends.Tensor) int {
	if t.DType != backends.BYTES {
		return t.Len() * t.DType.Size()
	}
	n := 0
	for _, b := range t.Data.([][]byte) {
		n += 4 + len(b)
	}
	return n
}
