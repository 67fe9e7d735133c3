package proxy

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The REST form of the Open Inference Protocol (the specification's "HTTP/REST" section):
//
//	GET  /v2                                   server metadata
//	GET  /v2/health/live, /v2/health/ready     200 when live / ready, 400 when not
//	GET  /v2/models/{name}[/versions/{v}]      model metadata
//	GET  /v2/models/{name}[/versions/{v}]/ready
//	POST /v2/models/{name}[/versions/{v}]/infer
//
// Errors are {"error": "message"} with the status of the shared mapping (400, 404, 429, 503, 504);
// so are an unknown path under /v2 (404) and a known one asked with another method (405, with
// Allow). Request bodies are decoded strictly (oipjson.go): tensor data is JSON, flat or nested
// row-major exactly as its shape, null for a missing raw feature; Triton's binary-data extension
// is not served.

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
	// Everything else under /v2 answers in the protocol's error form rather than the mux's plain
	// text: the patterns above are more specific, so these match only what they do not.
	notFound := v2NotFound(mux)
	mux.Handle("/v2", notFound)
	mux.Handle("/v2/", notFound)
}

// v2NotFound answers a request under /v2 that no v2 route takes: 405 with Allow when the path is
// a route's under another method, else 404; both as {"error": ...}.
func v2NotFound(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/v2" && pattern != "/v2/" {
				allow = append(allow, m)
				if m == http.MethodGet {
					allow = append(allow, http.MethodHead)
				}
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": fmt.Sprintf("%s %s: method not allowed; use %s", clip(r.Method), clip(r.URL.Path), strings.Join(allow, " or "))})
			return
		}
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("%s %s: no such route of the Open Inference Protocol", clip(r.Method), clip(r.URL.Path))})
	})
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
	ctx, body, cancel, err := readRequest(svc, w, r)
	defer cancel()
	if err != nil {
		return 0, nil, err
	}
	c := &InferCall{Model: r.PathValue("name"), Version: r.PathValue("version")}
	if err := decodeRESTInfer(body, c); err != nil {
		return 0, nil, err
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
