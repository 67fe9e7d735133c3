package migrate

import (
	"slices"
	"strings"
	"testing"

	"github.com/novacron/sidecar/proto/inference"
)

func inferAnswer(outs ...*inference.ModelInferResponse_InferOutputTensor) *inference.ModelInferResponse {
	return &inference.ModelInferResponse{ModelName: "m", Outputs: outs}
}

func fp32Out(name string, shape []int64, v ...float32) *inference.ModelInferResponse_InferOutputTensor {
	return &inference.ModelInferResponse_InferOutputTensor{Name: name, Datatype: "FP32", Shape: shape,
		Contents: &inference.InferTensorContents{Fp32Contents: v}}
}

// TestTensors covers each rule of the Open Inference Protocol comparison.
func TestTensors(t *testing.T) {
	base := inferAnswer(fp32Out("forecast", []int64{1, 3}, 100, 200, 300), fp32Out("sigma", []int64{1, 3}, 1, 2, 3))
	cases := []struct {
		name   string
		cand   *inference.ModelInferResponse
		fields []string
		detail string
	}{
		{"identical", inferAnswer(fp32Out("forecast", []int64{1, 3}, 100, 200, 300), fp32Out("sigma", []int64{1, 3}, 1, 2, 3)), nil, ""},
		{"order of outputs does not count", inferAnswer(fp32Out("sigma", []int64{1, 3}, 1, 2, 3), fp32Out("forecast", []int64{1, 3}, 100, 200, 300)), nil, ""},
		{"within rel", inferAnswer(fp32Out("forecast", []int64{1, 3}, 100, 200.01, 300), fp32Out("sigma", []int64{1, 3}, 1, 2, 3)), nil, ""},
		{"a value off by 1%", inferAnswer(fp32Out("forecast", []int64{1, 3}, 100, 202, 300), fp32Out("sigma", []int64{1, 3}, 1, 2, 3)),
			[]string{FieldOutputs}, `outputs["forecast"][1]: 200 vs 202`},
		{"another shape", inferAnswer(fp32Out("forecast", []int64{3, 1}, 100, 200, 300), fp32Out("sigma", []int64{1, 3}, 1, 2, 3)),
			[]string{FieldOutputShape}, `outputs["forecast"].shape`},
		{"an output missing", inferAnswer(fp32Out("forecast", []int64{1, 3}, 100, 200, 300)), []string{FieldOutputSet}, `"sigma" only in the baseline`},
		{"an output more", inferAnswer(fp32Out("forecast", []int64{1, 3}, 100, 200, 300), fp32Out("sigma", []int64{1, 3}, 1, 2, 3), fp32Out("x", []int64{1})),
			[]string{FieldOutputSet}, `"x" only in the candidate`},
		{"no answer", nil, []string{FieldMissing}, "answer"},
	}
	for _, c := range cases {
		d := Tensors(base, c.cand, Tolerances{})
		if !slices.Equal(d.Fields, c.fields) || !strings.Contains(d.Detail, c.detail) {
			t.Errorf("%s: fields %v, detail %q; want %v and %q", c.name, d.Fields, d.Detail, c.fields, c.detail)
		}
	}
	ints := func(v ...int64) *inference.ModelInferResponse {
		return inferAnswer(&inference.ModelInferResponse_InferOutputTensor{Name: "n", Datatype: "INT64", Shape: []int64{int64(len(v))},
			Contents: &inference.InferTensorContents{Int64Contents: v}})
	}
	if d := Tensors(ints(1000000, 2), ints(1000001, 2), Tolerances{}); !slices.Equal(d.Fields, []string{FieldOutputs}) {
		t.Errorf("integers are compared exactly: %v", d.Fields)
	}
}
