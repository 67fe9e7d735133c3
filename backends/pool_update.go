package backends

import (
	"fmt"
	"reflect"
)

// Update replaces the configuration and the members, as on a config reload, and returns at once.
// Members whose Name is unchanged keep their breaker, health state and outstanding count (the
// breaker is replaced by a closed one only when OpenTimeout, HalfOpenRequests, FailureRatio's
// on/off or FailureWindow change); if the new Member carries an endpoint other than the current
// one (by ==), the new one takes the new calls and the old one is closed once its running calls
// end. Removed members are closed once their running calls end. Added members start fresh and
// are health-checked at once. The retry budget is kept unless its settings change. On success
// the pool owns every endpoint in members (each must belong to one member only); on error
// nothing changes and the caller still owns them. Calls running during Update finish on the
// members they started with; a call that finds all of its members gone starts over on the new
// ones.
func (p *Pool[E]) Update(cfg PoolConfig, members []Member[E]) error {
	if err := checkPool(cfg, members); err != nil {
		return err
	}
	if cfg.Name != p.name {
		return fmt.Errorf("pool %s: Name cannot change on Update (to %q)", p.name, cfg.Name)
	}
	s := cfg.resolve()

	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	old := p.state.Load()
	if old.closed {
		return p.closedErr()
	}
	next := &snapshot[E]{s: s, budget: old.budget, members: make([]*member[E], 0, len(members))}
	if s.budget != old.s.budget {
		next.budget = newRetryBudget(s.budget, p.base)
	}
	kept := make(map[string]*member[E], len(old.members))
	for _, m := range old.members {
		kept[m.name] = m
	}
	var retire []*handle[E]
	for _, mm := range members {
		m, ok := kept[mm.Name]
		if !ok {
			next.members = append(next.members, p.newMember(mm.Name, mm.E, s))
			continue
		}
		delete(kept, mm.Name)
		if !sameEndpoint(m.h.Load().e, mm.E) {
			retire = append(retire, m.h.Swap(newHandle(mm.Name, mm.E)))
		}
		if b := m.brk.Load(); b.key != s.breaker {
			b.replaced.Store(true)
			m.brk.Store(newBreaker(m.name, s, m.obs))
			m.obs.BreakerChanged(BreakerClosed)
		} else {
			b.rule.Store(&s.trip)
		}
		if s.healthInterval < 0 {
			m.setHealth(HealthUp)
		}
		next.members = append(next.members, m)
	}
	p.state.Store(next)

	for _, m := range old.members {
		if kept[m.name] == m {
			retire = append(retire, m.h.Load())
			m.obs.Removed()
		}
	}
	p.retiredMu.Lock()
	for _, h := range retire {
		p.retired[h] = struct{}{}
	}
	p.retiredMu.Unlock()
	for _, h := range retire {
		p.release(h)
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return nil
}

// isNil reports whether e is a nil interface, pointer, map, slice, channel or func.
func isNil(e any) bool {
	v := reflect.ValueOf(e)
	if !v.IsValid() {
		return true
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.Interface:
		return v.IsNil()
	}
	return false
}

// sameEndpoint reports whether a and b are the same endpoint value (==), false when E's dynamic
// type is not comparable.
func sameEndpoint[E Endpoint](a, b E) bool {
	va, vb := any(a), any(b)
	if !reflect.ValueOf(va).Comparable() || !reflect.ValueOf(vb).Comparable() {
		return false
	}
	return va == vb
}
