// Package migrate holds what a migration between two targets decides with: the rules that say
// whether the baseline's and the candidate's NovaCron answers to the same call agree, and the
// small statistics (confidence intervals, quantiles, a window of recent values) its gates use.
//
// Answers are compared as decoded protobuf messages (package aipb): a JSON answer and a protobuf
// answer are both decoded into the same proto types first, so proto3 JSON's dropped zero values
// (a score of 0, is_anomaly false, an empty string or list) compare equal to explicit zeros.
//
// Nothing here panics, whatever the input: nil answers, nil list elements, empty lists, NaN and
// infinite values are all handled and documented. A comparison that agrees allocates nothing
// (but for Placement with more than 32 candidates, which builds a map); one that disagrees
// allocates its Fields and Detail.
package migrate

import (
	"errors"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf8"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// Defaults of Tolerances, taken by WithDefaults for zero fields. They are tight enough that an
// answer off by 1% disagrees (for forecast values of magnitude at least about 1e-4 and anomaly
// scores of at least 0.01) while identical answers, and answers that differ only by
// floating-point noise (a different BLAS, batch size or thread count), agree.
const (
	// DefaultAbs is the absolute part of the forecast tolerance: a floor for values near 0.
	DefaultAbs = 1e-6
	// DefaultRel is the relative part of the forecast tolerance, 0.01% of the baseline's value.
	DefaultRel = 1e-4
	// DefaultScore is the absolute tolerance on anomaly scores.
	DefaultScore = 1e-4
	// DefaultMinTau is the least Kendall's tau between the two placement rankings: with 10
	// candidates up to two adjacent swaps pass (tau 0.956, 0.911) and three fail (0.867); with
	// 3 candidates any swap fails (0.333).
	DefaultMinTau = 0.9
)

// Tolerances say when two answers agree. Zero fields take the Default* constants (see
// WithDefaults), so the zero Tolerances is the default one. A field cannot be set to exactly 0
// (that is "default"): for an exact comparison use a tiny positive value such as
// math.SmallestNonzeroFloat64; to accept any placement order set MinTau to -1.
type Tolerances struct {
	// Abs and Rel: a forecast step b agrees with baseline step a when |a-b| <= Abs + Rel*|a|
	// (numpy.isclose's rule, relative to the baseline). +Inf accepts any finite difference
	// (one that does not overflow float64) between finite values.
	Abs, Rel float64
	// Score: anomaly scores agree within this absolute difference. +Inf accepts any finite
	// difference.
	Score float64
	// MinTau: placements agree when their best node is the same and Kendall's tau of the two
	// rankings is at least MinTau, in [-1, 1].
	MinTau float64
}

// WithDefaults returns t with each zero field replaced by its Default* constant. Other values,
// including invalid ones, are kept: Validate reports them.
func (t Tolerances) WithDefaults() Tolerances {
	if t.Abs == 0 {
		t.Abs = DefaultAbs
	}
	if t.Rel == 0 {
		t.Rel = DefaultRel
	}
	if t.Score == 0 {
		t.Score = DefaultScore
	}
	if t.MinTau == 0 {
		t.MinTau = DefaultMinTau
	}
	return t
}

// Validate reports every invalid field of t (errors.Join of one error each, naming the field as
// in Go, e.g. "Abs"), or nil. Abs, Rel and Score must be non-negative numbers (+Inf is allowed,
// NaN is not); MinTau must be in [-1, 1]. Zero fields are valid: they mean the default.
//
// The comparison functions do not validate: call Validate once, when the tolerances are
// configured. An invalid tolerance never makes them panic; it only makes answers that are not
// exactly equal disagree.
func (t Tolerances) Validate() error {
	var errs []error
	for _, f := range [...]struct {
		name string
		v    float64
	}{{"Abs", t.Abs}, {"Rel", t.Rel}, {"Score", t.Score}} {
		if !(f.v >= 0) {
			errs = append(errs, errors.New("migrate: Tolerances."+f.name+" must be a non-negative number, got "+
				strconv.FormatFloat(f.v, 'g', -1, 64)))
		}
	}
	if !(t.MinTau >= -1 && t.MinTau <= 1) {
		errs = append(errs, errors.New("migrate: Tolerances.MinTau must be in [-1, 1], got "+
			strconv.FormatFloat(t.MinTau, 'g', -1, 64)))
	}
	return errors.Join(errs...)
}

// The fields a Diff can name. They are few and fixed, so they can be used as Prometheus label
// values; they name the answer's proto fields (snake case, as in the .proto file).
const (
	// FieldAnomalyType: the anomaly answers' anomaly_type differ.
	FieldAnomalyType = "anomaly_type"
	// FieldMissing: one side has no answer (a nil response, or a nil element of a batch).
	FieldMissing = "answer"
	// FieldCandidates: the two placements do not propose the same set of node ids.
	FieldCandidates = "candidates.set"
	// FieldTau: Kendall's tau of the two placement rankings is below Tolerances.MinTau.
	FieldTau = "candidates.tau"
	// FieldTop1: the placements' best (first) node ids differ.
	FieldTop1 = "candidates.top1"
	// FieldIsAnomaly: the anomaly answers' is_anomaly differ.
	FieldIsAnomaly = "is_anomaly"
	// FieldOutputs: an Open Inference Protocol output's value is beyond tolerance.
	FieldOutputs = "outputs"
	// FieldOutputSet: the two answers do not have the same outputs (by name).
	FieldOutputSet = "outputs.set"
	// FieldOutputShape: an output has another shape or datatype.
	FieldOutputShape = "outputs.shape"
	// FieldPredictions: a forecast step is beyond tolerance (or NaN on either side).
	FieldPredictions = "predictions"
	// FieldPredictionsLength: a forecast has a different number of steps.
	FieldPredictionsLength = "predictions.length"
	// FieldResults: the two forecast batches have different sizes.
	FieldResults = "results.length"
	// FieldScore: the anomaly scores differ by more than Tolerances.Score.
	FieldScore = "score"
	// FieldSeverity: the anomaly answers' severity differ.
	FieldSeverity = "severity"
)

// AllFields lists every Field* constant, sorted: every value a Diff's Fields can hold (for
// example to initialise a Prometheus counter vector's label values). Do not modify it.
var AllFields = []string{
	FieldAnomalyType, FieldMissing, FieldCandidates, FieldTau, FieldTop1, FieldIsAnomaly,
	FieldOutputs, FieldOutputSet, FieldOutputShape, FieldPredictions, FieldPredictionsLength, FieldResults, FieldScore, FieldSeverity,
}

// fieldSet is a set of fields, one bit each, bits in the sorted order of their names (so listing
// the set bits from the lowest gives a sorted list).
type fieldSet uint16

const (
	bitAnomalyType fieldSet = 1 << iota
	bitMissing
	bitCandidates
	bitTau
	bitTop1
	bitIsAnomaly
	bitOutputs
	bitOutputSet
	bitOutputShape
	bitPredictions
	bitPredictionsLength
	bitResults
	bitScore
	bitSeverity
)

// fieldNames are the names of the fieldSet bits, by bit number. Private, unlike AllFields, so
// that a caller modifying AllFields cannot change what Diffs report.
var fieldNames = [...]string{
	FieldAnomalyType, FieldMissing, FieldCandidates, FieldTau, FieldTop1, FieldIsAnomaly,
	FieldOutputs, FieldOutputSet, FieldOutputShape, FieldPredictions, FieldPredictionsLength, FieldResults, FieldScore, FieldSeverity,
}

// list returns the names of s, sorted; nil when s is empty.
func (s fieldSet) list() []string {
	if s == 0 {
		return nil
	}
	out := make([]string, 0, bits.OnesCount16(uint16(s)))
	for s != 0 {
		out = append(out, fieldNames[bits.TrailingZeros16(uint16(s))])
		s &= s - 1
	}
	return out
}

// Diff is the outcome of one comparison.
type Diff struct {
	// Fields lists the fields that disagree, sorted and unique, from the Field* constants (see
	// AllFields); nil when the answers agree. Each Diff has its own slice.
	Fields []string
	// Detail describes the first disagreement for a person, e.g.
	// `results[2].predictions[3]: 101.5 vs 98.2 (allowed 0.0102)` or `candidates.tau: 0.333 < 0.9`,
	// baseline first; empty when the answers agree. Its wording is not a contract.
	Detail string
}

// Agree reports whether the answers agree: no field disagrees.
func (d Diff) Agree() bool { return len(d.Fields) == 0 }

// within reports whether b agrees with the baseline value a: equal (which includes equal
// infinities), or |a-b| <= abs + rel*|a| with |a-b| finite. NaN agrees with nothing, and an
// infinity only with itself, as in numpy.isclose. (Unless a == b, a-b is finite only if a and
// b both are: it is ±Inf or NaN otherwise. A difference of finite values that overflows is
// +Inf, and disagrees whatever the tolerance.) Small enough to be inlined.
func within(a, b, abs, rel float64) bool {
	d := math.Abs(a - b)
	return a == b || d <= abs+rel*math.Abs(a) && d <= math.MaxFloat64
}

// isFinite reports whether x is neither NaN nor infinite.
func isFinite(x float64) bool { return math.Abs(x) <= math.MaxFloat64 }

// Forecasts compares two forecast batches: base[i] with cand[i], in order, since both answer the
// same request's VMs in the request's order. A single forecast is a batch of one.
//
// If the batch sizes differ the results are not paired (one side dropped or added a VM, so
// pairing by index would compare different VMs) and Fields is exactly [FieldResults]. Otherwise,
// for each pair: one nil and the other not is FieldMissing (two nils agree); a different number
// of predictions is FieldPredictionsLength, and the common leading steps are still compared,
// since step j is the same future time on both sides; a step b not within tolerance of the
// baseline's a (|a-b| <= t.Abs + t.Rel*|a|, after t.WithDefaults) is FieldPredictions. NaN on
// either side disagrees; an infinity agrees only with the same infinity.
//
// vm_id, model_version and confidence are not compared: model versions differ by design in a
// migration; confidence is a value each model derives in its own way, not part of the forecast;
// and vm_id is only an echo of the request (a later field, which an older target leaves empty),
// so it says nothing about the model.
func Forecasts(base, cand []*aipb.BandwidthResponse, t Tolerances) Diff {
	if len(base) != len(cand) {
		return Diff{Fields: bitResults.list(), Detail: lengthDetail("results.length", -1, len(base), len(cand))}
	}
	t = t.WithDefaults()
	abs, rel := t.Abs, t.Rel
	var set fieldSet
	var detail string
	const all = bitMissing | bitPredictionsLength | bitPredictions
	for i, x := range base {
		y := cand[i]
		if x == nil || y == nil {
			if x != y {
				set |= bitMissing
				if detail == "" {
					detail = missingDetail(i, x == nil)
				}
			}
			continue
		}
		p, q := x.GetPredictions(), y.GetPredictions()
		if len(p) != len(q) {
			set |= bitPredictionsLength
			if detail == "" {
				detail = lengthDetail(".predictions.length", i, len(p), len(q))
			}
		}
		n := min(len(p), len(q))
		p, q = p[:n], q[:n]
		for j, b := range q {
			if a := p[j]; !within(a, b, abs, rel) {
				set |= bitPredictions
				if detail == "" {
					detail = stepDetail(i, j, a, b, abs+rel*math.Abs(a))
				}
				break // the other steps of this result can add nothing
			}
		}
		if set == all {
			break
		}
	}
	return Diff{Fields: set.list(), Detail: detail}
}

// Anomaly compares two anomaly answers: is_anomaly, severity and anomaly_type exactly, score
// within t.Score (after t.WithDefaults; NaN disagrees, an infinity agrees only with itself).
// Two nils agree; one nil is FieldMissing alone. model_version is not compared (versions
// differ by design in a migration).
func Anomaly(base, cand *aipb.AnomalyResponse, t Tolerances) Diff {
	if base == nil || cand == nil {
		if base == cand {
			return Diff{}
		}
		return Diff{Fields: bitMissing.list(), Detail: missingDetail(-1, base == nil)}
	}
	t = t.WithDefaults()
	var set fieldSet
	var detail string
	if a, b := base.GetIsAnomaly(), cand.GetIsAnomaly(); a != b {
		set |= bitIsAnomaly
		detail = "is_anomaly: " + strconv.FormatBool(a) + " vs " + strconv.FormatBool(b)
	}
	if a, b := base.GetSeverity(), cand.GetSeverity(); a != b {
		set |= bitSeverity
		if detail == "" {
			detail = stringsDetail("severity: ", a, b)
		}
	}
	if a, b := base.GetAnomalyType(), cand.GetAnomalyType(); a != b {
		set |= bitAnomalyType
		if detail == "" {
			detail = stringsDetail("anomaly_type: ", a, b)
		}
	}
	if a, b := base.GetScore(), cand.GetScore(); !within(a, b, t.Score, 0) {
		set |= bitScore
		if detail == "" {
			detail = valuesDetail("score: ", a, b, t.Score)
		}
	}
	return Diff{Fields: set.list(), Detail: detail}
}

// Placement compares two placement answers by their candidates' node ids, in list order (best
// first):
//   - FieldTop1: the first node ids differ (or one list is empty and the other not);
//   - FieldCandidates: the sets of node ids differ;
//   - FieldTau: KendallTau of the two orders, over the nodes both propose, is below t.MinTau
//     (after t.WithDefaults). With fewer than 2 common nodes tau is 1.
//
// As in KendallTau, a node id listed twice counts at its first place; a nil candidate has the
// empty node id. Two nils agree; one nil is FieldMissing alone. The candidates' scores and
// reasoning, overall_confidence and model_version are not compared: scores are on each model's
// own scale, and the decision a placement makes is its order.
func Placement(base, cand *aipb.PlacementResponse, t Tolerances) Diff {
	if base == nil || cand == nil {
		if base == cand {
			return Diff{}
		}
		return Diff{Fields: bitMissing.list(), Detail: missingDetail(-1, base == nil)}
	}
	t = t.WithDefaults()
	a, b := candidateIDs(base.GetCandidates()), candidateIDs(cand.GetCandidates())
	var set fieldSet
	var detail string
	if len(a) > 0 || len(b) > 0 {
		if len(a) == 0 || len(b) == 0 || a.at(0) != b.at(0) {
			set |= bitTop1
			detail = top1Detail(a, b)
		}
	}
	r := compareRanks(a, b)
	if r.onlyA >= 0 || r.onlyB >= 0 {
		set |= bitCandidates
		if detail == "" {
			detail = setDetail(a, b, r)
		}
	}
	if !(r.tau >= t.MinTau) {
		set |= bitTau
		if detail == "" {
			var buf [64]byte
			s := append(buf[:0], "candidates.tau: "...)
			s = strconv.AppendFloat(s, r.tau, 'g', 3, 64)
			s = append(s, " < "...)
			s = strconv.AppendFloat(s, t.MinTau, 'g', -1, 64)
			detail = string(s)
		}
	}
	return Diff{Fields: set.list(), Detail: detail}
}

// KendallTau returns Kendall's tau-a between two rankings given as ordered lists of ids (best
// first), over the ids present in both: (concordant - discordant pairs) / (m(m-1)/2) for the m
// common ids, so 1 for the same order, -1 for the reverse, in [-1, 1]. It is 1 when fewer than
// 2 ids are common. An id listed twice counts at its first place (later ones are ignored), so
// there are no ties and tau-a equals tau-b. It is symmetric in a and b.
//
// It takes O(n log n) time for n = len(a)+len(b) (O(n²) string comparisons, but no
// allocation, when neither list is longer than 32 ids) and O(n) memory: a map of b's ids and
// three slices of at most n elements.
func KendallTau(a, b []string) float64 {
	return compareRanks(stringIDs(a), stringIDs(b)).tau
}

// idList is an ordered list of ids: KendallTau's strings, or Placement's candidates read in
// place without copying their ids out.
type idList interface {
	~[]string | ~[]*aipb.PlacementCandidate
	at(i int) string
}

type stringIDs []string

func (s stringIDs) at(i int) string { return s[i] }

type candidateIDs []*aipb.PlacementCandidate

func (s candidateIDs) at(i int) string { return s[i].GetNodeId() }

// rankResult is what compareRanks finds about two rankings.
type rankResult struct {
	tau    float64 // Kendall's tau over the common ids
	common int     // number of distinct ids in both
	onlyA  int     // index in a of the first id not in b, or -1
	onlyB  int     // index in b of the first id not in a, or -1
}

// smallRanks is the longest lists compareRanks handles without allocating, by O(n²) scans.
const smallRanks = 32

// compareRanks computes Kendall's tau between a and b over their common ids, and which ids
// only one has. Each id counts at its first place in its list.
func compareRanks[L idList](a, b L) rankResult {
	if len(a) > smallRanks || len(b) > smallRanks {
		return compareLarge(a, b)
	}
	var as, bs [smallRanks]string // the ids, read once, on the stack
	for i := range len(a) {
		as[i] = a.at(i)
	}
	for j := range len(b) {
		bs[j] = b.at(j)
	}
	return compareSmall(as[:len(a)], bs[:len(b)])
}

// compareSmall is compareRanks for lists of at most smallRanks ids: quadratic scans over
// arrays on the stack.
func compareSmall(a, b []string) rankResult {
	var pos [smallRanks]int   // pos[k]: the place in b of the k-th common id, in a's order
	var used [smallRanks]bool // used[j]: b[j] is the first place of a common id
	r := rankResult{onlyA: -1, onlyB: -1}
	m := 0
next:
	for i, id := range a {
		for j, other := range b {
			if other == id { // b's first place of id
				if !used[j] { // else a duplicate in a, its first place counted
					pos[m], used[j] = j, true
					m++
				}
				continue next
			}
		}
		if r.onlyA < 0 {
			r.onlyA = i
		}
	}
	if m < len(b) { // b may have ids a lacks
		for j, id := range b {
			// Not common, and not a duplicate of an earlier id (common or not).
			if !used[j] && !slices.Contains(b[:j], id) {
				r.onlyB = j
				break
			}
		}
	}
	var inv int64
	for i := range m {
		for _, p := range pos[i+1 : m] {
			if pos[i] > p {
				inv++
			}
		}
	}
	r.common = m
	r.tau = kendallFromInversions(m, inv)
	return r
}

// compareLarge is compareRanks for longer lists: a map from b's ids to their first place, then
// a merge sort counting the inversions of the common ids' places in b, taken in a's order.
func compareLarge[L idList](a, b L) rankResult {
	r := rankResult{onlyA: -1, onlyB: -1}
	place := make(map[string]int, len(b))
	for j := range len(b) {
		id := b.at(j)
		if _, ok := place[id]; !ok {
			place[id] = j
		}
	}
	n := min(len(a), len(place))
	buf := make([]int, 2*n)
	seq, tmp := buf[:0:n], buf[n:]
	taken := make([]bool, len(b)) // taken[j]: b[j] is the first place of a common id
	for i := range len(a) {
		j, ok := place[a.at(i)]
		switch {
		case !ok:
			if r.onlyA < 0 {
				r.onlyA = i
			}
		case !taken[j]: // else a duplicate in a, its first place counted
			seq = append(seq, j)
			taken[j] = true
		}
	}
	if len(seq) < len(place) {
		for j, t := range taken {
			if !t && place[b.at(j)] == j { // not common, and b[j]'s first place
				r.onlyB = j
				break
			}
		}
	}
	r.common = len(seq)
	r.tau = kendallFromInversions(len(seq), inversions(seq, tmp[:len(seq)]))
	return r
}

// inversions sorts s (distinct values) and returns its number of inversions, pairs i < j with
// s[i] > s[j], by a bottom-up merge sort using tmp, of the same length, as scratch.
func inversions(s, tmp []int) int64 {
	var inv int64
	n := len(s)
	for width := 1; width < n; width *= 2 {
		for lo := 0; lo < n-width; lo += 2 * width {
			mid, hi := lo+width, min(lo+2*width, n)
			i, j, k := lo, mid, lo
			for i < mid && j < hi {
				if s[i] <= s[j] {
					tmp[k] = s[i]
					i++
				} else {
					tmp[k] = s[j]
					j++
					inv += int64(mid - i)
				}
				k++
			}
			k += copy(tmp[k:], s[i:mid])
			copy(tmp[k:], s[j:hi])
			copy(s[lo:hi], tmp[lo:hi])
		}
	}
	return inv
}

// kendallFromInversions is Kendall's tau of m ranked items of which inv pairs are
// discordant; 1 when m < 2.
func kendallFromInversions(m int, inv int64) float64 {
	if m < 2 {
		return 1
	}
	pairs := float64(m) * float64(m-1) / 2
	return max(-1, min(1, 1-2*float64(inv)/pairs))
}

// Detail formatting: only on the first disagreement, so off the agreeing path.

// maxQuoted is the most bytes of an id or string a Detail quotes: answers come from a remote
// target and could be long.
const maxQuoted = 64

// appendQuoted appends s quoted, cut to maxQuoted bytes (at a rune boundary) with "...".
func appendQuoted(dst []byte, s string) []byte {
	if len(s) <= maxQuoted {
		return strconv.AppendQuote(dst, s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return append(strconv.AppendQuote(dst, s[:cut]), "..."...)
}

// appendIndex appends "results[i]" when i >= 0.
func appendIndex(dst []byte, i int) []byte {
	if i < 0 {
		return dst
	}
	dst = append(dst, "results["...)
	dst = strconv.AppendInt(dst, int64(i), 10)
	return append(dst, ']')
}

// missingDetail describes a one-sided nil: of the whole answer (i < 0) or of results[i].
func missingDetail(i int, baseNil bool) string {
	var buf [48]byte
	s := appendIndex(buf[:0], i)
	if i < 0 {
		s = append(s, "answer"...)
	}
	if baseNil {
		return string(append(s, ": baseline nil"...))
	}
	return string(append(s, ": candidate nil"...))
}

// lengthDetail describes a length difference: name, prefixed by results[i] when i >= 0.
func lengthDetail(name string, i, a, b int) string {
	var buf [80]byte
	s := append(appendIndex(buf[:0], i), name...)
	s = append(s, ": "...)
	s = strconv.AppendInt(s, int64(a), 10)
	s = append(s, " vs "...)
	s = strconv.AppendInt(s, int64(b), 10)
	return string(s)
}

// stepDetail describes the forecast step results[i].predictions[j].
func stepDetail(i, j int, a, b, allowed float64) string {
	var buf [128]byte
	s := append(appendIndex(buf[:0], i), ".predictions["...)
	s = strconv.AppendInt(s, int64(j), 10)
	s = append(s, "]: "...)
	return string(appendValues(s, a, b, allowed))
}

// valuesDetail describes two values differing beyond allowed, after prefix.
func valuesDetail(prefix string, a, b, allowed float64) string {
	var buf [96]byte
	return string(appendValues(append(buf[:0], prefix...), a, b, allowed))
}

// appendValues appends "a vs b (allowed x)", without the allowance when a or b is not finite
// (then only equality could agree).
func appendValues(s []byte, a, b, allowed float64) []byte {
	s = strconv.AppendFloat(s, a, 'g', -1, 64)
	s = append(s, " vs "...)
	s = strconv.AppendFloat(s, b, 'g', -1, 64)
	if isFinite(a) && isFinite(b) {
		s = append(s, " (allowed "...)
		s = strconv.AppendFloat(s, allowed, 'g', 3, 64)
		s = append(s, ')')
	}
	return s
}

// stringsDetail describes two differing strings, after prefix.
func stringsDetail(prefix, a, b string) string {
	var buf [192]byte
	s := appendQuoted(append(buf[:0], prefix...), a)
	s = append(s, " vs "...)
	return string(appendQuoted(s, b))
}

// top1Detail describes differing best nodes; "none" stands for an empty list.
func top1Detail(a, b candidateIDs) string {
	var buf [192]byte
	s := append(buf[:0], "candidates.top1: "...)
	if len(a) == 0 {
		s = append(s, "none"...)
	} else {
		s = appendQuoted(s, a.at(0))
	}
	s = append(s, " vs "...)
	if len(b) == 0 {
		return string(append(s, "none"...))
	}
	return string(appendQuoted(s, b.at(0)))
}

// setDetail describes differing node sets by the first node only one side has.
func setDetail(a, b candidateIDs, r rankResult) string {
	var buf [160]byte
	s := append(buf[:0], "candidates.set: "...)
	if r.onlyA >= 0 {
		s = append(appendQuoted(s, a.at(r.onlyA)), " only in baseline"...)
	} else {
		s = append(appendQuoted(s, b.at(r.onlyB)), " only in candidate"...)
	}
	s = append(s, ", "...)
	s = strconv.AppendInt(s, int64(r.common), 10)
	return string(append(s, " in common"...))
}
