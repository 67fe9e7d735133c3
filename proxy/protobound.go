package proxy

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// boundedCodec is the gRPC server's codec: grpc-go's own proto codec, with one check before a
// request of a NovaCron RPC is decoded. Like the HTTP front end's scan (arraysWithin), it counts
// the elements of every list in the message's wire form, in place and without allocating, and a message with
// a list longer than its call takes (the bounds of Service.arrayBound) is not decoded at all:
// decoding half a million doubles to refuse them costs more than twice the message. A codec
// error would reach the caller as INTERNAL, so the refusal is recorded (Service.refused) and the
// message left empty; the interceptors, which run next on the same goroutine, answer it.
type boundedCodec struct {
	base encoding.CodecV2
	svc  *Service
}

// checkAbove is the size from which a message is checked: a smaller one cannot hold a list long
// enough to cost anything, and skips the scan.
const checkAbove = 4 << 10

func newBoundedCodec(svc *Service) *boundedCodec {
	return &boundedCodec{base: encoding.GetCodecV2(protoenc.Name), svc: svc}
}

func (c *boundedCodec) Name() string { return protoenc.Name }

func (c *boundedCodec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func (c *boundedCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok || data.Len() <= checkAbove {
		return c.base.Unmarshal(data, v)
	}
	rpc := rpcOf(m)
	limit := c.svc.arrayBound(rpc)
	if limit <= 0 || data.Len() <= limit {
		// No bound, or too few bytes to hold more than limit elements of any list (an element
		// takes a byte at least).
		return c.base.Unmarshal(data, v)
	}
	cur := &wireCursor{s: data}
	if field, ok := protoListsWithin(cur, data.Len(), m.ProtoReflect().Descriptor(), limit, 0); !ok {
		c.svc.refusals.Add(1)
		c.svc.refused.Store(v, invalid(field, fmt.Sprintf("more than %d values, the most this call takes (%s); the message was not decoded further", limit, c.svc.arrayWhy(rpc))))
		return nil
	}
	return c.base.Unmarshal(data, v)
}

// rpcOf names the NovaCron RPC whose request m is ("" for another message).
func rpcOf(m proto.Message) string {
	switch m.(type) {
	case *aipb.BandwidthRequest:
		return "PredictBandwidth"
	case *aipb.BandwidthBatchRequest:
		return "PredictBandwidthBatch"
	case *aipb.PlacementRequest:
		return "OptimizePlacement"
	case *aipb.AnomalyRequest:
		return "DetectAnomaly"
	case *aipb.PushMetricsRequest:
		return "PushMetrics"
	case *aipb.PushLabelsRequest:
		return "PushLabels"
	}
	return ""
}

// refusal returns (and forgets) the refusal boundedCodec recorded for the request m, if any.
func (s *Service) refusal(m any) error {
	if s.refusals.Load() == 0 {
		return nil
	}
	if e, ok := s.refused.LoadAndDelete(m); ok {
		s.refusals.Add(-1)
		return e.(error)
	}
	return nil
}

// maxProtoDepth bounds the nesting protoListsWithin follows (the NovaCron requests nest two deep).
const maxProtoDepth = 8

// wireCursor reads a message's wire form where grpc-go left it, in the buffers of its frames,
// without joining them: a refused message is never copied.
type wireCursor struct {
	s      mem.BufferSlice
	i, off int // the buffer and the offset in it of the next byte
	pos    int // bytes read so far
	bad    bool
}

func (c *wireCursor) byte() (byte, bool) {
	for c.i < len(c.s) {
		d := c.s[c.i].ReadOnlyData()
		if c.off < len(d) {
			b := d[c.off]
			c.off++
			c.pos++
			return b, true
		}
		c.i, c.off = c.i+1, 0
	}
	c.bad = true
	return 0, false
}

func (c *wireCursor) varint() uint64 {
	var v uint64
	for shift := 0; shift < 64; shift += 7 {
		b, ok := c.byte()
		if !ok {
			return 0
		}
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v
		}
	}
	c.bad = true
	return 0
}

// skip passes n bytes, counting those below 0x80 (the last byte of each varint) when count is set.
func (c *wireCursor) skip(n int, count bool) int {
	ends := 0
	for n > 0 && c.i < len(c.s) {
		d := c.s[c.i].ReadOnlyData()[c.off:]
		k := min(n, len(d))
		if count {
			for _, b := range d[:k] {
				if b < 0x80 {
					ends++
				}
			}
		}
		n -= k
		c.pos += k
		c.off += k
		if c.off == len(c.s[c.i].ReadOnlyData()) {
			c.i, c.off = c.i+1, 0
		}
	}
	if n > 0 {
		c.bad = true
	}
	return ends
}

// protoListsWithin reports whether every repeated field and map of the message of type md that
// c holds up to the position end, and of the messages inside it, holds at most limit elements;
// when one holds more it names the field (such as "historical_metrics" or
// "vms[].historical_metrics"). A packed field counts its values; an unpacked one, its
// occurrences; a map, its entries as written (a key written twice counts twice, though decoding
// keeps one). It does not validate the message: a malformed one is left to proto.Unmarshal,
// which refuses it.
func protoListsWithin(c *wireCursor, end int, md protoreflect.MessageDescriptor, limit, depth int) (string, bool) {
	if depth > maxProtoDepth {
		return "", true
	}
	var counts [16]struct {
		num protowire.Number
		n   int
	}
	used := 0
	for c.pos < end && !c.bad {
		tag := c.varint()
		num, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		fd := md.Fields().ByNumber(num)
		elems := 0
		switch typ {
		case protowire.VarintType:
			c.varint()
			elems = 1
		case protowire.Fixed64Type:
			c.skip(8, false)
			elems = 1
		case protowire.Fixed32Type:
			c.skip(4, false)
			elems = 1
		case protowire.BytesType:
			n := int(c.varint())
			if n < 0 || c.pos+n > end {
				return "", true
			}
			elems = 1
			switch {
			case fd == nil:
				c.skip(n, false)
			case fd.Kind() == protoreflect.MessageKind && !fd.IsMap() && hasLists(fd.Message(), 0):
				if field, ok := protoListsWithin(c, c.pos+n, fd.Message(), limit, depth+1); !ok {
					sep := "."
					if fd.IsList() {
						sep = "[]."
					}
					return string(fd.Name()) + sep + field, false
				}
			case fd.Kind() == protoreflect.MessageKind:
				c.skip(n, false) // a message with no lists inside: one element, not read
			case fd.IsList() && fd.Kind() != protoreflect.StringKind && fd.Kind() != protoreflect.BytesKind:
				// Packed scalars.
				switch fd.Kind() {
				case protoreflect.DoubleKind, protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind:
					elems = n / 8
					c.skip(n, false)
				case protoreflect.FloatKind, protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind:
					elems = n / 4
					c.skip(n, false)
				default:
					elems = c.skip(n, true)
				}
			default:
				c.skip(n, false)
			}
		default: // groups: not in these protos
			return "", true
		}
		if fd == nil || !(fd.IsList() || fd.IsMap()) || !(typ == wireType(fd.Kind()) || typ == protowire.BytesType && fd.IsList()) {
			continue // not a list, or a wire type proto.Unmarshal keeps as an unknown field
		}
		i := 0
		for i < used && counts[i].num != num {
			i++
		}
		if i == used && used < len(counts) {
			counts[i].num = num
			used++
		}
		if i < used {
			counts[i].n += elems
			if counts[i].n > limit {
				return string(fd.Name()), false
			}
		}
	}
	return "", true
}

// listsOf caches hasLists by message: the NovaCron requests are few and fixed.
var listsOf sync.Map // protoreflect.FullName -> bool

// hasLists reports whether a message of type md, or one inside it, has a repeated field or a map:
// protoListsWithin skips the bytes of one that has none (a pushed sample, say) without reading
// them.
func hasLists(md protoreflect.MessageDescriptor, depth int) bool {
	if v, ok := listsOf.Load(md.FullName()); ok {
		return v.(bool)
	}
	found := depth > maxProtoDepth // too deep to tell: look inside
	for i := 0; i < md.Fields().Len() && !found; i++ {
		fd := md.Fields().Get(i)
		found = fd.IsList() || fd.IsMap() || fd.Kind() == protoreflect.MessageKind && hasLists(fd.Message(), depth+1)
	}
	listsOf.Store(md.FullName(), found)
	return found
}

// wireType is how a value of kind k is encoded on its own (not packed).
func wireType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.DoubleKind, protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind:
		return protowire.Fixed64Type
	case protoreflect.FloatKind, protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind:
		return protowire.Fixed32Type
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	}
	return protowire.VarintType
}

var _ encoding.CodecV2 = (*boundedCodec)(nil)
