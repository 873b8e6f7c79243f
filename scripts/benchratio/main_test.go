package main

import (
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name, in, want, err string
	}{{
		name: "medians and ratios",
		in: `goos: linux
BenchmarkNexmark/q0/reference         	      10	  26497187 ns/op	  40000000 events/s
BenchmarkNexmark/q0/reference         	      10	  26497187 ns/op	  30000000 events/s
BenchmarkNexmark/q0/reference         	      10	  26497187 ns/op	  20000000 events/s
BenchmarkNexmark/q0/engine            	      10	  46146716 ns/op	  15000000 events/s
BenchmarkNexmark/q0/engine            	      10	  46146716 ns/op	   9000000 events/s
BenchmarkNexmark/q0/engine            	      10	  46146716 ns/op	  99000000 events/s
--- SKIP: BenchmarkNexmark/q3/engine
BenchmarkNexmark/q3/reference-2       	      10	  46146716 ns/op	  8000000 events/s
BenchmarkNexmark/q3/engine-ckpt-2     	      10	  46146716 ns/op	  2000000 events/s
BenchmarkNexmark/q9/engine            	      10	  46146716 ns/op	  2000000 events/s
PASS
`,
		want: `benchmark  variant  events/s  reference events/s  ratio  runs
BenchmarkNexmark/q0   engine  1.5e+07  3e+07  0.50  3
BenchmarkNexmark/q3   engine-ckpt  2e+06  8e+06  0.25  1`,
	}, {
		name: "no pairs",
		in:   "BenchmarkX/a/engine 10 5 ns/op 7 events/s\n",
		err:  "no pair",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			err := run(strings.NewReader(tc.in), &out, "events/s")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := fields(out.String()), fields(tc.want); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("got\n%s\nwant\n%s", out.String(), tc.want)
			}
		})
	}
}

func fields(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		out = append(out, strings.Join(strings.Fields(l), " "))
	}
	return out
}
