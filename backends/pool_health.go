package backends

import (
	"context"
	"time"
)

// healthLoop runs a round of health checks at once, then every HealthInterval and when Update
// asks, until ctx is done.
func (p *Pool[E]) healthLoop(ctx context.Context) {
	defer close(p.healthDone)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-p.kick:
		}
		st := p.state.Load()
		if st.closed {
			return
		}
		if st.s.healthInterval > 0 {
			p.checkRound(ctx, st)
			timer.Reset(st.s.healthInterval)
		} else {
			timer.Stop()
		}
	}
}

// checkRound starts a check of every member whose previous check has returned.
func (p *Pool[E]) checkRound(ctx context.Context, st *snapshot[E]) {
	for _, m := range st.members {
		if !m.checking.CompareAndSwap(false, true) {
			continue
		}
		h, ok := m.acquire()
		if !ok {
			m.checking.Store(false)
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			cctx, cancel := context.WithTimeout(ctx, st.s.healthTimeout)
			err := h.e.Ready(cctx)
			cancel()
			p.release(h)
			if ctx.Err() == nil {
				m.recordCheck(err, st.s)
			}
			m.checking.Store(false)
		}()
	}
}

// recordCheck applies one check's result; the caller holds m.checking.
func (m *member[E]) recordCheck(err error, s *settings) {
	cur := Health(m.health.Load())
	if err == nil {
		m.fails = 0
		m.oks++
		m.healthErr.Store(nil)
		if cur != HealthUp && (cur == HealthUnknown || m.oks >= s.healthyAfter) {
			m.setHealth(HealthUp)
		}
		return
	}
	m.oks = 0
	m.fails++
	msg := err.Error()
	m.healthErr.Store(&msg)
	if cur != HealthDown && (cur == HealthUnknown || m.fails >= s.unhealthyAfter) {
		m.setHealth(HealthDown)
	}
}
