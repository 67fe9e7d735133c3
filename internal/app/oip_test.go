package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bufbuild/protocompile"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/backends/oip"
	"github.com/novacron/sidecar/features"
	"github.com/novacron/sidecar/proto/inference"
	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// oipRows makes n rows of raw feature values for spec (step-major, spec order, natural units,
// distinct per row) and their canonical form.
func oipRows(t *testing.T, spec *features.Spec, n int) (raw []float64, canon []float32) {
	t.Helper()
	size := spec.Size()
	raw = make([]float64, n*size)
	for i := range raw {
		r, k := i/size, i%size
		raw[i] = 1 + float64(r) + 0.37*float64(k%spec.Width()) + 0.05*float64(k/spec.Width())
	}
	canon = make([]float32, len(raw))
	for r := 0; r < n; r++ {
		if err := spec.Canonicalize(canon[r*size:(r+1)*size], raw[r*size:(r+1)*size]); err != nil {
			t.Fatal(err)
		}
	}
	return raw, canon
}

// rawFeatureTensors splits raw rows into one FP64 tensor per feature: [n, steps] for sequence
// specs, [n] for row specs.
func rawFeatureTensors(spec *features.Spec, n int, raw []float64) []backends.Tensor {
	w, steps := spec.Width(), spec.Steps()
	var out []backends.Tensor
	for j, name := range spec.FeatureNames() {
		d := make([]float64, 0, n*steps)
		for i := j; i < len(raw); i += w {
			d = append(d, raw[i])
		}
		shape := []int64{int64(n)}
		if spec.Sequence() {
			shape = []int64{int64(n), int64(steps)}
		}
		out = append(out, backends.Tensor{Name: name, DType: backends.FP64, Shape: shape, Data: d})
	}
	// Features in reverse order: the server matches them by name.
	slices.Reverse(out)
	return out
}

func canonShape(spec *features.Spec, n int) []int64 {
	if spec.Sequence() {
		return []int64{int64(n), int64(spec.Window), int64(spec.Width())}
	}
	return []int64{int64(n), int64(spec.Width())}
}

// restInfer posts a v2 REST inference and decodes its outputs.
func (s *sidecar) restInfer(t *testing.T, model string, body any) (int, map[string][]float64, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	code, resp := s.post(t, "/v2/models/"+model+"/infer", "application/json", b)
	if code != http.StatusOK {
		return code, nil, string(resp)
	}
	var r struct {
		ModelName string `json:"model_name"`
		ID        string `json:"id"`
		Outputs   []struct {
			Name     string    `json:"name"`
			Datatype string    `json:"datatype"`
			Shape    []int64   `json:"shape"`
			Data     []float32 `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(resp, &r); err != nil {
		t.Fatalf("%s: %v", resp, err)
	}
	out := map[string][]float64{}
	for _, o := range r.Outputs {
		out[o.Name] = f32to64(o.Data)
	}
	return code, out, r.ID
}

func restTensors(ts []backends.Tensor) []map[string]any {
	var out []map[string]any
	for _, t := range ts {
		out = append(out, map[string]any{"name": t.Name, "datatype": t.DType.String(), "shape": t.Shape, "data": t.Data})
	}
	return out
}

func f32to64(d []float32) []float64 {
	out := make([]float64, len(d))
	for i, v := range d {
		out[i] = float64(v)
	}
	return out
}

// TestOIPModelInfer asks every example model the same rows in each of the protocol's forms (gRPC
// typed, gRPC raw, REST; canonical rows and the spec's raw features) and checks that every form
// gives the same numbers, and, for the forecaster, the numbers PredictBandwidth gives.
func TestOIPModelInfer(t *testing.T) {
	s := start(t, nil)
	ctx := context.Background()
	client := inference.NewGRPCInferenceServiceClient(s.conn)
	for name, m := range s.app.Service.Models() {
		t.Run(name, func(t *testing.T) {
			const n = 3
			raw, canon := oipRows(t, m.Spec, n)
			feat := backends.F32("features", canonShape(m.Spec, n), canon)
			forms := map[string][]backends.Tensor{"features": {feat}, "raw features": rawFeatureTensors(m.Spec, n, raw)}
			var want map[string][]float64
			for form, inputs := range forms {
				for _, rawContents := range []bool{false, true} {
					req := &inference.ModelInferRequest{ModelName: name, Id: "call-" + form}
					oip.SetInputs(req, inputs, rawContents)
					resp, err := client.ModelInfer(ctx, req)
					if err != nil {
						t.Fatalf("%s (raw %v): %v", form, rawContents, err)
					}
					if resp.GetId() != req.Id || resp.GetModelName() != name || resp.GetModelVersion() != m.Version {
						t.Errorf("%s: id %q model %q version %q, want %q %q %q", form, resp.GetId(), resp.GetModelName(), resp.GetModelVersion(), req.Id, name, m.Version)
					}
					if got := len(resp.GetRawOutputContents()) > 0; got != rawContents {
						t.Errorf("%s: raw outputs %v for raw inputs %v", form, got, rawContents)
					}
					outs, err := oip.Outputs(resp, backends.ErrInvalidInput)
					if err != nil {
						t.Fatal(err)
					}
					got := map[string][]float64{}
					for _, o := range outs {
						if o.DType != backends.FP32 || o.Shape[0] != n {
							t.Fatalf("output %s is %s%v", o.Name, o.DType, o.Shape)
						}
						got[o.Name] = f32to64(o.Data.([]float32))
					}
					if want == nil {
						want = got
					} else if !equalOutputs(got, want) {
						t.Errorf("%s (raw %v) answered %v, another form %v", form, rawContents, got, want)
					}
				}
				code, got, id := s.restInfer(t, name, map[string]any{"id": "rest", "inputs": restTensors(inputs)})
				if code != http.StatusOK || id != "rest" || !equalOutputs(got, want) {
					t.Errorf("REST %s: %d id %q %v, gRPC answered %v", form, code, id, got, want)
				}
			}
			if len(want) == 0 {
				t.Fatal("no outputs")
			}
			if m.Task != "forecast" {
				return
			}
			// The forecaster's answers are PredictBandwidth's.
			for r := 0; r < n; r++ {
				vm := raw[r*m.Spec.Size() : (r+1)*m.Spec.Size()]
				bw, err := s.client.PredictBandwidth(ctx, &aipb.BandwidthRequest{VmId: "v", HistoricalMetrics: vm})
				if err != nil {
					t.Fatal(err)
				}
				h := len(bw.Predictions)
				if got := want["forecast"][r*h : (r+1)*h]; !slices.Equal(got, bw.Predictions) {
					t.Errorf("row %d: ModelInfer forecast %v, PredictBandwidth %v", r, got, bw.Predictions)
				}
			}
		})
	}
}

// equalOutputs reports whether two answers hold the same outputs, each value equal to within a
// few float32 ulps: two runs of ONNX Runtime on the same rows may differ in the last bit (its
// vector kernels treat a buffer's unaligned head and tail apart, and buffers land at different
// addresses), as seen once in a full run under load (sigma 10.811127 against 10.811126).
func equalOutputs(a, b map[string][]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || len(v) != len(w) {
			return false
		}
		for i := range v {
			if d := math.Abs(v[i] - w[i]); d > 4e-7*math.Max(math.Abs(v[i]), math.Abs(w[i])) {
				return false
			}
		}
	}
	return true
}

func TestOIPOutputSelectionAndMetadata(t *testing.T) {
	s := start(t, nil)
	ctx := context.Background()
	client := inference.NewGRPCInferenceServiceClient(s.conn)
	m := s.app.Service.Models()["bandwidth"]
	_, canon := oipRows(t, m.Spec, 1)
	req := &inference.ModelInferRequest{ModelName: "bandwidth", Outputs: []*inference.ModelInferRequest_InferRequestedOutputTensor{{Name: "sigma"}}}
	oip.SetInputs(req, []backends.Tensor{backends.F32("features", canonShape(m.Spec, 1), canon)}, false)
	resp, err := client.ModelInfer(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Outputs) != 1 || resp.Outputs[0].Name != "sigma" || resp.Outputs[0].Datatype != "FP32" || !slices.Equal(resp.Outputs[0].Shape, []int64{1, int64(m.Horizon())}) {
		t.Errorf("asked for sigma, got %v", resp.Outputs)
	}

	md, err := client.ModelMetadata(ctx, &inference.ModelMetadataRequest{Name: "bandwidth"})
	if err != nil {
		t.Fatal(err)
	}
	if md.Platform != "onnxruntime_onnx" || len(md.Inputs) != 1 || md.Inputs[0].Name != "features" ||
		!slices.Equal(md.Inputs[0].Shape, []int64{-1, 10, 6}) || len(md.Outputs) != 2 || !slices.Equal(md.Versions, []string{m.Version}) {
		t.Errorf("metadata %v", md)
	}
	if live, err := client.ServerLive(ctx, &inference.ServerLiveRequest{}); err != nil || !live.Live {
		t.Errorf("ServerLive %v %v", live, err)
	}
	if ready, err := client.ServerReady(ctx, &inference.ServerReadyRequest{}); err != nil || !ready.Ready {
		t.Errorf("ServerReady %v %v", ready, err)
	}
	if ready, err := client.ModelReady(ctx, &inference.ModelReadyRequest{Name: "anomaly"}); err != nil || !ready.Ready {
		t.Errorf("ModelReady %v %v", ready, err)
	}
	if _, err := client.ModelReady(ctx, &inference.ModelReadyRequest{Name: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("ModelReady of an unknown model: %v", err)
	}
	sm, err := client.ServerMetadata(ctx, &inference.ServerMetadataRequest{})
	if err != nil || sm.Name != "novacron-sidecar" {
		t.Errorf("ServerMetadata %v %v", sm, err)
	}

	for path, want := range map[string]int{
		"/v2/health/live": 200, "/v2/health/ready": 200, "/v2": 200, "/v2/models/bandwidth": 200,
		"/v2/models/bandwidth/ready": 200, "/v2/models/bandwidth/versions/" + m.Version: 200,
		"/v2/models/bandwidth/versions/" + m.Version + "/ready": 200, "/v2/models/nope": 404,
		"/v2/models/bandwidth/versions/999": 404, "/v2/models/nope/ready": 404,
	} {
		resp, err := http.Get(s.base + path)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d %v, want %d", path, resp.StatusCode, body, want)
		}
		if want == 404 && !strings.Contains(fmt.Sprint(body["error"]), "nope") && !strings.Contains(fmt.Sprint(body["error"]), "999") {
			t.Errorf("GET %s: error %v does not name what was not found", path, body)
		}
		if path == "/v2/models/bandwidth" && fmt.Sprint(body["inputs"]) != "[map[datatype:FP32 name:features shape:[-1 10 6]]]" {
			t.Errorf("GET %s: inputs %v", path, body["inputs"])
		}
	}
}

// TestOIPBadInput sends each kind of bad v2 request over gRPC and REST: each gets the right code
// and a message naming the field.
func TestOIPBadInput(t *testing.T) {
	s := start(t, nil)
	ctx := context.Background()
	client := inference.NewGRPCInferenceServiceClient(s.conn)
	spec := s.app.Service.Models()["bandwidth"].Spec
	_, canon := oipRows(t, spec, 2)
	good := backends.F32("features", canonShape(spec, 2), canon)
	nan := slices.Clone(canon)
	nan[7] = float32(math.NaN())
	cases := []struct {
		name    string
		model   string
		inputs  []backends.Tensor
		outputs []string
		code    codes.Code
		http    int
		mention string
	}{
		{"unknown model", "nope", []backends.Tensor{good}, nil, codes.NotFound, 404, "nope"},
		{"wrong dtype", "bandwidth", []backends.Tensor{{Name: "features", DType: backends.FP64, Shape: good.Shape, Data: make([]float64, len(canon))}}, nil, codes.InvalidArgument, 400, "inputs[0].datatype"},
		{"wrong shape", "bandwidth", []backends.Tensor{backends.F32("features", []int64{2, 60}, canon)}, nil, codes.InvalidArgument, 400, "inputs[0].shape"},
		{"no rows", "bandwidth", []backends.Tensor{backends.F32("features", []int64{0, 10, 6}, []float32{})}, nil, codes.InvalidArgument, 400, "0 rows"},
		{"NaN in canonical rows", "bandwidth", []backends.Tensor{backends.F32("features", good.Shape, nan)}, nil, codes.InvalidArgument, 400, "element 7"},
		{"unknown input", "bandwidth", []backends.Tensor{backends.F32("input0", good.Shape, canon)}, nil, codes.InvalidArgument, 400, "inputs"},
		{"unknown output", "bandwidth", []backends.Tensor{good}, []string{"forecast", "nope"}, codes.InvalidArgument, 400, "outputs[1].name"},
		{"missing raw feature", "anomaly", []backends.Tensor{{Name: "cpu", DType: backends.FP64, Shape: []int64{1}, Data: []float64{3}}}, nil, codes.InvalidArgument, 400, "inputs"},
		{"raw feature of a string type", "bandwidth", rawBytesFeature(spec), nil, codes.InvalidArgument, 400, ".datatype"},
		{"no inputs", "bandwidth", nil, nil, codes.InvalidArgument, 400, "inputs"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := &inference.ModelInferRequest{ModelName: c.model}
			oip.SetInputs(req, c.inputs, false)
			for _, o := range c.outputs {
				req.Outputs = append(req.Outputs, &inference.ModelInferRequest_InferRequestedOutputTensor{Name: o})
			}
			_, err := client.ModelInfer(ctx, req)
			if status.Code(err) != c.code || !strings.Contains(status.Convert(err).Message(), c.mention) {
				t.Errorf("gRPC: %v, want %s naming %q", err, c.code, c.mention)
			}
			body := map[string]any{"inputs": restTensors(c.inputs)}
			if c.inputs == nil {
				body["inputs"] = []any{}
			}
			var outs []map[string]string
			for _, o := range c.outputs {
				outs = append(outs, map[string]string{"name": o})
			}
			if outs != nil {
				body["outputs"] = outs
			}
			if c.name == "NaN in canonical rows" {
				return // JSON has no NaN
			}
			code, _, msg := s.restInfer(t, c.model, body)
			if code != c.http || !strings.Contains(msg, c.mention) || !strings.Contains(msg, `"error"`) {
				t.Errorf("REST: %d %s, want %d naming %q", code, msg, c.http, c.mention)
			}
		})
	}
	// Malformed tensors: the codec's errors reach the caller as INVALID_ARGUMENT.
	bad := &inference.ModelInferRequest{ModelName: "bandwidth", Inputs: []*inference.ModelInferRequest_InferInputTensor{{Name: "features", Datatype: "FP32", Shape: []int64{1, 10, 6}}},
		RawInputContents: [][]byte{make([]byte, 10)}}
	if _, err := client.ModelInfer(ctx, bad); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "raw_input_contents[0]") {
		t.Errorf("short raw contents: %v", err)
	}
	for body, mention := range map[string]string{
		`{"inputs":[{"name":"features","datatype":"FP32","shape":[1,2],"data":[1]}]}`:  "inputs[0].data",
		`{"inputs":[{"name":"features","datatype":"FP32","shape":[1],"data":["x"]}]}`:  "a string",
		`{"inputs":[{"name":"features","datatype":"FP16","shape":[1],"data":[1]}]}`:    "inputs[0].datatype",
		`{"inputs":[{"name":"features","datatype":"INT32","shape":[1],"data":[1.5]}]}`: "inputs[0].data",
		`{"inputs":[{"name":"features","datatype":"FP32","shape":[-1],"data":[1]}]}`:   "inputs[0].shape",
		`{"inputs":[],"extra":1}`: "unknown field",
		`not json`:                "body",
	} {
		code, resp := s.post(t, "/v2/models/bandwidth/infer", "application/json", []byte(body))
		if code != 400 || !strings.Contains(string(resp), mention) {
			t.Errorf("%s: %d %s, want 400 naming %q", body, code, resp, mention)
		}
	}
	// The sidecar still answers after all of that.
	if _, err := client.ModelInfer(ctx, func() *inference.ModelInferRequest {
		r := &inference.ModelInferRequest{ModelName: "bandwidth"}
		oip.SetInputs(r, []backends.Tensor{good}, true)
		return r
	}()); err != nil {
		t.Fatal(err)
	}
}

func rawBytesFeature(spec *features.Spec) []backends.Tensor {
	ts := rawFeatureTensors(spec, 1, make([]float64, spec.Size()))
	ts[0] = backends.Tensor{Name: ts[0].Name, DType: backends.BYTES, Shape: ts[0].Shape, Data: slices.Repeat([][]byte{[]byte("x")}, ts[0].Elements())}
	return ts
}

// TestOIPWithTheProtoFileOnly calls ModelInfer on every example model the way grpcurl -proto
// does: from the .proto file alone (compiled at run time, no generated code, no reflection), with
// requests written as JSON, typed and raw; both answers must be the REST form's numbers.
func TestOIPWithTheProtoFileOnly(t *testing.T) {
	s := start(t, nil)
	c := protocompile.Compiler{Resolver: &protocompile.SourceResolver{ImportPaths: []string{filepath.Join("..", "..", "proto")}}}
	files, err := c.Compile(context.Background(), "inference/grpc_service.proto")
	if err != nil {
		t.Fatal(err)
	}
	if fd := files[0].Messages().ByName("ModelInferRequest").Fields().ByName("raw_input_contents"); fd.Number() != 7 || fd.Kind() != protoreflect.BytesKind {
		t.Errorf("raw_input_contents is %d %v", fd.Number(), fd.Kind())
	}
	method := files[0].Services().ByName("GRPCInferenceService").Methods().ByName("ModelInfer")
	fullMethod := fmt.Sprintf("/%s/%s", method.Parent().FullName(), method.Name())
	invoke := func(t *testing.T, reqJSON string) *inference.ModelInferResponse {
		t.Helper()
		req := dynamicpb.NewMessage(method.Input())
		if err := protojson.Unmarshal([]byte(reqJSON), req); err != nil {
			t.Fatal(err)
		}
		resp := dynamicpb.NewMessage(method.Output())
		if err := s.conn.Invoke(context.Background(), fullMethod, req, resp); err != nil {
			t.Fatal(err)
		}
		got, err := protojson.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		var back inference.ModelInferResponse // only to read the JSON the dynamic message wrote
		if err := protojson.Unmarshal(got, &back); err != nil {
			t.Fatal(err)
		}
		return &back
	}
	for name, m := range s.app.Service.Models() {
		t.Run(name, func(t *testing.T) {
			_, canon := oipRows(t, m.Spec, 2)
			shape := mustJSON(canonShape(m.Spec, 2))
			typed := invoke(t, fmt.Sprintf(`{"model_name":%q,"id":"7","inputs":[{"name":"features","datatype":"FP32","shape":%s,"contents":{"fp32_contents":%s}}]}`,
				name, shape, mustJSON(canon)))
			raw := invoke(t, fmt.Sprintf(`{"model_name":%q,"id":"8","inputs":[{"name":"features","datatype":"FP32","shape":%s}],"raw_input_contents":[%s]}`,
				name, shape, mustJSON(oip.AppendRaw(nil, backends.F32("features", canonShape(m.Spec, 2), canon)))))
			code, rest, _ := s.restInfer(t, name, map[string]any{"inputs": restTensors([]backends.Tensor{backends.F32("features", canonShape(m.Spec, 2), canon)})})
			if code != http.StatusOK || typed.GetId() != "7" || raw.GetId() != "8" {
				t.Fatalf("REST %d, ids %q %q", code, typed.GetId(), raw.GetId())
			}
			rawOuts, err := oip.Outputs(raw, backends.ErrBadResponse)
			if err != nil {
				t.Fatal(err)
			}
			for i, o := range typed.GetOutputs() {
				tv := f32to64(o.GetContents().GetFp32Contents())
				rv := f32to64(rawOuts[i].Data.([]float32))
				if len(tv) == 0 || !slices.Equal(tv, rv) || !slices.Equal(tv, rest[o.GetName()]) {
					t.Errorf("output %s: typed %v, raw %v, REST %v", o.GetName(), tv, rv, rest[o.GetName()])
				}
			}
		})
	}
}

func mustJSON(v any) string {
	var b bytes.Buffer
	json.NewEncoder(&b).Encode(v)
	return strings.TrimSpace(b.String())
}

// restJSONInputs writes tensors as the REST form's "inputs" array, with each tensor's data flat or
// nested as its shape, and NaN as null (JSON has no NaN).
func restJSONInputs(ts []backends.Tensor, nested bool) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, t := range ts {
		if i > 0 {
			b.WriteByte(',')
		}
		var vals []float64
		switch d := t.Data.(type) {
		case []float64:
			vals = d
		case []float32:
			vals = f32to64(d)
		case []int64:
			for _, v := range d {
				vals = append(vals, float64(v))
			}
		}
		fmt.Fprintf(&b, `{"name":%q,"datatype":%q,"shape":%s,"data":`, t.Name, t.DType, mustJSON(t.Shape))
		dims := t.Shape
		if !nested {
			dims = []int64{int64(len(vals))}
		}
		writeNested(&b, dims, vals)
		b.WriteByte('}')
	}
	b.WriteByte(']')
	return b.String()
}

func writeNested(b *strings.Builder, dims []int64, vals []float64) {
	b.WriteByte('[')
	if len(dims) <= 1 {
		for i, v := range vals {
			if i > 0 {
				b.WriteByte(',')
			}
			if math.IsNaN(v) {
				b.WriteString("null")
			} else {
				b.WriteString(mustJSON(v))
			}
		}
	} else {
		step := len(vals) / int(dims[0])
		for i := 0; i < int(dims[0]); i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			writeNested(b, dims[1:], vals[i*step:(i+1)*step])
		}
	}
	b.WriteByte(']')
}

// TestOIPRESTStrict: the REST form decodes as strictly as /api/v1 (no trailing data, no second
// document, no duplicate or unknown keys, data nested exactly as its shape when nested), each
// refusal a 400 {"error": ...} naming the field; and the good forms (flat or nested data, null
// for a missing raw feature whose spec policy fills it, parameters anywhere) answer what gRPC
// ModelInfer answers.
func TestOIPRESTStrict(t *testing.T) {
	s := start(t, nil)
	ctx := context.Background()
	client := inference.NewGRPCInferenceServiceClient(s.conn)
	models := s.app.Service.Models()
	bw, pl, an := models["bandwidth"].Spec, models["placement"].Spec, models["anomaly"].Spec

	bwRaw, bwCanon := oipRows(t, bw, 2)
	bwFeat := []backends.Tensor{backends.F32("features", canonShape(bw, 2), bwCanon)}
	plRaw, plCanon := oipRows(t, pl, 3)
	plFeat := []backends.Tensor{backends.F32("features", canonShape(pl, 3), plCanon)}
	// Placement's req_cpu (policy constant) missing in row 1; anomaly's error_rate (policy
	// constant) missing in row 0, sent as FP32.
	plMissing := slices.Clone(plRaw)
	plMissing[1*pl.Width()+slices.Index(pl.FeatureNames(), "req_cpu")] = math.NaN()
	anRaw, _ := oipRows(t, an, 2)
	anRaw[slices.Index(an.FeatureNames(), "error_rate")] = math.NaN()
	var anMissing []backends.Tensor
	for _, ft := range rawFeatureTensors(an, 2, anRaw) {
		anMissing = append(anMissing, backends.F32(ft.Name, ft.Shape, f32(ft.Data.([]float64))))
	}
	plColumn := rawFeatureTensors(pl, 3, plRaw)
	for i := range plColumn {
		plColumn[i].Shape = []int64{3, 1}
	}

	good := []struct {
		name, model string
		inputs      []backends.Tensor
		body        string // empty: {"inputs": ...} of inputs, flat and nested
	}{
		{"canonical rows", "bandwidth", bwFeat, ""},
		{"canonical rows of a row model", "placement", plFeat, ""},
		{"raw sequence features", "bandwidth", rawFeatureTensors(bw, 2, bwRaw), ""},
		{"raw row features [N, 1]", "placement", plColumn, ""},
		{"null for a missing req_cpu (policy constant)", "placement", rawFeatureTensors(pl, 3, plMissing), ""},
		{"null for a missing error_rate in FP32 (policy constant)", "anomaly", anMissing, ""},
		{"parameters anywhere, keys in any order, escapes", "placement", plFeat,
			`{"parameters":{"binary_data_output":false,"x":{"nested":[1,{"a":null}]}},"id":"q\"1",` +
				`"outputs":[{"parameters":{"binary_data":false},"name":"sc\u006fre"}],` +
				`"inp\u0075ts":[{"data":` + mustJSON(plCanon) + `,"parameters":{"p":"v"},"shape":[3,4],"datatype":"FP32","name":"features"}]}` + "\n\t "},
	}
	for _, c := range good {
		t.Run(c.name, func(t *testing.T) {
			req := &inference.ModelInferRequest{ModelName: c.model}
			oip.SetInputs(req, c.inputs, false)
			resp, err := client.ModelInfer(ctx, req)
			if err != nil {
				t.Fatalf("gRPC: %v", err)
			}
			outs, err := oip.Outputs(resp, backends.ErrInvalidInput)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string][]float64{}
			for _, o := range outs {
				want[o.Name] = f32to64(o.Data.([]float32))
			}
			bodies := []string{c.body}
			if c.body == "" {
				bodies = []string{`{"inputs":` + restJSONInputs(c.inputs, false) + `}`, `{"inputs":` + restJSONInputs(c.inputs, true) + `}`}
			}
			for _, body := range bodies {
				code, resp := s.post(t, "/v2/models/"+c.model+"/infer", "application/json", []byte(body))
				if code != http.StatusOK {
					t.Fatalf("%s: %d %s", body, code, resp)
				}
				var r struct {
					Outputs []struct {
						Name string    `json:"name"`
						Data []float32 `json:"data"`
					} `json:"outputs"`
				}
				if err := json.Unmarshal(resp, &r); err != nil {
					t.Fatal(err)
				}
				got := map[string][]float64{}
				for _, o := range r.Outputs {
					got[o.Name] = f32to64(o.Data)
				}
				if c.body != "" {
					want = map[string][]float64{"score": want["score"]}
				}
				if !equalOutputs(got, want) {
					t.Errorf("%s: REST answered %v, gRPC %v", body, got, want)
				}
			}
		})
	}

	const in1 = `{"name":"features","datatype":"FP32","shape":[1,4],"data":[0.1,0.2,0.3,0.4]}`
	rawPl := func(dtype, data string) string { // placement's four raw features, one row, req_cpu's data given
		return `{"inputs":[{"name":"req_cpu","datatype":"` + dtype + `","shape":[1],"data":` + data + `},` +
			`{"name":"req_memory","datatype":"FP64","shape":[1],"data":[8]},` +
			`{"name":"cpu_available","datatype":"FP64","shape":[1],"data":[16]},` +
			`{"name":"memory_available","datatype":"FP64","shape":[1],"data":[64]}]}`
	}
	bad := []struct {
		name, body string
		mention    []string
	}{
		{"trailing garbage", `{"inputs":[` + in1 + `]} x`, []string{"body", "trailing"}},
		{"trailing comma", `{"inputs":[` + in1 + `]},`, []string{"body", "trailing"}},
		{"a second JSON document", `{"inputs":[` + in1 + `]}{"inputs":[` + in1 + `]}`, []string{"body", "second JSON document"}},
		{"a second JSON document, an array", `{"inputs":[` + in1 + `]} []`, []string{"body", "second JSON document"}},
		{"duplicate inputs", `{"inputs":[{"name":"nope","datatype":"FP32","shape":[1],"data":[1]}],"inputs":[` + in1 + `]}`, []string{"inputs", "twice"}},
		{"duplicate id", `{"id":"a","inputs":[` + in1 + `],"id":"b"}`, []string{"id", "twice"}},
		{"duplicate key of an input", `{"inputs":[{"name":"features","datatype":"FP64","datatype":"FP32","shape":[1,4],"data":[0.1,0.2,0.3,0.4]}]}`, []string{"inputs[0].datatype", "twice"}},
		{"duplicate data", `{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[9,9,9,9],"data":[0.1,0.2,0.3,0.4]}]}`, []string{"inputs[0].data", "twice"}},
		{"duplicate key of an output", `{"inputs":[` + in1 + `],"outputs":[{"name":"nope","name":"score"}]}`, []string{"outputs[0].name", "twice"}},
		{"duplicate parameter", `{"parameters":{"a":1,"a":2},"inputs":[` + in1 + `]}`, []string{"parameters.a", "twice"}},
		{"duplicate key deep in an input's parameters", `{"inputs":[{"parameters":{"x":[{"y":1,"y":2}]},"name":"features","datatype":"FP32","shape":[1,4],"data":[0.1,0.2,0.3,0.4]}]}`, []string{"inputs[0].parameters.x[0].y", "twice"}},
		{"unknown key (case differs)", `{"Inputs":[` + in1 + `]}`, []string{"Inputs", "unknown field"}},
		{"unknown key of an input", `{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[0.1,0.2,0.3,0.4],"contents":{}}]}`, []string{"inputs[0].contents", "unknown field"}},
		{"unknown key of an output", `{"inputs":[` + in1 + `],"outputs":[{"name":"score","binary_data":true}]}`, []string{"outputs[0].binary_data", "unknown field"}},
		{"parameters not an object", `{"parameters":[1],"inputs":[` + in1 + `]}`, []string{"parameters", "object"}},
		{"nested rows shorter than the shape", `{"inputs":[{"name":"features","datatype":"FP32","shape":[2,4],"data":[[1,2,3],[4,5,6,7,8]]}]}`, []string{"inputs[0].data", "shape [2 4]", "data[0]"}},
		{"nested transposed", `{"inputs":[{"name":"features","datatype":"FP32","shape":[2,4],"data":[[1,2],[3,4],[5,6],[7,8]]}]}`, []string{"inputs[0].data", "shape [2 4]"}},
		{"nested mixed with flat", `{"inputs":[{"name":"features","datatype":"FP32","shape":[2,4],"data":[[1,2,3,4],5,6,7,8]}]}`, []string{"inputs[0].data", "data[1]"}},
		{"flat mixed with nested", `{"inputs":[{"name":"features","datatype":"FP32","shape":[2,4],"data":[1,2,3,4,[5,6,7,8]]}]}`, []string{"inputs[0].data", "element 4"}},
		{"nested deeper than the shape", `{"inputs":[{"name":"features","datatype":"FP32","shape":[2,4],"data":[[[1,2,3,4]],[[5,6,7,8]]]}]}`, []string{"inputs[0].data", "shape [2 4]"}},
		{"data not an array", rawPl("FP64", "2"), []string{"inputs[0].data", "array"}},
		{"shape missing", `{"inputs":[{"name":"features","datatype":"FP32","data":[0.1,0.2,0.3,0.4]}]}`, []string{"inputs[0].shape", "missing"}},
		{"null in canonical rows", `{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[0.1,null,0.3,0.4]}]}`, []string{"inputs[0].data", "element 1", "raw features"}},
		{"null in an INT64 raw feature", rawPl("INT64", "[null]"), []string{"inputs[0].data", "element 0", "FP32 or FP64"}},
		{"null in a BOOL tensor", `{"inputs":[{"name":"features","datatype":"BOOL","shape":[1],"data":[null]}]}`, []string{"inputs[0].data", "FP32 or FP64"}},
		{"the string NaN", rawPl("FP64", `["NaN"]`), []string{"inputs[0].data", "element 0", "send null"}},
		{"null for a feature the spec requires", strings.Replace(rawPl("FP64", "[2]"), `"data":[16]`, `"data":[null]`, 1), []string{"cpu_available", "missing"}},
		{"id not a string", `{"id":7,"inputs":[` + in1 + `]}`, []string{"id", "string"}},
		{"not an object", `[` + in1 + `]`, []string{"body", "object"}},
		{"empty", ``, []string{"body", "empty"}},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			code, resp := s.post(t, "/v2/models/placement/infer", "application/json", []byte(c.body))
			var e map[string]string
			if err := json.Unmarshal(resp, &e); err != nil || len(e) != 1 || e["error"] == "" {
				t.Errorf("body %s is not {\"error\": ...} (%v)", resp, err)
			}
			for _, m := range c.mention {
				if code != http.StatusBadRequest || !strings.Contains(e["error"], m) {
					t.Errorf("%s: %d %s, want 400 naming %q", c.body, code, resp, m)
					break
				}
			}
		})
	}
}

func f32(d []float64) []float32 {
	out := make([]float32, len(d))
	for i, v := range d {
		out[i] = float32(v)
	}
	return out
}

// TestOIPRESTUnknownRoutes: under /v2/, an unknown path is 404 and a known path asked with the
// wrong method 405 (with Allow), both as the protocol's {"error": ...}.
func TestOIPRESTUnknownRoutes(t *testing.T) {
	s := start(t, nil)
	for _, c := range []struct {
		method, path string
		code         int
		allow        string
	}{
		{"GET", "/v2/nope", 404, ""},
		{"GET", "/v2/models/placement/nope", 404, ""},
		{"GET", "/v2/models", 404, ""},
		{"POST", "/v2/repository/index", 404, ""},
		{"POST", "/v2/health/live", 405, "GET, HEAD"},
		{"DELETE", "/v2/models/placement", 405, "GET, HEAD"},
		{"GET", "/v2/models/placement/infer", 405, "POST"},
		{"PUT", "/v2/models/placement/versions/1/infer", 405, "POST"},
		{"POST", "/v2", 405, "GET, HEAD"},
	} {
		req, err := http.NewRequest(c.method, s.base+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e map[string]string
		derr := json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != c.code || derr != nil || e["error"] == "" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %v %v (%s), want %d {\"error\": ...}", c.method, c.path, resp.StatusCode, e, derr, resp.Header.Get("Content-Type"), c.code)
		}
		if got := resp.Header.Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}
}
