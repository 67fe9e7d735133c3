package proxy

import (
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// longestList is the most elements any list or map of m, or of a message inside it, holds once
// decoded.
func longestList(m protoreflect.Message) int {
	longest := 0
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			l := v.List()
			longest = max(longest, l.Len())
			if fd.Kind() == protoreflect.MessageKind {
				for i := range l.Len() {
					longest = max(longest, longestList(l.Get(i).Message()))
				}
			}
		case fd.IsMap():
			longest = max(longest, v.Map().Len())
		case fd.Kind() == protoreflect.MessageKind:
			longest = max(longest, longestList(v.Message()))
		}
		return true
	})
	return longest
}

// split cuts b into buffers of n bytes, as grpc-go hands a message over in the buffers of its
// frames.
func split(b []byte, n int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > n {
		s = append(s, mem.SliceBuffer(b[:n]))
		b = b[n:]
	}
	return append(s, mem.SliceBuffer(b))
}

// FuzzProtoLists: whatever protoListsWithin refuses, decoded, holds a list longer than the limit
// (a valid message is never refused; a map's entries count as written); and a message whose lists are all within the limit is
// never refused. The scan reads the message in buffers of any size.
func FuzzProtoLists(f *testing.F) {
	seed := func(m proto.Message) {
		b, _ := proto.Marshal(m)
		f.Add(b, uint8(3), uint8(7))
	}
	seed(&aipb.BandwidthBatchRequest{Vms: []*aipb.BandwidthRequest{{VmId: "a", HistoricalMetrics: []float64{1, 2, 3, 4}}, {VmId: "b"}}})
	seed(&aipb.BandwidthBatchRequest{Vms: []*aipb.BandwidthRequest{{}, {}, {}, {}, {}}})
	seed(&aipb.PlacementRequest{WorkloadId: "w", Requirements: map[string]float64{"cpu": 1, "memory": 2, "x": 3, "y": 4},
		AvailableNodes: []*aipb.NodeInfo{{NodeId: "n"}, {NodeId: "m"}}})
	seed(&aipb.PushMetricsRequest{Samples: []*aipb.MetricsSample{{VmId: "v", TimestampMs: 5}, {VmId: "w"}}})
	f.Fuzz(func(t *testing.T, b []byte, limit, chunk uint8) {
		msgs := []proto.Message{&aipb.BandwidthBatchRequest{}, &aipb.PlacementRequest{}, &aipb.PushMetricsRequest{}, &aipb.BandwidthRequest{}}
		for _, m := range msgs {
			m = proto.Clone(m)
			if proto.Unmarshal(b, m) != nil {
				continue
			}
			lim := int(limit%8) + 1
			field, ok := protoListsWithin(&wireCursor{s: split(b, int(chunk%16)+1)}, len(b), m.ProtoReflect().Descriptor(), lim, 0)
			longest := longestList(m.ProtoReflect())
			// A map counts its entries as written: repeated keys, which decoding folds into one,
			// count each time.
			if !ok && longest <= lim && !strings.HasSuffix(field, "requirements") {
				t.Fatalf("%T refused (%s), but its longest list holds %d, limit %d", m, field, longest, lim)
			}
		}
	})
}

// TestProtoListsWithin: each list beyond the limit is named, nested ones with their path.
func TestProtoListsWithin(t *testing.T) {
	for _, c := range []struct {
		m     proto.Message
		field string
	}{
		{&aipb.BandwidthRequest{HistoricalMetrics: make([]float64, 61)}, "historical_metrics"},
		{&aipb.BandwidthRequest{HistoricalMetrics: make([]float64, 60)}, ""},
		{&aipb.BandwidthBatchRequest{Vms: []*aipb.BandwidthRequest{{}, {HistoricalMetrics: make([]float64, 61)}}}, "vms[].historical_metrics"},
		{&aipb.PlacementRequest{AvailableNodes: make([]*aipb.NodeInfo, 61)}, "available_nodes"},
		{&aipb.PushMetricsRequest{Samples: make([]*aipb.MetricsSample, 60)}, ""},
	} {
		b, err := proto.Marshal(c.m)
		if err != nil {
			t.Fatal(err)
		}
		for _, chunk := range []int{1, 7, 4096} {
			field, ok := protoListsWithin(&wireCursor{s: split(b, chunk)}, len(b), c.m.ProtoReflect().Descriptor(), 60, 0)
			if ok != (c.field == "") || field != c.field {
				t.Errorf("%T in buffers of %d: got %q %v, want %q", c.m, chunk, field, ok, c.field)
			}
		}
	}
}
