package oip

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/proto/inference"
)

// codecTensors are tensors of every dtype the sidecar carries, including the awkward shapes: a
// scalar (shape []), zero-size shapes, empty BYTES elements, NaN payloads and extreme integers.
func codecTensors() map[string][]backends.Tensor {
	nan32 := math.Float32frombits(0x7fc00001)
	nan64 := math.Float64frombits(0x7ff8000000000001)
	return map[string][]backends.Tensor{
		"FP32": {backends.F32("x", []int64{2, 3}, []float32{0, -1.5, 3.25, float32(math.Inf(1)), nan32, math.MaxFloat32})},
		"FP32 scalar": {
			backends.F32("s", []int64{}, []float32{42}),
		},
		"FP32 zero-size": {backends.F32("z", []int64{0, 3}, []float32{})},
		"FP64": {
			{Name: "x", DType: backends.FP64, Shape: []int64{4}, Data: []float64{math.SmallestNonzeroFloat64, math.Copysign(0, -1), nan64, -1e300}},
		},
		"INT32": {
			{Name: "x", DType: backends.INT32, Shape: []int64{2, 2}, Data: []int32{math.MinInt32, -1, 0, math.MaxInt32}},
		},
		"INT64": {
			{Name: "x", DType: backends.INT64, Shape: []int64{1, 3}, Data: []int64{math.MinInt64, 258, math.MaxInt64}},
		},
		"INT64 scalar": {
			{Name: "x", DType: backends.INT64, Shape: nil, Data: []int64{-7}},
		},
		"BOOL": {
			{Name: "x", DType: backends.BOOL, Shape: []int64{3, 1}, Data: []bool{true, false, true}},
		},
		"BOOL zero-size": {
			{Name: "x", DType: backends.BOOL, Shape: []int64{3, 0}, Data: []bool{}},
		},
		"BYTES": {
			{Name: "x", DType: backends.BYTES, Shape: []int64{4}, Data: [][]byte{[]byte("ab"), {}, nil, []byte("\x00\xff\x01")}},
		},
		"BYTES all empty": {
			{Name: "x", DType: backends.BYTES, Shape: []int64{2, 1}, Data: [][]byte{{}, {}}},
		},
		"BYTES zero-size": {
			{Name: "x", DType: backends.BYTES, Shape: []int64{0}, Data: [][]byte{}},
		},
		"BYTES scalar": {
			{Name: "x", DType: backends.BYTES, Shape: []int64{}, Data: [][]byte{[]byte("scalar")}},
		},
		"all dtypes": {
			backends.F32("a", []int64{1, 2}, []float32{1, 2}),
			{Name: "b", DType: backends.FP64, Shape: []int64{1}, Data: []float64{0.1}},
			{Name: "c", DType: backends.INT32, Shape: []int64{0, 5}, Data: []int32{}},
			{Name: "d", DType: backends.INT64, Shape: []int64{}, Data: []int64{1 << 40}},
			{Name: "e", DType: backends.BOOL, Shape: []int64{2}, Data: []bool{false, true}},
			{Name: "f", DType: backends.BYTES, Shape: []int64{1, 3}, Data: [][]byte{[]byte("x"), {}, []byte("yz")}},
		},
		"none": {},
	}
}

// TestRoundTrip encodes tensors into requests and responses, typed and raw, in memory and through
// the wire format, and decodes them back.
func TestRoundTrip(t *testing.T) {
	for name, want := range codecTensors() {
		for _, raw := range []bool{false, true} {
			for _, wire := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/raw=%v/wire=%v", name, raw, wire), func(t *testing.T) {
					for _, w := range want {
						if err := w.Check(); err != nil {
							t.Fatalf("bad test tensor: %v", err)
						}
					}

					req := &inference.ModelInferRequest{ModelName: "m"}
					SetInputs(req, want, raw)
					if raw != (len(req.GetRawInputContents()) > 0) && len(want) > 0 {
						t.Fatalf("SetInputs(raw=%v) set %d raw entries", raw, len(req.GetRawInputContents()))
					}
					if wire {
						req = reparse(t, req, &inference.ModelInferRequest{})
					}
					got, err := Inputs(req)
					if err != nil {
						t.Fatalf("Inputs: %v", err)
					}
					checkTensors(t, "Inputs", got, want)

					resp := &inference.ModelInferResponse{ModelName: "m"}
					SetOutputs(resp, want, raw)
					if raw != (len(resp.GetRawOutputContents()) > 0) && len(want) > 0 {
						t.Fatalf("SetOutputs(raw=%v) set %d raw entries", raw, len(resp.GetRawOutputContents()))
					}
					if wire {
						resp = reparse(t, resp, &inference.ModelInferResponse{})
					}
					got, err = Outputs(resp, errBadAnswer)
					if err != nil {
						t.Fatalf("Outputs: %v", err)
					}
					checkTensors(t, "Outputs", got, want)
				})
			}
		}
	}
}

// TestSetInputsReplaces checks that filling a request again drops what the last fill left.
func TestSetInputsReplaces(t *testing.T) {
	req := &inference.ModelInferRequest{}
	SetInputs(req, codecTensors()["all dtypes"], true)
	want := codecTensors()["FP32"]
	SetInputs(req, want, false)
	got, err := Inputs(req)
	if err != nil {
		t.Fatalf("Inputs after a typed refill of a raw request: %v", err)
	}
	checkTensors(t, "Inputs", got, want)

	resp := &inference.ModelInferResponse{}
	SetOutputs(resp, codecTensors()["all dtypes"], true)
	SetOutputs(resp, want, false)
	got, err = Outputs(resp, errBadAnswer)
	if err != nil {
		t.Fatalf("Outputs after a typed refill of a raw response: %v", err)
	}
	checkTensors(t, "Outputs", got, want)
}

// TestRawBytes pins the raw form to bytes computed by hand, in both directions, so that a bug
// shared by the encoder and the decoder cannot hide behind a round trip.
func TestRawBytes(t *testing.T) {
	tests := []struct {
		name   string
		tensor backends.Tensor
		raw    []byte
	}{
		{
			name:   "FP32 1.5 -2",
			tensor: backends.F32("x", []int64{2}, []float32{1.5, -2}), // 0x3fc00000, 0xc0000000
			raw:    []byte{0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0},
		},
		{
			name:   "FP64 1.5",
			tensor: backends.Tensor{Name: "x", DType: backends.FP64, Shape: []int64{}, Data: []float64{1.5}}, // 0x3ff8000000000000
			raw:    []byte{0, 0, 0, 0, 0, 0, 0xf8, 0x3f},
		},
		{
			name:   "INT32 0x01020304 -2",
			tensor: backends.Tensor{Name: "x", DType: backends.INT32, Shape: []int64{1, 2}, Data: []int32{0x01020304, -2}},
			raw:    []byte{0x04, 0x03, 0x02, 0x01, 0xfe, 0xff, 0xff, 0xff},
		},
		{
			name:   "INT64 258 -1",
			tensor: backends.Tensor{Name: "x", DType: backends.INT64, Shape: []int64{2}, Data: []int64{258, -1}},
			raw:    []byte{0x02, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		},
		{
			name:   "BOOL",
			tensor: backends.Tensor{Name: "x", DType: backends.BOOL, Shape: []int64{3}, Data: []bool{true, false, true}},
			raw:    []byte{1, 0, 1},
		},
		{
			name:   "BYTES",
			tensor: backends.Tensor{Name: "x", DType: backends.BYTES, Shape: []int64{3}, Data: [][]byte{[]byte("ab"), {}, []byte("c")}},
			raw:    []byte{2, 0, 0, 0, 'a', 'b', 0, 0, 0, 0, 1, 0, 0, 0, 'c'},
		},
		{
			name:   "BYTES 256 long",
			tensor: backends.Tensor{Name: "x", DType: backends.BYTES, Shape: []int64{1}, Data: [][]byte{bytes.Repeat([]byte{7}, 256)}},
			raw:    append([]byte{0, 1, 0, 0}, bytes.Repeat([]byte{7}, 256)...),
		},
		{
			name:   "zero-size",
			tensor: backends.F32("x", []int64{0, 3}, []float32{}),
			raw:    []byte{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("keep")
			if got := AppendRaw(slices.Clone(prefix), tt.tensor); !bytes.Equal(got, append(prefix, tt.raw...)) {
				t.Errorf("AppendRaw(%q, ...) = % x, want % x", prefix, got, append(prefix, tt.raw...))
			}
			req := &inference.ModelInferRequest{}
			SetInputs(req, []backends.Tensor{tt.tensor}, true)
			if len(req.RawInputContents) != 1 || !bytes.Equal(req.RawInputContents[0], tt.raw) {
				t.Errorf("SetInputs raw_input_contents = % x, want [% x]", req.RawInputContents, tt.raw)
			}
			resp := &inference.ModelInferResponse{}
			SetOutputs(resp, []backends.Tensor{tt.tensor}, true)
			if len(resp.RawOutputContents) != 1 || !bytes.Equal(resp.RawOutputContents[0], tt.raw) {
				t.Errorf("SetOutputs raw_output_contents = % x, want [% x]", resp.RawOutputContents, tt.raw)
			}

			req = &inference.ModelInferRequest{
				Inputs: []*inference.ModelInferRequest_InferInputTensor{
					{Name: tt.tensor.Name, Datatype: tt.tensor.DType.String(), Shape: tt.tensor.Shape},
				},
				RawInputContents: [][]byte{tt.raw},
			}
			got, err := Inputs(req)
			if err != nil {
				t.Fatalf("Inputs of hand-made raw bytes: %v", err)
			}
			checkTensors(t, "Inputs", got, []backends.Tensor{tt.tensor})
		})
	}
}

// TestRawBYTESAliasing checks that a decoded BYTES element cannot grow into its neighbour.
func TestRawBYTESAliasing(t *testing.T) {
	req := &inference.ModelInferRequest{
		Inputs:           []*inference.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "BYTES", Shape: []int64{2}}},
		RawInputContents: [][]byte{{1, 0, 0, 0, 'a', 1, 0, 0, 0, 'b'}},
	}
	got, err := Inputs(req)
	if err != nil {
		t.Fatal(err)
	}
	els := got[0].Data.([][]byte)
	_ = append(els[0], 'X')
	if !bytes.Equal(els[1], []byte("b")) || !bytes.Equal(req.RawInputContents[0], []byte{1, 0, 0, 0, 'a', 1, 0, 0, 0, 'b'}) {
		t.Errorf("appending to element 0 overwrote the raw bytes: element 1 = %q, raw = % x", els[1], req.RawInputContents[0])
	}
}

var errBadAnswer = errors.New("bad answer from the model server")

// hdr is one input or output tensor's header, to build both a request and a response from.
type hdr struct {
	name, dtype string
	shape       []int64
	contents    *inference.InferTensorContents
}

func fp32(n int) *inference.InferTensorContents {
	return &inference.InferTensorContents{Fp32Contents: make([]float32, n)}
}

// TestDecodeErrors checks each way Inputs and Outputs refuse a message: the error wraps the
// sentinel, names the field, and no tensors come back.
func TestDecodeErrors(t *testing.T) {
	ok := hdr{"ok", "FP32", []int64{2}, fp32(2)}
	okRaw := hdr{"ok", "FP32", []int64{2}, nil}
	supported := []string{"[FP32 FP64 INT32 INT64 BOOL BYTES]"}
	tests := []struct {
		name string
		hs   []hdr
		raw  [][]byte
		// want are substrings of the error for Inputs; Outputs' are the same with "input"
		// replaced by "output".
		want []string
	}{
		{
			name: "raw count below inputs",
			hs:   []hdr{okRaw, {"b", "FP32", []int64{1}, nil}},
			raw:  [][]byte{make([]byte, 8)},
			want: []string{"raw_input_contents: 1 entries for 2 tensors"},
		},
		{
			name: "raw count above inputs",
			hs:   []hdr{okRaw},
			raw:  [][]byte{make([]byte, 8), make([]byte, 8)},
			want: []string{"raw_input_contents: 2 entries for 1 tensors"},
		},
		{
			name: "raw without inputs",
			raw:  [][]byte{{}},
			want: []string{"raw_input_contents: 1 entries for 0 tensors"},
		},
		{
			name: "raw and typed",
			hs:   []hdr{okRaw, {"b", "FP32", []int64{1}, fp32(1)}},
			raw:  [][]byte{make([]byte, 8), make([]byte, 4)},
			want: []string{"inputs[1].contents: ", "raw_input_contents"},
		},
		{
			name: "raw and empty typed contents",
			hs:   []hdr{{"a", "FP32", []int64{0}, &inference.InferTensorContents{}}},
			raw:  [][]byte{{}},
			want: []string{"inputs[0].contents: ", "raw_input_contents"},
		},
		{
			name: "FP16",
			hs:   []hdr{ok, {"b", "FP16", []int64{1}, nil}},
			want: append([]string{`inputs[1].datatype: "FP16"`}, supported...),
		},
		{
			name: "UINT8",
			hs:   []hdr{{"a", "UINT8", []int64{1}, &inference.InferTensorContents{UintContents: []uint32{1}}}},
			want: append([]string{`inputs[0].datatype: "UINT8"`}, supported...),
		},
		{
			name: "empty datatype",
			hs:   []hdr{{"a", "", []int64{1}, fp32(1)}},
			want: append([]string{`inputs[0].datatype: ""`}, supported...),
		},
		{
			name: "lower-case datatype",
			hs:   []hdr{{"a", "fp32", []int64{1}, fp32(1)}},
			want: append([]string{`inputs[0].datatype: "fp32"`}, supported...),
		},
		{
			name: "INVALID datatype",
			hs:   []hdr{{"a", "INVALID", []int64{}, fp32(1)}},
			want: append([]string{`inputs[0].datatype: "INVALID"`}, supported...),
		},
		{
			name: "negative dimension",
			hs:   []hdr{ok, {"b", "FP32", []int64{2, -1}, fp32(2)}},
			want: []string{"inputs[1].shape: [2 -1]", "negative"},
		},
		{
			name: "negative dimension raw",
			hs:   []hdr{{"a", "INT64", []int64{-1, -1}, nil}},
			raw:  [][]byte{make([]byte, 8)},
			want: []string{"inputs[0].shape: [-1 -1]", "negative"},
		},
		{
			name: "huge dimensions",
			hs:   []hdr{{"a", "FP32", []int64{1 << 40, 1 << 40}, nil}},
			want: []string{"inputs[0].shape: [1099511627776 1099511627776] has more than 268435456 elements"},
		},
		{
			name: "huge dimensions raw",
			hs:   []hdr{{"a", "FP64", []int64{1 << 40, 1 << 40}, nil}},
			raw:  [][]byte{make([]byte, 8)},
			want: []string{"inputs[0].shape: [1099511627776 1099511627776] has more than"},
		},
		{
			name: "product past the limit",
			hs:   []hdr{{"a", "BYTES", []int64{1 << 10, 1 << 10, 1 << 10}, nil}},
			raw:  [][]byte{make([]byte, 4)},
			want: []string{"inputs[0].shape: [1024 1024 1024] has more than"},
		},
		{
			name: "product wrapping 32 bits",
			hs:   []hdr{{"a", "BOOL", []int64{1 << 16, 1 << 16}, nil}},
			raw:  [][]byte{{}},
			want: []string{"inputs[0].shape: [65536 65536] has more than"},
		},
		{
			name: "product wrapping 64 bits",
			hs:   []hdr{{"a", "INT32", []int64{1 << 16, 1 << 16, 1 << 16, 1 << 16}, nil}},
			want: []string{"inputs[0].shape: [65536 65536 65536 65536] has more than"},
		},
		{
			name: "huge dimension after a zero",
			hs:   []hdr{{"a", "FP32", []int64{0, math.MaxInt64}, nil}},
			want: []string{"inputs[0].shape: [0 9223372036854775807] has more than"},
		},
		{
			name: "one past the limit",
			hs:   []hdr{{"a", "FP32", []int64{MaxElements/2 + 1, 2}, nil}},
			want: []string{"inputs[0].shape: [134217729 2] has more than 268435456 elements"},
		},
		{
			name: "at the limit, raw too short",
			hs:   []hdr{{"a", "FP64", []int64{2, MaxElements / 2}, nil}},
			raw:  [][]byte{make([]byte, 8)},
			want: []string{"raw_input_contents[0]: 8 bytes, the shape needs 2147483648"},
		},
		{
			name: "at the limit, BYTES raw too short",
			hs:   []hdr{{"a", "BYTES", []int64{MaxElements}, nil}},
			raw:  [][]byte{{0, 0, 0, 0}},
			want: []string{"raw_input_contents[0]: 1 of 268435456 BYTES elements"},
		},
		{
			name: "at the limit, typed too short",
			hs:   []hdr{{"a", "INT32", []int64{MaxElements}, &inference.InferTensorContents{IntContents: []int32{1}}}},
			want: []string{"inputs[0].contents.int_contents: 1 values, the shape needs 268435456"},
		},
		{
			name: "typed too few",
			hs:   []hdr{ok, {"b", "FP32", []int64{2, 3}, fp32(5)}},
			want: []string{"inputs[1].contents.fp32_contents: 5 values, the shape needs 6", `tensor "b"`},
		},
		{
			name: "typed too many",
			hs:   []hdr{{"a", "BOOL", []int64{}, &inference.InferTensorContents{BoolContents: []bool{true, false}}}},
			want: []string{"inputs[0].contents.bool_contents: 2 values, the shape needs 1"},
		},
		{
			name: "typed missing contents",
			hs:   []hdr{{"a", "BYTES", []int64{1}, nil}},
			want: []string{"inputs[0].contents.bytes_contents: 0 values, the shape needs 1"},
		},
		{
			name: "typed INT64 in int_contents",
			hs:   []hdr{{"a", "INT64", []int64{1}, &inference.InferTensorContents{IntContents: []int32{1}, Int64Contents: []int64{1}}}},
			want: []string{"inputs[0].contents.int_contents: set for a INT64 tensor"},
		},
		{
			name: "typed FP64 in fp32_contents",
			hs:   []hdr{{"a", "FP64", []int64{1}, fp32(1)}},
			want: []string{"inputs[0].contents.fp32_contents: set for a FP64 tensor"},
		},
		{
			name: "typed uint_contents",
			hs:   []hdr{{"a", "INT32", []int64{1}, &inference.InferTensorContents{UintContents: []uint32{1}, IntContents: []int32{1}}}},
			want: []string{"inputs[0].contents.uint_contents: set for a INT32 tensor"},
		},
		{
			name: "typed uint64_contents",
			hs:   []hdr{{"a", "INT64", []int64{1}, &inference.InferTensorContents{Uint64Contents: []uint64{1}, Int64Contents: []int64{1}}}},
			want: []string{"inputs[0].contents.uint64_contents: set for a INT64 tensor"},
		},
		{
			name: "typed extra field on a zero-size tensor",
			hs:   []hdr{{"a", "FP32", []int64{0}, &inference.InferTensorContents{BytesContents: [][]byte{{}}}}},
			want: []string{"inputs[0].contents.bytes_contents: set for a FP32 tensor"},
		},
		{
			name: "raw FP32 length",
			hs:   []hdr{okRaw, {"b", "FP32", []int64{2, 3}, nil}},
			raw:  [][]byte{make([]byte, 8), make([]byte, 23)},
			want: []string{"raw_input_contents[1]: 23 bytes, the shape needs 24", `tensor "b"`},
		},
		{
			name: "raw INT64 length",
			hs:   []hdr{{"a", "INT64", []int64{}, nil}},
			raw:  [][]byte{make([]byte, 4)},
			want: []string{"raw_input_contents[0]: 4 bytes, the shape needs 8"},
		},
		{
			name: "raw zero-size with bytes",
			hs:   []hdr{{"a", "INT32", []int64{0}, nil}},
			raw:  [][]byte{make([]byte, 4)},
			want: []string{"raw_input_contents[0]: 4 bytes, the shape needs 0"},
		},
		{
			name: "raw BYTES truncated length",
			hs:   []hdr{{"a", "BYTES", []int64{2}, nil}},
			raw:  [][]byte{{2, 0, 0, 0, 'a', 'b', 1, 0}},
			want: []string{"raw_input_contents[0]: 1 of 2 BYTES elements, then 2 bytes left"},
		},
		{
			name: "raw BYTES missing element",
			hs:   []hdr{{"a", "BYTES", []int64{2}, nil}},
			raw:  [][]byte{{0, 0, 0, 0}},
			want: []string{"raw_input_contents[0]: 1 of 2 BYTES elements, then 0 bytes left"},
		},
		{
			name: "raw BYTES length beyond the end",
			hs:   []hdr{okRaw, {"b", "BYTES", []int64{1, 1}, nil}},
			raw:  [][]byte{make([]byte, 8), {5, 0, 0, 0, 'a', 'b'}},
			want: []string{"raw_input_contents[1]: BYTES element 0 claims 5 bytes, 2 are left"},
		},
		{
			name: "raw BYTES length 2^32-1",
			hs:   []hdr{{"a", "BYTES", []int64{1}, nil}},
			raw:  [][]byte{{0xff, 0xff, 0xff, 0xff, 'a'}},
			want: []string{"raw_input_contents[0]: BYTES element 0 claims 4294967295 bytes, 1 are left"},
		},
		{
			name: "raw BYTES trailing bytes",
			hs:   []hdr{{"a", "BYTES", []int64{1}, nil}},
			raw:  [][]byte{{1, 0, 0, 0, 'a', 'x', 'y'}},
			want: []string{"raw_input_contents[0]: 2 bytes left after the 1 BYTES elements"},
		},
		{
			name: "raw BYTES zero-size with bytes",
			hs:   []hdr{{"a", "BYTES", []int64{0}, nil}},
			raw:  [][]byte{{0, 0, 0, 0}},
			want: []string{"raw_input_contents[0]: 4 bytes left after the 0 BYTES elements"},
		},
		{
			name: "raw BOOL byte 2",
			hs:   []hdr{{"a", "BOOL", []int64{3}, nil}},
			raw:  [][]byte{{1, 2, 0}},
			want: []string{"raw_input_contents[0]: BOOL element 1 is byte 2, want 0 or 1"},
		},
		{
			name: "raw BOOL byte 0xff",
			hs:   []hdr{{"a", "BOOL", []int64{}, nil}},
			raw:  [][]byte{{0xff}},
			want: []string{"raw_input_contents[0]: BOOL element 0 is byte 255"},
		},
		{
			name: "empty name",
			hs:   []hdr{ok, {"", "FP32", []int64{1}, fp32(1)}},
			want: []string{"inputs[1].name: empty"},
		},
		{
			name: "duplicate name",
			hs:   []hdr{ok, {"b", "FP32", []int64{1}, fp32(1)}, {"ok", "FP32", []int64{1}, fp32(1)}},
			want: []string{`inputs[2].name: "ok" repeats inputs[0]`},
		},
		{
			name: "duplicate name raw",
			hs:   []hdr{okRaw, okRaw},
			raw:  [][]byte{make([]byte, 8), make([]byte, 8)},
			want: []string{`inputs[1].name: "ok" repeats inputs[0]`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &inference.ModelInferRequest{RawInputContents: tt.raw}
			resp := &inference.ModelInferResponse{RawOutputContents: tt.raw}
			for _, h := range tt.hs {
				req.Inputs = append(req.Inputs, &inference.ModelInferRequest_InferInputTensor{
					Name: h.name, Datatype: h.dtype, Shape: h.shape, Contents: h.contents,
				})
				resp.Outputs = append(resp.Outputs, &inference.ModelInferResponse_InferOutputTensor{
					Name: h.name, Datatype: h.dtype, Shape: h.shape, Contents: h.contents,
				})
			}

			var got []backends.Tensor
			var err error
			allocated := bytesAllocated(func() { got, err = Inputs(req) })
			checkError(t, "Inputs", got, err, backends.ErrInvalidInput, tt.want)
			// The largest legal tensor here has 2^28 elements, 1 GiB of FP32; a refused
			// message must cost nothing like that.
			if allocated > 1<<20 {
				t.Errorf("Inputs allocated %d bytes to refuse the request", allocated)
			}

			var outWant []string
			for _, w := range tt.want {
				outWant = append(outWant, strings.ReplaceAll(w, "input", "output"))
			}
			allocated = bytesAllocated(func() { got, err = Outputs(resp, errBadAnswer) })
			checkError(t, "Outputs", got, err, errBadAnswer, outWant)
			if errors.Is(err, backends.ErrInvalidInput) {
				t.Errorf("Outputs error %q wraps backends.ErrInvalidInput; a bad answer is not the caller's fault", err)
			}
			if allocated > 1<<20 {
				t.Errorf("Outputs allocated %d bytes to refuse the response", allocated)
			}
		})
	}
}

func checkError(t *testing.T, op string, got []backends.Tensor, err, sentinel error, want []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s = %d tensors, nil error; want an error containing %q", op, len(got), want)
	}
	if got != nil {
		t.Errorf("%s returned %d tensors with its error", op, len(got))
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("%s error %q does not wrap %q", op, err, sentinel)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s error %q does not contain %q", op, err, w)
		}
	}
}

// bytesAllocated is how many bytes of heap f allocates. The tests calling it are not parallel.
func bytesAllocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// FuzzInputs decodes arbitrary requests: Inputs must not panic; what it accepts must be valid
// tensors that survive a raw and a typed re-encoding; what it refuses must wrap ErrInvalidInput.
func FuzzInputs(f *testing.F) {
	for _, name := range []string{"all dtypes", "FP32 scalar", "BYTES", "BOOL zero-size", "FP64"} {
		for _, raw := range []bool{false, true} {
			req := &inference.ModelInferRequest{ModelName: "m", Id: "1"}
			SetInputs(req, codecTensors()[name], raw)
			b, err := proto.Marshal(req)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := &inference.ModelInferRequest{}
		if err := proto.Unmarshal(b, req); err != nil {
			return
		}
		got, err := Inputs(req)
		if err != nil {
			if got != nil {
				t.Errorf("Inputs returned %d tensors with error %v", len(got), err)
			}
			if !errors.Is(err, backends.ErrInvalidInput) {
				t.Errorf("Inputs error %q does not wrap ErrInvalidInput", err)
			}
			return
		}
		if len(got) != len(req.Inputs) {
			t.Fatalf("Inputs = %d tensors for %d inputs", len(got), len(req.Inputs))
		}
		for i, g := range got {
			if err := g.Check(); err != nil {
				t.Fatalf("tensor %d: %v", i, err)
			}
			in := req.Inputs[i]
			if g.Name != in.Name || g.DType.String() != in.Datatype || !slices.Equal(g.Shape, in.Shape) {
				t.Fatalf("tensor %d = %q %s %v, the input says %q %s %v", i, g.Name, g.DType, g.Shape, in.Name, in.Datatype, in.Shape)
			}
		}
		for _, raw := range []bool{true, false} {
			again := &inference.ModelInferRequest{}
			SetInputs(again, got, raw)
			back, err := Inputs(again)
			if err != nil {
				t.Fatalf("Inputs of the re-encoding (raw=%v): %v", raw, err)
			}
			checkTensors(t, fmt.Sprintf("re-encoded (raw=%v)", raw), back, got)
		}
	})
}

// The benchmark tensor is an FP32 batch of 64 of shape [10, 6].
func benchTensors() []backends.Tensor {
	data := make([]float32, 64*10*6)
	for i := range data {
		data[i] = float32(i) / 7
	}
	return []backends.Tensor{backends.F32("x", []int64{64, 10, 6}, data)}
}

func BenchmarkInputsRaw(b *testing.B) {
	ts := benchTensors()
	req := &inference.ModelInferRequest{}
	SetInputs(req, ts, true)
	b.SetBytes(int64(len(req.RawInputContents[0])))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Inputs(req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSetOutputsRaw(b *testing.B) {
	ts := benchTensors()
	resp := &inference.ModelInferResponse{}
	b.SetBytes(int64(4 * ts[0].Len()))
	b.ReportAllocs()
	for b.Loop() {
		SetOutputs(resp, ts, true)
	}
}

// reparse sends m through the wire format into fresh.
func reparse[M proto.Message](t *testing.T, m, fresh M) M {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("proto.Marshal: %v", err)
	}
	if err := proto.Unmarshal(b, fresh); err != nil {
		t.Fatalf("proto.Unmarshal: %v", err)
	}
	return fresh
}

// checkTensors compares tensors exactly: floats by their bits (so NaN payloads and -0 count), a
// nil shape or element equal to an empty one.
func checkTensors(t *testing.T, what string, got, want []backends.Tensor) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d tensors, want %d", what, len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) {
			t.Errorf("%s: tensor %d is %q %s %v, want %q %s %v", what, i, g.Name, g.DType, g.Shape, w.Name, w.DType, w.Shape)
		}
		if err := g.Check(); err != nil {
			t.Errorf("%s: tensor %d: %v", what, i, err)
		}
		if !sameData(g.Data, w.Data) {
			t.Errorf("%s: tensor %d (%q) holds %T %v, want %T %v", what, i, w.Name, g.Data, g.Data, w.Data, w.Data)
		}
	}
}

func sameData(got, want any) bool {
	switch w := want.(type) {
	case []float32:
		g, ok := got.([]float32)
		return ok && slices.EqualFunc(g, w, func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) })
	case []float64:
		g, ok := got.([]float64)
		return ok && slices.EqualFunc(g, w, func(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) })
	case []int32:
		g, ok := got.([]int32)
		return ok && slices.Equal(g, w)
	case []int64:
		g, ok := got.([]int64)
		return ok && slices.Equal(g, w)
	case []bool:
		g, ok := got.([]bool)
		return ok && slices.Equal(g, w)
	case [][]byte:
		g, ok := got.([][]byte)
		return ok && slices.EqualFunc(g, w, bytes.Equal)
	}
	return false
}
