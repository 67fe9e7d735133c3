package drift

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/pb/sketchpb"
	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/novacron/sidecar/features"
)

// t0 is the start of the tests' first window (a multiple of DefaultWindow).
var t0 = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

// clockMonitor is a monitor whose clock the test sets.
func clockMonitor(t testing.TB, p *Profile, cfg Config) (*Monitor, *time.Time) {
	t.Helper()
	now := t0
	cfg.Now = func() time.Time { return now }
	m, err := NewMonitor(p, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m, &now
}

// withMissing sets every 7th value of feature j to NaN.
func withMissing(data []float32, w, j int) []float32 {
	for i := j; i < len(data); i += 7 * w {
		data[i] = float32(math.NaN())
	}
	return data
}

// sameSketches fails unless a and b hold the same rows: counts, missing values, DDSketch counts
// and every quantile of the Wasserstein grid, to the bit; sums up to rounding. Features and
// outputs alike.
func sameSketches(t *testing.T, what string, a, b WindowSketches) {
	t.Helper()
	if !a.Start.Equal(b.Start) || !a.End.Equal(b.End) || len(a.Features) != len(b.Features) || len(a.Outputs) != len(b.Outputs) {
		t.Fatalf("%s: window %v..%v (%d features, %d outputs) vs %v..%v (%d, %d)", what, a.Start, a.End, len(a.Features), len(a.Outputs), b.Start, b.End, len(b.Features), len(b.Outputs))
	}
	xs, ys := append(slices.Clip(a.Features), a.Outputs...), append(slices.Clip(b.Features), b.Outputs...)
	for j := range xs {
		x, y := &xs[j], &ys[j]
		if !equalInts(x.Counts, y.Counts) || x.Missing != y.Missing || x.DD.GetCount() != y.DD.GetCount() || x.DD.GetZeroCount() != y.DD.GetZeroCount() {
			t.Fatalf("%s feature %d: counts %v missing %d dd %v vs %v %d %v", what, j, x.Counts, x.Missing, x.DD.GetCount(), y.Counts, y.Missing, y.DD.GetCount())
		}
		if math.Abs(x.Sum-y.Sum) > 1e-9*max(1, math.Abs(x.Sum)) {
			t.Errorf("%s feature %d: sum %v vs %v", what, j, x.Sum, y.Sum)
		}
		qa, _ := x.DD.GetValuesAtQuantiles(quantileLevels)
		qb, _ := y.DD.GetValuesAtQuantiles(quantileLevels)
		for i := range qa {
			if math.Float64bits(qa[i]) != math.Float64bits(qb[i]) {
				t.Fatalf("%s feature %d quantile %v: %v vs %v", what, j, quantileLevels[i], qa[i], qb[i])
			}
		}
	}
}

// sameReports fails unless the reports are equal to the bit.
func sameReports(t *testing.T, got, want []WindowReport) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d reports, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if !g.Start.Equal(w.Start) || !g.End.Equal(w.End) || g.Rows != w.Rows || g.Verdict != w.Verdict || g.Drifted != w.Drifted ||
			g.Share != w.Share || g.ModelDrifted != w.ModelDrifted || len(g.Features) != len(w.Features) || len(g.Outputs) != len(w.Outputs) {
			t.Fatalf("window %d: %+v\nwant %+v", i, g, w)
		}
		gs, ws := append(slices.Clip(g.Features), g.Outputs...), append(slices.Clip(w.Features), w.Outputs...)
		for j := range ws {
			a, b := gs[j], ws[j]
			same := a.Name == b.Name && a.Rows == b.Rows && a.Missing == b.Missing && a.Method == b.Method && a.Drifted == b.Drifted
			for _, pair := range [][2]float64{{a.MissingRate, b.MissingRate}, {a.RefMissingRate, b.RefMissingRate}, {a.MissingChange, b.MissingChange},
				{a.PSI, b.PSI}, {a.JS, b.JS}, {a.Wasserstein, b.Wasserstein}, {a.Threshold, b.Threshold}, {a.Score, b.Score}} {
				same = same && math.Float64bits(pair[0]) == math.Float64bits(pair[1])
			}
			if !same {
				t.Errorf("window %d feature %s:\n got %+v\nwant %+v", i, b.Name, a, b)
			}
		}
	}
}

// testOutputs are the output columns of the tests' profiles with outputs: "out[0]" answers a
// row's feature 2, "out[1]" its feature 0 (answers rowOutputs gives, in the layout testLayout).
var (
	testOutputs = []string{"out[0]", "out[1]"}
	testLayout  = []string{"out[1]", "other", "out[0]"}
)

// rowOutputs is the model's answer to each of the rows of w features, in the layout testLayout.
func rowOutputs(data []float32, w int) [][]float32 {
	out := make([][]float32, len(data)/w)
	for i := range out {
		out[i] = []float32{data[i*w], 42, data[i*w+2]}
	}
	return out
}

// profileWithOutputs is profileOf's profile with the outputs testOutputs.
func profileWithOutputs(t testing.TB, spec *features.Spec, n int) *Profile {
	t.Helper()
	b, err := NewBuilder(spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetOutputs(testOutputs); err != nil {
		t.Fatal(err)
	}
	w := spec.Width()
	data := rows(rand.New(rand.NewPCG(1, 1)), n, w, -1, 0)
	if err := b.Add(data); err != nil {
		t.Fatal(err)
	}
	outs := make([]float32, 0, 2*n)
	for _, o := range rowOutputs(data, w) {
		outs = append(outs, o[2], o[0])
	}
	if err := b.AddOutputs(outs); err != nil {
		t.Fatal(err)
	}
	p, err := b.Profile()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fleet is one monitor of every row and three "nodes" with a share each, over three windows:
// the oldest has 3000 rows on nodes 1 and 2 (feature 1 partly missing), the next 2500 on node 0
// alone, the newest 1000, 4000 and 4000 (feature 2 shifted by 0.7 sd, feature 5 partly missing).
// When p has outputs, the monitors observe the rows' answers (rowOutputs) too.
func fleet(t *testing.T, p *Profile, w int) (one *Monitor, nodes []*Monitor) {
	t.Helper()
	var cfg Config
	if len(p.Outputs) > 0 {
		cfg.Outputs = testLayout
	}
	one, oneNow := clockMonitor(t, p, cfg)
	var nows []*time.Time
	for range 3 {
		m, now := clockMonitor(t, p, cfg)
		nodes, nows = append(nodes, m), append(nows, now)
	}
	observe := func(start time.Time, data []float32, split []int) {
		*oneNow = start.Add(time.Minute)
		outs := rowOutputs(data, w)
		one.Observe(data, w, outs)
		lo := 0
		for i, n := range split {
			if n == 0 {
				continue
			}
			*nows[i] = start.Add(time.Duration(i+1) * time.Second)
			nodes[i].Observe(data[lo*w:(lo+n)*w], w, outs[lo:lo+n])
			lo += n
		}
	}
	r := rand.New(rand.NewPCG(7, 7))
	observe(t0, withMissing(rows(r, 3000, w, -1, 0), w, 1), []int{0, 2000, 1000})
	observe(t0.Add(DefaultWindow), rows(r, 2500, w, -1, 0), []int{2500, 0, 0})
	observe(t0.Add(2*DefaultWindow), withMissing(rows(r, 9000, w, 2, 0.7), w, 5), []int{1000, 4000, 4000})
	return one, nodes
}

// TestSnapshotMergeIsExact: the nodes' snapshots, through the protobuf and JSON forms, merged
// equal one snapshot of every row: bins, missing values and DDSketch quantiles exactly, windows
// some nodes lack kept, and scores equal to the bit to the one monitor's own.
func TestSnapshotMergeIsExact(t *testing.T) {
	spec := anomalySpec(t)
	p := profileWithOutputs(t, spec, 5000)
	w := spec.Width()
	one, nodes := fleet(t, p, w)

	var snaps []*Snapshot
	for i, m := range nodes {
		s := m.Snapshot("anomaly")
		switch i { // one through each form, one as is
		case 0:
			b, err := s.MarshalProto()
			if err != nil {
				t.Fatal(err)
			}
			if s, err = UnmarshalSnapshotProto(b); err != nil {
				t.Fatal(err)
			}
		case 1:
			b, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			if s, err = UnmarshalSnapshotJSON(b); err != nil {
				t.Fatal(err)
			}
		}
		snaps = append(snaps, s)
	}
	merged, err := Merge(snaps)
	if err != nil {
		t.Fatal(err)
	}
	want := one.Sketches()
	got, err := merged.sketches()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || len(want) != 3 {
		t.Fatalf("%d merged windows, %d of all rows; want 3", len(got), len(want))
	}
	for i := range want {
		sameSketches(t, "window "+want[i].Start.String(), got[i], want[i])
	}
	reports, err := ScoreSnapshot(merged, Config{})
	if err != nil {
		t.Fatal(err)
	}
	sameReports(t, reports, one.Report())
	if r := reports[0]; r.Rows != 9000 || !r.Verdict || !r.Features[2].Drifted || r.Features[5].Missing == 0 {
		t.Errorf("newest window: %d rows, verdict %v, feature 2 drifted %v, feature 5 missing %d", r.Rows, r.Verdict, r.Features[2].Drifted, r.Features[5].Missing)
	}
	// The outputs: out[0] answers feature 2 and drifted with it; out[1] did not.
	if o := reports[0].Outputs; len(o) != 2 || o[0].Name != "out[0]" || !o[0].Drifted || o[1].Drifted || o[0].Rows != 9000 || o[0].PSI != reports[0].Features[2].PSI {
		t.Errorf("newest window's outputs: %+v", o)
	}
	if reports[1].Rows != 2500 || reports[2].Rows != 3000 {
		t.Errorf("older windows: %d and %d rows, want 2500 (node 0 alone) and 3000", reports[1].Rows, reports[2].Rows)
	}

	// The order of the snapshots does not matter, nor does merging a merge.
	again, err := Merge([]*Snapshot{snaps[2], merged.withoutWindows(), snaps[1], snaps[0]})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := ScoreSnapshot(again, Config{})
	if err != nil {
		t.Fatal(err)
	}
	sameReports(t, r2, reports)

	// A node whose windows carry no output sketches (it does not observe its model's outputs)
	// still merges: its features add, the outputs are the others'. In any order.
	bare := *nodes[1].Snapshot("anomaly")
	bare.Windows = slices.Clone(bare.Windows)
	for i := range bare.Windows {
		bare.Windows[i].Outputs = nil
	}
	for _, order := range [][]*Snapshot{{snaps[0], &bare, snaps[2]}, {&bare, snaps[2], snaps[0]}} {
		m, err := Merge(order)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := ScoreSnapshot(m, Config{})
		if err != nil {
			t.Fatal(err)
		}
		if rs[0].Rows != 9000 || rs[0].Outputs[0].Rows != 9000-4000 || rs[0].Features[2].PSI != reports[0].Features[2].PSI {
			t.Errorf("with node 1's outputs left out: %d rows, outputs of %d; feature 2 PSI %v, want %v", rs[0].Rows, rs[0].Outputs[0].Rows, rs[0].Features[2].PSI, reports[0].Features[2].PSI)
		}
	}
}

// withoutWindows is s with no window: a node that kept none.
func (s *Snapshot) withoutWindows() *Snapshot {
	c := *s
	c.Windows = nil
	return &c
}

// TestScoreSnapshotSettings: a snapshot carries the node's scoring settings, which score it
// unless the caller gives its own.
func TestScoreSnapshotSettings(t *testing.T) {
	spec := anomalySpec(t)
	p := profileOf(t, spec, 5000)
	w := spec.Width()
	m, _ := clockMonitor(t, p, Config{MinSamples: 10, Methods: map[string]string{p.Features[2].Name: MethodJS}, Thresholds: map[string]float64{MethodJS: 0.05}})
	m.Observe(rows(rand.New(rand.NewPCG(1, 9)), 400, w, 2, 0.5), w, nil)
	s := m.Snapshot("anomaly")
	if s.Scoring.MinSamples != 10 || s.Scoring.Methods[p.Features[2].Name] != MethodJS || s.Scoring.Methods[p.Features[0].Name] != MethodPSI ||
		s.Scoring.Thresholds[MethodJS] != 0.05 || s.Scoring.Thresholds[MethodPSI] != DefaultPSIThreshold || s.Scoring.Share != DefaultShare {
		t.Fatalf("scoring %+v", s.Scoring)
	}
	reps, err := ScoreSnapshot(s, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if f := reps[0].Features[2]; !reps[0].Verdict || f.Method != MethodJS || f.Threshold != 0.05 {
		t.Errorf("the node's settings: verdict %v, %+v", reps[0].Verdict, f)
	}
	sameReports(t, reps, m.Report())
	reps, err = ScoreSnapshot(s, Config{MinSamples: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if reps[0].Verdict {
		t.Error("min_samples 1000 over 400 rows: a verdict")
	}
}

// TestSnapshotRoundTrips: the protobuf and JSON forms give back the snapshot, field by field; the
// JSON's keys are snake_case; the protobuf encoding is stable.
func TestSnapshotRoundTrips(t *testing.T) {
	spec := anomalySpec(t)
	p := profileWithOutputs(t, spec, 2000)
	_, nodes := fleet(t, p, spec.Width())
	s := nodes[1].Snapshot("anomaly")
	pb, err := s.MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	fromPB, err := UnmarshalSnapshotProto(pb)
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := UnmarshalSnapshotJSON(js)
	if err != nil {
		t.Fatal(err)
	}
	for name, back := range map[string]*Snapshot{"protobuf": fromPB, "JSON": fromJSON} {
		if diff := snapshotDiff(s, back); diff != "" {
			t.Errorf("%s: %s", name, diff)
		}
	}
	again, err := fromPB.MarshalProto()
	if err != nil || !bytes.Equal(again, pb) {
		t.Errorf("re-encoding the decoded snapshot: %d bytes vs %d (%v)", len(again), len(pb), err)
	}
	for _, key := range []string{`"model":`, `"spec_fingerprint":`, `"profile":`, `"scoring":{"min_samples":500,"share":0.5,`, `"windows":[{"start":"2026-05-01T10:10:00Z"`, `"counts":[`, `"missing":`, `"sum":`, `"ddsketch":"`} {
		if !bytes.Contains(js, []byte(key)) {
			t.Errorf("the JSON has no %s", key)
		}
	}
	t.Logf("snapshot of %d windows x %d features: %d bytes protobuf, %d bytes JSON", len(s.Windows), len(p.Features), len(pb), len(js))

	// Strict JSON: unknown keys, trailing data, damage and size are refused.
	for name, b := range map[string][]byte{
		"unknown key":   bytes.Replace(js, []byte(`"model":`), []byte(`"modle":"x","model":`), 1),
		"trailing data": append(bytes.Clone(js), []byte(` {}`)...),
		"not an object": []byte(`[]`),
		"damaged":       bytes.Replace(js, []byte(`"counts":[`), []byte(`"counts":[-5,`), 1),
		"too large":     append(bytes.Clone(js), bytes.Repeat([]byte(" "), MaxSnapshotBytes)...),
	} {
		if _, err := UnmarshalSnapshotJSON(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// snapshotDiff describes how b differs from a ("" when it does not).
func snapshotDiff(a, b *Snapshot) string {
	switch {
	case a.Model != b.Model || a.Spec != b.Spec || a.Fingerprint != b.Fingerprint:
		return "names differ"
	case !sameProfile(a.Profile, b.Profile):
		return "profiles differ"
	case !a.Scoring.equal(b.Scoring):
		return "scoring differs: " + a.Scoring.String() + " vs " + b.Scoring.String()
	case len(a.Windows) != len(b.Windows):
		return "window counts differ"
	}
	for i := range a.Windows {
		x, y := &a.Windows[i], &b.Windows[i]
		if !x.Start.Equal(y.Start) || !x.End.Equal(y.End) || len(x.Features) != len(y.Features) || len(x.Outputs) != len(y.Outputs) {
			return "window " + x.Start.String() + " differs"
		}
		xs, ys := append(slices.Clip(x.Features), x.Outputs...), append(slices.Clip(y.Features), y.Outputs...)
		for j := range xs {
			f, g := &xs[j], &ys[j]
			if f.Name != g.Name || !equalInts(f.Counts, g.Counts) || f.Missing != g.Missing || f.Sum != g.Sum || !bytes.Equal(f.DDSketch, g.DDSketch) {
				return "window " + x.Start.String() + " feature " + f.Name + " differs"
			}
		}
	}
	return ""
}

// TestSnapshotSchema: MarshalProto's output is the message SnapshotProto documents: compiled,
// that schema decodes it field by field (protobuf-go's own decoder), and what protobuf-go
// encodes from it UnmarshalSnapshotProto decodes to the same snapshot; the ddsketch field is a
// datadog.sketches.DDSketch.
func TestSnapshotSchema(t *testing.T) {
	c := protocompile.Compiler{Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
		Accessor: protocompile.SourceAccessorFromMap(map[string]string{"drift.proto": SnapshotProto})})}
	files, err := c.Compile(context.Background(), "drift.proto")
	if err != nil {
		t.Fatalf("SnapshotProto does not compile: %v", err)
	}
	md := files[0].Messages().ByName("Snapshot")
	spec := anomalySpec(t)
	p := profileWithOutputs(t, spec, 2000)
	_, nodes := fleet(t, p, spec.Width())
	s := nodes[2].Snapshot("anomaly")
	b, err := s.MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	msg := dynamicpb.NewMessage(md)
	if err := (proto.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(b, msg); err != nil {
		t.Fatalf("protobuf-go cannot decode it with the schema: %v", err)
	}
	if u := msg.GetUnknown(); len(u) > 0 {
		t.Errorf("%d bytes of fields the schema does not name", len(u))
	}
	get := func(m protoreflect.Message, name string) protoreflect.Value {
		return m.Get(m.Descriptor().Fields().ByName(protoreflect.Name(name)))
	}
	wins := get(msg, "windows").List()
	if get(msg, "model").String() != "anomaly" || get(msg, "spec_fingerprint").String() != p.Fingerprint || wins.Len() != len(s.Windows) {
		t.Fatalf("decoded: model %q, fingerprint %q, %d windows", get(msg, "model").String(), get(msg, "spec_fingerprint").String(), wins.Len())
	}
	w0 := wins.Get(0).Message()
	if sec := get(get(w0, "start").Message(), "seconds").Int(); sec != s.Windows[0].Start.Unix() {
		t.Errorf("window 0 start: %d s, want %d", sec, s.Windows[0].Start.Unix())
	}
	f0 := get(w0, "features").List().Get(0).Message()
	counts := get(f0, "counts").List()
	if get(f0, "name").String() != p.Features[0].Name || counts.Len() != len(s.Windows[0].Features[0].Counts) || counts.Get(3).Int() != s.Windows[0].Features[0].Counts[3] {
		t.Errorf("window 0 feature 0: %v", f0)
	}
	var dd sketchpb.DDSketch
	if err := proto.Unmarshal(get(f0, "ddsketch").Bytes(), &dd); err != nil || dd.Mapping == nil {
		t.Errorf("the ddsketch field is not a DDSketch: %v", err)
	}
	if q := get(get(msg, "profile").Message(), "features").List().Get(1).Message(); get(q, "quantiles").List().Len() != len(quantileLevels) {
		t.Errorf("profile feature 1: %v", q)
	}
	if q := get(get(msg, "profile").Message(), "outputs").List(); q.Len() != 2 || get(q.Get(1).Message(), "name").String() != "out[1]" {
		t.Errorf("profile outputs: %v", q)
	}
	if o := get(w0, "outputs").List(); o.Len() != 2 || get(o.Get(0).Message(), "counts").List().Len() != len(s.Windows[0].Outputs[0].Counts) {
		t.Errorf("window 0 outputs: %v", o)
	}
	if th := get(get(msg, "scoring").Message(), "thresholds").Map(); th.Get(protoreflect.ValueOfString(MethodPSI).MapKey()).Float() != DefaultPSIThreshold {
		t.Errorf("scoring thresholds: %v", th)
	}
	// Back: protobuf-go's encoding of the same message (map order its own) decodes to s.
	other, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalSnapshotProto(other)
	if err != nil {
		t.Fatal(err)
	}
	if diff := snapshotDiff(s, back); diff != "" {
		t.Error(diff)
	}
	// Unpacked repeated scalars and unknown fields are read as proto3 parsers read them.
	unpacked := dynamicpb.NewMessage(md)
	proto.Merge(unpacked, msg)
	unpacked.ProtoReflect().SetUnknown(protoreflect.RawFields{0xf8, 0x06, 0x01}) // field 111, varint 1
	if b, err := proto.Marshal(unpacked); err != nil {
		t.Fatal(err)
	} else if _, err := UnmarshalSnapshotProto(b); err != nil {
		t.Errorf("an unknown field: %v", err)
	}
}

// TestMergeRefuses: snapshots that cannot merge are refused, naming both sources and what to do.
func TestMergeRefuses(t *testing.T) {
	spec := anomalySpec(t)
	p := profileOf(t, spec, 2000)
	w := spec.Width()
	data := rows(rand.New(rand.NewPCG(2, 2)), 600, w, -1, 0)
	snap := func(p *Profile, cfg Config, model, source string, at time.Duration) *Snapshot {
		m, now := clockMonitor(t, p, cfg)
		*now = t0.Add(at)
		m.Observe(data, w, nil)
		s := m.Snapshot(model)
		s.Source = source
		return s
	}
	a := snap(p, Config{}, "anomaly", "node-a", 0)
	other, err := features.LoadFile("../../examples/specs/placement.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b := mustBuilder(t, other)
	if err := b.Add(rows(rand.New(rand.NewPCG(3, 3)), 500, other.Size(), -1, 0)); err != nil {
		t.Fatal(err)
	}
	otherProfile, err := b.Profile()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		b    *Snapshot
		want []string
	}{
		{"another model", snap(p, Config{}, "bandwidth", "node-b", 0), []string{"node-b", "node-a", `model "bandwidth"`, "one model at a time"}},
		{"another spec", snap(otherProfile, Config{}, "anomaly", "node-b", 0), []string{"node-b", "node-a", "different versions of the model"}},
		{"another profile", snap(profileOf(t, spec, 3000), Config{}, "anomaly", "node-b", 0), []string{"node-b", "node-a", "different reference profiles", "one profile file"}},
		{"other settings", snap(p, Config{MinSamples: 50}, "anomaly", "node-b", 0), []string{"node-b", "min_samples 50", "node-a", "min_samples 500", "one drift configuration"}},
		{"another window length", snap(p, Config{Window: time.Minute}, "anomaly", "node-b", 0), []string{"node-b", "node-a", "drift.window differ"}},
		{"overlapping windows", snap(p, Config{Window: time.Minute}, "anomaly", "node-b", 2*time.Minute), []string{"node-b", "node-a", "overlaps", "drift.window differ"}},
	} {
		_, err := Merge([]*Snapshot{a, c.b})
		if err == nil {
			t.Errorf("%s: merged", c.name)
			continue
		}
		for _, s := range c.want {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: %v\n(wants %q)", c.name, err, s)
			}
		}
	}
	if _, err := Merge(nil); err == nil {
		t.Error("no snapshots: merged")
	}
}

func mustBuilder(t *testing.T, spec *features.Spec) *Builder {
	t.Helper()
	b, err := NewBuilder(spec, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSnapshotDamage: decoding refuses a snapshot whose parts disagree or are out of bounds.
func TestSnapshotDamage(t *testing.T) {
	spec := anomalySpec(t)
	p := profileOf(t, spec, 2000)
	w := spec.Width()
	m, now := clockMonitor(t, p, Config{})
	m.Observe(rows(rand.New(rand.NewPCG(4, 4)), 300, w, -1, 0), w, nil)
	*now = t0.Add(DefaultWindow)
	m.Observe(rows(rand.New(rand.NewPCG(4, 5)), 300, w, -1, 0), w, nil)
	finer, _ := ddsketch.LogCollapsingLowestDenseDDSketch(0.01, SketchBins)
	finer.Add(1)
	wider := newSketch(0).DD
	for range 5000 { // more values than the bins hold
		wider.Add(1)
	}
	for _, c := range []struct {
		name   string
		damage func(s *Snapshot)
		want   string
	}{
		{"no profile", func(s *Snapshot) { s.Profile = nil }, "no reference profile"},
		{"no model", func(s *Snapshot) { s.Model = "" }, "names no model"},
		{"fingerprint", func(s *Snapshot) { s.Fingerprint = "00" }, "damaged"},
		{"bins", func(s *Snapshot) { s.Windows[0].Features[1].Counts = s.Windows[0].Features[1].Counts[1:] }, "bin counts"},
		{"negative count", func(s *Snapshot) { s.Windows[0].Features[1].Counts[0] = -1 }, "negative"},
		{"huge count", func(s *Snapshot) { s.Windows[0].Features[1].Counts[0] = math.MaxInt64 }, "more than"},
		{"feature order", func(s *Snapshot) {
			s.Windows[0].Features[0], s.Windows[0].Features[1] = s.Windows[0].Features[1], s.Windows[0].Features[0]
		}, "the profile's feature 0"},
		{"another accuracy", func(s *Snapshot) { s.Windows[0].Features[0].DDSketch = encodeDD(finer) }, "not this sidecar's"},
		{"sketch and bins disagree", func(s *Snapshot) { s.Windows[0].Features[0].DDSketch = encodeDD(wider) }, "disagree"},
		{"not a sketch", func(s *Snapshot) { s.Windows[0].Features[0].DDSketch = []byte{0xff, 0xff} }, "does not decode"},
		{"two windows at once", func(s *Snapshot) { s.Windows[1].Start, s.Windows[1].End = s.Windows[0].Start, s.Windows[0].End }, "two windows"},
		{"empty window", func(s *Snapshot) { s.Windows[0].End = s.Windows[0].Start }, "not after its start"},
		{"unknown method", func(s *Snapshot) { s.Scoring.Methods[p.Features[0].Name] = "ks" }, "scoring"},
		{"sum", func(s *Snapshot) { s.Windows[0].Features[0].Sum = math.Inf(1) }, "not finite"},
	} {
		s := m.Snapshot("anomaly")
		// A deep enough copy: the monitor's profile is shared and must stay as it is.
		prof := *s.Profile
		s.Profile = &prof
		c.damage(s)
		var err error
		if s.Profile != nil && s.Model != "" {
			var b []byte
			if b, err = s.MarshalProto(); err == nil {
				_, err = UnmarshalSnapshotProto(b)
			}
		} else {
			_, err = s.sketches()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v (want %q)", c.name, err, c.want)
		}
		if _, merr := Merge([]*Snapshot{s}); merr == nil {
			t.Errorf("%s: merged", c.name)
		}
	}
}

// FuzzUnmarshalSnapshotProto: any input decodes or is refused, never panics; what decodes
// encodes again to what decodes the same.
func FuzzUnmarshalSnapshotProto(f *testing.F) {
	spec := anomalySpec(f)
	p := profileOf(f, spec, 500)
	m, now := clockMonitor(f, p, Config{})
	m.Observe(withMissing(rows(rand.New(rand.NewPCG(5, 5)), 8, spec.Width(), -1, 0), spec.Width(), 2), spec.Width(), nil)
	*now = t0.Add(DefaultWindow)
	m.Observe(rows(rand.New(rand.NewPCG(5, 6)), 2, spec.Width(), -1, 0), spec.Width(), nil)
	b, err := m.Snapshot("anomaly").MarshalProto()
	f.Logf("seed: %d bytes", len(b))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:len(b)/2])
	// A profile with outputs (and its model's digest), a window with their sketches.
	po := profileWithOutputs(f, spec, 300)
	po.ModelDigest = "sha256:ab"
	mo, _ := clockMonitor(f, po, Config{Outputs: testLayout})
	data := rows(rand.New(rand.NewPCG(5, 7)), 4, spec.Width(), -1, 0)
	mo.Observe(data, spec.Width(), rowOutputs(data, spec.Width()))
	bo, err := mo.Snapshot("anomaly").MarshalProto()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(bo)
	f.Add([]byte{})
	f.Add([]byte{0x32, 0x00})             // an empty window
	f.Add([]byte{0x0b, 0x0c, 0x0a, 0x00}) // a group
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := UnmarshalSnapshotProto(b)
		if err != nil {
			return
		}
		again, err := s.MarshalProto()
		if err != nil {
			t.Fatalf("a decoded snapshot does not encode: %v", err)
		}
		back, err := UnmarshalSnapshotProto(again)
		if err != nil {
			t.Fatalf("a re-encoded snapshot does not decode: %v", err)
		}
		if diff := snapshotDiff(s, back); diff != "" {
			t.Fatal(diff)
		}
		if _, err := ScoreSnapshot(s, Config{}); err != nil {
			t.Fatalf("a decoded snapshot does not score: %v", err)
		}
	})
}
