//go:build chaos

package failover

// timed is true under the chaos build tag, which make chaos sets: the scenarios then also assert
// how fast the pool recovered from each fault (see untimed_test.go for make test's build).
const timed = true
