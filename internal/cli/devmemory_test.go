package cli

import (
	"runtime/debug"
	"testing"
)

func TestLimitDevMemory(t *testing.T) {
	tests := []struct {
		name       string
		gomemlimit string
		want       func(prev int64) int64
	}{
		{"default", "", func(int64) int64 { return devMemoryLimit }},
		{"GOMEMLIMIT set", "1GiB", func(prev int64) int64 { return prev }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prev := debug.SetMemoryLimit(-1)
			env := &Env{Getenv: func(k string) string {
				if k == "GOMEMLIMIT" {
					return tt.gomemlimit
				}
				return ""
			}}
			restore := limitDevMemory(env)
			if got := debug.SetMemoryLimit(-1); got != tt.want(prev) {
				t.Errorf("memory limit %d, want %d", got, tt.want(prev))
			}
			restore()
			if got := debug.SetMemoryLimit(-1); got != prev {
				t.Errorf("after restore: %d, want %d", got, prev)
			}
		})
	}
}
