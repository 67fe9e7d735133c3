package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/novacron/sidecar/config"
	"github.com/novacron/sidecar/proxy/migrate"
)

// TestConfigTemplate: each phase's config, in both sizes, is one the sidecar accepts, with the
// route and migration the phase needs, and every stage's min_calls lets a stage with no
// disagreement pass the disagreement gate (the upper bound of 0 of min_calls, at the gates'
// confidence, is within it), as the template's comment says.
func TestConfigTemplate(t *testing.T) {
	for _, quick := range []bool{false, true} {
		for _, tc := range []struct{ phase, from, to string }{
			{phaseHTTPToGRPC, "bandwidth-http", "bandwidth-grpc"},
			{phaseGRPCToONNX, "bandwidth-grpc", "bandwidth"},
		} {
			t.Run(fmt.Sprintf("%s/quick=%v", tc.phase, quick), func(t *testing.T) {
				dur, calls, gate := sizes(quick)
				b, err := render(params{Phase: tc.phase, SeedHTTP: "http://127.0.0.1:1", SeedGRPC: "127.0.0.1:2", AdminListen: "127.0.0.1:3",
					TokenFile: "/tmp/dir with space/admin.token", StateFile: "/tmp/state.json", MinDuration: dur, MinCalls: calls, MaxDisagreement: gate})
				if err != nil {
					t.Fatal(err)
				}
				cfg, err := config.Parse("sidecar.yaml", b)
				if err != nil {
					t.Fatalf("%v\n%s", err, b)
				}
				if cfg.Admin.TokenFile != "/tmp/dir with space/admin.token" || !cfg.Cache.Disabled {
					t.Errorf("admin %+v, cache %+v", cfg.Admin, cfg.Cache)
				}
				specs := cfg.Specs()
				if len(specs) != 1 {
					t.Fatalf("%d migrations, want 1", len(specs))
				}
				sp := specs[0].WithDefaults()
				if sp.Name != tc.phase || sp.From != tc.from || sp.To != tc.to || len(sp.Stages) != 5 {
					t.Errorf("migration %s %s -> %s, %d stages; want %s %s -> %s, 5 stages", sp.Name, sp.From, sp.To, len(sp.Stages), tc.phase, tc.from, tc.to)
				}
				z := migrate.Z(sp.Gates.Confidence)
				for i, st := range sp.Stages {
					if st.Shadow == 0 || st.MinDuration != dur || st.MinCalls != calls {
						t.Errorf("stage %d: %+v: want a shadow share, min_duration %v, min_calls %d", i, st, dur, calls)
					}
					if _, hi := migrate.Bounds(0, st.MinCalls, z); hi > sp.Gates.MaxDisagreement || hi > sp.Gates.MaxShadowErrors {
						t.Errorf("stage %d: 0 of %d compared calls bounds the disagreement by %.2f%%, above the gates (%v, %v): it could never advance",
							i, st.MinCalls, 100*hi, sp.Gates.MaxDisagreement, sp.Gates.MaxShadowErrors)
					}
				}
				// The numbers the template's comment gives.
				_, hi := migrate.Bounds(0, calls, z)
				if want := fmt.Sprintf("%.2f%% for n = %d", 100*hi, calls); !strings.Contains(configText, want) {
					t.Errorf("the template's comment does not say %q", want)
				}
			})
		}
	}
}
