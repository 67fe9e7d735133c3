package backends

import (
	"sync/atomic"
)

// member is one endpoint of the pool with the state that survives Update.
type member[E Endpoint] struct {
	name        string
	obs         EndpointObserver // never nil
	h           atomic.Pointer[handle[E]]
	brk         atomic.Pointer[breaker]
	outstanding atomic.Int64
	health      atomic.Int32 // a Health
	healthErr   atomic.Pointer[string]
	// lastFailure is the error of the member's last failed attempt, quoted when its breaker is
	// open so that a refused call says why.
	lastFailure atomic.Pointer[string]
	// checking is set while a health check of the member runs; it owns fails and oks.
	checking atomic.Bool
	// fails and oks count the failed and passed checks in a row.
	fails, oks int
}

func (p *Pool[E]) newMember(name string, e E, s *settings) *member[E] {
	var obs EndpointObserver = noObserver{}
	if p.obs != nil {
		if o := p.obs.Endpoint(p.name, name); o != nil {
			obs = o
		}
	}
	m := &member[E]{name: name, obs: obs}
	m.h.Store(newHandle(name, e))
	m.brk.Store(newBreaker(name, s, obs))
	if s.healthInterval < 0 {
		m.setHealth(HealthUp)
	}
	return m
}

func (m *member[E]) healthy() bool { return Health(m.health.Load()) != HealthDown }

func (m *member[E]) setHealth(h Health) {
	if Health(m.health.Swap(int32(h))) != h {
		m.obs.HealthChanged(h)
	}
}

func (m *member[E]) candidate(level, i int, tried, rejected *idxSet, now *int64) bool {
	if rejected.has(i) {
		return false
	}
	if tried.has(i) != (level >= levelUsableTried) {
		return false
	}
	if (level == levelUsable || level == levelUsableTried) && !m.healthy() {
		return false
	}
	return m.brk.Load().admits(now)
}

// acquire returns the member's current endpoint with a reference taken, or false if the member
// is being closed.
func (m *member[E]) acquire() (*handle[E], bool) {
	for {
		h := m.h.Load()
		if h.acquire() {
			return h, true
		}
		if m.h.Load() == h {
			return nil, false
		}
	}
}

// handle is an endpoint with a reference count: one reference for the pool while the endpoint is
// a member's current one, one per running attempt or health check. The last release closes it.
type handle[E Endpoint] struct {
	name string // the member's
	e    E
	refs atomic.Int64
	done chan struct{} // closed once e.Close has returned
	err  error         // e.Close's result; read after done is closed
}

func newHandle[E Endpoint](name string, e E) *handle[E] {
	h := &handle[E]{name: name, e: e, done: make(chan struct{})}
	h.refs.Store(1)
	return h
}

func (h *handle[E]) acquire() bool {
	for {
		r := h.refs.Load()
		if r <= 0 {
			return false
		}
		if h.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// release drops a reference to h; the last one closes the endpoint in a goroutine of the pool's.
func (p *Pool[E]) release(h *handle[E]) {
	if h.refs.Add(-1) != 0 {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		h.err = h.e.Close()
		close(h.done)
		p.retiredMu.Lock()
		_, retired := p.retired[h]
		delete(p.retired, h)
		p.retiredMu.Unlock()
		if retired && h.err != nil {
			p.log.Warn("closing a replaced or removed endpoint", "pool", p.name, "endpoint", h.name, "err", h.err)
		}
	}()
}
