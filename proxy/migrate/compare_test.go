package migrate

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// fcAnswer builds a forecast answer.
func fcAnswer(preds ...float64) *aipb.BandwidthResponse {
	return &aipb.BandwidthResponse{Predictions: preds}
}

// fcBatch builds a batch of forecast answers.
func fcBatch(rs ...*aipb.BandwidthResponse) []*aipb.BandwidthResponse { return rs }

// plAnswer builds a placement answer proposing nodes in that order.
func plAnswer(nodes ...string) *aipb.PlacementResponse {
	r := &aipb.PlacementResponse{}
	for i, n := range nodes {
		r.Candidates = append(r.Candidates, &aipb.PlacementCandidate{NodeId: n, Score: 1 - float64(i)/100})
	}
	return r
}

// checkDiff checks a Diff's invariants and its fields against want.
func checkDiff(t *testing.T, d Diff, want ...string) {
	t.Helper()
	if !slices.Equal(d.Fields, want) {
		t.Errorf("Fields = %q, want %q (Detail %q)", d.Fields, want, d.Detail)
	}
	checkInvariants(t, d)
}

// checkInvariants checks what every Diff promises: sorted, unique, known fields; a Detail iff
// they disagree.
func checkInvariants(t testing.TB, d Diff) {
	t.Helper()
	if d.Agree() != (len(d.Fields) == 0) {
		t.Errorf("Agree() = %v with Fields %q", d.Agree(), d.Fields)
	}
	if d.Agree() != (d.Detail == "") {
		t.Errorf("Agree() = %v with Detail %q", d.Agree(), d.Detail)
	}
	if d.Fields != nil && len(d.Fields) == 0 {
		t.Errorf("Fields is empty but not nil")
	}
	for i, f := range d.Fields {
		if !slices.Contains(AllFields, f) {
			t.Errorf("Fields[%d] = %q is not in AllFields", i, f)
		}
		if i > 0 && d.Fields[i-1] >= f {
			t.Errorf("Fields %q not sorted and unique", d.Fields)
		}
	}
}

func TestFieldsSorted(t *testing.T) {
	if !slices.IsSorted(AllFields) {
		t.Errorf("AllFields not sorted: %q", AllFields)
	}
	if !slices.Equal(AllFields, fieldNames[:]) {
		t.Errorf("AllFields %q != fieldNames %q", AllFields, fieldNames)
	}
	if got := fieldSet(bitSeverity<<1 - 1).list(); !slices.Equal(got, AllFields) {
		t.Errorf("all bits list %q, want %q", got, AllFields)
	}
	for i, f := range AllFields {
		if strings.ContainsAny(f, " \"\n") || f == "" {
			t.Errorf("AllFields[%d] = %q is not a tidy label value", i, f)
		}
	}
}

func TestDefaults(t *testing.T) {
	d := Tolerances{}.WithDefaults()
	if d != (Tolerances{Abs: DefaultAbs, Rel: DefaultRel, Score: DefaultScore, MinTau: DefaultMinTau}) {
		t.Errorf("zero WithDefaults = %+v", d)
	}
	custom := Tolerances{Abs: 1, Rel: 2, Score: 3, MinTau: -0.5}
	if got := custom.WithDefaults(); got != custom {
		t.Errorf("WithDefaults changed set fields: %+v", got)
	}
	if got := (Tolerances{Rel: 0.5}).WithDefaults(); got.Rel != 0.5 || got.Abs != DefaultAbs {
		t.Errorf("partial WithDefaults = %+v", got)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("defaults invalid: %v", err)
	}
	// The defaults' contract: identical answers agree, an answer off by 1% does not, at any
	// magnitude a bandwidth forecast or anomaly score has.
	for _, v := range []float64{1e-3, 0.5, 1, 100, 12345.678, 1e9} {
		if !within(v, v, d.Abs, d.Rel) {
			t.Errorf("%g vs itself disagrees", v)
		}
		for _, off := range []float64{v * 1.01, v * 0.99} {
			if within(v, off, d.Abs, d.Rel) {
				t.Errorf("%g vs %g (1%% off) agrees with the default forecast tolerance", v, off)
			}
		}
	}
	for _, s := range []float64{0.05, 0.5, 0.99} {
		if within(s, s*1.01, d.Score, 0) {
			t.Errorf("score %g vs %g (1%% off) agrees with the default score tolerance", s, s*1.01)
		}
	}
}

func TestValidate(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	tests := []struct {
		name string
		tol  Tolerances
		want []string // names the error must mention; none: valid
	}{
		{"zero", Tolerances{}, nil},
		{"set", Tolerances{Abs: 0.1, Rel: 0.2, Score: 0.3, MinTau: 0.5}, nil},
		{"tau bounds", Tolerances{MinTau: -1}, nil},
		{"tau one", Tolerances{MinTau: 1}, nil},
		{"infinite tolerances", Tolerances{Abs: inf, Rel: inf, Score: inf}, nil},
		{"negative abs", Tolerances{Abs: -1e-9}, []string{"Abs"}},
		{"nan rel", Tolerances{Rel: nan}, []string{"Rel"}},
		{"negative score", Tolerances{Score: -1}, []string{"Score"}},
		{"-inf score", Tolerances{Score: math.Inf(-1)}, []string{"Score"}},
		{"tau high", Tolerances{MinTau: 1.5}, []string{"MinTau"}},
		{"tau low", Tolerances{MinTau: -1.01}, []string{"MinTau"}},
		{"tau nan", Tolerances{MinTau: nan}, []string{"MinTau"}},
		{"several", Tolerances{Abs: -1, MinTau: 2}, []string{"Abs", "MinTau"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.tol.Validate()
			if (err != nil) != (len(tt.want) > 0) {
				t.Fatalf("Validate() = %v, want error naming %q", err, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, does not name %s", err, w)
				}
			}
		})
	}
}

func TestForecasts(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	// Exact binary tolerances make the edges exact: allowed at a=4 is 0.5 + 0.25*4 = 1.5.
	edge := Tolerances{Abs: 0.5, Rel: 0.25}
	tests := []struct {
		name       string
		base, cand []*aipb.BandwidthResponse
		tol        Tolerances
		want       []string
		detail     string // when set, the exact Detail
	}{
		{name: "identical", base: fcBatch(fcAnswer(1, 2, 3), fcAnswer(4)), cand: fcBatch(fcAnswer(1, 2, 3), fcAnswer(4))},
		{name: "both empty", base: nil, cand: fcBatch()},
		{name: "empty predictions", base: fcBatch(fcAnswer()), cand: fcBatch(&aipb.BandwidthResponse{Predictions: []float64{}})},
		{name: "within abs", base: fcBatch(fcAnswer(0)), cand: fcBatch(fcAnswer(1e-6))},
		{name: "beyond abs", base: fcBatch(fcAnswer(0)), cand: fcBatch(fcAnswer(2e-6)), want: []string{FieldPredictions}},
		{name: "within rel", base: fcBatch(fcAnswer(1000)), cand: fcBatch(fcAnswer(1000.1))},
		{name: "beyond rel", base: fcBatch(fcAnswer(1000)), cand: fcBatch(fcAnswer(1000.2)), want: []string{FieldPredictions}},
		{name: "at the edge", base: fcBatch(fcAnswer(4)), cand: fcBatch(fcAnswer(5.5)), tol: edge},
		{name: "at the lower edge", base: fcBatch(fcAnswer(4)), cand: fcBatch(fcAnswer(2.5)), tol: edge},
		{name: "just outside", base: fcBatch(fcAnswer(4)), cand: fcBatch(fcAnswer(math.Nextafter(5.5, 6))), tol: edge,
			want: []string{FieldPredictions}, detail: "results[0].predictions[0]: 4 vs 5.500000000000001 (allowed 1.5)"},
		{name: "relative to the baseline", base: fcBatch(fcAnswer(2)), cand: fcBatch(fcAnswer(3)), tol: edge}, // 1 <= 0.5+0.25*2
		{name: "not relative to the candidate", base: fcBatch(fcAnswer(3)), cand: fcBatch(fcAnswer(2)), tol: Tolerances{Abs: 0.5, Rel: 0.125},
			want: []string{FieldPredictions}}, // 1 > 0.5+0.125*3, though 1 <= 0.5+0.125*4
		{name: "off by 1%", base: fcBatch(fcAnswer(100, 200)), cand: fcBatch(fcAnswer(100, 202)), want: []string{FieldPredictions},
			detail: "results[0].predictions[1]: 200 vs 202 (allowed 0.02)"},
		{name: "detail names the index", base: fcBatch(fcAnswer(1), fcAnswer(1), fcAnswer(5, 6, 7, 101.5)), cand: fcBatch(fcAnswer(1), fcAnswer(1), fcAnswer(5, 6, 7, 98.2)),
			want: []string{FieldPredictions}, detail: "results[2].predictions[3]: 101.5 vs 98.2 (allowed 0.0102)"},
		{name: "nan baseline", base: fcBatch(fcAnswer(1, nan)), cand: fcBatch(fcAnswer(1, 2)), want: []string{FieldPredictions},
			detail: "results[0].predictions[1]: NaN vs 2"},
		{name: "nan candidate", base: fcBatch(fcAnswer(1, 2)), cand: fcBatch(fcAnswer(1, nan)), want: []string{FieldPredictions}},
		{name: "nan both", base: fcBatch(fcAnswer(nan)), cand: fcBatch(fcAnswer(nan)), want: []string{FieldPredictions}},
		{name: "nan with infinite tolerance", base: fcBatch(fcAnswer(nan)), cand: fcBatch(fcAnswer(1)), tol: Tolerances{Abs: inf},
			want: []string{FieldPredictions}},
		{name: "same infinity", base: fcBatch(fcAnswer(inf, -inf)), cand: fcBatch(fcAnswer(inf, -inf))},
		{name: "infinity vs finite", base: fcBatch(fcAnswer(inf)), cand: fcBatch(fcAnswer(math.MaxFloat64)), want: []string{FieldPredictions}},
		{name: "infinite tolerance", base: fcBatch(fcAnswer(1)), cand: fcBatch(fcAnswer(1e300)), tol: Tolerances{Abs: inf}},
		{name: "overflowing difference", base: fcBatch(fcAnswer(math.MaxFloat64)), cand: fcBatch(fcAnswer(-math.MaxFloat64)),
			want: []string{FieldPredictions}},
		{name: "longer candidate", base: fcBatch(fcAnswer(1, 2)), cand: fcBatch(fcAnswer(1, 2, 3)), want: []string{FieldPredictionsLength},
			detail: "results[0].predictions.length: 2 vs 3"},
		{name: "shorter candidate, prefix differs", base: fcBatch(fcAnswer(1, 2, 3)), cand: fcBatch(fcAnswer(1, 9)),
			want: []string{FieldPredictions, FieldPredictionsLength}, detail: "results[0].predictions.length: 3 vs 2"},
		{name: "empty vs some", base: fcBatch(fcAnswer()), cand: fcBatch(fcAnswer(1)), want: []string{FieldPredictionsLength}},
		{name: "results length", base: fcBatch(fcAnswer(1), fcAnswer(2)), cand: fcBatch(fcAnswer(1)), want: []string{FieldResults},
			detail: "results.length: 2 vs 1"},
		{name: "results length, not paired", base: fcBatch(fcAnswer(1), fcAnswer(2, 3)), cand: fcBatch(fcAnswer(9, 9, 9)), want: []string{FieldResults}},
		{name: "nil candidate element", base: fcBatch(fcAnswer(1), fcAnswer(2)), cand: fcBatch(fcAnswer(1), nil), want: []string{FieldMissing},
			detail: "results[1]: candidate nil"},
		{name: "nil baseline element", base: fcBatch(nil), cand: fcBatch(fcAnswer()), want: []string{FieldMissing},
			detail: "results[0]: baseline nil"},
		{name: "nil both elements", base: fcBatch(nil, fcAnswer(1)), cand: fcBatch(nil, fcAnswer(1))},
		{name: "everything at once", base: fcBatch(nil, fcAnswer(1, 2), fcAnswer(3)), cand: fcBatch(fcAnswer(1), fcAnswer(1, 2, 3), fcAnswer(4)),
			want: []string{FieldMissing, FieldPredictions, FieldPredictionsLength}, detail: "results[0]: baseline nil"},
		{name: "not compared: vm_id, model_version, confidence",
			base: fcBatch(&aipb.BandwidthResponse{Predictions: []float64{1}, VmId: "vm-1", ModelVersion: "v1", Confidence: 0.9}),
			cand: fcBatch(&aipb.BandwidthResponse{Predictions: []float64{1}, VmId: "vm-2", ModelVersion: "v2", Confidence: 0.1})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Forecasts(tt.base, tt.cand, tt.tol)
			checkDiff(t, d, tt.want...)
			if tt.detail != "" && d.Detail != tt.detail {
				t.Errorf("Detail = %q, want %q", d.Detail, tt.detail)
			}
		})
	}
}

func TestAnomaly(t *testing.T) {
	base := &aipb.AnomalyResponse{IsAnomaly: true, Score: 0.5, AnomalyType: "cpu_spike", Severity: "high", ModelVersion: "v1"}
	with := func(f func(*aipb.AnomalyResponse)) *aipb.AnomalyResponse {
		r := proto.Clone(base).(*aipb.AnomalyResponse)
		f(r)
		return r
	}
	edge := Tolerances{Score: 0.25} // exact in binary: 0.5 vs 0.75 is exactly at the edge
	tests := []struct {
		name   string
		base   *aipb.AnomalyResponse
		cand   *aipb.AnomalyResponse
		tol    Tolerances
		want   []string
		detail string
	}{
		{name: "identical", base: base, cand: with(func(r *aipb.AnomalyResponse) {})},
		{name: "model_version not compared", base: base, cand: with(func(r *aipb.AnomalyResponse) { r.ModelVersion = "v2" })},
		{name: "is_anomaly", base: base, cand: with(func(r *aipb.AnomalyResponse) { r.IsAnomaly = false }),
			want: []string{FieldIsAnomaly}, detail: "is_anomaly: true vs false"},
		{name: "severity", base: base, cand: with(func(r *aipb.AnomalyResponse) { r.Severity = "High" }),
			want: []string{FieldSeverity}, detail: `severity: "high" vs "High"`},
		{name: "anomaly_type", base: base, cand: with(func(r *aipb.AnomalyResponse) { r.AnomalyType = "" }),
			want: []string{FieldAnomalyType}, detail: `anomaly_type: "cpu_spike" vs ""`},
		{name: "score", base: base, cand: with(func(r *aipb.AnomalyResponse) { r.Score = 0.51 }),
			want: []string{FieldScore}, detail: "score: 0.5 vs 0.51 (allowed 0.0001)"},
		{name: "score within default", base: base, cand: with(func(r *aipb.AnomalyResponse) { r.Score = 0.50005 })},
		{name: "score at the edge", base: base, cand: with(func(r *aipb.AnomalyResponse) { r.Score = 0.75 }), tol: edge},
		{name: "score at the lower edge", base: base, cand: with(func(r *aipb.AnomalyResponse) { r.Score = 0.25 }), tol: edge},
		{name: "score past the edge", base: base, cand: with(func(r *aipb.AnomalyResponse) { r.Score = math.Nextafter(0.75, 1) }),
			tol: edge, want: []string{FieldScore}},
		{name: "score nan", base: base, cand: with(func(r *aipb.AnomalyResponse) { r.Score = math.NaN() }),
			want: []string{FieldScore}, detail: "score: 0.5 vs NaN"},
		{name: "all four, detail is the first", base: base, cand: &aipb.AnomalyResponse{},
			want: []string{FieldAnomalyType, FieldIsAnomaly, FieldScore, FieldSeverity}, detail: "is_anomaly: true vs false"},
		{name: "long strings are cut", base: &aipb.AnomalyResponse{Severity: strings.Repeat("é", 100)}, cand: &aipb.AnomalyResponse{},
			want: []string{FieldSeverity}, detail: `severity: "` + strings.Repeat("é", 32) + `"... vs ""`},
		{name: "nil both", base: nil, cand: nil},
		{name: "nil candidate", base: base, cand: nil, want: []string{FieldMissing}, detail: "answer: candidate nil"},
		{name: "nil baseline", base: nil, cand: &aipb.AnomalyResponse{}, want: []string{FieldMissing}, detail: "answer: baseline nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Anomaly(tt.base, tt.cand, tt.tol)
			checkDiff(t, d, tt.want...)
			if tt.detail != "" && d.Detail != tt.detail {
				t.Errorf("Detail = %q, want %q", d.Detail, tt.detail)
			}
		})
	}
}

func TestPlacement(t *testing.T) {
	tests := []struct {
		name   string
		base   *aipb.PlacementResponse
		cand   *aipb.PlacementResponse
		tol    Tolerances
		want   []string
		detail string
	}{
		{name: "same order", base: plAnswer("n1", "n2", "n3", "n4"), cand: plAnswer("n1", "n2", "n3", "n4")},
		{name: "scores and reasoning not compared", base: plAnswer("n1", "n2"),
			cand: &aipb.PlacementResponse{ModelVersion: "v2", OverallConfidence: 0.1, Candidates: []*aipb.PlacementCandidate{
				{NodeId: "n1", Score: 0.1, Reasoning: "x"}, {NodeId: "n2", Score: 0.9}}}},
		{name: "top-1 swap", base: plAnswer("n1", "n2", "n3"), cand: plAnswer("n2", "n1", "n3"),
			want: []string{FieldTau, FieldTop1}, detail: `candidates.top1: "n1" vs "n2"`},
		{name: "top-1 swap, any order accepted", base: plAnswer("n1", "n2", "n3"), cand: plAnswer("n2", "n1", "n3"), tol: Tolerances{MinTau: -1},
			want: []string{FieldTop1}},
		{name: "swap below the top", base: plAnswer("n1", "n2", "n3"), cand: plAnswer("n1", "n3", "n2"),
			want: []string{FieldTau}, detail: "candidates.tau: 0.333 < 0.9"},
		{name: "swap below the top, tolerated", base: plAnswer("n1", "n2", "n3"), cand: plAnswer("n1", "n3", "n2"), tol: Tolerances{MinTau: 0.3}},
		{name: "one adjacent swap in ten passes the default", base: plAnswer("a", "b", "c", "d", "e", "f", "g", "h", "i", "j"),
			cand: plAnswer("a", "b", "c", "d", "e", "g", "f", "h", "i", "j")},
		{name: "three swaps in ten fail the default", base: plAnswer("a", "b", "c", "d", "e", "f", "g", "h", "i", "j"),
			cand: plAnswer("a", "c", "b", "e", "d", "g", "f", "h", "i", "j"), want: []string{FieldTau}, detail: "candidates.tau: 0.867 < 0.9"},
		{name: "reversed", base: plAnswer("n1", "n2", "n3", "n4"), cand: plAnswer("n4", "n3", "n2", "n1"),
			want: []string{FieldTau, FieldTop1}},
		{name: "reversed, detail", base: plAnswer("n1", "n2", "n3", "n4"), cand: plAnswer("n4", "n3", "n2", "n1"), tol: Tolerances{MinTau: 1},
			want: []string{FieldTau, FieldTop1}, detail: `candidates.top1: "n1" vs "n4"`},
		{name: "different sets, same order of the common", base: plAnswer("n1", "n2", "n3"), cand: plAnswer("n1", "n2", "n4"),
			want: []string{FieldCandidates}, detail: `candidates.set: "n3" only in baseline, 2 in common`},
		{name: "candidate has more", base: plAnswer("n1", "n2"), cand: plAnswer("n1", "n2", "n9"),
			want: []string{FieldCandidates}, detail: `candidates.set: "n9" only in candidate, 2 in common`},
		{name: "different sets, common reversed", base: plAnswer("n1", "n2", "n3", "x"), cand: plAnswer("n1", "y", "n3", "n2"),
			want: []string{FieldCandidates, FieldTau}},
		{name: "disjoint", base: plAnswer("a", "b"), cand: plAnswer("c", "d"),
			want: []string{FieldCandidates, FieldTop1}},
		{name: "single candidate", base: plAnswer("n1"), cand: plAnswer("n1")},
		{name: "single candidate differs", base: plAnswer("n1"), cand: plAnswer("n2"),
			want: []string{FieldCandidates, FieldTop1}, detail: `candidates.top1: "n1" vs "n2"`},
		{name: "both empty", base: plAnswer(), cand: &aipb.PlacementResponse{}},
		{name: "empty candidate", base: plAnswer("n1"), cand: plAnswer(),
			want: []string{FieldCandidates, FieldTop1}, detail: `candidates.top1: "n1" vs none`},
		{name: "duplicates count once", base: plAnswer("n1", "n2", "n1", "n3"), cand: plAnswer("n1", "n2", "n3", "n3")},
		{name: "nil candidate entries", base: &aipb.PlacementResponse{Candidates: []*aipb.PlacementCandidate{nil, {NodeId: "n1"}}},
			cand: plAnswer("", "n1")},
		{name: "nil both", base: nil, cand: nil},
		{name: "nil candidate", base: plAnswer("n1"), cand: nil, want: []string{FieldMissing}, detail: "answer: candidate nil"},
		{name: "nil baseline", base: nil, cand: plAnswer(), want: []string{FieldMissing}, detail: "answer: baseline nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Placement(tt.base, tt.cand, tt.tol)
			checkDiff(t, d, tt.want...)
			if tt.detail != "" && d.Detail != tt.detail {
				t.Errorf("Detail = %q, want %q", d.Detail, tt.detail)
			}
		})
	}
}

// TestPlacementLarge runs Placement's comparisons through the map path (lists longer than
// smallRanks).
func TestPlacementLarge(t *testing.T) {
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = "node-" + strconv.Itoa(i)
	}
	rev := slices.Clone(ids)
	slices.Reverse(rev)
	checkDiff(t, Placement(plAnswer(ids...), plAnswer(ids...), Tolerances{}))
	checkDiff(t, Placement(plAnswer(ids...), plAnswer(rev...), Tolerances{}), FieldTau, FieldTop1)
	d := Placement(plAnswer(ids...), plAnswer(append(slices.Clone(ids[:99]), "other")...), Tolerances{})
	checkDiff(t, d, FieldCandidates)
	if want := `candidates.set: "node-99" only in baseline, 99 in common`; d.Detail != want {
		t.Errorf("Detail = %q, want %q", d.Detail, want)
	}
	d = Placement(plAnswer(ids[:99]...), plAnswer(ids...), Tolerances{})
	checkDiff(t, d, FieldCandidates)
	if want := `candidates.set: "node-99" only in candidate, 99 in common`; d.Detail != want {
		t.Errorf("Detail = %q, want %q", d.Detail, want)
	}
}

// TestJSONNormalization checks the rule that answers are compared after both are decoded into
// the same proto types: an answer that went through proto3 JSON (protojson's default options
// drop zero values: a score of 0, is_anomaly false, an empty anomaly_type, an empty list) agrees
// with the original, and so does one that went through the binary wire format.
//
// proto3 JSON writes 64-bit integers as strings; the response messages have no int64 or uint64
// fields (only double, bool, string and messages), so there is no such case to test. Doubles
// NaN and ±Infinity are written as the strings "NaN", "Infinity", "-Infinity"; the infinities
// are round-tripped here (NaN is left out: it disagrees with everything, itself included).
func TestJSONNormalization(t *testing.T) {
	inf := math.Inf(1)
	msgs := []struct {
		name    string
		msg     proto.Message
		dropped []string // JSON keys the default marshaller must leave out
	}{
		{"anomaly zero values", &aipb.AnomalyResponse{IsAnomaly: false, Score: 0, AnomalyType: "", Severity: "low"},
			[]string{"isAnomaly", "score", "anomalyType"}},
		{"anomaly", &aipb.AnomalyResponse{IsAnomaly: true, Score: 0.7300000000000001, AnomalyType: "net", Severity: "high", ModelVersion: "v"}, nil},
		{"anomaly empty", &aipb.AnomalyResponse{}, nil},
		{"forecast", &aipb.BandwidthBatchResponse{Results: []*aipb.BandwidthResponse{
			{Predictions: []float64{0, -0.0, 0.1, 1.0 / 3, 1e-300, 5e-324, math.MaxFloat64, 123456789.123456789, inf, -inf}, VmId: "vm"},
			{Predictions: []float64{}, Confidence: 0},
			{},
		}}, []string{"confidence"}},
		{"placement", &aipb.PlacementResponse{Candidates: []*aipb.PlacementCandidate{
			{NodeId: "n1", Score: 0.9}, {NodeId: "n2", Score: 0}, {NodeId: "", Reasoning: "r"},
		}}, []string{"overallConfidence"}},
		{"placement empty list", &aipb.PlacementResponse{Candidates: []*aipb.PlacementCandidate{}}, []string{"candidates"}},
	}
	for _, m := range msgs {
		t.Run(m.name, func(t *testing.T) {
			js, err := protojson.Marshal(m.msg)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range m.dropped {
				if strings.Contains(string(js), `"`+k+`"`) {
					t.Errorf("JSON %s has %q: the test no longer exercises dropped zero values", js, k)
				}
			}
			fromJSON := m.msg.ProtoReflect().New().Interface()
			if err := protojson.Unmarshal(js, fromJSON); err != nil {
				t.Fatalf("unmarshal %s: %v", js, err)
			}
			wire, err := proto.Marshal(m.msg)
			if err != nil {
				t.Fatal(err)
			}
			fromWire := m.msg.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(wire, fromWire); err != nil {
				t.Fatal(err)
			}
			for _, pair := range [][2]proto.Message{{m.msg, fromJSON}, {fromJSON, m.msg}, {fromWire, fromJSON}} {
				d := compareAny(pair[0], pair[1])
				checkDiff(t, d)
			}
		})
	}
}

// compareAny compares two answers of the same type with the default tolerances.
func compareAny(a, b proto.Message) Diff {
	switch a := a.(type) {
	case *aipb.AnomalyResponse:
		return Anomaly(a, b.(*aipb.AnomalyResponse), Tolerances{})
	case *aipb.PlacementResponse:
		return Placement(a, b.(*aipb.PlacementResponse), Tolerances{})
	case *aipb.BandwidthBatchResponse:
		return Forecasts(a.GetResults(), b.(*aipb.BandwidthBatchResponse).GetResults(), Tolerances{})
	}
	panic("unexpected type")
}

// kendallRef is KendallTau by definition: dedupe both lists (first occurrence), take the ids
// in both, and sum the sign of every pair's order in a times its order in b.
func kendallRef(a, b []string) float64 {
	first := func(l []string) map[string]int {
		m := map[string]int{}
		for i, id := range l {
			if _, ok := m[id]; !ok {
				m[id] = i
			}
		}
		return m
	}
	pa, pb := first(a), first(b)
	var common []string
	for id := range pa {
		if _, ok := pb[id]; ok {
			common = append(common, id)
		}
	}
	n := len(common)
	if n < 2 {
		return 1
	}
	s := 0
	for i := range n {
		for j := i + 1; j < n; j++ {
			x, y := common[i], common[j]
			da, db := pa[x]-pa[y], pb[x]-pb[y]
			if (da > 0) == (db > 0) {
				s++
			} else {
				s--
			}
		}
	}
	return float64(s) / (float64(n) * float64(n-1) / 2)
}

func TestKendallTauBasics(t *testing.T) {
	tests := []struct {
		a, b []string
		want float64
	}{
		{nil, nil, 1},
		{[]string{"a"}, []string{"a"}, 1},
		{[]string{"a", "b"}, []string{"c", "d"}, 1}, // nothing common
		{[]string{"a", "b", "c"}, []string{"a", "b", "c"}, 1},
		{[]string{"a", "b", "c"}, []string{"c", "b", "a"}, -1},
		{[]string{"a", "b"}, []string{"b", "a"}, -1},
		{[]string{"a", "b", "c"}, []string{"b", "a", "c"}, 1.0 / 3},
		{[]string{"a", "b", "a"}, []string{"a", "b"}, 1},            // duplicate: first place counts
		{[]string{"b", "a", "b"}, []string{"a", "b"}, -1},           // b before a
		{[]string{"a", "x", "b", "y"}, []string{"z", "b", "a"}, -1}, // partial overlap
		{[]string{"", "a"}, []string{"", "a"}, 1},
	}
	for _, tt := range tests {
		if got := KendallTau(tt.a, tt.b); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("KendallTau(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestKendallTauReference checks KendallTau, on both its small and its large path, against the
// O(n²) definition on random rankings with partial overlaps and duplicates.
func TestKendallTauReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ids := make([]string, 2500)
	for i := range ids {
		ids[i] = "node-" + strconv.Itoa(i)
	}
	ranking := func(universe, n int, dupes bool) []string {
		out := make([]string, 0, n)
		for _, i := range rng.Perm(universe)[:min(n, universe)] {
			out = append(out, ids[i])
		}
		if dupes && len(out) > 0 {
			for range 1 + rng.IntN(3) {
				out = slices.Insert(out, rng.IntN(len(out)+1), out[rng.IntN(len(out))])
			}
		}
		return out
	}
	sizes := []int{0, 1, 2, 3, 5, 10, 31, 32, 33, 40, 64, 100, 300}
	for trial := range 400 {
		na, nb := sizes[rng.IntN(len(sizes))], sizes[rng.IntN(len(sizes))]
		universe := max(na, nb) + rng.IntN(max(na, nb)/2+1) // partial overlaps
		if trial%4 == 0 {
			universe = max(na, nb) // full overlap when sizes match
		}
		a, b := ranking(universe, na, trial%3 == 0), ranking(universe, nb, trial%5 == 0)
		want := kendallRef(a, b)
		if got := KendallTau(a, b); math.Abs(got-want) > 1e-12 {
			t.Fatalf("trial %d: KendallTau(%d ids, %d ids) = %v, reference %v", trial, len(a), len(b), got, want)
		}
		// Both paths agree on everything they report.
		if len(a) <= smallRanks && len(b) <= smallRanks {
			small, large := compareSmall(a, b), compareLarge(stringIDs(a), stringIDs(b))
			if small != large {
				t.Fatalf("trial %d: small path %+v, large path %+v", trial, small, large)
			}
		}
	}
	// Big ones: identical, reversed, a random permutation.
	a := ids[:2000]
	rev := slices.Clone(a)
	slices.Reverse(rev)
	if got := KendallTau(a, a); got != 1 {
		t.Errorf("identical 2000: %v", got)
	}
	if got := KendallTau(a, rev); got != -1 {
		t.Errorf("reversed 2000: %v", got)
	}
	perm := ranking(2000, 2000, false)
	if got, want := KendallTau(a, perm), kendallRef(a, perm); math.Abs(got-want) > 1e-12 {
		t.Errorf("permutation 2000: %v, reference %v", got, want)
	}
}

// TestAllocations checks the agreeing path allocates nothing, and KendallTau nothing on short
// lists and a bounded number of times (O(n) bytes) on long ones.
func TestAllocations(t *testing.T) {
	base, cand, off := forecastBatch(64, 10, 0), forecastBatch(64, 10, 1e-9), forecastBatch(64, 10, 0.01)
	an := &aipb.AnomalyResponse{IsAnomaly: true, Score: 0.5, Severity: "high"}
	p := plAnswer("a", "b", "c", "d", "e", "f", "g", "h")
	short := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	long := make([]string, 1024)
	for i := range long {
		long[i] = strconv.Itoa(i)
	}
	tests := []struct {
		name string
		max  float64
		f    func()
	}{
		{"Forecasts agree", 0, func() { Forecasts(base, cand, Tolerances{}) }},
		{"Anomaly agree", 0, func() { Anomaly(an, an, Tolerances{}) }},
		{"Placement agree", 0, func() { Placement(p, p, Tolerances{}) }},
		{"KendallTau short", 0, func() { KendallTau(short, short) }},
		{"KendallTau long", 8, func() { KendallTau(long, long) }},
		{"Forecasts disagree", 2, func() { Forecasts(base, off, Tolerances{}) }}, // Fields and Detail
	}
	for _, tt := range tests {
		if got := testing.AllocsPerRun(50, tt.f); got > tt.max {
			t.Errorf("%s: %v allocations, want at most %v", tt.name, got, tt.max)
		}
	}
}

// forecastBatch returns n results of steps predictions each, every value scaled by 1+off.
func forecastBatch(n, steps int, off float64) []*aipb.BandwidthResponse {
	out := make([]*aipb.BandwidthResponse, n)
	for i := range out {
		p := make([]float64, steps)
		for j := range p {
			p[j] = (100 + float64(i*steps+j)) * (1 + off)
		}
		out[i] = &aipb.BandwidthResponse{Predictions: p, VmId: "vm-" + strconv.Itoa(i)}
	}
	return out
}

// byteIDs turns bytes into ids, one per byte, so fuzzed lists share ids and repeat them.
var byteIDs = func() (ids [256]string) {
	for i := range ids {
		ids[i] = "id" + strconv.Itoa(i)
	}
	return ids
}()

func idsOf(b []byte) []string {
	out := make([]string, len(b))
	for i, c := range b {
		out[i] = byteIDs[c]
	}
	return out
}

func FuzzKendallTau(f *testing.F) {
	f.Add([]byte("abc"), []byte("cba"))
	f.Add([]byte("abcabc"), []byte("bca"))
	f.Add([]byte(""), []byte("a"))
	f.Add([]byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEF"), []byte("FEDCBA9876543210zyxwvutsrqponmlkjihgfedcba"))
	f.Fuzz(func(t *testing.T, x, y []byte) {
		a, b := idsOf(x), idsOf(y)
		tau := KendallTau(a, b)
		if !(tau >= -1 && tau <= 1) {
			t.Fatalf("KendallTau = %v, outside [-1, 1]", tau)
		}
		if back := KendallTau(b, a); back != tau {
			t.Fatalf("not symmetric: %v vs %v", tau, back)
		}
		if want := kendallRef(a, b); math.Abs(tau-want) > 1e-12 {
			t.Fatalf("KendallTau = %v, reference %v", tau, want)
		}
		if self := KendallTau(a, a); self != 1 {
			t.Fatalf("KendallTau(a, a) = %v", self)
		}
		checkInvariants(t, Placement(plAnswer(a...), plAnswer(b...), Tolerances{}))
	})
}

func FuzzForecasts(f *testing.F) {
	f64 := func(vs ...float64) []byte {
		var out []byte
		for _, v := range vs {
			out = binary.LittleEndian.AppendUint64(out, math.Float64bits(v))
		}
		return out
	}
	f.Add(f64(1, 2, 3, 4), uint8(2), uint8(3), 0.0, 0.0)
	f.Add(f64(math.NaN(), math.Inf(1), -0.0, 5e-324), uint8(1), uint8(1), 1e-3, 1e-2)
	f.Add(f64(1e308, -1e308), uint8(0), uint8(7), math.Inf(1), -1.0)
	f.Fuzz(func(t *testing.T, data []byte, chunkA, chunkB uint8, abs, rel float64) {
		var vals []float64
		hasNaN := false
		for len(data) >= 8 {
			v := math.Float64frombits(binary.LittleEndian.Uint64(data))
			hasNaN = hasNaN || math.IsNaN(v)
			vals, data = append(vals, v), data[8:]
		}
		// Split the values into results of chunk values each (0: one result holding all);
		// chunk 255 also puts nil results in between.
		split := func(chunk uint8) []*aipb.BandwidthResponse {
			if chunk == 0 {
				return fcBatch(fcAnswer(vals...))
			}
			var out []*aipb.BandwidthResponse
			for rest := vals; len(rest) > 0; {
				n := min(int(chunk%8)+1, len(rest))
				out = append(out, fcAnswer(rest[:n]...))
				if chunk == 255 {
					out = append(out, nil)
				}
				rest = rest[n:]
			}
			return out
		}
		tol := Tolerances{Abs: abs, Rel: rel}
		a, b := split(chunkA), split(chunkB)
		d := Forecasts(a, b, tol)
		checkInvariants(t, d)
		self := Forecasts(a, split(chunkA), tol)
		checkInvariants(t, self)
		if !hasNaN && !self.Agree() {
			t.Fatalf("an answer without NaN disagrees with itself: %q %s", self.Fields, self.Detail)
		}
		if hasNaN && self.Agree() {
			t.Fatalf("an answer with NaN agrees with itself")
		}
	})
}

func BenchmarkForecasts(b *testing.B) {
	base := forecastBatch(64, 10, 0)
	for _, bc := range []struct {
		name string
		cand []*aipb.BandwidthResponse
	}{
		{"agree", forecastBatch(64, 10, 1e-9)},
		{"disagree", forecastBatch(64, 10, 0.01)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Forecasts(base, bc.cand, Tolerances{})
			}
		})
	}
}

func BenchmarkKendallTau(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1024, 10} {
		a := make([]string, n)
		for i := range a {
			a[i] = "node-" + strconv.Itoa(i)
		}
		c := slices.Clone(a)
		rng.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] })
		b.Run("n="+strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				KendallTau(a, c)
			}
		})
	}
}
