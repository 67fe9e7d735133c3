package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// CacheCount is what a sidecar's prediction cache counted over a scenario: the
// sidecar_cache_hits_total and sidecar_cache_lookups_total of its /metrics, read at the scenario's
// end. A sidecar process lives for one scenario, so the counts cover all of it: the check calls,
// the warmup and the window. A batch call looks up each of its rows.
type CacheCount struct {
	// Read is set when the counters were read: a sidecar with its cache on. The zero value (not
	// read) is a row without a sidecar, or one whose cache is off.
	Read          bool
	Hits, Lookups int64
}

func (c CacheCount) add(o CacheCount) CacheCount {
	return CacheCount{Read: c.Read || o.Read, Hits: c.Hits + o.Hits, Lookups: c.Lookups + o.Lookups}
}

func (c CacheCount) String() string {
	if !c.Read {
		return "-"
	}
	return fmt.Sprintf("%d/%d", c.Hits, c.Lookups)
}

// metricsTimeout bounds a scrape of a sidecar's /metrics.
const metricsTimeout = 10 * time.Second

// scrapeCache reads the prediction cache's counters from the sidecar serving HTTP at addr. A
// sidecar whose cache is off exports neither counter: the count is then not Read.
func scrapeCache(ctx context.Context, addr string) (CacheCount, error) {
	ctx, cancel := context.WithTimeout(ctx, metricsTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return CacheCount{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return CacheCount{}, fmt.Errorf("scraping the cache counters: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return CacheCount{}, fmt.Errorf("scraping the cache counters: GET /metrics: HTTP %d", resp.StatusCode)
	}
	c, err := parseCacheCount(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return CacheCount{}, fmt.Errorf("scraping the cache counters: %w", err)
	}
	return c, nil
}

// parseCacheCount reads sidecar_cache_hits_total and sidecar_cache_lookups_total from Prometheus's
// text format (both unlabelled). Both or neither must be there.
func parseCacheCount(r io.Reader) (CacheCount, error) {
	var c CacheCount
	found := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		var dst *int64
		switch {
		case !ok:
			continue
		case name == "sidecar_cache_hits_total":
			dst = &c.Hits
		case name == "sidecar_cache_lookups_total":
			dst = &c.Lookups
		default:
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil || v < 0 || v > 1<<53 {
			return CacheCount{}, fmt.Errorf("%s: bad value %q", name, value)
		}
		*dst = int64(v)
		found++
	}
	if err := sc.Err(); err != nil {
		return CacheCount{}, err
	}
	switch found {
	case 0:
		return CacheCount{}, nil
	case 2:
		c.Read = true
		return c, nil
	}
	return CacheCount{}, fmt.Errorf("found %d of sidecar_cache_hits_total and sidecar_cache_lookups_total", found)
}

// cacheUse is what a scenario sent, for judging its cache counts.
type cacheUse struct {
	// expectHits: the scenario is the cache's own, repeating its inputs; any other must see none.
	expectHits bool
	// rows is the rows the scenario's calls sent and got answers for (warmup included, check calls
	// not); distinctInputs is how many different rows the cache-hit scenario sends (its first
	// lookup of each misses), check calls included.
	rows, distinctInputs int64
}

// checkCache judges a sidecar scenario's cache counts and returns an error, saying why, if the
// result is to be refused: a scenario other than the cache's saw a hit (some of its answers came
// from the cache, not the path it names), or the cache-hit scenario missed on more than its
// first lookup of each input and 1% of the rest, or the counters did not see the rows sent (they
// would then describe some other load).
func checkCache(c CacheCount, u cacheUse) error {
	if !c.Read {
		if u.expectHits {
			return fmt.Errorf("the prediction cache is off: the cache-hit scenario measures nothing")
		}
		return nil // the cache is off: nothing can answer from it
	}
	if c.Lookups < u.rows {
		return fmt.Errorf("the prediction cache counted %d lookups for the %d rows sent: its counters do not describe this load", c.Lookups, u.rows)
	}
	if !u.expectHits {
		if c.Hits > 0 {
			return fmt.Errorf("the prediction cache answered %d of %d lookups (%.1f%%): the inputs repeated, so the figures measure the cache, not the path named", c.Hits, c.Lookups, 100*float64(c.Hits)/float64(c.Lookups))
		}
		return nil
	}
	if misses, allowed := c.Lookups-c.Hits, u.distinctInputs+u.rows/100; misses > allowed {
		return fmt.Errorf("the cache-hit scenario's cache answered only %d of %d lookups (%d misses, at most %d allowed): it did not measure the cache's hit path", c.Hits, c.Lookups, misses, allowed)
	}
	return nil
}
