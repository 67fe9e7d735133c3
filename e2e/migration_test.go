package e2e

import (
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMigrationDemo runs the migration demo (examples/migration, what make demo-migration runs)
// in its quick form against the built binary: the seed's Python service and the sidecar as real
// processes, the HTTP-to-gRPC migration through every stage to done, then the migration to the
// ONNX model rolled back by its disagreement gate, and no call failed. Afterwards neither process
// the demo started is left.
func TestMigrationDemo(t *testing.T) {
	text := runDemo(t, "migration", 150*time.Second, "100s")
	for _, want := range []string{
		"\nhttp-to-grpc (bandwidth-http -> bandwidth-grpc): done after ",
		"  stage 5/5: split 100%, shadow 20%",
		"http-to-grpc (bandwidth-http -> bandwidth-grpc): done: bandwidth-grpc serves the route alone",
		"\ngrpc-to-onnx (bandwidth-grpc -> bandwidth): rolled_back after ",
		"grpc-to-onnx (bandwidth-grpc -> bandwidth): rolled back: disagreement: ",
		"kept for route predict_bandwidth, newest first",
		"\nPASS: ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in the demo's output:\n%s", want, text)
		}
	}
	if regexp.MustCompile(`(?m)^http-to-grpc .*; \d+ calls, [1-9]\d* failed`).MatchString(text) ||
		regexp.MustCompile(`(?m)^grpc-to-onnx .*; \d+ calls, [1-9]\d* failed`).MatchString(text) {
		t.Errorf("calls failed:\n%s", text)
	}

	// Nothing left behind: no sidecar, and the seed service's port is closed.
	noSidecarLeft(t, text)
	if m := regexp.MustCompile(`the seed's Python service: gRPC (\S+),`).FindStringSubmatch(text); m == nil {
		t.Errorf("the demo did not print the seed service's address:\n%s", text)
	} else if c, err := net.DialTimeout("tcp", m[1], time.Second); err == nil {
		c.Close()
		t.Errorf("the seed service still listens on %s", m[1])
	}
}
