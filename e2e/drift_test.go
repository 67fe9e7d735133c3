package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDriftDemo runs the drift demo (examples/drift, what make demo-drift runs) in its quick
// form (windows of 10s) against the built binary: unshifted traffic raises no drift, then the
// shifted feature's gauge crosses its threshold within one window while the others stay below,
// and the demo's webhook receives the drift alert naming that feature alone. Afterwards no
// process the demo started is left.
func TestDriftDemo(t *testing.T) {
	text := runDemo(t, "drift", 90*time.Second, "60s")
	for _, re := range []string{
		// The table before the shift: whole windows, none drifted.
		`(?s)=== .*the drift table before the shift: sidecar drift merge http://127\.0\.0\.1:\d+/v1/drift/sketches\?model=anomaly\n` +
			`model anomaly: spec anomaly \w+; 1 source merged, \d windows\n.*\nwindow \S+ \+10s: \d+ rows, no drift: none of 6 features drifted\n.*=== .*the shift: cpu moves`,
		`model_data_drift_score\{model="anomaly",feature="cpu",method="psi"\} = \d+\.\d+ > 0\.2, the others below: crossed \d+\.\ds after the shift`,
		`webhook: drift alert of model anomaly from node "[^"]*": window \S+ \+10s, \d+ rows, 1 of 6 features drifted \(share 17%\); cpu psi \d+\.\d+ > 0\.2 \(`,
		// The table after: a window with cpu, and it alone, drifted.
		`(?s)the drift table after the shift: .*MODEL DRIFTED: 1 of 6 features drifted \(17%, over the share 10%\)\n.*\n  cpu +\d+ +0 +\d+\.\d+ [^\n]* psi +0\.2  YES\n`,
		`(?m)^before the shift +\d+ calls, 0 failed`,
		`(?m)^after the shift +\d+ calls, 0 failed`,
		`\nPASS: no drift before the shift; after it, cpu's psi crossed 0\.2 within one window`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("no match of %q in the demo's output:\n%s", re, text)
		}
	}
	if strings.Contains(text, "!! ") {
		t.Errorf("a feature other than the shifted one crossed its threshold:\n%s", text)
	}

	noSidecarLeft(t, text)
}
