//go:build !chaos

package failover

// timed is false without the chaos build tag, as make test builds: the scenarios still run every
// fault and check that each call got the right answer or an explicit error, that none hung past
// its deadline and that service came back, but they assert nothing about how fast the pool
// recovered, which depends on the machine. make chaos (go test -tags chaos) asserts that too; see
// timed_test.go.
const timed = false
