package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/novacron/sidecar/backends"
	"github.com/novacron/sidecar/backends/kserve"
)

// The REST form of the Open Inference Protocol (the specification's "HTTP/REST" section):
//
//	GET  /v2                                   server metadata
//	GET  /v2/health/live, /v2/health/ready     200 when live / ready, 400 when not
//	GET  /v2/models/{name}[/versions/{v}]      model metadata
//	GET  /v2/models/{name}[/versions/{v}]/ready
//	POST /v2/models/{name}[/versions/{v}]/infer
//
// Errors are {"error": "message"} with the status of the shared mapping (400, 404, 429, 503, 504).
// Tensor data is JSON, flat or nested row-major; Triton's binary-data extension is not served.

type restInput struct {
	Name       string          `json:"name"`
	Shape      []int64         `json:"shape"`
	Datatype   string          `json:"datatype"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data"`
}

type restRequestedOutput struct {
	Name       string         `json:"name"`
	Parameters map[string]any `json:"parameters,omitempty"`
}

type restInferRequest struct {
	ID         string                `json:"id,omitempty"`
	Parameters map[string]any        `json:"parameters,omitempty"`
	Inputs     []restInput           `json:"inputs"`
	Outputs    []restRequestedOutput `json:"outputs,omitempty"`
}

type restOutput struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
	Data     any     `json:"data"`
}

type restTensorMeta struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

type restMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions"`
	Platform string           `json:"platform"`
	Inputs   []restTensorMeta `json:"inputs"`
	Outputs  []restTensorMeta `json:"outputs"`
}

type restInferResponse struct {
	ModelName    string       `json:"model_name"`
	ModelVersion string       `json:"model_version"`
	ID           string       `json:"id,omitempty"`
	Outputs      []restOutput `json:"outputs"`
}

// registerOIP adds the v2 routes to mux.
func registerOIP(mux *http.ServeMux, svc *Service) {
	get := func(pattern, method string, f func(w http.ResponseWriter, r *http.Request) (int, any, error)) {
		mux.Handle("GET "+pattern, v2(svc, method, f))
	}
	get("/v2", "ServerMetadata", func(http.ResponseWriter, *http.Request) (int, any, error) {
		return http.StatusOK, map[string]any{"name": ServerName, "version": ServerVersion(), "extensions": []string{}}, nil
	})
	get("/v2/health/live", "ServerLive", func(http.ResponseWriter, *http.Request) (int, any, error) {
		return http.StatusOK, map[string]bool{"live": true}, nil
	})
	get("/v2/health/ready", "ServerReady", func(_ http.ResponseWriter, r *http.Request) (int, any, error) {
		ok := svc.ServerReady(r.Context())
		return readyStatus(ok), map[string]bool{"ready": ok}, nil
	})
	for _, base := range []string{"/v2/models/{name}", "/v2/models/{name}/versions/{version}"} {
		get(base, "ModelMetadata", func(_ http.ResponseWriter, r *http.Request) (int, any, error) {
			md, err := svc.ModelMetadata(r.PathValue("name"), r.PathValue("version"))
			if err != nil {
				return 0, nil, err
			}
			out := restMetadata{Name: md.Name, Versions: md.Versions, Platform: md.Platform}
			for _, t := range md.Inputs {
				out.Inputs = append(out.Inputs, restTensorMeta{t.Name, t.Datatype, t.Shape})
			}
			for _, t := range md.Outputs {
				out.Outputs = append(out.Outputs, restTensorMeta{t.Name, t.Datatype, t.Shape})
			}
			return http.StatusOK, out, nil
		})
		get(base+"/ready", "ModelReady", func(_ http.ResponseWriter, r *http.Request) (int, any, error) {
			ok, err := svc.ModelReady(r.Context(), r.PathValue("name"), r.PathValue("version"))
			if err != nil {
				return 0, nil, err
			}
			return readyStatus(ok), map[string]bool{"ready": ok}, nil
		})
		mux.Handle("POST "+base+"/infer", v2(svc, "ModelInfer", func(w http.ResponseWriter, r *http.Request) (int, any, error) {
			return restInfer(svc, w, r)
		}))
	}
}

func readyStatus(ok bool) int {
	if ok {
		return http.StatusOK
	}
	return http.StatusBadRequest
}

// v2 adapts a v2 handler: panics recovered, errors as {"error": ...}, metrics.
func v2(svc *Service, method string, f func(w http.ResponseWriter, r *http.Request) (int, any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		type result struct {
			code int
			body any
		}
		res, err := recovered(func() (result, error) {
			code, body, err := f(w, r)
			return result{code, body}, err
		})
		if err != nil {
			if d, ok := retryAfter(err); ok {
				w.Header().Set("Retry-After", strconv.Itoa(int(d.Seconds()+0.999)))
			}
			writeJSON(w, httpStatus(err), map[string]string{"error": err.Error()})
		} else {
			writeJSON(w, res.code, res.body)
		}
		if svc.metrics != nil {
			svc.metrics.observeRequest("http", method, Code(err).String(), time.Since(start))
		}
	})
}

func restInfer(svc *Service, w http.ResponseWriter, r *http.Request) (int, any, error) {
	ctx, body, cancel, err := readRequest(svc, w, r, true)
	defer cancel()
	if err != nil {
		return 0, nil, err
	}
	var req restInferRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		return 0, nil, invalid("body", "not a v2 inference request: "+err.Error())
	}
	c := &InferCall{Model: r.PathValue("name"), Version: r.PathValue("version"), ID: req.ID}
	for i, in := range req.Inputs {
		t, err := restTensor(i, in)
		if err != nil {
			return 0, nil, err
		}
		c.Inputs = append(c.Inputs, t)
	}
	for _, o := range req.Outputs {
		c.Outputs = append(c.Outputs, o.Name)
	}
	a, err := svc.Infer(ctx, c)
	if err != nil {
		return 0, nil, err
	}
	staleHeader(ctx, w)
	resp := restInferResponse{ModelName: a.Model, ModelVersion: a.Version, ID: a.ID, Outputs: make([]restOutput, len(a.Outputs))}
	for i, t := range a.Outputs {
		data := t.Data
		if b, ok := data.([][]byte); ok {
			s := make([]string, len(b))
			for j, e := range b {
				s[j] = string(e)
			}
			data = s
		}
		resp.Outputs[i] = restOutput{Name: t.Name, Datatype: t.DType.String(), Shape: t.Shape, Data: data}
	}
	return http.StatusOK, resp, nil
}

// restTensor decodes one JSON input: its data flat or nested, in row-major order, as many
// elements as its shape holds, each of its datatype's JSON kind.
func restTensor(i int, in restInput) (backends.Tensor, error) {
	at := fmt.Sprintf("inputs[%d]", i)
	if in.Name == "" {
		return backends.Tensor{}, invalid(at+".name", "empty")
	}
	dt, ok := backends.ParseDType(in.Datatype)
	if !ok {
		return backends.Tensor{}, invalid(at+".datatype", fmt.Sprintf("%q is not carried by the sidecar; use one of %v", in.Datatype, backends.DTypeNames()))
	}
	n := 1
	for _, d := range in.Shape {
		if d < 0 || d > kserve.MaxElements || n*int(d) > kserve.MaxElements {
			return backends.Tensor{}, invalid(at+".shape", fmt.Sprintf("%v: dimensions must be 0 or more, with at most %d elements", in.Shape, kserve.MaxElements))
		}
		n *= int(d)
	}
	var flat []any
	if len(in.Data) == 0 {
		return backends.Tensor{}, invalid(at+".data", "missing")
	}
	dec := json.NewDecoder(bytes.NewReader(in.Data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return backends.Tensor{}, invalid(at+".data", err.Error())
	}
	flatten(v, &flat)
	if len(flat) != n {
		return backends.Tensor{}, invalid(at+".data", fmt.Sprintf("%d elements, shape %v needs %d", len(flat), in.Shape, n))
	}
	t := backends.Tensor{Name: in.Name, DType: dt, Shape: in.Shape}
	var err error
	switch dt {
	case backends.FP32:
		t.Data, err = restElems(flat, func(x json.Number) (float32, error) {
			f, err := strconv.ParseFloat(string(x), 32)
			return float32(f), err
		})
	case backends.FP64:
		t.Data, err = restElems(flat, func(x json.Number) (float64, error) { return strconv.ParseFloat(string(x), 64) })
	case backends.INT32:
		t.Data, err = restElems(flat, func(x json.Number) (int32, error) {
			v, err := strconv.ParseInt(string(x), 10, 32)
			return int32(v), err
		})
	case backends.INT64:
		t.Data, err = restElems(flat, func(x json.Number) (int64, error) { return strconv.ParseInt(string(x), 10, 64) })
	case backends.BOOL:
		t.Data, err = restElems(flat, func(x bool) (bool, error) { return x, nil })
	case backends.BYTES:
		t.Data, err = restElems(flat, func(x string) ([]byte, error) { return []byte(x), nil })
	}
	if err != nil {
		return backends.Tensor{}, invalid(at+".data", fmt.Sprintf("%v (datatype %s)", err, dt))
	}
	return t, nil
}

// flatten appends v's scalars in row-major order (nested arrays are walked depth first).
func flatten(v any, out *[]any) {
	if a, ok := v.([]any); ok {
		for _, e := range a {
			flatten(e, out)
		}
		return
	}
	*out = append(*out, v)
}

var errElemKind = errors.New("wrong JSON kind")

func restElems[J any, T any](flat []any, conv func(J) (T, error)) ([]T, error) {
	out := make([]T, len(flat))
	for i, e := range flat {
		j, ok := e.(J)
		if !ok {
			return nil, fmt.Errorf("element %d is %s: %w", i, jsonKind(e), errElemKind)
		}
		v, err := conv(j)
		if err != nil {
			return nil, fmt.Errorf("element %d (%v): %w", i, e, err)
		}
		out[i] = v
	}
	return out, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
