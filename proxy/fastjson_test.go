package proxy

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

var bandwidthBodies = []string{
	`{"vm_id":"vm-1","historical_metrics":[1,2.5,-3e2,0.001,1E+3],"horizon_minutes":5}`,
	` { "vmId" : "a" , "historicalMetrics" : [ ] , "horizonMinutes" : -2 , "model" : "bandwidth" } `,
	`{}`,
	`{"vm_id":"x","historical_metrics":[1e400]}`,
	`{"vm_id":"x","historical_metrics":["NaN"]}`,
	`{"vm_id":"x\u0041"}`,
	`{"vm_id":"x","vm_id":"y"}`,
	`{"vm_id":"x","extra":1}`,
	`{"horizon_minutes":5.0}`,
	`{"horizon_minutes":"5"}`,
	`{"horizon_minutes":3000000000}`,
	`{"historical_metrics":[01]}`,
	`{"historical_metrics":[1,]}`,
	`{"vm_id":null}`,
	`{"vm_id":"a"} x`,
	`[1]`,
}

// TestFastPathAgreesWithProtojson: wherever the fast decoder accepts a body, protojson accepts it
// too and decodes the same message; elsewhere it declines and protojson decides.
func TestFastPathAgreesWithProtojson(t *testing.T) {
	accepted := 0
	for _, b := range bandwidthBodies {
		if agree(t, []byte(b)) {
			accepted++
		}
	}
	if accepted < 3 {
		t.Errorf("the fast path accepted only %d of the common bodies", accepted)
	}
}

func agree(t *testing.T, b []byte) bool {
	var fast aipb.BandwidthRequest
	if !decodeBandwidthFast(b, &fast) {
		return false
	}
	var slow aipb.BandwidthRequest
	if err := protojson.Unmarshal(b, &slow); err != nil {
		t.Fatalf("%s: the fast path accepted what protojson refuses: %v", b, err)
	}
	if !proto.Equal(&fast, &slow) {
		t.Fatalf("%s: fast %v, protojson %v", b, &fast, &slow)
	}
	return true
}

func FuzzBandwidthJSON(f *testing.F) {
	for _, b := range bandwidthBodies {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, b []byte) { agree(t, b) })
}
