package proxy

import (
	"math"
	"strconv"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// decodeBandwidthFast decodes the common shape of a BandwidthRequest body without protojson: one
// object whose keys are among vm_id, historical_metrics, horizon_minutes and model (or their
// lowerCamel JSON names), each at most once, with strings free of escapes, an array of plain JSON
// numbers and an integer. It returns false for anything else, and the caller falls back to
// protojson, which then decides and words the error. When it returns true, req holds exactly what
// protojson would have decoded (FuzzBandwidthJSON checks it); it spares the HTTP route about a
// sixth of its CPU.
func decodeBandwidthFast(b []byte, req *aipb.BandwidthRequest) bool {
	p := jsonScan{b: b}
	if !p.byte('{') {
		return false
	}
	var seen [4]bool
	if p.peek() == '}' {
		p.i++
		return p.end()
	}
	for {
		key, ok := p.str()
		if !ok || !p.byte(':') {
			return false
		}
		field := -1
		switch key {
		case "vm_id", "vmId":
			field = 0
		case "historical_metrics", "historicalMetrics":
			field = 1
		case "horizon_minutes", "horizonMinutes":
			field = 2
		case "model":
			field = 3
		}
		if field < 0 || seen[field] {
			return false
		}
		seen[field] = true
		switch field {
		case 0, 3:
			s, ok := p.str()
			if !ok {
				return false
			}
			if field == 0 {
				req.VmId = s
			} else {
				req.Model = s
			}
		case 1:
			if !p.byte('[') {
				return false
			}
			vals := make([]float64, 0, 64)
			if p.peek() == ']' {
				p.i++
			} else {
				for {
					tok, ok := p.number()
					if !ok {
						return false
					}
					v, err := strconv.ParseFloat(tok, 64)
					if err != nil || math.IsInf(v, 0) {
						return false
					}
					vals = append(vals, v)
					if p.byte(']') {
						break
					}
					if !p.byte(',') {
						return false
					}
				}
			}
			if len(vals) > 0 {
				req.HistoricalMetrics = vals
			}
		case 2:
			tok, ok := p.number()
			if !ok {
				return false
			}
			v, err := strconv.ParseInt(tok, 10, 32)
			if err != nil {
				return false
			}
			req.HorizonMinutes = int32(v)
		}
		if p.byte('}') {
			return p.end()
		}
		if !p.byte(',') {
			return false
		}
	}
}

// jsonScan reads the few JSON tokens decodeBandwidthFast accepts.
type jsonScan struct {
	b []byte
	i int
}

func (p *jsonScan) skip() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonScan) peek() byte {
	p.skip()
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

// byte consumes c if it is next.
func (p *jsonScan) byte(c byte) bool {
	if p.peek() == c {
		p.i++
		return true
	}
	return false
}

func (p *jsonScan) end() bool {
	p.skip()
	return p.i == len(p.b)
}

// str reads a string of printable ASCII without escapes.
func (p *jsonScan) str() (string, bool) {
	if !p.byte('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := string(p.b[start:p.i])
			p.i++
			return s, true
		case c == '\\' || c < 0x20 || c >= 0x7f:
			return "", false
		}
		p.i++
	}
	return "", false
}

// number reads a JSON number token after whitespace.
func (p *jsonScan) number() (string, bool) {
	p.skip()
	b, ok := p.numberBytes()
	return string(b), ok
}

// numberBytes reads a JSON number token at p.i: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?,
// as the body's own bytes.
func (p *jsonScan) numberBytes() ([]byte, bool) {
	start := p.i
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	first := p.i
	if n := digits(); n == 0 || (n > 1 && p.b[first] == '0') {
		return nil, false
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return nil, false
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return nil, false
		}
	}
	return p.b[start:p.i], true
}
