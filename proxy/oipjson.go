package proxy

import (
	"fmt"
	"strconv"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/backends/oip"
)

// The REST form's request decoder. It reads a v2 inference request as strictly as /api/v1 reads
// its bodies: one JSON object and nothing after it; keys matched exactly (case included), each at
// most once in any object, unknown ones refused (a "parameters" object takes any keys, of any JSON
// value); and each input's data a JSON array, flat (as many scalars as its shape holds) or nested
// exactly as its shape, dimension by dimension. JSON null stands for a missing value (NaN) in the
// data of an FP32 or FP64 input other than the canonical "features" tensor, that is in the spec's
// raw features, whose missing-value policy then applies; null is refused everywhere else, and so
// is the string "NaN" (the protocol's JSON has no NaN). A null key value is the key left out.
//
// Every error is a FieldError naming the field ("inputs[0].data", "parameters.x", "body" for the
// JSON syntax) and the reason. The decoder allocates the tensors' names and typed data, the
// request's id and the output names; keys, numbers and unescaped strings are read in place.

// maxJSONDepth bounds the nesting of objects and arrays in a request body.
const maxJSONDepth = 128

// decodeRESTInfer decodes a v2 REST inference request body into c's ID, Inputs and Outputs.
func decodeRESTInfer(body []byte, c *InferCall) error {
	p := &oipScan{jsonScan: jsonScan{b: body}}
	p.jsonScan.skip()
	if p.i == len(body) {
		return invalid("body", "empty; want a JSON object (a v2 inference request)")
	}
	if body[p.i] != '{' {
		return invalid("body", fmt.Sprintf("%s, not a JSON object; want a v2 inference request", p.kind()))
	}
	var seen uint8
	err := p.object(func(key []byte) error {
		bit, err := p.member(key, requestFields, &seen, "a v2 inference request has id, parameters, inputs and outputs")
		if err != nil {
			return err
		}
		defer p.pop()
		switch bit {
		case 1:
			if p.null() {
				return nil
			}
			s, err := p.stringValue()
			c.ID = string(s)
			return err
		case 2:
			return p.parameters()
		case 4:
			if p.null() {
				return nil
			}
			return p.array(func(k int) error {
				p.pushIndex(k)
				defer p.pop()
				t, err := p.input()
				if err == nil {
					c.Inputs = append(c.Inputs, t)
				}
				return err
			})
		default:
			if p.null() {
				return nil
			}
			return p.array(func(k int) error {
				p.pushIndex(k)
				defer p.pop()
				name, err := p.output()
				if err == nil {
					c.Outputs = append(c.Outputs, name)
				}
				return err
			})
		}
	})
	if err != nil {
		return err
	}
	p.jsonScan.skip()
	if p.i < len(body) {
		if ch := body[p.i]; ch == '{' || ch == '[' {
			return invalid("body", fmt.Sprintf("a second JSON document follows the request at offset %d; send one JSON object", p.i))
		}
		return invalid("body", fmt.Sprintf("trailing data after the JSON object at offset %d", p.i))
	}
	return nil
}

// input decodes one input object: its name, datatype, shape and data (parameters are read and
// dropped). The data is located on the first pass and decoded once the datatype and shape are
// known, whatever the order of the keys.
func (p *oipScan) input() (backends.Tensor, error) {
	if p.peek() != '{' {
		return backends.Tensor{}, p.want("an object")
	}
	var (
		seen               uint8
		name, dtype        []byte
		shape              []int64
		hasShape           bool
		dataStart, dataEnd = -1, -1
	)
	err := p.object(func(key []byte) error {
		bit, err := p.member(key, inputFields, &seen, "an input has name, shape, datatype, parameters and data")
		if err != nil {
			return err
		}
		defer p.pop()
		if bit != 8 && p.null() {
			return nil
		}
		switch bit {
		case 1:
			name, err = p.stringValue()
		case 2:
			hasShape = true
			shape, err = p.shape()
		case 4:
			dtype, err = p.stringValue()
		case 8:
			err = p.parameters()
		default:
			p.jsonScan.skip()
			dataStart = p.i
			err = p.skip()
			dataEnd = p.i
		}
		return err
	})
	if err != nil {
		return backends.Tensor{}, err
	}
	at := p.field()
	if len(name) == 0 {
		return backends.Tensor{}, invalid(at+".name", "missing or empty")
	}
	dt, ok := backends.ParseDType(string(dtype))
	if !ok {
		return backends.Tensor{}, invalid(at+".datatype", fmt.Sprintf("%s is not carried by the sidecar; use one of %v", clip(string(dtype)), backends.DTypeNames()))
	}
	if !hasShape {
		return backends.Tensor{}, invalid(at+".shape", "missing; give the tensor's dimensions, such as [N, 4]")
	}
	n := 1
	for _, d := range shape {
		if d < 0 || d > oip.MaxElements || n*int(d) > oip.MaxElements {
			return backends.Tensor{}, invalid(at+".shape", fmt.Sprintf("%v: dimensions must be 0 or more, with at most %d elements", shape, oip.MaxElements))
		}
		n *= int(d)
	}
	if dataStart < 0 {
		return backends.Tensor{}, invalid(at+".data", "missing")
	}
	t := backends.Tensor{Name: string(name), DType: dt, Shape: shape}
	d := &tensorData{p: oipScan{jsonScan: jsonScan{b: p.b[:dataEnd], i: dataStart}}, shape: shape, n: n,
		elemCtx: elemCtx{dt: dt, nullOK: (dt == backends.FP32 || dt == backends.FP64) && t.Name != inputFeatures}}
	switch dt {
	case backends.FP32:
		t.Data, err = decodeElems(d, elemFloat32)
	case backends.FP64:
		t.Data, err = decodeElems(d, elemFloat64)
	case backends.INT32:
		t.Data, err = decodeElems(d, elemInt32)
	case backends.INT64:
		t.Data, err = decodeElems(d, elemInt64)
	case backends.BOOL:
		t.Data, err = decodeElems(d, elemBool)
	case backends.BYTES:
		t.Data, err = decodeElems(d, elemBytes)
	}
	if err != nil {
		return backends.Tensor{}, invalid(at+".data", err.Error())
	}
	return t, nil
}

// output decodes one requested output object and returns its name.
func (p *oipScan) output() (string, error) {
	if p.peek() != '{' {
		return "", p.want("an object")
	}
	var seen uint8
	var name []byte
	err := p.object(func(key []byte) error {
		bit, err := p.member(key, outputFields, &seen, "an output has name and parameters")
		if err != nil {
			return err
		}
		defer p.pop()
		if bit == 2 {
			return p.parameters()
		}
		if p.null() {
			return nil
		}
		name, err = p.stringValue()
		return err
	})
	if err != nil {
		return "", err
	}
	if len(name) == 0 {
		return "", invalid(p.field()+".name", "missing or empty")
	}
	return string(name), nil
}

// parameters reads a parameters object (or null): any keys, each once, of any JSON value.
func (p *oipScan) parameters() error {
	if p.null() {
		return nil
	}
	if p.peek() != '{' {
		return p.want("an object of parameters")
	}
	return p.skip()
}

// shape reads an array of integers.
func (p *oipScan) shape() ([]int64, error) {
	shape := make([]int64, 0, 4)
	err := p.array(func(k int) error {
		if c := p.peek(); c == '{' || c == '[' {
			return invalid(p.field(), fmt.Sprintf("element %d is %s, want an integer", k, p.kind()))
		}
		tok, b, err := p.scalar()
		if err != nil {
			return err
		}
		if tok != tokNumber {
			return invalid(p.field(), fmt.Sprintf("element %d is %s, want an integer", k, tok))
		}
		v, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil {
			return invalid(p.field(), fmt.Sprintf("element %d (%s) is not an integer of 64 bits", k, clipToken(b)))
		}
		shape = append(shape, v)
		return nil
	})
	return shape, err
}

// ---- tensor data ----
