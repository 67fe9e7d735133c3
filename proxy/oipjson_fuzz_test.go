package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strconv"
	"testing"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/features"
)

// FuzzRESTInfer: decodeRESTInfer never panics; what it refuses, it refuses with a FieldError
// naming a field; and what it accepts, encoding/json (strict about unknown fields and trailing
// data) also accepts and reads the same: the same id, outputs, names, datatypes and shapes, the
// same elements (null as NaN), and nested data exactly as deep and as wide as the shape.
func FuzzRESTInfer(f *testing.F) {
	for _, s := range []string{
		`{"id":"a","inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[0.1,0.2,0.3,0.4]}],"outputs":[{"name":"score"}]}`,
		`{"inputs":[{"name":"features","datatype":"FP32","shape":[2,2],"data":[[1,2],[3,4]]}]}`,
		`{"inputs":[{"data":[[[1],[2]]],"shape":[1,2,1],"datatype":"FP64","name":"x","parameters":{"a":{"b":[1,{"c":null}]}}}],"parameters":{"binary_data_output":false}}`,
		`{"inputs":[{"name":"cpu","datatype":"FP64","shape":[2],"data":[1,null]},{"name":"n","datatype":"INT64","shape":[1],"data":[-9223372036854775808]}]}`,
		`{"inputs":[{"name":"b","datatype":"BOOL","shape":[2],"data":[true,false]},{"name":"s","datatype":"BYTES","shape":[1],"data":["a\u00e9\"\ud800"]}]}`,
		`{"inputs":[{"name":"i","datatype":"INT32","shape":[0,3],"data":[]},{"name":"e","datatype":"FP32","shape":[2,0],"data":[[],[]]}]}`,
		`{"inp\u0075ts":[],"id":null,"outputs":null,"parameters":null}`,
		`{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[0.1,0.2,0.3,0.4]}]} x`,
		`{"inputs":[],"inputs":[]}`,
		`{"inputs":[{"name":"f","datatype":"FP32","shape":[2,4],"data":[[1,2,3],[4,5,6,7,8]]}]}`,
		`{"inputs":[{"name":"f","datatype":"FP64","shape":[1],"data":["NaN"]}]}`,
		`{"Inputs":[]}`,
		`{"":`,
		`{"parameters":{"":1,"":2}}`,
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var c InferCall
		err := decodeRESTInfer(body, &c)
		if err != nil {
			var fe *features.FieldError
			if !errors.As(err, &fe) || fe.Field == "" || fe.Reason == "" {
				t.Fatalf("%q: error %v names no field", body, err)
			}
			return
		}
		var ref struct {
			ID         *string        `json:"id"`
			Parameters map[string]any `json:"parameters"`
			Inputs     []struct {
				Name       string         `json:"name"`
				Shape      []int64        `json:"shape"`
				Datatype   string         `json:"datatype"`
				Parameters map[string]any `json:"parameters"`
				Data       any            `json:"data"`
			} `json:"inputs"`
			Outputs []struct {
				Name       string         `json:"name"`
				Parameters map[string]any `json:"parameters"`
			} `json:"outputs"`
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		dec.UseNumber()
		if err := dec.Decode(&ref); err != nil {
			t.Fatalf("%q: accepted, encoding/json refuses it: %v", body, err)
		}
		if rest := bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
			t.Fatalf("%q: accepted with trailing %q", body, rest)
		}
		if id := ""; ref.ID != nil && *ref.ID != c.ID || ref.ID == nil && c.ID != id {
			t.Fatalf("%q: id %q, encoding/json %v", body, c.ID, ref.ID)
		}
		if len(ref.Outputs) != len(c.Outputs) {
			t.Fatalf("%q: outputs %q", body, c.Outputs)
		}
		for i, o := range ref.Outputs {
			if o.Name != c.Outputs[i] {
				t.Fatalf("%q: output %d %q, encoding/json %q", body, i, c.Outputs[i], o.Name)
			}
		}
		if len(ref.Inputs) != len(c.Inputs) {
			t.Fatalf("%q: %d inputs, encoding/json %d", body, len(c.Inputs), len(ref.Inputs))
		}
		for i, in := range ref.Inputs {
			got := c.Inputs[i]
			if in.Name != got.Name || in.Datatype != got.DType.String() || !reflect.DeepEqual(in.Shape, got.Shape) {
				t.Fatalf("%q: input %d %s %s %v, encoding/json %s %s %v", body, i, got.Name, got.DType, got.Shape, in.Name, in.Datatype, in.Shape)
			}
			var flat []any
			if a, ok := in.Data.([]any); ok && len(a) > 0 {
				if _, nested := a[0].([]any); nested {
					checkNesting(t, body, in.Data, in.Shape)
				}
			}
			flattenAny(in.Data, &flat)
			want := refElems(t, body, got.DType, flat)
			if !sameElems(got.Data, want) {
				t.Fatalf("%q: input %d data %v, encoding/json %v", body, i, got.Data, want)
			}
		}
	})
}

// checkNesting fails unless v nests exactly as shape.
func checkNesting(t *testing.T, body []byte, v any, shape []int64) {
	a, ok := v.([]any)
	if len(shape) == 0 {
		if ok {
			t.Fatalf("%q: accepted data nested deeper than its shape", body)
		}
		return
	}
	if !ok || int64(len(a)) != shape[0] {
		t.Fatalf("%q: accepted nested data that does not match its shape", body)
	}
	for _, e := range a {
		checkNesting(t, body, e, shape[1:])
	}
}

func flattenAny(v any, out *[]any) {
	if a, ok := v.([]any); ok {
		for _, e := range a {
			flattenAny(e, out)
		}
		return
	}
	*out = append(*out, v)
}

// refElems converts encoding/json's elements as the datatype reads them (null: NaN).
func refElems(t *testing.T, body []byte, dt backends.DType, flat []any) any {
	num := func(e any, bits int) float64 {
		if e == nil {
			return math.NaN()
		}
		v, err := strconv.ParseFloat(string(e.(json.Number)), bits)
		if err != nil {
			t.Fatalf("%q: accepted %v: %v", body, e, err)
		}
		return v
	}
	integer := func(e any, bits int) int64 {
		v, err := strconv.ParseInt(string(e.(json.Number)), 10, bits)
		if err != nil {
			t.Fatalf("%q: accepted %v: %v", body, e, err)
		}
		return v
	}
	switch dt {
	case backends.FP32:
		out := make([]float32, len(flat))
		for i, e := range flat {
			out[i] = float32(num(e, 32))
		}
		return out
	case backends.FP64:
		out := make([]float64, len(flat))
		for i, e := range flat {
			out[i] = num(e, 64)
		}
		return out
	case backends.INT32:
		out := make([]int32, len(flat))
		for i, e := range flat {
			out[i] = int32(integer(e, 32))
		}
		return out
	case backends.INT64:
		out := make([]int64, len(flat))
		for i, e := range flat {
			out[i] = integer(e, 64)
		}
		return out
	case backends.BOOL:
		out := make([]bool, len(flat))
		for i, e := range flat {
			out[i] = e.(bool)
		}
		return out
	case backends.BYTES:
		out := make([][]byte, len(flat))
		for i, e := range flat {
			out[i] = []byte(e.(string))
		}
		return out
	}
	t.Fatalf("%q: accepted datatype %s", body, dt)
	return nil
}

// sameElems compares typed data, floats by value with NaN equal to NaN, an empty slice equal to
// another.
func sameElems(a, b any) bool {
	switch x := a.(type) {
	case []float32:
		y := b.([]float32)
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] && !(x[i] != x[i] && y[i] != y[i]) {
				return false
			}
		}
		return true
	case []float64:
		y := b.([]float64)
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] && !(math.IsNaN(x[i]) && math.IsNaN(y[i])) {
				return false
			}
		}
		return true
	case [][]byte:
		y := b.([][]byte)
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if !bytes.Equal(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Len() == 0 && vb.Len() == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}
