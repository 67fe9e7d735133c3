package drift

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/pb/sketchpb"
	"github.com/DataDog/sketches-go/ddsketch/store"
	"google.golang.org/protobuf/proto"
)

// Bounds of the wire form, checked by UnmarshalSnapshotJSON, UnmarshalSnapshotProto, Merge and
// ScoreSnapshot.
const (
	// MaxSnapshotBytes bounds an encoded snapshot, JSON or protobuf. A feature's sketch in a
	// window takes about 2.5 KiB in protobuf (a third more in JSON): 64 MiB holds 12 windows of
	// about 2,000 features.
	MaxSnapshotBytes = 64 << 20
	// MaxSketchBytes bounds one feature's DDSketch in its protobuf encoding (the sidecar's own
	// take at most about 2.3 KiB: two stores of SketchBins bins).
	MaxSketchBytes = 64 << 10
	// MaxWindows bounds the windows of a snapshot, and MaxFeatures the features of its profile
	// (features.Spec's own bound).
	MaxWindows  = 10000
	MaxFeatures = 4096
	// MaxRows bounds a feature's rows in a window (and a reference's): up to 2^53 a sketch's
	// float64 counts stay exact.
	MaxRows = 1 << 53
)

// maxWireBins is the most bins of a reference feature (the Builder's bound).
const maxWireBins = 1000

// Snapshot is the wire form of one model's drift sketches on one node: every kept window's
// sketches, with the reference profile they are scored against and the node's scoring settings,
// so that whoever merges snapshots of many nodes (Merge) can score the fleet's windows exactly as
// one node with all their rows would (ScoreSnapshot).
//
// It has two encodings of the same fields:
//   - JSON (encoding/json with the tags below, what GET /v1/drift/sketches?model=M serves by
//     default): snake_case keys; times in RFC 3339; DDSketch in base64 (standard, padded). Read
//     it with UnmarshalSnapshotJSON, which refuses unknown keys.
//   - protobuf (MarshalProto, UnmarshalSnapshotProto, what the route serves for Accept:
//     application/x-protobuf): the message Snapshot of SnapshotProto.
//
// A Snapshot is plain data; the methods that read it (MarshalProto, Merge, ScoreSnapshot) do not
// change it and may run concurrently. One made by Monitor.Snapshot shares the monitor's Profile,
// which nobody may change.
type Snapshot struct {
	// Model is the model's name in the node's config.
	Model string `json:"model"`
	// Spec and Fingerprint name the feature spec of the model's rows (the profile's).
	Spec        string `json:"spec"`
	Fingerprint string `json:"spec_fingerprint"`
	// Profile is the reference the windows are scored against.
	Profile *Profile `json:"profile"`
	// Scoring is how the node scores a window.
	Scoring Scoring `json:"scoring"`
	// Windows are the kept windows, newest first (the current one, partly filled, first).
	Windows []WireWindow `json:"windows"`

	// Source names where the snapshot was read from (a URL, a file), for Merge's errors. It is
	// not encoded.
	Source string `json:"-"`
}

// Scoring is a node's scoring settings (its Config's, defaults applied): each feature's method
// and each method's threshold are given, so that a merger scores as the node does whatever its
// own defaults.
type Scoring struct {
	MinSamples int64              `json:"min_samples"`
	Share      float64            `json:"share"`
	Methods    map[string]string  `json:"methods"`
	Thresholds map[string]float64 `json:"thresholds"`
}

// WireWindow is one window's sketches, one per feature in the profile's order, and one per
// output of the profile.
type WireWindow struct {
	Start    time.Time    `json:"start"`
	End      time.Time    `json:"end"`
	Features []WireSketch `json:"features"`
	Outputs  []WireSketch `json:"outputs,omitempty"`
}

// WireSketch is one feature's (or output's) Sketch in a window.
type WireSketch struct {
	Name string `json:"name"`
	// Counts are the finite values per reference bin (the profile's Edges); Missing counts the
	// values that were not finite; Sum is the sum of the finite values (merged by float
	// addition: exact up to rounding, and not used in scores).
	Counts  []int64 `json:"counts"`
	Missing int64   `json:"missing"`
	Sum     float64 `json:"sum"`
	// DDSketch is the DDSketch of the finite values in its protobuf encoding (sketches-go's
	// datadog.sketches.DDSketch: a logarithmic mapping of relative accuracy SketchAccuracy, no
	// interpolation, index offset 0; stores of at most SketchBins bins, collapsing the lowest).
	DDSketch []byte `json:"ddsketch"`
}

// SnapshotProto is the protobuf schema (proto3) of MarshalProto's encoding, what a node serves
// at GET /v1/drift/sketches?model=M with Accept: application/x-protobuf. Field numbers are
// stable: fields are only ever added. UnmarshalSnapshotProto skips unknown fields and takes
// repeated scalars packed or not, as proto3 parsers do.
const SnapshotProto = `syntax = "proto3";

package novacron.sidecar.drift.v1;

import "google/protobuf/timestamp.proto";

// Snapshot is one model's drift sketches on one node (drift.Snapshot).
message Snapshot {
  string model = 1;
  string spec = 2;
  string spec_fingerprint = 3;
  Profile profile = 4;
  Scoring scoring = 5;
  repeated Window windows = 6;  // newest first
}

message Scoring {
  int64 min_samples = 1;
  double share = 2;
  map<string, string> methods = 3;     // feature or output -> psi | js | wasserstein
  map<string, double> thresholds = 4;  // method -> threshold
}

message Window {
  google.protobuf.Timestamp start = 1;
  google.protobuf.Timestamp end = 2;
  repeated FeatureSketch features = 3;  // the profile's features, in order
  repeated FeatureSketch outputs = 4;   // the profile's outputs, in order
}

message FeatureSketch {
  string name = 1;
  repeated int64 counts = 2;  // per reference bin
  int64 missing = 3;          // values not finite
  double sum = 4;             // sum of the finite values
  // A datadog.sketches.DDSketch (sketches-go's ddsketch.proto), serialized: a reader may declare
  // this field with that message type instead, the wire form is the same.
  bytes ddsketch = 5;
}

// Profile is the reference profile (drift.Profile, as "sidecar profile build" writes it).
message Profile {
  int32 version = 1;
  string spec = 2;
  string spec_fingerprint = 3;
  int64 rows = 4;
  repeated Reference features = 5;
  // The model's output columns ("forecast[0]", "score"), when the profile was built with the
  // model: the reference of prediction drift.
  repeated Reference outputs = 6;
  string model_digest = 7;  // the model whose answers outputs profiles ("sha256:...")
}

message Reference {
  string name = 1;
  repeated double edges = 2;
  repeated int64 counts = 3;
  int64 missing = 4;
  double min = 5;
  double max = 6;
  double mean = 7;
  double std = 8;
  repeated double quantiles = 9;  // at 0.5%, 1.5%, ..., 99.5%
}
`

// Snapshot returns the monitor's sketches as model's snapshot: every kept window, newest first.
// It may be called concurrently with Observe.
func (m *Monitor) Snapshot(model string) *Snapshot {
	s := &Snapshot{Model: model, Spec: m.p.Spec, Fingerprint: m.p.Fingerprint, Profile: m.p, Scoring: m.scoring(),
		Windows: []WireWindow{}}
	for _, ws := range m.Sketches() {
		s.Windows = append(s.Windows, wireWindow(m.p, ws))
	}
	return s
}

// scoring is the monitor's Scoring: every feature's method and every method's threshold.
func (m *Monitor) scoring() Scoring {
	sc := Scoring{MinSamples: m.cfg.MinSamples, Share: m.cfg.Share, Methods: map[string]string{}, Thresholds: map[string]float64{}}
	for _, r := range m.cols {
		sc.Methods[r.Name] = MethodPSI
		if mm, ok := m.cfg.Methods[r.Name]; ok {
			sc.Methods[r.Name] = mm
		}
	}
	for _, method := range Methods {
		sc.Thresholds[method] = DefaultThreshold(method)
		if t, ok := m.cfg.Thresholds[method]; ok {
			sc.Thresholds[method] = t
		}
	}
	return sc
}

// config is the Config of the scoring settings.
func (sc Scoring) config() Config {
	return Config{MinSamples: sc.MinSamples, Share: sc.Share, Methods: sc.Methods, Thresholds: sc.Thresholds}
}

func (sc Scoring) equal(o Scoring) bool {
	return sc.MinSamples == o.MinSamples && sc.Share == o.Share && maps.Equal(sc.Methods, o.Methods) && maps.Equal(sc.Thresholds, o.Thresholds)
}

// String is the settings on one line, as sidecar drift merge prints them: min_samples, share,
// the thresholds, and the features whose method is not PSI.
func (sc Scoring) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "min_samples %d, share %v, thresholds", sc.MinSamples, sc.Share)
	for _, m := range slices.Sorted(maps.Keys(sc.Thresholds)) {
		fmt.Fprintf(&b, " %s %v", m, sc.Thresholds[m])
	}
	var named []string
	for _, f := range slices.Sorted(maps.Keys(sc.Methods)) {
		if sc.Methods[f] != MethodPSI {
			named = append(named, f+" "+sc.Methods[f])
		}
	}
	if len(named) > 0 {
		fmt.Fprintf(&b, ", methods %s (others psi)", strings.Join(named, ", "))
	}
	return b.String()
}

func wireWindow(p *Profile, ws WindowSketches) WireWindow {
	wire := func(refs []Reference, sketches []Sketch) []WireSketch {
		out := make([]WireSketch, len(sketches))
		for j := range sketches {
			s := &sketches[j]
			out[j] = WireSketch{Name: refs[j].Name, Counts: s.Counts, Missing: s.Missing, Sum: s.Sum, DDSketch: encodeDD(s.DD)}
		}
		return out
	}
	w := WireWindow{Start: ws.Start, End: ws.End, Features: wire(p.Features, ws.Features)}
	if len(ws.Outputs) > 0 {
		w.Outputs = wire(p.Outputs, ws.Outputs)
	}
	return w
}

func encodeDD(dd *ddsketch.DDSketch) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(dd.ToProto())
	if err != nil {
		// sketchpb's messages hold numbers only: marshalling them cannot fail.
		panic(fmt.Sprintf("drift: encoding a DDSketch: %v", err))
	}
	return b
}

// decodeDD decodes a DDSketch in its protobuf encoding into one of the sidecar's own (its
// mapping and collapsing stores), refusing another mapping, counts that are not whole and
// non-negative, and bins beyond the mapping's range.
func decodeDD(b []byte) (*ddsketch.DDSketch, error) {
	if len(b) > MaxSketchBytes {
		return nil, fmt.Errorf("its DDSketch is %d bytes, more than %d", len(b), MaxSketchBytes)
	}
	var pb sketchpb.DDSketch
	if err := proto.Unmarshal(b, &pb); err != nil {
		return nil, fmt.Errorf("its DDSketch does not decode: %v", err)
	}
	out := newSketch(0).DD
	want := out.IndexMapping.ToProto()
	switch got := pb.Mapping; {
	case got == nil:
		return nil, errors.New("its DDSketch has no index mapping")
	case got.Gamma != want.Gamma || got.IndexOffset != want.IndexOffset || got.Interpolation != want.Interpolation:
		return nil, fmt.Errorf("its DDSketch's mapping (gamma %v, offset %v, interpolation %v) is not this sidecar's (gamma %v: relative accuracy %v)",
			got.Gamma, got.IndexOffset, got.Interpolation, want.Gamma, SketchAccuracy)
	}
	lo := out.IndexMapping.Index(out.IndexMapping.MinIndexableValue())
	hi := out.IndexMapping.Index(out.IndexMapping.MaxIndexableValue())
	count := func(c float64) error {
		if !(c >= 0) || c > MaxRows || c != math.Trunc(c) {
			return fmt.Errorf("its DDSketch holds a count of %v, not a whole number of values", c)
		}
		return nil
	}
	for _, st := range []*sketchpb.Store{pb.PositiveValues, pb.NegativeValues} {
		if st == nil {
			continue
		}
		for i, c := range st.BinCounts {
			if int(i) < lo || int(i) > hi {
				return nil, fmt.Errorf("its DDSketch has a bin at index %d, beyond the mapping's %d..%d", i, lo, hi)
			}
			if err := count(c); err != nil {
				return nil, err
			}
		}
		if n := len(st.ContiguousBinCounts); n > 0 && (int(st.ContiguousBinIndexOffset) < lo || int(st.ContiguousBinIndexOffset)+n-1 > hi) {
			return nil, fmt.Errorf("its DDSketch has bins at indices %d..%d, beyond the mapping's %d..%d", st.ContiguousBinIndexOffset, int(st.ContiguousBinIndexOffset)+n-1, lo, hi)
		}
		for _, c := range st.ContiguousBinCounts {
			if err := count(c); err != nil {
				return nil, err
			}
		}
	}
	if err := count(pb.ZeroCount); err != nil {
		return nil, err
	}
	dd, err := ddsketch.FromProtoWithStoreProvider(&pb, func() store.Store { return store.NewCollapsingLowestDenseStore(SketchBins) })
	if err != nil {
		return nil, fmt.Errorf("its DDSketch: %v", err)
	}
	if err := out.MergeWith(dd); err != nil {
		return nil, fmt.Errorf("its DDSketch: %v", err)
	}
	if c := out.GetCount(); c > MaxRows {
		return nil, fmt.Errorf("its DDSketch holds %v values, more than %d", c, int64(MaxRows))
	}
	return out, nil
}

// sketch decodes w into a Sketch of bins bins, checking it.
func (w *WireSketch) sketch(bins int) (Sketch, error) {
	if len(w.Counts) != bins {
		return Sketch{}, fmt.Errorf("%d bin counts, the reference has %d bins", len(w.Counts), bins)
	}
	total, err := sumCounts(w.Counts)
	if err != nil {
		return Sketch{}, err
	}
	switch {
	case w.Missing < 0 || w.Missing > MaxRows-total:
		return Sketch{}, fmt.Errorf("missing count %d is negative, or with the bins' %d more than %d", w.Missing, total, int64(MaxRows))
	case math.IsNaN(w.Sum) || math.IsInf(w.Sum, 0):
		return Sketch{}, fmt.Errorf("sum %v is not finite", w.Sum)
	}
	dd, err := decodeDD(w.DDSketch)
	if err != nil {
		return Sketch{}, err
	}
	// Every finite value is binned and sketched, except those beyond the sketch's range.
	if c := dd.GetCount(); c > float64(total) {
		return Sketch{}, fmt.Errorf("its DDSketch holds %v values, its bins %d: they disagree", c, total)
	}
	return Sketch{Counts: slices.Clone(w.Counts), Missing: w.Missing, Sum: w.Sum, DD: dd}, nil
}

// sumCounts sums counts, each and all within 0..MaxRows.
func sumCounts(counts []int64) (int64, error) {
	var n int64
	for i, c := range counts {
		if c < 0 || c > MaxRows-n {
			return 0, fmt.Errorf("bin %d count %d is negative, or the counts add up to more than %d", i, c, int64(MaxRows))
		}
		n += c
	}
	return n, nil
}

// checkProfile checks a profile carried by a snapshot: well formed, finite, bounded. (A node
// checked it against its spec when it loaded it; a merger has no spec.)
func checkProfile(p *Profile) error {
	switch {
	case p == nil:
		return errors.New("drift: the snapshot has no reference profile")
	case p.Version != ProfileVersion:
		return fmt.Errorf("drift: the snapshot's profile is of version %d, this sidecar reads %d", p.Version, ProfileVersion)
	case p.Fingerprint == "" || !utf8.ValidString(p.Fingerprint) || !utf8.ValidString(p.Spec) || !utf8.ValidString(p.ModelDigest):
		return errors.New("drift: the snapshot's profile names no spec fingerprint (or not in UTF-8)")
	case len(p.Features) == 0 || len(p.Features) > MaxFeatures:
		return fmt.Errorf("drift: the snapshot's profile has %d features, want 1 to %d", len(p.Features), MaxFeatures)
	case len(p.Outputs) > MaxFeatures:
		return fmt.Errorf("drift: the snapshot's profile has %d outputs, want at most %d", len(p.Outputs), MaxFeatures)
	case p.Rows < 0:
		return fmt.Errorf("drift: the snapshot's profile has %d rows", p.Rows)
	}
	cols := p.columns()
	seen := make(map[string]bool, len(cols))
	for j := range cols {
		r := &cols[j]
		bad := func(format string, a ...any) error {
			if j >= len(p.Features) {
				return fmt.Errorf("drift: the snapshot's profile, output %d %q: %s", j-len(p.Features), r.Name, fmt.Sprintf(format, a...))
			}
			return fmt.Errorf("drift: the snapshot's profile, feature %d %q: %s", j, r.Name, fmt.Sprintf(format, a...))
		}
		switch {
		case r.Name == "" || !utf8.ValidString(r.Name):
			return bad("no name (or not in UTF-8)")
		case seen[r.Name]:
			return bad("named twice")
		case len(r.Counts) != len(r.Edges)+1 || len(r.Counts) > maxWireBins:
			return bad("%d counts for %d edges (at most %d bins)", len(r.Counts), len(r.Edges), maxWireBins)
		case len(r.Quantiles) != len(quantileLevels):
			return bad("%d quantiles, want %d", len(r.Quantiles), len(quantileLevels))
		case !slices.IsSorted(r.Edges) || !finite(r.Edges...) || !finite(r.Quantiles...) || !finite(r.Min, r.Max, r.Mean, r.Std):
			return bad("edges not ascending, or values not finite")
		case r.Missing < 0 || r.Missing > MaxRows:
			return bad("missing count %d", r.Missing)
		}
		seen[r.Name] = true
		total, err := sumCounts(r.Counts)
		if err != nil {
			return bad("%v", err)
		}
		if total == 0 {
			return bad("no values")
		}
	}
	return nil
}

func finite(vs ...float64) bool {
	for _, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}

// sameProfile reports whether two profiles are the same reference.
func sameProfile(a, b *Profile) bool {
	if a == b {
		return true
	}
	if a.Version != b.Version || a.Spec != b.Spec || a.Fingerprint != b.Fingerprint || a.Rows != b.Rows || len(a.Features) != len(b.Features) ||
		len(a.Outputs) != len(b.Outputs) || a.ModelDigest != b.ModelDigest {
		return false
	}
	ac, bc := a.columns(), b.columns()
	for j := range ac {
		x, y := &ac[j], &bc[j]
		if x.Name != y.Name || x.Missing != y.Missing || x.Min != y.Min || x.Max != y.Max || x.Mean != y.Mean || x.Std != y.Std ||
			!slices.Equal(x.Edges, y.Edges) || !slices.Equal(x.Counts, y.Counts) || !slices.Equal(x.Quantiles, y.Quantiles) {
			return false
		}
	}
	return true
}

// name is how errors name the i-th of the snapshots merged.
func (s *Snapshot) name(i int) string {
	if s != nil && s.Source != "" {
		return s.Source
	}
	return fmt.Sprintf("snapshot %d", i+1)
}

// sketches checks s and decodes its windows, newest first.
func (s *Snapshot) sketches() ([]WindowSketches, error) {
	if s == nil {
		return nil, errors.New("drift: no snapshot")
	}
	if s.Model == "" || !utf8.ValidString(s.Model) {
		return nil, errors.New("drift: the snapshot names no model (or not in UTF-8)")
	}
	if err := checkProfile(s.Profile); err != nil {
		return nil, err
	}
	p := s.Profile
	if s.Fingerprint != p.Fingerprint || s.Spec != p.Spec {
		return nil, fmt.Errorf("drift: the snapshot is of spec %q %.12s, its profile of spec %q %.12s: it is damaged", s.Spec, s.Fingerprint, p.Spec, p.Fingerprint)
	}
	if err := s.Scoring.config().Validate(p); err != nil {
		return nil, fmt.Errorf("drift: the snapshot's scoring settings: %w", err)
	}
	for m, t := range s.Scoring.Thresholds {
		if math.IsInf(t, 0) {
			return nil, fmt.Errorf("drift: the snapshot's scoring settings: thresholds[%s] is not finite", m)
		}
	}
	if len(s.Windows) > MaxWindows {
		return nil, fmt.Errorf("drift: the snapshot has %d windows, more than %d", len(s.Windows), MaxWindows)
	}
	out := make([]WindowSketches, 0, len(s.Windows))
	for i := range s.Windows {
		w := &s.Windows[i]
		if !w.End.After(w.Start) {
			return nil, fmt.Errorf("drift: window %d ends at %s, not after its start %s", i, stamp(w.End), stamp(w.Start))
		}
		ws := WindowSketches{Start: w.Start, End: w.End}
		var err error
		if ws.Features, err = decodeSketches(w, "feature", w.Features, p.Features); err != nil {
			return nil, err
		}
		// A window of a profile with outputs holds their sketches, or none (a node that does
		// not observe its model's outputs).
		if len(w.Outputs) > 0 {
			if ws.Outputs, err = decodeSketches(w, "output", w.Outputs, p.Outputs); err != nil {
				return nil, err
			}
		}
		out = append(out, ws)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.After(out[j].Start) })
	for i := 1; i < len(out); i++ {
		if newer, older := out[i-1], out[i]; older.End.After(newer.Start) {
			if older.Start.Equal(newer.Start) {
				return nil, fmt.Errorf("drift: the snapshot has two windows starting at %s", stamp(older.Start))
			}
			return nil, fmt.Errorf("drift: the snapshot's windows %s..%s and %s..%s overlap", stamp(older.Start), stamp(older.End), stamp(newer.Start), stamp(newer.End))
		}
	}
	return out, nil
}

// decodeSketches decodes and checks a window's sketches of one kind (feature, output), one per
// reference in refs.
func decodeSketches(w *WireWindow, kind string, wire []WireSketch, refs []Reference) ([]Sketch, error) {
	if len(wire) != len(refs) {
		return nil, fmt.Errorf("drift: window %s has %d %s sketches, the profile %d %ss", stamp(w.Start), len(wire), kind, len(refs), kind)
	}
	out := make([]Sketch, len(refs))
	for j := range wire {
		f := &wire[j]
		if f.Name != refs[j].Name {
			return nil, fmt.Errorf("drift: window %s: sketch %d is of %s %q, the profile's %s %d is %q", stamp(w.Start), j, kind, f.Name, kind, j, refs[j].Name)
		}
		var err error
		if out[j], err = f.sketch(len(refs[j].Counts)); err != nil {
			return nil, fmt.Errorf("drift: window %s, %s %s: %w", stamp(w.Start), kind, f.Name, err)
		}
	}
	return out, nil
}

func stamp(t time.Time) string { return t.Format(time.RFC3339Nano) }

// Merge merges snapshots of one model taken on many nodes: windows with the same start are
// merged exactly (counts added, DDSketches merged), windows only some have are kept; the result
// lists them newest first. It refuses snapshots of different models, of different specs or
// reference profiles, with different scoring settings, or whose windows differ in length or
// overlap without coinciding (nodes with different drift.window), naming the snapshots (by
// Source) in its error. The result is a new Snapshot with the first one's profile.
func Merge(snaps []*Snapshot) (*Snapshot, error) {
	if len(snaps) == 0 {
		return nil, errors.New("drift: no snapshots to merge")
	}
	type group struct {
		ws   WindowSketches
		from string
	}
	groups := map[[2]int64]*group{}
	first := snaps[0]
	for i, s := range snaps {
		name := s.name(i)
		wins, err := s.sketches()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if i > 0 {
			fname := first.name(0)
			switch {
			case s.Model != first.Model:
				return nil, fmt.Errorf("drift: %s is a snapshot of model %q, %s of model %q: merge the snapshots of one model at a time", name, s.Model, fname, first.Model)
			case s.Fingerprint != first.Fingerprint:
				return nil, fmt.Errorf("drift: %s's model %s reads spec %q %.12s, %s's spec %q %.12s: the nodes run different versions of the model; merge those of one version",
					name, s.Model, s.Spec, s.Fingerprint, fname, first.Spec, first.Fingerprint)
			case !sameProfile(s.Profile, first.Profile):
				return nil, fmt.Errorf("drift: %s and %s score model %s against different reference profiles (of %d and %d rows) of the same spec: give the nodes one profile file (drift.profile)",
					name, fname, s.Model, s.Profile.Rows, first.Profile.Rows)
			case !s.Scoring.equal(first.Scoring):
				return nil, fmt.Errorf("drift: %s scores with %s; %s with %s: give the nodes one drift configuration",
					name, s.Scoring, fname, first.Scoring)
			}
		}
		for _, w := range wins {
			k := [2]int64{w.Start.Unix(), int64(w.Start.Nanosecond())}
			g := groups[k]
			if g == nil {
				groups[k] = &group{ws: w, from: name}
				continue
			}
			if !g.ws.End.Equal(w.End) {
				return nil, fmt.Errorf("drift: the window starting at %s ends at %s in %s, at %s in %s: the nodes' drift.window differ; give them one",
					stamp(w.Start), stamp(g.ws.End), g.from, stamp(w.End), name)
			}
			// Output sketches merge where both have them; a window of a node that did not
			// observe outputs leaves them out, and the merged window keeps the others'.
			if len(g.ws.Outputs) == 0 && len(w.Outputs) > 0 {
				g.ws.Outputs = w.Outputs
				w.Outputs = nil
			}
			cols := first.Profile.columns()
			for j := range cols {
				var a, b *Sketch
				switch k := j - len(w.Features); {
				case k < 0:
					a, b = &g.ws.Features[j], &w.Features[j]
				case k < len(w.Outputs):
					a, b = &g.ws.Outputs[k], &w.Outputs[k]
				default:
					continue
				}
				if a.Rows() > MaxRows-b.Rows() {
					return nil, fmt.Errorf("drift: the window starting at %s holds more than %d rows of %s", stamp(w.Start), int64(MaxRows), cols[j].Name)
				}
				if err := a.Merge(b); err != nil {
					return nil, fmt.Errorf("drift: merging %s's window %s: %w", name, stamp(w.Start), err)
				}
			}
		}
	}
	all := slices.Collect(maps.Values(groups))
	sort.Slice(all, func(i, j int) bool { return all[i].ws.Start.After(all[j].ws.Start) })
	for i := 1; i < len(all); i++ {
		if newer, older := all[i-1], all[i]; older.ws.End.After(newer.ws.Start) {
			return nil, fmt.Errorf("drift: window %s..%s of %s overlaps window %s..%s of %s: the nodes' drift.window differ; give them one",
				stamp(older.ws.Start), stamp(older.ws.End), older.from, stamp(newer.ws.Start), stamp(newer.ws.End), newer.from)
		}
	}
	out := &Snapshot{Model: first.Model, Spec: first.Spec, Fingerprint: first.Fingerprint, Profile: first.Profile,
		Scoring: first.Scoring, Windows: make([]WireWindow, 0, len(all))}
	for _, g := range all {
		out.Windows = append(out.Windows, wireWindow(first.Profile, g.ws))
	}
	return out, nil
}

// ScoreSnapshot scores each of s's windows (newest first) against its profile, as
// Monitor.Score does. cfg's zero scoring fields (MinSamples, Share, Methods, Thresholds) take
// the snapshot's settings, the node's; its Window, Keep and Now are not used.
func ScoreSnapshot(s *Snapshot, cfg Config) ([]WindowReport, error) {
	wins, err := s.sketches()
	if err != nil {
		return nil, err
	}
	if cfg.MinSamples == 0 {
		cfg.MinSamples = s.Scoring.MinSamples
	}
	if cfg.Share == 0 {
		cfg.Share = s.Scoring.Share
	}
	if cfg.Methods == nil {
		cfg.Methods = s.Scoring.Methods
	}
	if cfg.Thresholds == nil {
		cfg.Thresholds = s.Scoring.Thresholds
	}
	m, err := NewMonitor(s.Profile, cfg)
	if err != nil {
		return nil, err
	}
	out := make([]WindowReport, len(wins))
	for i, w := range wins {
		out[i] = m.Score(w)
	}
	return out, nil
}

// UnmarshalSnapshotJSON decodes a snapshot's JSON form, strictly (unknown keys, trailing data
// and more than MaxSnapshotBytes are errors), and checks it as Merge does.
func UnmarshalSnapshotJSON(b []byte) (*Snapshot, error) {
	if len(b) > MaxSnapshotBytes {
		return nil, fmt.Errorf("drift: the snapshot is %d bytes, more than %d", len(b), MaxSnapshotBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Snapshot
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("drift: the snapshot's JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("drift: the snapshot's JSON: data after the object")
	}
	if _, err := s.sketches(); err != nil {
		return nil, err
	}
	return &s, nil
}
