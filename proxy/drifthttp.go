package proxy

import (
	"encoding/json"
	"fmt"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/novacron/sidecar/features/drift"
)

// DriftSketchesPath is the HTTP route of a model's drift sketches:
//
//	GET /v1/drift/sketches?model=M   drift.Snapshot
//
// The answer is the snapshot's JSON (Content-Type application/json), or its protobuf form
// (drift.SnapshotProto; Content-Type application/x-protobuf) when the Accept header prefers
// ProtobufContentType. A model without a drift monitor is 404 NOT_FOUND; a missing or repeated
// model parameter, or another parameter, 400 INVALID_ARGUMENT naming it (and listing the models
// with a monitor). "sidecar drift merge" reads it from every node of a fleet.
const DriftSketchesPath = "/v1/drift/sketches"

// ProtobufContentType is the media type of a protobuf answer.
const ProtobufContentType = "application/x-protobuf"

// registerDrift serves DriftSketchesPath from monitors (see HTTPOptions.DriftMonitors); none
// when it is nil.
func registerDrift(mux *http.ServeMux, monitors func() map[string]*drift.Monitor) {
	if monitors == nil {
		return
	}
	mux.HandleFunc("GET "+DriftSketchesPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "Accept")
		w.Header().Set("Cache-Control", "no-store")
		snap, err := driftSnapshot(r.URL.RawQuery, monitors())
		if err != nil {
			writeError(w, err)
			return
		}
		var b []byte
		ct := "application/json"
		if prefersProtobuf(r.Header.Values("Accept")) {
			ct = ProtobufContentType
			b, err = snap.MarshalProto()
		} else if b, err = json.Marshal(snap); err == nil {
			b = append(b, '\n')
		}
		if err != nil {
			writeError(w, fmt.Errorf("encoding model %s's drift sketches: %w", snap.Model, err))
			return
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	})
}

// driftSnapshot is the snapshot the query asks for: one model parameter, naming a model of
// monitors.
func driftSnapshot(rawQuery string, monitors map[string]*drift.Monitor) (*drift.Snapshot, error) {
	names := slices.Sorted(maps.Keys(monitors))
	have := "no model has one: give a model drift.profile in the config"
	if len(names) > 0 {
		have = "the models with one: " + strings.Join(names, ", ")
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, invalid("query", fmt.Sprintf("%v; want ?model=NAME", err))
	}
	for k := range q {
		if k != "model" {
			return nil, invalid(clip(k), "unknown parameter: this route takes model=NAME alone")
		}
	}
	switch models := q["model"]; {
	case len(models) == 0 || models[0] == "":
		return nil, invalid("model", "missing: name the model whose drift monitor to read (?model=NAME); "+have)
	case len(models) > 1:
		return nil, invalid("model", fmt.Sprintf("given %d times: ask for one model at a time; %s", len(models), have))
	}
	model := q.Get("model")
	m := monitors[model]
	if m == nil {
		return nil, fmt.Errorf("model %s has no drift monitor (%s): %w", clip(model), have, ErrUnknownModel)
	}
	return m.Snapshot(model), nil
}

// prefersProtobuf reports whether the Accept header values rank a protobuf media type
// (application/x-protobuf, application/protobuf, application/vnd.google.protobuf) above JSON, or
// equal to it; JSON is the default, and takes */* and application/*.
func prefersProtobuf(accept []string) bool {
	proto, other := -1.0, -1.0
	for _, h := range accept {
		for part := range strings.SplitSeq(h, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			q := 1.0
			if v, ok := params["q"]; ok {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					q = f
				}
			}
			if q <= 0 {
				continue
			}
			switch mt {
			case ProtobufContentType, "application/protobuf", "application/vnd.google.protobuf":
				proto = max(proto, q)
			case "application/json", "application/*", "*/*":
				other = max(other, q)
			}
		}
	}
	return proto > 0 && proto >= other
}
