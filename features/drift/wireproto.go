package drift

// The protobuf form of a Snapshot (wire.go has the form itself, its checks and merge).

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The protobuf encoding, by hand with protowire (see SnapshotProto): the field numbers of each
// message.
const (
	snapModel, snapSpec, snapFingerprint, snapProfile, snapScoring, snapWindows     protowire.Number = 1, 2, 3, 4, 5, 6
	scMinSamples, scShare, scMethods, scThresholds                                  protowire.Number = 1, 2, 3, 4
	winStart, winEnd, winFeatures, winOutputs                                       protowire.Number = 1, 2, 3, 4
	skName, skCounts, skMissing, skSum, skDD                                        protowire.Number = 1, 2, 3, 4, 5
	prVersion, prSpec, prFingerprint, prRows, prFeatures, prOutputs, prModelDigest  protowire.Number = 1, 2, 3, 4, 5, 6, 7
	refName, refEdges, refCounts, refMissing, refMin, refMax, refMean, refStd, refQ protowire.Number = 1, 2, 3, 4, 5, 6, 7, 8, 9
	// google.protobuf.Timestamp, and a map's entry
	tsSeconds, tsNanos protowire.Number = 1, 2
	mapKey, mapValue   protowire.Number = 1, 2
)

// MarshalProto encodes s as the protobuf message Snapshot of SnapshotProto. It fails only on a
// string that is not UTF-8, which proto3 forbids.
func (s *Snapshot) MarshalProto() ([]byte, error) {
	var e encoder
	e.str(snapModel, s.Model)
	e.str(snapSpec, s.Spec)
	e.str(snapFingerprint, s.Fingerprint)
	if p := s.Profile; p != nil {
		e.msg(snapProfile, func(e *encoder) {
			e.varint(prVersion, uint64(int64(p.Version)))
			e.str(prSpec, p.Spec)
			e.str(prFingerprint, p.Fingerprint)
			e.varint(prRows, uint64(p.Rows))
			for j := range p.Features {
				e.reference(prFeatures, &p.Features[j])
			}
			for j := range p.Outputs {
				e.reference(prOutputs, &p.Outputs[j])
			}
			e.str(prModelDigest, p.ModelDigest)
		})
	}
	e.msg(snapScoring, func(e *encoder) {
		sc := &s.Scoring
		e.varint(scMinSamples, uint64(sc.MinSamples))
		e.double(scShare, sc.Share)
		for _, k := range slices.Sorted(maps.Keys(sc.Methods)) {
			e.msg(scMethods, func(e *encoder) { e.str(mapKey, k); e.str(mapValue, sc.Methods[k]) })
		}
		for _, k := range slices.Sorted(maps.Keys(sc.Thresholds)) {
			e.msg(scThresholds, func(e *encoder) { e.str(mapKey, k); e.double(mapValue, sc.Thresholds[k]) })
		}
	})
	for i := range s.Windows {
		w := &s.Windows[i]
		e.msg(snapWindows, func(e *encoder) {
			e.timestamp(winStart, w.Start)
			e.timestamp(winEnd, w.End)
			for j := range w.Features {
				e.sketch(winFeatures, &w.Features[j])
			}
			for j := range w.Outputs {
				e.sketch(winOutputs, &w.Outputs[j])
			}
		})
	}
	if e.err != nil {
		return nil, e.err
	}
	return e.b, nil
}

func (e *encoder) reference(n protowire.Number, r *Reference) {
	e.msg(n, func(e *encoder) {
		e.str(refName, r.Name)
		e.doubles(refEdges, r.Edges)
		e.int64s(refCounts, r.Counts)
		e.varint(refMissing, uint64(r.Missing))
		e.double(refMin, r.Min)
		e.double(refMax, r.Max)
		e.double(refMean, r.Mean)
		e.double(refStd, r.Std)
		e.doubles(refQ, r.Quantiles)
	})
}

func (e *encoder) sketch(n protowire.Number, f *WireSketch) {
	e.msg(n, func(e *encoder) {
		e.str(skName, f.Name)
		e.int64s(skCounts, f.Counts)
		e.varint(skMissing, uint64(f.Missing))
		e.double(skSum, f.Sum)
		if len(f.DDSketch) > 0 {
			e.b = protowire.AppendTag(e.b, skDD, protowire.BytesType)
			e.b = protowire.AppendBytes(e.b, f.DDSketch)
		}
	})
}

// encoder appends fields in proto3's form: zero scalars omitted, repeated scalars packed.
type encoder struct {
	b   []byte
	err error
}

func (e *encoder) str(n protowire.Number, v string) {
	if !utf8.ValidString(v) && e.err == nil {
		e.err = fmt.Errorf("drift: field %d: %q is not UTF-8", n, v)
	}
	if v != "" {
		e.b = protowire.AppendTag(e.b, n, protowire.BytesType)
		e.b = protowire.AppendString(e.b, v)
	}
}

func (e *encoder) varint(n protowire.Number, v uint64) {
	if v != 0 {
		e.b = protowire.AppendTag(e.b, n, protowire.VarintType)
		e.b = protowire.AppendVarint(e.b, v)
	}
}

func (e *encoder) double(n protowire.Number, v float64) {
	if bits := math.Float64bits(v); bits != 0 {
		e.b = protowire.AppendTag(e.b, n, protowire.Fixed64Type)
		e.b = protowire.AppendFixed64(e.b, bits)
	}
}

func (e *encoder) int64s(n protowire.Number, vs []int64) {
	if len(vs) == 0 {
		return
	}
	size := 0
	for _, v := range vs {
		size += protowire.SizeVarint(uint64(v))
	}
	e.b = protowire.AppendTag(e.b, n, protowire.BytesType)
	e.b = protowire.AppendVarint(e.b, uint64(size))
	for _, v := range vs {
		e.b = protowire.AppendVarint(e.b, uint64(v))
	}
}

func (e *encoder) doubles(n protowire.Number, vs []float64) {
	if len(vs) == 0 {
		return
	}
	e.b = protowire.AppendTag(e.b, n, protowire.BytesType)
	e.b = protowire.AppendVarint(e.b, uint64(8*len(vs)))
	for _, v := range vs {
		e.b = protowire.AppendFixed64(e.b, math.Float64bits(v))
	}
}

// msg appends a message field whose fields body appends (even when it has none).
func (e *encoder) msg(n protowire.Number, body func(*encoder)) {
	sub := encoder{err: e.err}
	body(&sub)
	e.err = sub.err
	e.b = protowire.AppendTag(e.b, n, protowire.BytesType)
	e.b = protowire.AppendBytes(e.b, sub.b)
}

func (e *encoder) timestamp(n protowire.Number, t time.Time) {
	e.msg(n, func(e *encoder) {
		e.varint(tsSeconds, uint64(t.Unix()))
		e.varint(tsNanos, uint64(int64(t.Nanosecond())))
	})
}

// UnmarshalSnapshotProto decodes the protobuf form of a snapshot (MarshalProto's), bounded (at
// most MaxSnapshotBytes, MaxWindows windows, MaxFeatures features), and checks it as Merge does.
func UnmarshalSnapshotProto(b []byte) (*Snapshot, error) {
	if len(b) > MaxSnapshotBytes {
		return nil, fmt.Errorf("drift: the snapshot is %d bytes, more than %d", len(b), MaxSnapshotBytes)
	}
	var s Snapshot
	err := fields(b, func(f field) error {
		switch f.num {
		case snapModel:
			return f.str(&s.Model)
		case snapSpec:
			return f.str(&s.Spec)
		case snapFingerprint:
			return f.str(&s.Fingerprint)
		case snapProfile:
			if s.Profile != nil {
				return errors.New("profile given twice")
			}
			s.Profile = &Profile{}
			return f.msg(func(f field) error { return decodeProfileField(s.Profile, f) })
		case snapScoring:
			return f.msg(func(f field) error { return decodeScoringField(&s.Scoring, f) })
		case snapWindows:
			if len(s.Windows) >= MaxWindows {
				return fmt.Errorf("more than %d windows", MaxWindows)
			}
			s.Windows = append(s.Windows, WireWindow{})
			w := &s.Windows[len(s.Windows)-1]
			return f.msg(func(f field) error { return decodeWindowField(w, f) })
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("drift: the snapshot's protobuf: %w", err)
	}
	if _, err := s.sketches(); err != nil {
		return nil, err
	}
	return &s, nil
}

func decodeProfileField(p *Profile, f field) error {
	switch f.num {
	case prVersion:
		var v int64
		err := f.int64(&v)
		p.Version = int(int32(v))
		return err
	case prSpec:
		return f.str(&p.Spec)
	case prFingerprint:
		return f.str(&p.Fingerprint)
	case prRows:
		return f.int64(&p.Rows)
	case prModelDigest:
		return f.str(&p.ModelDigest)
	case prFeatures, prOutputs:
		list, kind := &p.Features, "features"
		if f.num == prOutputs {
			list, kind = &p.Outputs, "outputs"
		}
		if len(*list) >= MaxFeatures {
			return fmt.Errorf("profile: more than %d %s", MaxFeatures, kind)
		}
		*list = append(*list, Reference{})
		r := &(*list)[len(*list)-1]
		return f.msg(func(f field) error {
			switch f.num {
			case refName:
				return f.str(&r.Name)
			case refEdges:
				return f.doubles(&r.Edges, maxWireBins)
			case refCounts:
				return f.int64s(&r.Counts, maxWireBins)
			case refMissing:
				return f.int64(&r.Missing)
			case refMin:
				return f.double(&r.Min)
			case refMax:
				return f.double(&r.Max)
			case refMean:
				return f.double(&r.Mean)
			case refStd:
				return f.double(&r.Std)
			case refQ:
				return f.doubles(&r.Quantiles, len(quantileLevels))
			}
			return nil
		})
	}
	return nil
}

func decodeScoringField(sc *Scoring, f field) error {
	switch f.num {
	case scMinSamples:
		return f.int64(&sc.MinSamples)
	case scShare:
		return f.double(&sc.Share)
	case scMethods:
		var k, v string
		if err := f.msg(func(f field) error {
			switch f.num {
			case mapKey:
				return f.str(&k)
			case mapValue:
				return f.str(&v)
			}
			return nil
		}); err != nil {
			return err
		}
		if sc.Methods == nil {
			sc.Methods = map[string]string{}
		}
		if len(sc.Methods) >= MaxFeatures {
			return fmt.Errorf("scoring: more than %d methods", MaxFeatures)
		}
		sc.Methods[k] = v
	case scThresholds:
		var k string
		var v float64
		if err := f.msg(func(f field) error {
			switch f.num {
			case mapKey:
				return f.str(&k)
			case mapValue:
				return f.double(&v)
			}
			return nil
		}); err != nil {
			return err
		}
		if sc.Thresholds == nil {
			sc.Thresholds = map[string]float64{}
		}
		if len(sc.Thresholds) >= MaxFeatures {
			return fmt.Errorf("scoring: more than %d thresholds", MaxFeatures)
		}
		sc.Thresholds[k] = v
	}
	return nil
}

func decodeWindowField(w *WireWindow, f field) error {
	switch f.num {
	case winStart:
		return f.timestamp(&w.Start)
	case winEnd:
		return f.timestamp(&w.End)
	case winFeatures, winOutputs:
		list, kind := &w.Features, "features"
		if f.num == winOutputs {
			list, kind = &w.Outputs, "outputs"
		}
		if len(*list) >= MaxFeatures {
			return fmt.Errorf("window: more than %d %s", MaxFeatures, kind)
		}
		*list = append(*list, WireSketch{})
		s := &(*list)[len(*list)-1]
		return f.msg(func(f field) error {
			switch f.num {
			case skName:
				return f.str(&s.Name)
			case skCounts:
				return f.int64s(&s.Counts, maxWireBins)
			case skMissing:
				return f.int64(&s.Missing)
			case skSum:
				return f.double(&s.Sum)
			case skDD:
				if f.typ != protowire.BytesType {
					return f.wrongType("bytes")
				}
				if len(f.b) > MaxSketchBytes {
					return fmt.Errorf("field %d: a DDSketch of %d bytes, more than %d", f.num, len(f.b), MaxSketchBytes)
				}
				s.DDSketch = slices.Clone(f.b)
			}
			return nil
		})
	}
	return nil
}

// field is one decoded field: its number and wire type, and its value (v for the numeric
// types, b for the length-delimited).
type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64
	b   []byte
}

// fields calls yield with each field of the message in b; groups are skipped.
func fields(b []byte, yield func(field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.v, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			f.v, n = protowire.ConsumeFixed64(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			f.v = uint64(v)
		case protowire.BytesType:
			f.b, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.StartGroupType {
			continue
		}
		if err := yield(f); err != nil {
			return err
		}
	}
	return nil
}

func (f field) wrongType(want string) error {
	return fmt.Errorf("field %d: wire type %d, want %s", f.num, f.typ, want)
}

func (f field) msg(yield func(field) error) error {
	if f.typ != protowire.BytesType {
		return f.wrongType("a message")
	}
	return fields(f.b, yield)
}

func (f field) str(dst *string) error {
	if f.typ != protowire.BytesType {
		return f.wrongType("a string")
	}
	if !utf8.Valid(f.b) {
		return fmt.Errorf("field %d: not UTF-8", f.num)
	}
	*dst = string(f.b)
	return nil
}

func (f field) int64(dst *int64) error {
	if f.typ != protowire.VarintType {
		return f.wrongType("a varint")
	}
	*dst = int64(f.v)
	return nil
}

func (f field) double(dst *float64) error {
	if f.typ != protowire.Fixed64Type {
		return f.wrongType("a double")
	}
	*dst = math.Float64frombits(f.v)
	return nil
}

// int64s appends a repeated int64's values, packed or not, at most limit in all.
func (f field) int64s(dst *[]int64, limit int) error {
	switch f.typ {
	case protowire.VarintType:
		if len(*dst) >= limit {
			return fmt.Errorf("field %d: more than %d values", f.num, limit)
		}
		*dst = append(*dst, int64(f.v))
		return nil
	case protowire.BytesType:
		for b := f.b; len(b) > 0; {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("field %d: %w", f.num, protowire.ParseError(n))
			}
			if len(*dst) >= limit {
				return fmt.Errorf("field %d: more than %d values", f.num, limit)
			}
			*dst = append(*dst, int64(v))
			b = b[n:]
		}
		return nil
	}
	return f.wrongType("varints")
}

// doubles appends a repeated double's values, packed or not, at most limit in all.
func (f field) doubles(dst *[]float64, limit int) error {
	switch f.typ {
	case protowire.Fixed64Type:
		if len(*dst) >= limit {
			return fmt.Errorf("field %d: more than %d values", f.num, limit)
		}
		*dst = append(*dst, math.Float64frombits(f.v))
		return nil
	case protowire.BytesType:
		if len(f.b)%8 != 0 {
			return fmt.Errorf("field %d: %d bytes of packed doubles", f.num, len(f.b))
		}
		if len(*dst)+len(f.b)/8 > limit {
			return fmt.Errorf("field %d: more than %d values", f.num, limit)
		}
		for b := f.b; len(b) > 0; b = b[8:] {
			v, _ := protowire.ConsumeFixed64(b)
			*dst = append(*dst, math.Float64frombits(v))
		}
		return nil
	}
	return f.wrongType("doubles")
}

// timestamp decodes a google.protobuf.Timestamp (years 1 to 9999, as its definition bounds it).
func (f field) timestamp(dst *time.Time) error {
	var sec, nsec int64
	if err := f.msg(func(f field) error {
		switch f.num {
		case tsSeconds:
			return f.int64(&sec)
		case tsNanos:
			var v int64
			err := f.int64(&v)
			nsec = int64(int32(v))
			return err
		}
		return nil
	}); err != nil {
		return err
	}
	const minSec, maxSec = -62135596800, 253402300799
	if sec < minSec || sec > maxSec || nsec < 0 || nsec >= 1e9 {
		return fmt.Errorf("field %d: timestamp %d s %d ns is not a valid time", f.num, sec, nsec)
	}
	*dst = time.Unix(sec, nsec).UTC()
	return nil
}
