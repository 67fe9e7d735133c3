package backends

import (
	"math"
)

// rand returns the next value of the pool's splitmix64 sequence; safe for concurrent use, no lock.
func (p *Pool[E]) rand() uint64 {
	z := p.rng.Add(0x9e3779b97f4a7c15)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Pick levels, tried in order: usable members not tried yet, then (panic mode: health may lag)
// members whose breaker admits calls, not tried yet; for retries the same two among the members
// already tried.
const (
	levelUsable = iota
	levelAdmits
	levelUsableTried
	levelAdmitsTried
)

// pick chooses a member by power of two choices among the candidates of the first level that has
// any, or returns -1. Members in rejected are never chosen; those in tried only if allowTried.
func (p *Pool[E]) pick(st *snapshot[E], tried, rejected *idxSet, allowTried bool) int {
	var now int64
	last := levelAdmits
	if allowTried {
		last = levelAdmitsTried
	}
	for level := levelUsable; level <= last; level++ {
		n := 0
		for i, m := range st.members {
			if m.candidate(level, i, tried, rejected, &now) {
				n++
			}
		}
		switch n {
		case 0:
			continue
		case 1:
			for i, m := range st.members {
				if m.candidate(level, i, tried, rejected, &now) {
					return i
				}
			}
			continue // the candidate changed under us
		}
		r := p.rand()
		a := int((r & math.MaxUint32) * uint64(n) >> 32)
		b := int((r >> 32) * uint64(n-1) >> 32)
		if b >= a {
			b++
		}
		ia, ib, k := -1, -1, 0
		for i, m := range st.members {
			if !m.candidate(level, i, tried, rejected, &now) {
				continue
			}
			switch k {
			case a:
				ia = i
			case b:
				ib = i
			}
			k++
		}
		switch {
		case ia < 0 && ib < 0:
			continue
		case ia < 0:
			return ib
		case ib < 0:
			return ia
		}
		if st.members[ib].outstanding.Load() < st.members[ia].outstanding.Load() {
			return ib
		}
		return ia
	}
	return -1
}

// idxSet is a set of member indexes; no allocation below 64 members.
type idxSet struct {
	lo uint64
	hi []uint64
}

func (s *idxSet) add(i int) {
	if i < 64 {
		s.lo |= 1 << i
		return
	}
	j := i/64 - 1
	for len(s.hi) <= j {
		s.hi = append(s.hi, 0)
	}
	s.hi[j] |= 1 << (i % 64)
}

func (s *idxSet) has(i int) bool {
	if i < 64 {
		return s.lo&(1<<i) != 0
	}
	j := i/64 - 1
	return j < len(s.hi) && s.hi[j]&(1<<(i%64)) != 0
}
